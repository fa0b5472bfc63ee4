/*
 * dconn.server: an HTTP/1.1 server (HTTP/2 with prior knowledge or h2c upgrade) on the host's
 * loop, built on libh2o 2.2 compiled for libuv.
 *
 *     local srv, err = server.listen{host = "127.0.0.1", port = 8080, max_body = 1048576,
 *                                    timeout = 10, handler = function(req) ... end,
 *                                    fixed = {{path = "/healthz", status = 200,
 *                                              content_type = "application/json", body = "..."}}}
 *     srv:port()  srv:address()  srv:fixed_hits() -> {[path] = n}  srv:expire(path)  srv:close()
 *
 * `fixed` responses (at most MAX_FIXED) are answered to GET and HEAD on their exact path (any
 * query) by the server itself, on the loop, without a task or the handler: a liveness probe
 * polled by every kubelet and load balancer then costs what a static file costs in nginx, and
 * still proves that the loop turns. srv:fixed_hits() counts them for the metrics.
 *
 * Instead of a body, an entry may have refresh = function() -> body, called (synchronously, under
 * the budgets of dc_pcall_policy) at the first request after srv:expire(path), after max_age
 * seconds (default 1), or after a hit on another fixed path; in between the server answers from
 * the body it kept, sent without a copy. gzip = true keeps a gzip form too, made once per new
 * body, for the requests whose Accept-Encoding takes it (with `Vary: Accept-Encoding`).
 * token = "..." answers only requests with `Authorization: Bearer <token>`. A request the entry
 * does not answer (no token, a refresh that failed) goes to the handler like any other.
 *
 * Each request runs handler(req) as a task (it may wait); req = {method, path, raw_path, query,
 * version, headers (lowercase names), body, remote}. The handler returns status, headers, body;
 * the response goes out when the task ends. A handler error is logged and answered with 500 and
 * a JSON body. Requests whose client left meanwhile are noticed through a dispose hook in h2o's
 * request pool and never written to.
 *
 * Ownership: the Lua userdata holds a pointer to a `server`, which owns the h2o configuration,
 * context, listener and connections. Closing is asynchronous (libuv close callbacks); the memory
 * goes once the last handle is closed and the last handler task has ended.
 */
#define H2O_USE_LIBUV 1
#include <h2o.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <lauxlib.h>

#include "gzip.h"
#include "log.h"
#include "luaopts.h"
#include "modules.h"
#include "server.h"

#if H2O_VERSION_MAJOR != 2 || H2O_VERSION_MINOR != 2
#error "dispose_context() mirrors h2o 2.2's h2o_context_dispose; check it against this version"
#endif

#define SERVER_MT "dconn.server"
#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 8080
#define DEFAULT_MAX_BODY ((lua_Integer)1 << 20)
#define MAX_MAX_BODY ((lua_Integer)1 << 30)
#define DEFAULT_TIMEOUT 10.0
#define MAX_CONNECTIONS 1024 /* per server; more are accepted and closed at once */
#define MAX_PENDING 256      /* handler tasks in flight per server; more get 503 */
#define CLOSE_ALL_DEADLINE_MS 2000
#define LISTEN_BACKLOG 128
#define MAX_FIXED 4
#define MAX_FIXED_BODY 4096

typedef struct server server;

/* Every open or closing server of a host; a userdata in the Lua registry. */
typedef struct registry {
  server *first;
} registry;

static const char REGISTRY_KEY = 'S';

/* One accepted connection. The handle comes first: h2o's close callback gets its address. */
typedef struct conn {
  uv_tcp_t tcp;
  server *s;
  struct conn *prev, *next;
} conn;

/* One request whose handler task has not ended yet. */
typedef struct pending {
  server *s;
  h2o_req_t *req;         /* NULL once h2o disposed the request (the client went away) */
  struct pending **slot;  /* lives in req->pool and points back here; NULL once disposed */
  dc_task *task;          /* NULL while spawning and once finished */
  bool spawning, finished;
  char what[128];         /* "GET /path", for logs */
  struct pending *prev, *next;
} pending;

typedef struct route_handler {
  h2o_handler_t super;
  server *s;
} route_handler;

typedef struct error_filter {
  h2o_filter_t super;
  server *s;
} error_filter;

/* A body of a fixed response and its gzip form (NULL when it has none): shared memory of h2o's
 * (h2o_mem_alloc_shared), linked to the pool of each request it is sent on, so that a body
 * replaced by a refresh lives until the last response that carries it is written. */
typedef struct fixed_body {
  char *gzip;
  size_t len, gzip_len;
  char data[];
} fixed_body;

/* A response the server answers itself (see `fixed` above). */
typedef struct fixed_response {
  char *path, *content_type, *token; /* token: NULL for a public path */
  size_t path_len, token_len;
  fixed_body *body; /* NULL until the first refresh */
  int status, refresh_ref;
  bool gzip, stale;
  uint64_t max_age_ms, fresh_until; /* loop time, ms */
  lua_Integer hits, others_seen;    /* others_seen: the other paths' hits at the last refresh */
} fixed_response;

struct server {
  dc_host *H;
  registry *reg; /* NULL once detached at shutdown */
  server *prev, *next;
  struct server_box *box; /* the Lua object, NULL once closed */
  int handler_ref, self_ref;
  h2o_globalconf_t config;
  h2o_context_t ctx;
  h2o_accept_ctx_t accept;
  uv_tcp_t listener;
  conn *conns;
  pending *pendings;
  int nconns, npending, closing_handles, port;
  size_t max_body;
  fixed_response fixed[MAX_FIXED];
  int nfixed;
  bool config_ready, ctx_ready, listener_ready, listener_closed, closing, disposing;
  char address[INET6_ADDRSTRLEN + 8];
};

typedef struct server_box {
  server *s; /* NULL when closed */
} server_box;

/* ---- small helpers ---- */

static const struct {
  int status;
  const char *reason, *code; /* code: the JSON error code for errors */
} STATUSES[] = {
    {200, "OK", NULL},
    {201, "Created", NULL},
    {202, "Accepted", NULL},
    {204, "No Content", NULL},
    {301, "Moved Permanently", NULL},
    {302, "Found", NULL},
    {304, "Not Modified", NULL},
    {400, "Bad Request", "bad_request"},
    {401, "Unauthorized", "unauthorized"},
    {403, "Forbidden", "forbidden"},
    {404, "Not Found", "not_found"},
    {405, "Method Not Allowed", "method_not_allowed"},
    {408, "Request Timeout", "timeout"},
    {409, "Conflict", "conflict"},
    {413, "Payload Too Large", "too_large"},
    {415, "Unsupported Media Type", "bad_request"},
    {417, "Expectation Failed", "expectation_failed"},
    {422, "Unprocessable Entity", "bad_request"},
    {429, "Too Many Requests", "too_many_requests"},
    {500, "Internal Server Error", "internal"},
    {501, "Not Implemented", "internal"},
    {502, "Bad Gateway", "internal"},
    {503, "Service Unavailable", "unavailable"},
    {504, "Gateway Timeout", "internal"},
};

static const char *reason_of(int status) {
  for (size_t i = 0; i < sizeof STATUSES / sizeof *STATUSES; i++)
    if (STATUSES[i].status == status) return STATUSES[i].reason;
  return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
}

static const char *error_code_of(int status) {
  for (size_t i = 0; i < sizeof STATUSES / sizeof *STATUSES; i++)
    if (STATUSES[i].status == status && STATUSES[i].code) return STATUSES[i].code;
  return status < 500 ? "bad_request" : "internal";
}

/* {"error":code,"message":msg} in the pool; control characters escaped, bytes >= 0x80 become
 * '?' (messages are ASCII; this keeps the body valid JSON whatever they hold). */
static h2o_iovec_t json_error_body(h2o_mem_pool_t *pool, const char *code, const char *msg, size_t len) {
  static const char prefix[] = "{\"error\":\"", middle[] = "\",\"message\":\"", suffix[] = "\"}";
  size_t cap = sizeof prefix + strlen(code) + sizeof middle + len * 6 + sizeof suffix;
  char *buf = h2o_mem_alloc_pool(pool, cap), *d = buf;
  d += sprintf(d, "%s%s%s", prefix, code, middle);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)msg[i];
    if (c == '"' || c == '\\') *d++ = '\\', *d++ = (char)c;
    else if (c == '\n') *d++ = '\\', *d++ = 'n';
    else if (c < 0x20 || c == 0x7f) d += sprintf(d, "\\u%04x", c);
    else *d++ = c >= 0x80 ? '?' : (char)c;
  }
  d += sprintf(d, "%s", suffix);
  return h2o_iovec_init(buf, (size_t)(d - buf));
}

static void send_body(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len) {
  req->res.status = status;
  req->res.reason = reason_of(status);
  req->res.content_length = len;
  h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, content_type, strlen(content_type), 1);
  h2o_send_inline(req, body, len);
}

static void send_json_error(h2o_req_t *req, int status, const char *code, const char *msg) {
  h2o_iovec_t body = json_error_body(&req->pool, code, msg, strlen(msg));
  send_body(req, status, "application/json", body.base, body.len);
}

/* ---- errors h2o answers itself (413, 400, 404 before routing): JSON bodies too ---- */

typedef struct json_error_ostream {
  h2o_ostream_t super;
  h2o_iovec_t body;
  bool sent;
} json_error_ostream;

static void json_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state) {
  (void)bufs, (void)n;
  json_error_ostream *o = (json_error_ostream *)self;
  bool head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
  if (o->sent || head) {
    h2o_ostream_send_next(self, req, NULL, 0, state);
    return;
  }
  o->sent = true;
  h2o_ostream_send_next(self, req, &o->body, 1, state);
}

/* Registered on the fallback path only: requests our handler answers never pass here. */
static void on_setup_error_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot) {
  if (req->res.status >= 400) {
    server *s = ((error_filter *)self)->s;
    char msg[128];
    if (req->res.status == 413)
      snprintf(msg, sizeof msg, "the request body is larger than the limit of %zu bytes", s->max_body);
    else snprintf(msg, sizeof msg, "%s", req->res.reason ? req->res.reason : "error");
    json_error_ostream *o = (json_error_ostream *)h2o_add_ostream(req, sizeof *o, slot);
    o->super.do_send = json_error_send;
    o->body = json_error_body(&req->pool, error_code_of(req->res.status), msg, strlen(msg));
    o->sent = false;
    req->res.content_length = o->body.len;
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, H2O_STRLIT("application/json"), 1);
    slot = &o->super.next;
  }
  h2o_setup_next_ostream(req, slot);
}

/* ---- closing ---- */

static void free_fixed(server *s) {
  for (int i = 0; i < s->nfixed; i++) {
    free(s->fixed[i].path);
    free(s->fixed[i].content_type);
    free(s->fixed[i].token);
    if (s->fixed[i].body) h2o_mem_release_shared(s->fixed[i].body);
  }
  s->nfixed = 0;
}

/* The Lua references of the refresh functions (the server is closing or was never opened). */
static void unref_fixed(lua_State *L, server *s) {
  for (int i = 0; i < s->nfixed; i++) {
    luaL_unref(L, LUA_REGISTRYINDEX, s->fixed[i].refresh_ref);
    s->fixed[i].refresh_ref = LUA_NOREF;
  }
}

static void server_free(server *s) {
  if (s->config_ready) h2o_config_dispose(&s->config);
  if (s->reg) {
    if (s->prev) s->prev->next = s->next;
    else s->reg->first = s->next;
    if (s->next) s->next->prev = s->prev;
  }
  free_fixed(s);
  free(s);
}

static void on_timer_closed(uv_handle_t *h) {
  server *s = h->data;
  if (--s->closing_handles == 0) server_free(s);
}

/* h2o_context_dispose without its nested uv_run (libuv forbids that inside a callback): the
 * timers embedded in the context are closed with callbacks, and the server is freed in the last. */
static void dispose_context(server *s) {
  h2o_context_t *ctx = &s->ctx;
  for (size_t i = 0; s->config.hosts[i]; i++) {
    h2o_hostconf_t *hc = s->config.hosts[i];
    for (size_t j = 0; j < hc->paths.size; j++) h2o_context_dispose_pathconf_context(ctx, hc->paths.entries + j);
    h2o_context_dispose_pathconf_context(ctx, &hc->fallback_path);
  }
  free(ctx->_pathconfs_inited.entries);
  free(ctx->_module_configs);
  h2o_timeout_t *timeouts[] = {&ctx->zero_timeout,
                               &ctx->one_sec_timeout,
                               &ctx->hundred_ms_timeout,
                               &ctx->handshake_timeout,
                               &ctx->http1.req_timeout,
                               &ctx->http2.idle_timeout,
                               &ctx->http2.graceful_shutdown_timeout,
                               &ctx->proxy.io_timeout};
  for (size_t i = 0; i < sizeof timeouts / sizeof *timeouts; i++) {
    uv_timer_t *timer = &timeouts[i]->_backend.timer;
    timer->data = s;
    uv_close((uv_handle_t *)timer, on_timer_closed);
    s->closing_handles++;
  }
  h2o_filecache_destroy(ctx->filecache);
  for (size_t i = 0; i < ctx->storage.size; i++)
    if (ctx->storage.entries[i].dispose) ctx->storage.entries[i].dispose(ctx->storage.entries[i].data);
  free(ctx->storage.entries);
  h2o_multithread_unregister_receiver(ctx->queue, &ctx->receivers.hostinfo_getaddr);
  h2o_multithread_destroy_queue(ctx->queue);
  if (ctx->_timestamp_cache.value) h2o_mem_release_shared(ctx->_timestamp_cache.value);
}

/* Frees the server once nothing refers to it any more. */
static void server_maybe_finish(server *s) {
  if (!s->closing || s->disposing) return;
  if (!s->listener_closed || s->nconns > 0 || s->npending > 0) return;
  s->disposing = true;
  if (s->ctx_ready) dispose_context(s);
  if (s->closing_handles == 0) server_free(s);
}

static void on_listener_closed(uv_handle_t *h) {
  server *s = h->data;
  s->listener_closed = true;
  server_maybe_finish(s);
}

/* Both directions down: h2o sees end-of-file or a write error and closes the connection. */
static void shutdown_conn(conn *c) {
  uv_os_fd_t fd;
  if (!uv_is_closing((uv_handle_t *)&c->tcp) && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) shutdown(fd, SHUT_RDWR);
}

/* The one close: idempotent, for :close(), __gc, __close and shutdown. */
static void server_begin_close(server *s) {
  if (s->closing) return;
  s->closing = true;
  lua_State *L = dc_host_state(s->H);
  if (s->box) s->box->s = NULL;
  s->box = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, s->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
  s->handler_ref = s->self_ref = LUA_NOREF;
  unref_fixed(L, s);
  /* running handlers end now (their clients get a 503), except the one calling close */
  for (pending *p = s->pendings, *next; p; p = next) {
    next = p->next;
    if (p->task) dc_task_kill(p->task, "cancelled: the server was closed");
  }
  for (conn *c = s->conns; c; c = c->next) shutdown_conn(c);
  if (s->listener_ready) uv_close((uv_handle_t *)&s->listener, on_listener_closed);
  else s->listener_closed = true;
  server_maybe_finish(s);
}

/* ---- requests ---- */

static void on_pool_dispose(void *ptr) {
  pending *p = *(pending **)ptr;
  if (!p) return;
  p->req = NULL;
  p->slot = NULL;
}

/* Takes the request from p (NULL if the client left): it must not be used through p again. */
static h2o_req_t *detach(pending *p) {
  h2o_req_t *req = p->req;
  if (p->slot) *p->slot = NULL;
  p->slot = NULL;
  p->req = NULL;
  return req;
}

static void pending_free(pending *p) {
  server *s = p->s;
  detach(p);
  if (p->prev) p->prev->next = p->next;
  else s->pendings = p->next;
  if (p->next) p->next->prev = p->prev;
  s->npending--;
  free(p);
  server_maybe_finish(s);
}

static void set_lfield(lua_State *L, const char *key, h2o_iovec_t v) {
  lua_pushlstring(L, v.base ? v.base : "", v.base ? v.len : 0);
  lua_setfield(L, -2, key);
}

/* stack: headers table; adds name = value, joining repeats with ", " ("; " for cookies). */
static void add_header(lua_State *L, const char *name, size_t nlen, const char *value, size_t vlen) {
  lua_pushlstring(L, name, nlen);
  lua_pushvalue(L, -1);
  lua_rawget(L, -3); /* stack: headers name old */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushlstring(L, value, vlen);
  } else {
    lua_pushstring(L, nlen == 6 && memcmp(name, "cookie", 6) == 0 ? "; " : ", ");
    lua_pushlstring(L, value, vlen);
    lua_concat(L, 3);
  }
  lua_rawset(L, -3);
}

/* Protected: pushes the handler and the request table for pending p (light userdata). */
static int push_request(lua_State *L) {
  pending *p = lua_touserdata(L, 1);
  h2o_req_t *req = p->req;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->s->handler_ref);
  lua_createtable(L, 0, 9);
  set_lfield(L, "method", req->method);
  set_lfield(L, "path", req->path_normalized);
  bool has_query = req->query_at != SIZE_MAX && req->query_at < req->path.len;
  size_t raw_len = has_query ? req->query_at : req->path.len;
  set_lfield(L, "raw_path", h2o_iovec_init(req->path.base, raw_len));
  if (has_query)
    set_lfield(L, "query", h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1));
  else set_lfield(L, "query", h2o_iovec_init("", 0));
  lua_pushstring(L, req->version >= 0x200 ? "HTTP/2" : req->version == 0x100 ? "HTTP/1.0" : "HTTP/1.1");
  lua_setfield(L, -2, "version");
  lua_createtable(L, 0, (int)req->headers.size + 1);
  for (size_t i = 0; i < req->headers.size; i++) {
    const h2o_header_t *h = req->headers.entries + i;
    add_header(L, h->name->base, h->name->len, h->value.base, h->value.len);
  }
  lua_getfield(L, -1, "host");
  bool has_host = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (!has_host && req->authority.base) add_header(L, "host", 4, req->authority.base, req->authority.len);
  lua_setfield(L, -2, "headers");
  set_lfield(L, "body", req->entity);
  struct sockaddr_storage ss;
  char host[NI_MAXHOST], remote[NI_MAXHOST + 16] = "";
  if (req->conn->callbacks->get_peername) {
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len > 0 && h2o_socket_getnumerichost((struct sockaddr *)&ss, len, host) != SIZE_MAX) {
      int32_t port = h2o_socket_getport((struct sockaddr *)&ss);
      snprintf(remote, sizeof remote, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, (int)port);
    }
  }
  lua_pushstring(L, remote);
  lua_setfield(L, -2, "remote");
  return 2;
}

static bool is_token_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Headers h2o writes itself; a handler's copy would be duplicated or wrong. */
static bool is_managed_header(const char *lower, size_t n) {
  static const char *const names[] = {
      "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "date", "server", NULL};
  for (const char *const *p = names; *p; p++)
    if (strlen(*p) == n && memcmp(*p, lower, n) == 0) return true;
  return false;
}

/* stack of co: ... headers-table; reads it into *out without allocating Lua memory. */
static bool read_headers(lua_State *co, int idx, h2o_mem_pool_t *pool, h2o_headers_t *out, bool *has_type, char *why,
                         size_t whylen) {
  lua_pushnil(co);
  while (lua_next(co, idx) != 0) {
    if (lua_type(co, -2) != LUA_TSTRING) {
      lua_pop(co, 2);
      snprintf(why, whylen, "header names must be strings");
      return false;
    }
    size_t nlen, vlen;
    const char *name = lua_tolstring(co, -2, &nlen), *value;
    char number[64];
    if (lua_type(co, -1) == LUA_TSTRING) {
      value = lua_tolstring(co, -1, &vlen);
    } else if (lua_type(co, -1) == LUA_TNUMBER) {
      if (lua_isinteger(co, -1)) snprintf(number, sizeof number, "%lld", (long long)lua_tointeger(co, -1));
      else snprintf(number, sizeof number, "%.17g", (double)lua_tonumber(co, -1));
      value = number;
      vlen = strlen(number);
    } else {
      lua_pop(co, 2);
      snprintf(why, whylen, "header '%.64s' must be a string or a number", name);
      return false;
    }
    bool ok = nlen > 0 && nlen <= 256 && vlen <= 8192;
    for (size_t i = 0; ok && i < nlen; i++) ok = is_token_char((unsigned char)name[i]);
    for (size_t i = 0; ok && i < vlen; i++) ok = value[i] != '\r' && value[i] != '\n' && value[i] != '\0';
    if (!ok) {
      lua_pop(co, 2);
      snprintf(why, whylen, "header '%.64s' has an invalid name or value", name);
      return false;
    }
    char *lower = h2o_mem_alloc_pool(pool, nlen);
    for (size_t i = 0; i < nlen; i++) lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    if (!is_managed_header(lower, nlen)) {
      if (nlen == 12 && memcmp(lower, "content-type", 12) == 0) *has_type = true;
      h2o_iovec_t v = h2o_strdup(pool, value, vlen);
      h2o_add_header_by_str(pool, out, lower, nlen, 1, NULL, v.base, v.len);
    }
    lua_pop(co, 1);
  }
  return true;
}

/* Sends what the handler returned (status, headers, body); false with a reason if invalid. */
static bool send_result(h2o_req_t *req, lua_State *co, char *why, size_t whylen) {
  int isnum;
  lua_Integer status = lua_tointegerx(co, 1, &isnum);
  if (!isnum || status < 200 || status > 599) {
    snprintf(why, whylen, "the status must be an integer from 200 to 599 (got %s)", luaL_typename(co, 1));
    return false;
  }
  int type = lua_type(co, 2);
  if (type != LUA_TNIL && type != LUA_TNONE && type != LUA_TTABLE) {
    snprintf(why, whylen, "the headers must be a table (got %s)", luaL_typename(co, 2));
    return false;
  }
  type = lua_type(co, 3);
  if (type != LUA_TNIL && type != LUA_TNONE && type != LUA_TSTRING) {
    snprintf(why, whylen, "the body must be a string (got %s)", luaL_typename(co, 3));
    return false;
  }
  h2o_headers_t headers = {NULL, 0, 0};
  bool has_type = false;
  if (lua_type(co, 2) == LUA_TTABLE) {
    if (!lua_checkstack(co, 4)) {
      snprintf(why, whylen, "out of memory");
      return false;
    }
    if (!read_headers(co, 2, &req->pool, &headers, &has_type, why, whylen)) return false;
  }
  size_t len = 0;
  const char *body = lua_type(co, 3) == LUA_TSTRING ? lua_tolstring(co, 3, &len) : "";
  if (status == 204 || status == 304) len = 0;
  req->res.headers = headers;
  if (!has_type)
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; charset=utf-8"));
  req->res.status = (int)status;
  req->res.reason = reason_of((int)status);
  req->res.content_length = len;
  h2o_send_inline(req, body, len);
  return true;
}

/* The first line of an error message (the traceback stays in the log). */
static void first_line(const char *err, char *out, size_t outlen) {
  size_t n = strcspn(err ? err : "error", "\n");
  if (n >= outlen) n = outlen - 1;
  memcpy(out, err ? err : "error", n);
  out[n] = '\0';
}

static void on_task_done(dc_task *t, int status, const char *err, void *ud) {
  pending *p = ud;
  server *s = p->s;
  p->finished = true;
  p->task = NULL;
  h2o_req_t *req = detach(p);
  if (status != LUA_OK) {
    dc_log(s->H, DC_LOG_ERROR, "HTTP handler for %s failed: %s", p->what, err);
    if (req) {
      char msg[512];
      first_line(err, msg, sizeof msg);
      send_json_error(req, s->closing ? 503 : 500, s->closing ? "unavailable" : "internal", msg);
    }
  } else if (req) {
    char why[256];
    if (!send_result(req, dc_task_thread(t), why, sizeof why)) {
      dc_log(s->H, DC_LOG_ERROR, "HTTP handler for %s returned an invalid response: %s", p->what, why);
      req->res.headers = (h2o_headers_t){NULL, 0, 0};
      send_json_error(req, 500, "internal", why);
    }
  } else {
    dc_log(s->H, DC_LOG_DEBUG, "HTTP client for %s went away before the response", p->what);
  }
  if (!p->spawning) pending_free(p);
}

/* A fixed response for GET or HEAD on its path, or NULL. */
static fixed_response *fixed_for(server *s, h2o_req_t *req) {
  if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
      !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
    return NULL;
  for (int i = 0; i < s->nfixed; i++)
    if (h2o_memis(req->path_normalized.base, req->path_normalized.len, s->fixed[i].path, s->fixed[i].path_len))
      return &s->fixed[i];
  return NULL;
}

static void dispose_fixed_body(void *p) { free(((fixed_body *)p)->gzip); }

/* A shared body holding a copy of data (and its gzip form when asked), or NULL (out of memory). */
static fixed_body *fixed_body_new(const char *data, size_t len, bool gzip) {
  char *packed = NULL;
  size_t packed_len = 0;
  if (gzip && !(packed = dc_gzip(data, len, &packed_len))) return NULL;
  fixed_body *b = h2o_mem_alloc_shared(NULL, sizeof *b + len, dispose_fixed_body);
  b->gzip = packed, b->gzip_len = packed_len, b->len = len;
  memcpy(b->data, data, len);
  return b;
}

/* Hits on the fixed paths other than f (a refreshed body may count them, as /metrics does). */
static lua_Integer other_hits(server *s, fixed_response *f) {
  lua_Integer n = 0;
  for (int i = 0; i < s->nfixed; i++)
    if (&s->fixed[i] != f) n += s->fixed[i].hits;
  return n;
}

/* Whether f's body is out of date: never made, expired with srv:expire, older than max_age, or
 * made before the latest hit on another fixed path. */
static bool fixed_needs_refresh(server *s, fixed_response *f) {
  if (f->refresh_ref == LUA_NOREF) return false;
  return !f->body || f->stale || uv_now(dc_host_loop(s->H)) >= f->fresh_until || other_hits(s, f) != f->others_seen;
}

/* Calls f's refresh function for a new body; false (logged) when it fails. A body equal to the
 * current one keeps it, and its gzip form, as it is. */
static bool fixed_refresh(server *s, fixed_response *f) {
  lua_State *L = dc_host_state(s->H);
  lua_rawgeti(L, LUA_REGISTRYINDEX, f->refresh_ref);
  if (dc_pcall_policy(L, 0, 1) != LUA_OK) {
    dc_log(s->H, DC_LOG_ERROR, "HTTP server: refreshing %s: %s", f->path, lua_tostring(L, -1));
    lua_pop(L, 1);
    return false;
  }
  if (lua_type(L, -1) != LUA_TSTRING) {
    dc_log(s->H, DC_LOG_ERROR, "HTTP server: refreshing %s returned %s, not a string", f->path, luaL_typename(L, -1));
    lua_pop(L, 1);
    return false;
  }
  size_t len;
  const char *data = lua_tolstring(L, -1, &len);
  if (!f->body || f->body->len != len || memcmp(f->body->data, data, len) != 0) {
    fixed_body *b = fixed_body_new(data, len, f->gzip);
    if (!b) {
      dc_log(s->H, DC_LOG_ERROR, "HTTP server: refreshing %s: out of memory", f->path);
      lua_pop(L, 1);
      return false;
    }
    if (f->body) h2o_mem_release_shared(f->body);
    f->body = b;
  }
  lua_pop(L, 1);
  f->stale = false; /* expirations while it ran are in the new body */
  f->fresh_until = uv_now(dc_host_loop(s->H)) + f->max_age_ms;
  f->others_seen = other_hits(s, f);
  return true;
}

/* Whether the request carries `Authorization: Bearer TOKEN` with f's token, compared in constant
 * time. Any other form goes to the handler, which applies the API's full rule. */
static bool fixed_authorized(fixed_response *f, h2o_req_t *req) {
  if (!f->token) return true;
  ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
  if (i < 0) return false;
  h2o_iovec_t v = req->headers.entries[i].value;
  static const char scheme[] = "bearer ";
  size_t n = sizeof scheme - 1;
  if (v.len != n + f->token_len || strncasecmp(v.base, scheme, n) != 0) return false;
  unsigned char diff = 0;
  for (size_t k = 0; k < f->token_len; k++) diff |= (unsigned char)(v.base[n + k] ^ f->token[k]);
  return diff == 0;
}

/* Whether the request takes the gzip form. */
static bool request_accepts_gzip(h2o_req_t *req) {
  dc_accept_gzip a;
  dc_accept_gzip_init(&a);
  for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT_ENCODING, i)) != -1;)
    dc_accept_gzip_parse(&a, req->headers.entries[i].value.base, req->headers.entries[i].value.len);
  return dc_accept_gzip_result(&a);
}

/* Sends f's body (its gzip form where the client takes it) without copying it. */
static void send_fixed(h2o_req_t *req, fixed_response *f) {
  static h2o_generator_t generator = {NULL, NULL};
  fixed_body *b = f->body;
  bool packed = b->gzip && request_accepts_gzip(req);
  h2o_iovec_t buf = packed ? h2o_iovec_init(b->gzip, b->gzip_len) : h2o_iovec_init(b->data, b->len);
  req->res.status = f->status;
  req->res.reason = reason_of(f->status);
  req->res.content_length = buf.len;
  h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, f->content_type, strlen(f->content_type), 1);
  if (f->gzip) h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, H2O_STRLIT("Accept-Encoding"), 1);
  if (packed) h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_ENCODING, H2O_STRLIT("gzip"), 1);
  h2o_mem_link_shared(&req->pool, b);
  h2o_start_response(req, &generator);
  if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
  else h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
  server *s = ((route_handler *)self)->s;
  if (s->closing) {
    send_json_error(req, 503, "unavailable", "the server is closing");
    return 0;
  }
  /* a fixed path the request may not have as it is (no token, a failed refresh) goes to the
   * handler, which answers as it would without the fixed response */
  fixed_response *f = fixed_for(s, req);
  if (f && fixed_authorized(f, req) && (!fixed_needs_refresh(s, f) || fixed_refresh(s, f))) {
    if (s->closing) { /* the refresh closed it */
      send_json_error(req, 503, "unavailable", "the server is closing");
      return 0;
    }
    f->hits++;
    send_fixed(req, f);
    return 0;
  }
  if (req->entity.base && req->entity.len > s->max_body) { /* h2o enforces it; belt and braces */
    send_json_error(req, 413, "too_large", "the request body is too large");
    return 0;
  }
  if (s->npending >= MAX_PENDING) {
    send_json_error(req, 503, "unavailable", "too many requests in flight");
    return 0;
  }
  pending *p = calloc(1, sizeof *p);
  if (!p) {
    send_json_error(req, 503, "unavailable", "out of memory");
    return 0;
  }
  p->s = s;
  p->req = req;
  p->slot = h2o_mem_alloc_shared(&req->pool, sizeof *p->slot, on_pool_dispose);
  *p->slot = p;
  snprintf(p->what, sizeof p->what, "%.*s %.*s", (int)(req->method.len > 16 ? 16 : req->method.len), req->method.base,
           (int)(req->path_normalized.len > 100 ? 100 : req->path_normalized.len), req->path_normalized.base);
  p->next = s->pendings;
  if (s->pendings) s->pendings->prev = p;
  s->pendings = p;
  s->npending++;

  lua_State *L = dc_host_state(s->H);
  lua_pushcfunction(L, push_request);
  lua_pushlightuserdata(L, p);
  if (dc_pcall(L, 1, 2) != LUA_OK) { /* out of memory under the heap cap */
    dc_log(s->H, DC_LOG_ERROR, "HTTP request %s: %s", p->what, lua_tostring(L, -1));
    lua_pop(L, 1);
    send_json_error(detach(p), 503, "unavailable", "out of memory");
    pending_free(p);
    return 0;
  }
  p->spawning = true;
  dc_task *t = dc_task_spawn(L, 1, p->what, 0, on_task_done, p);
  p->spawning = false;
  if (!t) {
    if (!p->finished) send_json_error(detach(p), 503, "unavailable", "too many tasks alive");
    pending_free(p);
  } else if (p->finished) {
    pending_free(p);
  } else {
    p->task = t;
  }
  return 0;
}

/* ---- connections ---- */

static void on_conn_closed(uv_handle_t *h) {
  conn *c = (conn *)h;
  server *s = c->s;
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  free(c);
  server_maybe_finish(s);
}

static void on_accept(uv_stream_t *listener, int status) {
  server *s = listener->data;
  if (status != 0 || s->closing) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) return;
  uv_tcp_init(listener->loop, &c->tcp);
  c->s = s;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || s->nconns > MAX_CONNECTIONS) {
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_closed);
  h2o_accept(&s->accept, sock);
}

/* ---- listening ---- */

static int parse_address(const char *host, int port, struct sockaddr_storage *ss) {
  char buf[INET6_ADDRSTRLEN];
  size_t n = strlen(host);
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof buf) {
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    host = buf;
  }
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return UV_EINVAL;
}

static int server_start(server *s, const char *host, int port, double timeout) {
  uv_loop_t *loop = dc_host_loop(s->H);
  uint64_t timeout_ms = (uint64_t)(timeout * 1000);
  h2o_config_init(&s->config);
  s->config_ready = true;
  s->config.server_name = h2o_iovec_init(H2O_STRLIT("dconn"));
  s->config.max_request_entity_size = s->max_body;
  s->config.http1.req_timeout = timeout_ms;
  s->config.http2.idle_timeout = timeout_ms;
  h2o_hostconf_t *hc = h2o_config_register_host(&s->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
  h2o_pathconf_t *pc = h2o_config_register_path(hc, "/", 0);
  route_handler *rh = (route_handler *)h2o_create_handler(pc, sizeof *rh);
  rh->super.on_req = on_req;
  rh->s = s;
  error_filter *ef = (error_filter *)h2o_create_filter(&hc->fallback_path, sizeof *ef);
  ef->super.on_setup_ostream = on_setup_error_ostream;
  ef->s = s;
  h2o_context_init(&s->ctx, loop, &s->config);
  s->ctx_ready = true;
  s->accept.ctx = &s->ctx;
  s->accept.hosts = s->config.hosts;

  struct sockaddr_storage ss;
  int r = parse_address(host, port, &ss);
  if (r != 0) return r;
  r = uv_tcp_init(loop, &s->listener);
  if (r != 0) return r;
  s->listener_ready = true;
  s->listener.data = s;
  if ((r = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0)) != 0) return r;
  if ((r = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_accept)) != 0) return r;
  int len = sizeof ss;
  if ((r = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len)) != 0) return r;
  char ip[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    snprintf(s->address, sizeof s->address, "[%s]:%d", ip, s->port);
  } else {
    uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    snprintf(s->address, sizeof s->address, "%s:%d", ip, s->port);
  }
  return 0;
}

static void on_sigpipe(int sig) { (void)sig; }

/* A write to a client that left (or to a closed stdout: `dconn runs | head -1`) must fail with
 * EPIPE, not kill the process. A handler rather than SIG_IGN: handlers are reset by exec, so
 * programs a policy starts get the default back. */
void dc_survive_sigpipe(void) {
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) != 0 || old.sa_handler != SIG_DFL) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigpipe;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
}

/* The host's registry of servers, created on first use. */
static registry *registry_of(lua_State *L, bool create) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &REGISTRY_KEY);
  registry *reg = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (reg || !create) return reg;
  reg = lua_newuserdatauv(L, sizeof *reg, 0);
  reg->first = NULL;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &REGISTRY_KEY);
  return reg;
}

static const char *const LISTEN_KEYS[] = {"host", "port", "handler", "max_body", "timeout", "fixed", NULL};
static const char *const FIXED_KEYS[] = {"path",    "status", "content_type", "body", "refresh",
                                         "max_age", "gzip",   "token",        NULL};

/* Checks opts.fixed (opts at idx); raises on a bad entry. Allocates nothing, so that it can run
 * before the server exists. Leaves the list (or nil) on the stack. */
static void check_fixed(lua_State *L, int idx) {
  if (lua_getfield(L, idx, "fixed") == LUA_TNIL) return;
  if (!lua_istable(L, -1)) luaL_error(L, "server.listen: 'fixed' must be a list of {path=, status=, body=}");
  lua_Integer n = luaL_len(L, -1);
  if (n > MAX_FIXED) luaL_error(L, "server.listen: at most %d fixed responses", MAX_FIXED);
  for (lua_Integer i = 1; i <= n; i++) {
    int e = lua_gettop(L) + 1;
    if (lua_geti(L, -1, i) != LUA_TTABLE) luaL_error(L, "server.listen: fixed[%d] must be a table", (int)i);
    dc_opts_check(L, e, "server.listen fixed", FIXED_KEYS);
    const char *path = NULL, *type = NULL, *token = NULL;
    lua_Integer status = 200;
    lua_Number max_age = 1;
    bool gzip = false;
    dc_opt_string(L, e, "server.listen fixed", "path", &path, NULL);
    dc_opt_string(L, e, "server.listen fixed", "content_type", &type, NULL);
    dc_opt_integer(L, e, "server.listen fixed", "status", 200, 599, &status);
    dc_opt_number(L, e, "server.listen fixed", "max_age", 0, 86400, &max_age);
    dc_opt_boolean(L, e, "server.listen fixed", "gzip", &gzip);
    if (dc_opt_string(L, e, "server.listen fixed", "token", &token, NULL) && !*token)
      luaL_error(L, "server.listen: fixed[%d].token must not be empty", (int)i);
    if (!path || path[0] != '/') luaL_error(L, "server.listen: fixed[%d].path must start with /", (int)i);
    int refresh = lua_getfield(L, e, "refresh");
    if (refresh != LUA_TNIL && refresh != LUA_TFUNCTION)
      luaL_error(L, "server.listen: fixed[%d].refresh must be a function", (int)i);
    int t = lua_getfield(L, e, "body");
    if (t != LUA_TNIL && t != LUA_TSTRING) luaL_error(L, "server.listen: fixed[%d].body must be a string", (int)i);
    if (t != LUA_TNIL && refresh != LUA_TNIL)
      luaL_error(L, "server.listen: fixed[%d] has both a body and a refresh function", (int)i);
    if (t == LUA_TSTRING && luaL_len(L, -1) > MAX_FIXED_BODY)
      luaL_error(L, "server.listen: fixed[%d].body is over %d bytes", (int)i, MAX_FIXED_BODY);
    lua_settop(L, e - 1);
  }
}

/* Copies the checked list at the top of the stack (or nil) into s; false when out of memory. */
static bool copy_fixed(lua_State *L, server *s) {
  if (lua_isnil(L, -1)) return true;
  lua_Integer n = luaL_len(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    int e = lua_gettop(L) + 1;
    lua_geti(L, -1, i);
    fixed_response *f = &s->fixed[s->nfixed++];
    memset(f, 0, sizeof *f);
    f->refresh_ref = LUA_NOREF;
    const char *path = NULL, *type = "application/json", *token = NULL;
    lua_Integer status = 200;
    lua_Number max_age = 1;
    dc_opt_string(L, e, "server.listen fixed", "path", &path, NULL);
    dc_opt_string(L, e, "server.listen fixed", "content_type", &type, NULL);
    dc_opt_string(L, e, "server.listen fixed", "token", &token, NULL);
    dc_opt_integer(L, e, "server.listen fixed", "status", 200, 599, &status);
    dc_opt_number(L, e, "server.listen fixed", "max_age", 0, 86400, &max_age);
    dc_opt_boolean(L, e, "server.listen fixed", "gzip", &f->gzip);
    f->status = (int)status;
    f->max_age_ms = (uint64_t)(max_age * 1000);
    f->path = strdup(path);
    f->content_type = strdup(type);
    f->token = token ? strdup(token) : NULL;
    if (!f->path || !f->content_type || (token && !f->token)) return false;
    f->path_len = strlen(f->path), f->token_len = token ? strlen(token) : 0;
    if (lua_getfield(L, e, "refresh") == LUA_TFUNCTION) {
      f->refresh_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
      lua_pop(L, 1);
      size_t len = 0;
      const char *body = lua_getfield(L, e, "body") == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
      f->body = fixed_body_new(body, len, f->gzip);
      lua_pop(L, 1);
      if (!f->body) return false;
    }
    lua_settop(L, e - 1);
  }
  return true;
}

/* server.listen{host=, port=, handler=, max_body=, timeout=} -> server | nil, err */
static int server_listen(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  dc_host *H = dc_host_of(L);
  if (dc_host_options_of(H)->check_only)
    return luaL_error(L, "dconn.server.listen: not allowed while checking a policy (no I/O)");
  dc_opts_check(L, 1, "server.listen", LISTEN_KEYS);
  const char *host = DEFAULT_HOST;
  if (dc_opt_string(L, 1, "server.listen", "host", &host, NULL) && !*host)
    return luaL_error(L, "server.listen: 'host' must be a non-empty string");
  lua_Integer port = DEFAULT_PORT, max_body = DEFAULT_MAX_BODY;
  dc_opt_integer(L, 1, "server.listen", "port", 0, 65535, &port);
  dc_opt_integer(L, 1, "server.listen", "max_body", 0, MAX_MAX_BODY, &max_body);
  lua_Number timeout = DEFAULT_TIMEOUT;
  dc_opt_number(L, 1, "server.listen", "timeout", 0.001, 86400, &timeout);
  if (!dc_opt_push(L, 1, "server.listen", "handler", LUA_TFUNCTION))
    return luaL_error(L, "server.listen: 'handler' must be a function");
  check_fixed(L, 1);
  lua_insert(L, -2); /* stack: opts fixed handler */
  registry *reg = registry_of(L, true);
  server_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->s = NULL; /* closed until the listener is up */
  luaL_setmetatable(L, SERVER_MT);
  /* stack: opts fixed handler box */
  server *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "server.listen: out of memory");
  s->H = H;
  s->max_body = (size_t)max_body;
  lua_pushvalue(L, -3);
  bool copied = copy_fixed(L, s);
  lua_pop(L, 1);
  if (!copied) {
    unref_fixed(L, s);
    free_fixed(s);
    free(s);
    return luaL_error(L, "server.listen: out of memory");
  }
  s->handler_ref = s->self_ref = LUA_NOREF;
  s->reg = reg;
  s->next = reg->first;
  if (reg->first) reg->first->prev = s;
  reg->first = s;
  lua_pushvalue(L, -2);
  s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* an open server is not garbage */
  dc_survive_sigpipe();
  int r = server_start(s, host, (int)port, timeout);
  if (r != 0) {
    server_begin_close(s);
    lua_pushnil(L);
    bool v6 = strchr(host, ':') && host[0] != '[';
    lua_pushfstring(L, "cannot listen on %s%s%s:%d: %s", v6 ? "[" : "", host, v6 ? "]" : "", (int)port, uv_strerror(r));
    return 2;
  }
  box->s = s;
  s->box = box;
  return 1;
}

/* ---- methods ---- */

static server *check_open(lua_State *L) {
  server_box *box = luaL_checkudata(L, 1, SERVER_MT);
  if (!box->s) luaL_error(L, "dconn.server: the server is closed");
  return box->s;
}

static int server_port(lua_State *L) {
  lua_pushinteger(L, check_open(L)->port);
  return 1;
}

static int server_address(lua_State *L) {
  lua_pushstring(L, check_open(L)->address);
  return 1;
}

static int server_fixed_hits(lua_State *L) {
  server *s = check_open(L);
  lua_createtable(L, 0, s->nfixed);
  for (int i = 0; i < s->nfixed; i++) {
    lua_pushinteger(L, s->fixed[i].hits);
    lua_setfield(L, -2, s->fixed[i].path);
  }
  return 1;
}

/* srv:expire(path): the next request for the fixed path calls its refresh function first; a
 * closed server ignores it (a metrics hook may fire after the API stopped). */
static int server_expire(lua_State *L) {
  server_box *box = luaL_checkudata(L, 1, SERVER_MT);
  const char *path = luaL_checkstring(L, 2);
  if (!box->s) return 0;
  for (int i = 0; i < box->s->nfixed; i++)
    if (strcmp(box->s->fixed[i].path, path) == 0) {
      box->s->fixed[i].stale = true;
      return 0;
    }
  return luaL_error(L, "dconn.server: no fixed response on %s", path);
}

static int server_close(lua_State *L) {
  server_box *box = luaL_checkudata(L, 1, SERVER_MT);
  if (box->s) server_begin_close(box->s);
  lua_pushboolean(L, 1);
  return 1;
}

static int server_tostring(lua_State *L) {
  server_box *box = luaL_checkudata(L, 1, SERVER_MT);
  if (box->s) lua_pushfstring(L, "dconn.server (%s)", box->s->address);
  else lua_pushliteral(L, "dconn.server (closed)");
  return 1;
}

static const luaL_Reg server_functions[] = {
    {"listen", server_listen},
    {NULL, NULL},
};

static const luaL_Reg server_methods[] = {
    {"port", server_port},     {"address", server_address}, {"fixed_hits", server_fixed_hits},
    {"expire", server_expire}, {"close", server_close},     {NULL, NULL},
};

static const luaL_Reg server_metamethods[] = {
    {"__gc", server_close},
    {"__close", server_close},
    {"__tostring", server_tostring},
    {NULL, NULL},
};

int luaopen_dconn_server(lua_State *L) {
  if (luaL_newmetatable(L, SERVER_MT)) {
    luaL_setfuncs(L, server_metamethods, 0);
    luaL_newlib(L, server_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, server_functions);
  return 1;
}

/* ---- shutdown ---- */

static void on_guard(uv_timer_t *t) { *(bool *)t->data = true; }
static void free_handle(uv_handle_t *h) {
  free(h->data);
  free(h);
}

void dc_server_close_all(dc_host *H) {
  lua_State *L = dc_host_state(H);
  registry *reg = registry_of(L, false);
  if (!reg || !reg->first) return;
  for (server *s = reg->first, *next; s; s = next) {
    next = s->next;
    server_begin_close(s);
  }
  if (!reg->first) return;
  /* the close callbacks need the loop; this runs outside uv_run, after the tasks were killed */
  uv_loop_t *loop = dc_host_loop(H);
  uv_timer_t *guard = malloc(sizeof *guard);
  bool *expired = malloc(sizeof *expired);
  if (guard && expired) {
    *expired = false;
    uv_timer_init(loop, guard);
    guard->data = expired;
    uv_timer_start(guard, on_guard, CLOSE_ALL_DEADLINE_MS, 0);
    while (reg->first && !*expired) uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)guard, free_handle);
  } else {
    free(guard);
    free(expired);
  }
  for (server *s = reg->first; s; s = s->next) {
    dc_log(H, DC_LOG_WARNING, "HTTP server on %s did not close in time", s->address);
    s->reg = NULL;
  }
  reg->first = NULL;
}
