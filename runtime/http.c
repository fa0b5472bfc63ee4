/*
 * The HTTP engine (see http.h); its Lua face, the native module "dconn.httpc", is http_lua.c.
 *
 * One CURLM per host, lazily created on the first request (curl_global_init included, so a
 * policy that never speaks HTTP pays nothing). libcurl tells us which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION -> one uv_poll_t each) and when to call it back
 * (CURLMOPT_TIMERFUNCTION -> one uv_timer_t); we feed readiness back with
 * curl_multi_socket_action and collect finished transfers with curl_multi_info_read.
 */
#include "http.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "version.h"

/* Response headers past this many bytes abort the transfer (libcurl caps each line only). */
#define MAX_HEADER_BYTES ((size_t)1 << 20)

typedef struct engine engine;

/* One socket libcurl asked us to watch. */
typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  engine *E;
  struct sock_ctx *prev, *next;
} sock_ctx;

struct engine {
  dc_host *H;
  CURLM *multi;
  CURLSH *share; /* TLS sessions shared by every transfer of the host */
  uv_timer_t *timer;
  sock_ctx *socks;
  dc_http_op *ops;        /* in flight */
  dc_http_op *done_head;  /* finished, waiting for delivery (FIFO) */
  dc_http_op *done_tail;
  int in_flight;
  bool closing;
  engine *next;
};

struct dc_http_op {
  engine *E;
  CURL *easy;
  struct curl_slist *headers;
  struct curl_slist *connect_to; /* tls.connect_to: one HOST:PORT:CONNECT-HOST:CONNECT-PORT */
  dc_http_done_fn done;
  void *ud;
  char *body;
  size_t body_len, body_cap, max_body;
  dc_http_header *hdrs; /* name and value malloc'd */
  size_t nhdrs, hdrs_cap, hdr_bytes;
  bool too_large, out_of_memory, delivering;
  bool canceled;  /* by the shutdown: done hears DC_HTTP_ERR_CANCELED */
  bool abandoned; /* by dc_http_cancel while queued: done is not called */
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
  dc_http_op *prev, *next;
};

/* Engines by host. A plain C list rather than a registry entry: the C API must find the engine
 * without allocating in the Lua heap, where the memory cap could make it fail. */
static engine *engines;

static engine *engine_find(const dc_host *H) {
  for (engine *E = engines; E; E = E->next)
    if (E->H == H) return E;
  return NULL;
}

/* ---- loop handles: referenced only while requests are in flight, so idle keep-alive
 * connections never keep the loop (and so the process) running ---- */

static void set_refs(engine *E) {
  bool busy = E->in_flight > 0;
  void (*fn)(uv_handle_t *) = busy ? uv_ref : uv_unref;
  fn((uv_handle_t *)E->timer);
  for (sock_ctx *s = E->socks; s; s = s->next) fn((uv_handle_t *)&s->poll);
}

/* Frees a handle allocated on its own, or a sock_ctx (its poll is the first member). */
static void free_on_close(uv_handle_t *h) { free(h); }

static void sock_release(sock_ctx *s) {
  engine *E = s->E;
  if (s->prev) s->prev->next = s->next;
  else E->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  uv_close((uv_handle_t *)&s->poll, free_on_close);
}

static void check_done(engine *E);

static void on_poll(uv_poll_t *handle, int status, int events) {
  sock_ctx *s = handle->data;
  engine *E = s->E;
  int flags = 0;
  if (status < 0) flags |= CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(E->multi, s->fd, flags, &running);
  check_done(E);
}

static void on_timer(uv_timer_t *t) {
  engine *E = t->data;
  int running;
  curl_multi_socket_action(E->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(E);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching one socket. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)easy;
  engine *E = userp;
  sock_ctx *s = socketp;
  if (E->closing) return 0; /* our polls are already closed */
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      curl_multi_assign(E->multi, fd, NULL);
      sock_release(s);
    }
    return 0;
  }
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) return -1;
    if (uv_poll_init_socket(dc_host_loop(E->H), &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    s->fd = fd;
    s->E = E;
    s->next = E->socks;
    if (E->socks) E->socks->prev = s;
    E->socks = s;
    if (E->in_flight == 0) uv_unref((uv_handle_t *)&s->poll);
    curl_multi_assign(E->multi, fd, s);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  return uv_poll_start(&s->poll, events, on_poll) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION: one timer for the whole multi handle; -1 stops it. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  engine *E = userp;
  if (E->closing) return 0;
  if (timeout_ms < 0) uv_timer_stop(E->timer);
  else uv_timer_start(E->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static engine *engine_get(dc_host *H, char *err, size_t errlen) {
  engine *E = engine_find(H);
  if (E) return E;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(err, errlen, "cannot initialise libcurl");
    return NULL;
  }
  E = calloc(1, sizeof *E);
  if (!E) goto fail;
  E->H = H;
  E->timer = malloc(sizeof *E->timer);
  if (!E->timer) goto fail;
  E->multi = curl_multi_init();
  if (!E->multi) goto fail;
  E->share = curl_share_init();
  if (!E->share) goto fail;
  curl_share_setopt(E->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_multi_setopt(E->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(E->multi, CURLMOPT_SOCKETDATA, E);
  curl_multi_setopt(E->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(E->multi, CURLMOPT_TIMERDATA, E);
  uv_timer_init(dc_host_loop(H), E->timer); /* cannot fail */
  E->timer->data = E;
  uv_unref((uv_handle_t *)E->timer);
  E->next = engines;
  engines = E;
  return E;
fail:
  if (E) {
    if (E->share) curl_share_cleanup(E->share);
    if (E->multi) curl_multi_cleanup(E->multi);
    free(E->timer);
    free(E);
  }
  curl_global_cleanup();
  snprintf(err, errlen, "out of memory");
  return NULL;
}

/* ---- one request ---- */

static void headers_reset(dc_http_op *op) {
  for (size_t i = 0; i < op->nhdrs; i++) {
    free((char *)op->hdrs[i].name);
    free((char *)op->hdrs[i].value);
  }
  op->nhdrs = 0;
}

static void op_free(dc_http_op *op) {
  if (op->easy) curl_easy_cleanup(op->easy);
  curl_slist_free_all(op->headers);
  curl_slist_free_all(op->connect_to);
  headers_reset(op);
  free(op->hdrs);
  free(op->body);
  free(op);
}

static void op_unlink(dc_http_op *op) {
  engine *E = op->E;
  if (op->prev) op->prev->next = op->next;
  else E->ops = op->next;
  if (op->next) op->next->prev = op->prev;
  op->prev = op->next = NULL;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
  dc_http_op *op = ud;
  size_t len = size * n;
  if (len > op->max_body - op->body_len) {
    op->too_large = true;
    return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (op->body_len + len + 1 > op->body_cap) {
    size_t cap = op->body_cap ? op->body_cap : 16384;
    while (cap < op->body_len + len + 1) cap *= 2;
    char *p = realloc(op->body, cap);
    if (!p) {
      op->out_of_memory = true;
      return 0;
    }
    op->body = p;
    op->body_cap = cap;
  }
  memcpy(op->body + op->body_len, data, len);
  op->body_len += len;
  op->body[op->body_len] = '\0';
  return len;
}

static char *dup_span(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

/* Appends sep + text to *value (a malloc'd string); false when out of memory. */
static bool append_value(const char **value, const char *sep, const char *text, size_t n) {
  size_t old = strlen(*value), seplen = strlen(sep);
  char *p = realloc((char *)*value, old + seplen + n + 1);
  if (!p) return false;
  memcpy(p + old, sep, seplen);
  memcpy(p + old + seplen, text, n);
  p[old + seplen + n] = '\0';
  *value = p;
  return true;
}

/* One header line: a status line starts a new response (redirects, 100 Continue), so only the
 * final response's headers are kept; names are lowercased and repeats joined with ", ". */
static size_t on_header(char *line, size_t size, size_t n, void *ud) {
  dc_http_op *op = ud;
  size_t len = size * n;
  op->hdr_bytes += len;
  if (op->hdr_bytes > MAX_HEADER_BYTES) {
    op->too_large = true;
    return 0;
  }
  if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    headers_reset(op);
    return len;
  }
  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n')) len--;
  if (len == 0) return size * n;
  if ((line[0] == ' ' || line[0] == '\t') && op->nhdrs > 0) { /* obsolete line folding */
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    if (!append_value(&op->hdrs[op->nhdrs - 1].value, " ", line + i, len - i)) goto oom;
    return size * n;
  }
  const char *colon = memchr(line, ':', len);
  if (!colon || colon == line) return size * n; /* not a header: ignore */
  size_t name_len = (size_t)(colon - line);
  const char *v = colon + 1, *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t')) v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
  char *name = dup_span(line, name_len);
  if (!name) goto oom;
  for (char *c = name; *c; c++) *c = (char)tolower((unsigned char)*c);
  for (size_t i = 0; i < op->nhdrs; i++) {
    if (strcmp(op->hdrs[i].name, name) == 0) {
      free(name);
      if (!append_value(&op->hdrs[i].value, ", ", v, (size_t)(end - v))) goto oom;
      return size * n;
    }
  }
  if (op->nhdrs == op->hdrs_cap) {
    size_t cap = op->hdrs_cap ? op->hdrs_cap * 2 : 16;
    dc_http_header *p = realloc(op->hdrs, cap * sizeof *p);
    if (!p) {
      free(name);
      goto oom;
    }
    op->hdrs = p;
    op->hdrs_cap = cap;
  }
  char *value = dup_span(v, (size_t)(end - v));
  if (!value) {
    free(name);
    goto oom;
  }
  op->hdrs[op->nhdrs].name = name;
  op->hdrs[op->nhdrs].value = value;
  op->nhdrs++;
  return size * n;
oom:
  op->out_of_memory = true;
  return 0;
}

static dc_http_error error_of(const dc_http_op *op) {
  if (op->too_large) return DC_HTTP_ERR_TOO_LARGE;
  if (op->out_of_memory) return DC_HTTP_ERR_OTHER;
  switch (op->result) {
  case CURLE_OK: return DC_HTTP_OK;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return DC_HTTP_ERR_DNS;
  case CURLE_COULDNT_CONNECT: return DC_HTTP_ERR_CONNECT;
  case CURLE_OPERATION_TIMEDOUT: return DC_HTTP_ERR_TIMEOUT;
  case CURLE_FILESIZE_EXCEEDED: return DC_HTTP_ERR_TOO_LARGE;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED: return DC_HTTP_ERR_TLS;
  case CURLE_PARTIAL_FILE:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_HTTP3:
  case CURLE_BAD_CONTENT_ENCODING:
  case CURLE_TOO_MANY_REDIRECTS:
  case CURLE_RANGE_ERROR: return DC_HTTP_ERR_PROTOCOL;
  case CURLE_ABORTED_BY_CALLBACK: return DC_HTTP_ERR_CANCELED;
  default: return DC_HTTP_ERR_OTHER;
  }
}

const char *dc_http_error_kind(dc_http_error err) {
  static const char *const names[] = {"ok",        "dns",      "connect",  "tls",  "timeout",
                                      "too_large", "protocol", "canceled", "other"};
  return (unsigned)err < sizeof names / sizeof *names ? names[err] : "other";
}

static const char *version_text(long v) {
  switch (v) {
  case CURL_HTTP_VERSION_1_0: return "1.0";
  case CURL_HTTP_VERSION_2_0: return "2";
  case CURL_HTTP_VERSION_3: return "3";
  default: return "1.1";
  }
}

/* Calls done for one finished (or cancelled) request. */
static void deliver(dc_http_op *op) {
  dc_http_error err = op->canceled ? DC_HTTP_ERR_CANCELED : error_of(op);
  if (err != DC_HTTP_OK) {
    char message[CURL_ERROR_SIZE + 64];
    if (err == DC_HTTP_ERR_TOO_LARGE)
      snprintf(message, sizeof message, "the response is larger than the cap of %zu bytes",
               op->hdr_bytes > MAX_HEADER_BYTES ? MAX_HEADER_BYTES : op->max_body);
    else if (op->canceled) snprintf(message, sizeof message, "canceled: the runtime is shutting down");
    else if (op->out_of_memory) snprintf(message, sizeof message, "out of memory reading the response");
    else snprintf(message, sizeof message, "%s", op->errbuf[0] ? op->errbuf : curl_easy_strerror(op->result));
    op->done(NULL, err, message, op->ud);
    return;
  }
  dc_http_response resp = {
      .body = op->body ? op->body : "", .body_len = op->body_len, .headers = op->hdrs, .header_count = op->nhdrs};
  long version = 0;
  char *url = NULL;
  curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &resp.status);
  curl_easy_getinfo(op->easy, CURLINFO_HTTP_VERSION, &version);
  curl_easy_getinfo(op->easy, CURLINFO_EFFECTIVE_URL, &url);
  curl_easy_getinfo(op->easy, CURLINFO_TOTAL_TIME, &resp.total_time);
  resp.http_version = version_text(version);
  resp.effective_url = url ? url : "";
  op->done(&resp, DC_HTTP_OK, NULL, op->ud);
}

static void queue_done(engine *E, dc_http_op *op) {
  curl_multi_remove_handle(E->multi, op->easy);
  op_unlink(op);
  E->in_flight--;
  op->delivering = true;
  if (E->done_tail) E->done_tail->next = op;
  else E->done_head = op;
  E->done_tail = op;
}

/* Delivers queued results one at a time. A done callback may start requests or cancel queued
 * ones (they are marked and skipped), so the queue is re-read after every call. */
static void deliver_queue(engine *E) {
  while (E->done_head) {
    dc_http_op *op = E->done_head;
    E->done_head = op->next;
    if (!E->done_head) E->done_tail = NULL;
    op->next = NULL;
    if (!op->abandoned) deliver(op);
    op_free(op);
  }
}

/* Collects finished transfers first, then delivers: removing handles while reading curl's
 * message queue would be fragile. */
static void check_done(engine *E) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(E->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    dc_http_op *op = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&op);
    op->result = msg->data.result;
    queue_done(E, op);
  }
  if (E->done_head) {
    deliver_queue(E);
    set_refs(E);
  }
}

/* "Name: value" for libcurl's list; an empty value needs "Name;" to be sent at all. */
static bool add_header(struct curl_slist **list, const char *name, const char *value) {
  size_t nl = strlen(name), vl = strlen(value);
  char *line = malloc(nl + vl + 3);
  if (!line) return false;
  if (vl == 0) snprintf(line, nl + 2, "%s;", name);
  else snprintf(line, nl + vl + 3, "%s: %s", name, value);
  struct curl_slist *p = curl_slist_append(*list, line);
  free(line);
  if (!p) return false;
  *list = p;
  return true;
}

static long to_ms(double seconds) {
  if (seconds <= 0) return 0;
  if (seconds > 1e6) seconds = 1e6; /* beyond any sensible timeout; keeps the product in a long */
  long ms = (long)ceil(seconds * 1000);
  return ms > 0 ? ms : 1;
}

#define SET(opt, val)                                                                                                  \
  do {                                                                                                                 \
    if (curl_easy_setopt(op->easy, opt, val) != CURLE_OK) {                                                            \
      why = #opt;                                                                                                      \
      goto fail;                                                                                                       \
    }                                                                                                                  \
  } while (0)

dc_http_op *dc_http_start(dc_host *H, const dc_http_request *req, dc_http_done_fn done, void *ud, char *err,
                          size_t errlen) {
  const char *why = "out of memory";
  engine *E = engine_get(H, err, errlen);
  if (!E) return NULL;
  if (E->closing) {
    snprintf(err, errlen, "the runtime is shutting down");
    return NULL;
  }
  if (E->in_flight >= DC_HTTP_MAX_IN_FLIGHT) {
    snprintf(err, errlen, "too many requests in flight (the cap is %d)", DC_HTTP_MAX_IN_FLIGHT);
    return NULL;
  }
  dc_http_op *op = calloc(1, sizeof *op);
  if (!op) goto fail;
  op->E = E;
  op->done = done;
  op->ud = ud;
  op->max_body = req->max_body ? req->max_body : DC_HTTP_DEFAULT_MAX_BODY;
  op->easy = curl_easy_init();
  if (!op->easy) goto fail;
  const char *method = req->method ? req->method : "GET";
  SET(CURLOPT_PRIVATE, op);
  SET(CURLOPT_ERRORBUFFER, op->errbuf);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_URL, req->url);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  SET(CURLOPT_USERAGENT, "dconn/" DCONN_VERSION);
  SET(CURLOPT_ACCEPT_ENCODING, "");
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_SHARE, E->share);
  /* wait for a connection that can multiplex rather than open many (HTTP/2 over TLS) */
  if (strncasecmp(req->url, "https:", 6) == 0) SET(CURLOPT_PIPEWAIT, 1L);
  SET(CURLOPT_FOLLOWLOCATION, req->no_follow ? 0L : 1L);
  SET(CURLOPT_MAXREDIRS, (long)(req->max_redirects > 0 ? req->max_redirects : DC_HTTP_DEFAULT_MAX_REDIRECTS));
  SET(CURLOPT_TIMEOUT_MS, to_ms(req->timeout));
  SET(CURLOPT_CONNECTTIMEOUT_MS, to_ms(req->connect_timeout));
  SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)op->max_body);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, op);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, op);
  if (strcmp(method, "HEAD") == 0) {
    SET(CURLOPT_NOBODY, 1L);
  } else if (req->body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0) {
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
    SET(CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "");
    if (strcmp(method, "POST") != 0) SET(CURLOPT_CUSTOMREQUEST, method);
  } else if (strcmp(method, "GET") != 0) {
    SET(CURLOPT_CUSTOMREQUEST, method);
  }
  for (size_t i = 0; i < req->header_count; i++)
    if (!add_header(&op->headers, req->headers[i].name, req->headers[i].value)) goto fail;
  /* no "Expect: 100-continue" round trip before large bodies */
  struct curl_slist *with_expect = curl_slist_append(op->headers, "Expect:"); /* removes it */
  if (!with_expect) goto fail;
  op->headers = with_expect;
  SET(CURLOPT_HTTPHEADER, op->headers);
  if (req->tls.ca_file) SET(CURLOPT_CAINFO, req->tls.ca_file);
  if (req->tls.cert_file) SET(CURLOPT_SSLCERT, req->tls.cert_file);
  if (req->tls.key_file) SET(CURLOPT_SSLKEY, req->tls.key_file);
  if (req->tls.connect_to) {
    op->connect_to = curl_slist_append(NULL, req->tls.connect_to);
    if (!op->connect_to) goto fail;
    SET(CURLOPT_CONNECT_TO, op->connect_to);
  }
  if (req->tls.insecure) {
    SET(CURLOPT_SSL_VERIFYPEER, 0L);
    SET(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (req->bearer) {
    SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
    SET(CURLOPT_XOAUTH2_BEARER, req->bearer);
  } else if (req->user) {
    SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    SET(CURLOPT_USERNAME, req->user);
    SET(CURLOPT_PASSWORD, req->password ? req->password : "");
  }
  if (curl_multi_add_handle(E->multi, op->easy) != CURLM_OK) {
    why = "cannot add the transfer";
    goto fail;
  }
  op->next = E->ops;
  if (E->ops) E->ops->prev = op;
  E->ops = op;
  if (E->in_flight++ == 0) set_refs(E);
  return op;
fail:
  snprintf(err, errlen, "%s%s", strncmp(why, "CURLOPT_", 8) == 0 ? "unsupported option " : "", why);
  if (op) op_free(op);
  return NULL;
}

#undef SET

void dc_http_cancel(dc_http_op *op) {
  if (!op) return;
  if (op->delivering) { /* queued: deliver_queue frees it */
    op->abandoned = true;
    return;
  }
  engine *E = op->E;
  curl_multi_remove_handle(E->multi, op->easy);
  op_unlink(op);
  if (--E->in_flight == 0) set_refs(E);
  op_free(op);
}

int dc_http_in_flight(dc_host *H) {
  engine *E = engine_find(H);
  return E ? E->in_flight : 0;
}

void dc_http_close(dc_host *H) {
  engine *E = engine_find(H);
  if (!E) return;
  /* Requests still in flight (C callers: Lua tasks were killed before) hear "canceled"; while
   * closing, dc_http_start refuses new ones. */
  while (E->ops) {
    E->ops->canceled = true;
    queue_done(E, E->ops);
  }
  E->closing = true;
  deliver_queue(E);
  for (engine **p = &engines; *p; p = &(*p)->next) {
    if (*p == E) {
      *p = E->next;
      break;
    }
  }
  /* Close our polls while their sockets are still open; libcurl closes the sockets next. */
  while (E->socks) sock_release(E->socks);
  curl_multi_cleanup(E->multi);
  curl_share_cleanup(E->share);
  uv_close((uv_handle_t *)E->timer, free_on_close);
  free(E);
  curl_global_cleanup();
}
