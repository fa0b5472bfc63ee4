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
#include "luaopts.h"
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

static void lua_done(const dc_http_response *resp, dc_http_error err, const char *message, void *ud) {
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

static const char *const REQUEST_KEYS[] = {"method", "url",           "headers",  "body", "timeout", "connect_timeout",
                                           "follow", "max_redirects", "max_body", "tls",  "auth",    NULL};

static bool has_line_break(const char *s) { return strpbrk(s, "\r\n") != NULL; }

/* headers = { Name = "value" | { "v1", "v2" } } -> array in a userdata (freed by the GC). */
static void read_headers(lua_State *L, dc_http_request *req) {
  if (!dc_opt_push(L, 1, "http", "headers", LUA_TTABLE)) return;
  int ht = lua_gettop(L);
  size_t count = 0;
  for (lua_pushnil(L); lua_next(L, ht); lua_pop(L, 1)) count += lua_istable(L, -1) ? (size_t)lua_rawlen(L, -1) : 1;
  dc_http_header *hs = lua_newuserdatauv(L, (count ? count : 1) * sizeof *hs, 0);
  lua_insert(L, ht); /* stack: ... array headers */
  ht = lua_gettop(L);
  size_t i = 0;
  for (lua_pushnil(L); lua_next(L, ht); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "http: header names must be strings");
    const char *name = lua_tostring(L, -2);
    if (!*name || has_line_break(name) || strpbrk(name, ": \t")) luaL_error(L, "http: invalid header name '%s'", name);
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

/* Strings of the request stay valid until it is copied: they are held by the request table,
 * and the tls, auth and headers tables stay on the stack. */
static const char *const TLS_KEYS[] = {"ca_file", "cert_file", "key_file", "insecure", "connect_to", NULL};
static const char *const AUTH_KEYS[] = {"bearer", "user", "password", NULL};

/* httpc.request{...} -> response table | nil, { kind =, message = }. Misuse raises. */
static int httpc_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  dc_opts_check(L, 1, "http", REQUEST_KEYS);
  dc_http_request req = {0};
  if (!dc_opt_string(L, 1, "http", "url", &req.url, NULL)) luaL_error(L, "http: 'url' is required");
  if (dc_opt_string(L, 1, "http", "method", &req.method, NULL) && (!*req.method || strpbrk(req.method, " \t\r\n")))
    luaL_error(L, "http: invalid method '%s'", req.method);
  dc_opt_string(L, 1, "http", "body", &req.body, &req.body_len);
  dc_opt_number(L, 1, "http", "timeout", 0, HUGE_VAL, &req.timeout);
  dc_opt_number(L, 1, "http", "connect_timeout", 0, HUGE_VAL, &req.connect_timeout);
  bool follow = true;
  dc_opt_boolean(L, 1, "http", "follow", &follow);
  req.no_follow = !follow;
  lua_Integer n;
  if (dc_opt_integer(L, 1, "http", "max_redirects", 1, 999, &n)) req.max_redirects = (int)n;
  if (dc_opt_integer(L, 1, "http", "max_body", 1, LUA_MAXINTEGER, &n)) req.max_body = (size_t)n;
  if (dc_opt_push(L, 1, "http", "tls", LUA_TTABLE)) {
    dc_opts_check(L, -1, "http: tls", TLS_KEYS);
    dc_opt_string(L, -1, "http: tls", "ca_file", &req.tls.ca_file, NULL);
    dc_opt_string(L, -1, "http: tls", "cert_file", &req.tls.cert_file, NULL);
    dc_opt_string(L, -1, "http: tls", "key_file", &req.tls.key_file, NULL);
    dc_opt_string(L, -1, "http: tls", "connect_to", &req.tls.connect_to, NULL);
    dc_opt_boolean(L, -1, "http: tls", "insecure", &req.tls.insecure);
  }
  if (dc_opt_push(L, 1, "http", "auth", LUA_TTABLE)) {
    dc_opts_check(L, -1, "http: auth", AUTH_KEYS);
    dc_opt_string(L, -1, "http: auth", "bearer", &req.bearer, NULL);
    dc_opt_string(L, -1, "http: auth", "user", &req.user, NULL);
    dc_opt_string(L, -1, "http: auth", "password", &req.password, NULL);
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
