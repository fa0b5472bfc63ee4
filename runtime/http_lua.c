/*
 * dconn.httpc: the Lua face of the HTTP engine (http.c). lua/dconn/http.lua builds the public
 * dconn.http on top of it.
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>

#include "http.h"
#include "modules.h"

/* A Lua task waiting for one request. */
typedef struct lua_wait {
  dc_task *task;
  dc_http_op *op;
} lua_wait;

/* stack: lightuserdata(response) -> { status, body, headers, url, http_version, time } */
static int push_response(lua_State *L) {
  const dc_http_response *r = lua_touserdata(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, r->status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, r->body, r->body_len);
  lua_setfield(L, -2, "body");
  lua_createtable(L, 0, (int)r->header_count);
  for (size_t i = 0; i < r->header_count; i++) {
    lua_pushstring(L, r->headers[i].value);
    lua_setfield(L, -2, r->headers[i].name);
  }
  lua_setfield(L, -2, "headers");
  lua_pushstring(L, r->effective_url);
  lua_setfield(L, -2, "url");
  lua_pushstring(L, r->http_version);
  lua_setfield(L, -2, "http_version");
  lua_pushnumber(L, r->total_time);
  lua_setfield(L, -2, "time");
  return 1;
}

/* stack: kind, message -> { kind =, message = } */
static int push_error(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_insert(L, 1);
  lua_setfield(L, 1, "message");
  lua_setfield(L, 1, "kind");
  return 1;
}

/* What a finished request delivers to its task. */
typedef struct lua_result {
  const dc_http_response *resp; /* NULL on error */
  dc_http_error err;
  const char *message;
} lua_result;

/* response table | nil, { kind =, message = }; built under protection by dc_task_deliver (a
 * 64 MiB body may not fit under the heap cap). */
static int push_result(lua_State *L, void *ud) {
  const lua_result *r = ud;
  if (r->resp) {
    lua_pushcfunction(L, push_response);
    lua_pushlightuserdata(L, (void *)r->resp);
    lua_call(L, 1, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushcfunction(L, push_error);
  lua_pushstring(L, dc_http_error_kind(r->err));
  lua_pushstring(L, r->message);
  lua_call(L, 2, 1);
  return 2;
}

static void lua_done(const dc_http_response *resp, dc_http_error err, const char *message,
                     void *ud) {
  lua_wait *w = ud;
  dc_task *task = w->task;
  free(w); /* the task's cancel function (lua_cancel) is not called once delivering starts */
  lua_result r = {resp, err, message};
  dc_task_deliver(task, push_result, &r);
}

static void lua_cancel(void *ud) {
  lua_wait *w = ud;
  dc_http_cancel(w->op);
  free(w);
}

static const char *const REQUEST_KEYS[] = {
    "method", "url", "headers", "body", "timeout", "connect_timeout", "follow", "max_redirects",
    "max_body", "tls", "auth", NULL};

static void check_keys(lua_State *L, int idx, const char *const *keys, const char *what) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    bool known = false;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (const char *const *k = keys; *k; k++) known = known || strcmp(*k, lua_tostring(L, -1)) == 0;
    if (!known) luaL_error(L, "%s: unknown field '%s'", what, luaL_tolstring(L, -1, NULL));
  }
}

/* Optional string field of the table at idx; the value stays on the stack so the string lives
 * until the request has been copied. */
static const char *opt_string(lua_State *L, int idx, const char *key, size_t *len) {
  luaL_checkstack(L, 2, "http: too many fields");
  int t = lua_getfield(L, idx, key);
  if (t == LUA_TSTRING) return lua_tolstring(L, -1, len);
  if (t != LUA_TNIL) luaL_error(L, "http: '%s' must be a string, got %s", key, lua_typename(L, t));
  return NULL;
}

static double opt_seconds(lua_State *L, int idx, const char *key) {
  int t = lua_getfield(L, idx, key);
  double v = 0;
  if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
  else if (t != LUA_TNIL) luaL_error(L, "http: '%s' must be a number of seconds", key);
  if (!(v >= 0) || !isfinite(v)) luaL_error(L, "http: '%s' must be a number of seconds >= 0", key);
  lua_pop(L, 1);
  return v;
}

static bool has_line_break(const char *s) { return strpbrk(s, "\r\n") != NULL; }

/* headers = { Name = "value" | { "v1", "v2" } } -> array in a userdata (freed by the GC). */
static void read_headers(lua_State *L, dc_http_request *req) {
  if (lua_getfield(L, 1, "headers") == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  luaL_argcheck(L, lua_istable(L, -1), 1, "'headers' must be a table");
  int ht = lua_gettop(L);
  size_t count = 0;
  for (lua_pushnil(L); lua_next(L, ht); lua_pop(L, 1))
    count += lua_istable(L, -1) ? (size_t)lua_rawlen(L, -1) : 1;
  dc_http_header *hs = lua_newuserdatauv(L, (count ? count : 1) * sizeof *hs, 0);
  lua_insert(L, ht); /* stack: ... array headers */
  ht = lua_gettop(L);
  size_t i = 0;
  for (lua_pushnil(L); lua_next(L, ht); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "http: header names must be strings");
    const char *name = lua_tostring(L, -2);
    if (!*name || has_line_break(name) || strpbrk(name, ": \t"))
      luaL_error(L, "http: invalid header name '%s'", name);
    int values = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 1;
    for (int k = 1; k <= values; k++) {
      if (lua_istable(L, -1)) lua_rawgeti(L, -1, k);
      else lua_pushvalue(L, -1);
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "http: header '%s' must be a string or a list of strings", name);
      const char *value = lua_tostring(L, -1); /* alive: held by the headers table */
      if (has_line_break(value)) luaL_error(L, "http: header '%s' contains a line break", name);
      lua_pop(L, 1);
      hs[i].name = name;
      hs[i].value = value;
      i++;
    }
  }
  /* the array and the headers table stay on the stack until the request is copied */
  req->headers = hs;
  req->header_count = i;
}

/* httpc.request{...} -> response table | nil, { kind =, message = }. Misuse raises. */
static int httpc_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_keys(L, 1, REQUEST_KEYS, "http");
  dc_http_request req = {0};
  req.url = opt_string(L, 1, "url", NULL);
  if (!req.url) luaL_error(L, "http: 'url' is required");
  req.method = opt_string(L, 1, "method", NULL);
  if (req.method && (!*req.method || strpbrk(req.method, " \t\r\n")))
    luaL_error(L, "http: invalid method '%s'", req.method);
  req.body = opt_string(L, 1, "body", &req.body_len);
  req.timeout = opt_seconds(L, 1, "timeout");
  req.connect_timeout = opt_seconds(L, 1, "connect_timeout");
  if (lua_getfield(L, 1, "follow") != LUA_TNIL) req.no_follow = !lua_toboolean(L, -1);
  if (lua_getfield(L, 1, "max_redirects") != LUA_TNIL) {
    luaL_argcheck(L, lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0 && lua_tointeger(L, -1) < 1000,
                  1, "'max_redirects' must be an integer from 1 to 999");
    req.max_redirects = (int)lua_tointeger(L, -1);
  }
  if (lua_getfield(L, 1, "max_body") != LUA_TNIL) {
    luaL_argcheck(L, lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0, 1,
                  "'max_body' must be a positive integer (bytes)");
    req.max_body = (size_t)lua_tointeger(L, -1);
  }
  lua_pop(L, 3);
  if (lua_getfield(L, 1, "tls") != LUA_TNIL) {
    luaL_argcheck(L, lua_istable(L, -1), 1, "'tls' must be a table");
    int t = lua_gettop(L);
    static const char *const tls_keys[] = {"ca_file", "cert_file", "key_file", "insecure", "connect_to", NULL};
    check_keys(L, t, tls_keys, "http: tls");
    req.tls.ca_file = opt_string(L, t, "ca_file", NULL);
    req.tls.cert_file = opt_string(L, t, "cert_file", NULL);
    req.tls.key_file = opt_string(L, t, "key_file", NULL);
    req.tls.connect_to = opt_string(L, t, "connect_to", NULL);
    lua_getfield(L, t, "insecure");
    req.tls.insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (lua_getfield(L, 1, "auth") != LUA_TNIL) {
    luaL_argcheck(L, lua_istable(L, -1), 1, "'auth' must be a table");
    int t = lua_gettop(L);
    static const char *const auth_keys[] = {"bearer", "user", "password", NULL};
    check_keys(L, t, auth_keys, "http: auth");
    req.bearer = opt_string(L, t, "bearer", NULL);
    req.user = opt_string(L, t, "user", NULL);
    req.password = opt_string(L, t, "password", NULL);
    if (req.bearer && req.user) luaL_error(L, "http: auth takes bearer or user/password, not both");
  }
  read_headers(L, &req);
  dc_task *task = dc_wait_check(L, "dconn.http.request");
  dc_host *H = dc_host_of(L);
  lua_wait *w = malloc(sizeof *w);
  if (!w) return luaL_error(L, "dconn.http: out of memory");
  w->task = task;
  char err[256];
  w->op = dc_http_start(H, &req, lua_done, w, err, sizeof err);
  if (!w->op) {
    free(w);
    lua_pushnil(L);
    lua_pushcfunction(L, push_error);
    lua_pushliteral(L, "other");
    lua_pushstring(L, err);
    lua_call(L, 2, 1);
    return 2;
  }
  return dc_wait(L, task, DC_WAIT_IO, lua_cancel, w);
}

/* httpc.in_flight() -> requests in flight on this host */
static int httpc_in_flight(lua_State *L) {
  lua_pushinteger(L, dc_http_in_flight(dc_host_of(L)));
  return 1;
}

/* httpc.version() -> libcurl's version text ("libcurl/7.88.1 OpenSSL/3.0.11 ...") */
static int httpc_version(lua_State *L) {
  lua_pushstring(L, curl_version());
  return 1;
}

static const luaL_Reg httpc_functions[] = {
    {"request", httpc_request},
    {"in_flight", httpc_in_flight},
    {"version", httpc_version},
    {NULL, NULL},
};

int luaopen_dconn_httpc(lua_State *L) {
  luaL_newlib(L, httpc_functions);
  lua_pushinteger(L, DC_HTTP_MAX_IN_FLIGHT);
  lua_setfield(L, -2, "MAX_IN_FLIGHT");
  lua_pushinteger(L, (lua_Integer)DC_HTTP_DEFAULT_MAX_BODY);
  lua_setfield(L, -2, "DEFAULT_MAX_BODY");
  return 1;
}
