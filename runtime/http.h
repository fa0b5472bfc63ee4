/*
 * The HTTP engine: one libcurl multi handle per host, driven by the host's libuv loop.
 *
 * Lua reaches it through the native module "dconn.httpc" (http_lua.c, with the public
 * dconn.http on top); C code uses the API below directly:
 *
 *     dc_http_request req = {.method = "GET", .url = "https://api:6443/version"};
 *     dc_http_op *op = dc_http_start(H, &req, on_done, ud, err, sizeof err);
 *     if (!op) ... err says why (too many in flight, bad option, out of memory)
 *
 * done runs exactly once, from the loop, unless the caller cancelled the operation first. A
 * request is copied by dc_http_start: its strings may be freed as soon as it returns. The
 * response passed to done is valid only during the call.
 */
#ifndef DCONN_HTTP_H
#define DCONN_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "host.h"

/* Requests in flight per host; past it dc_http_start refuses. */
#define DC_HTTP_MAX_IN_FLIGHT 1024
/* Body cap when the request does not give one: a hostile server cannot exhaust memory. */
#define DC_HTTP_DEFAULT_MAX_BODY ((size_t)64 << 20)
#define DC_HTTP_DEFAULT_MAX_REDIRECTS 5

typedef enum {
  DC_HTTP_OK = 0,
  DC_HTTP_ERR_DNS,
  DC_HTTP_ERR_CONNECT,
  DC_HTTP_ERR_TLS,
  DC_HTTP_ERR_TIMEOUT,
  DC_HTTP_ERR_TOO_LARGE,
  DC_HTTP_ERR_PROTOCOL, /* the server closed mid-body or sent something that is not HTTP */
  DC_HTTP_ERR_CANCELED,
  DC_HTTP_ERR_OTHER,
} dc_http_error;

typedef struct dc_http_header {
  const char *name; /* lowercase in responses */
  const char *value;
} dc_http_header;

typedef struct dc_http_request {
  const char *method; /* NULL = GET */
  const char *url;
  const dc_http_header *headers; /* header_count entries; an empty value sends "Name:" empty */
  size_t header_count;
  const char *body; /* NULL = none (POST, PUT and PATCH then send an empty body) */
  size_t body_len;
  double timeout;         /* whole transfer, seconds; 0 = none */
  double connect_timeout; /* seconds; 0 = libcurl's default */
  bool no_follow;         /* redirects are followed unless this is set */
  int max_redirects;      /* 0 = DC_HTTP_DEFAULT_MAX_REDIRECTS */
  size_t max_body;        /* 0 = DC_HTTP_DEFAULT_MAX_BODY */
  struct {
    const char *ca_file, *cert_file, *key_file;
    bool insecure; /* no certificate or host name check */
    /* "HOST:PORT:CONNECT-HOST:CONNECT-PORT" (CURLOPT_CONNECT_TO): the URL names the host the
     * certificate is checked against, the connection goes elsewhere (kubeconfig tls-server-name) */
    const char *connect_to;
  } tls;
  const char *bearer;               /* Authorization: Bearer, not sent to other hosts on redirect */
  const char *user, *password;      /* basic auth, likewise */
} dc_http_request;

typedef struct dc_http_response {
  long status;
  const char *body;
  size_t body_len;
  const dc_http_header *headers; /* of the final response; repeated names joined with ", " */
  size_t header_count;
  const char *effective_url; /* after redirects */
  const char *http_version;  /* "1.0", "1.1", "2", "3" */
  double total_time;         /* seconds, as libcurl measured it */
} dc_http_response;

typedef struct dc_http_op dc_http_op;

/* resp is NULL when err != DC_HTTP_OK; message then says what failed (no secrets: libcurl's
 * messages name hosts and ports, never credentials). */
typedef void (*dc_http_done_fn)(const dc_http_response *resp, dc_http_error err, const char *message, void *ud);

/* Starts a request; NULL with a message in err when it cannot start. */
dc_http_op *dc_http_start(dc_host *H, const dc_http_request *req, dc_http_done_fn done, void *ud, char *err,
                          size_t errlen);
/* Abandons a request: done will not be called. */
void dc_http_cancel(dc_http_op *op);
/* "dns", "connect", ... "other" ("ok" for DC_HTTP_OK). */
const char *dc_http_error_kind(dc_http_error err);
/* Requests in flight on H. */
int dc_http_in_flight(dc_host *H);
/* Ends every request (done gets DC_HTTP_ERR_CANCELED) and frees the engine: the close of the
 * dconn.httpc module record (modules.c). The loop must run once more afterwards for the close
 * callbacks. */
void dc_http_close(dc_host *H);

#endif
