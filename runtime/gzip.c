/* gzip for HTTP responses: see gzip.h. */
#include "gzip.h"

#include <stdlib.h>
#include <strings.h>

#include <zlib.h>

/* Level 1: under Prometheus (a scrape every 15 s or so) nearly every scrape finds a changed body,
 * so each compression is paid by one response, on the loop. On 200 KB of metrics text level 1
 * takes ~0.5 ms for a 1/12 ratio, level 6 ~2.7 ms for 1/15 (zlib on this machine). */
#define GZIP_LEVEL 1
#define GZIP_WINDOW (15 + 16) /* 2^15 bytes, with the gzip header and trailer */

char *dc_gzip(const char *data, size_t len, size_t *out_len) {
  z_stream z = {0};
  if (deflateInit2(&z, GZIP_LEVEL, Z_DEFLATED, GZIP_WINDOW, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
  size_t cap = deflateBound(&z, (uLong)len);
  char *out = malloc(cap ? cap : 1);
  if (!out) {
    deflateEnd(&z);
    return NULL;
  }
  z.next_in = (Bytef *)data;
  z.avail_in = (uInt)len;
  z.next_out = (Bytef *)out;
  z.avail_out = (uInt)cap;
  int r = deflate(&z, Z_FINISH); /* one call: the output has deflateBound's room */
  *out_len = z.total_out;
  deflateEnd(&z);
  if (r != Z_STREAM_END) {
    free(out);
    return NULL;
  }
  return out;
}

void dc_accept_gzip_init(dc_accept_gzip *a) { a->gzip = a->any = -1; }

static bool is_space(char c) { return c == ' ' || c == '\t'; }

/* A weight ("0", "0.5", "1.000") is zero when it has no digit but 0. */
static bool weight_is_zero(const char *p, const char *end) {
  for (; p < end; p++)
    if (*p >= '1' && *p <= '9') return false;
  return true;
}

/* Whether the parameters of one coding (from its first ';' to the element's end) give it a
 * weight above zero: 1 yes (no q is q=1), 0 no. */
static int accepted_by(const char *p, const char *end) {
  while (p < end) {
    while (p < end && (*p == ';' || is_space(*p))) p++;
    if (p < end && (*p == 'q' || *p == 'Q')) {
      const char *v = p + 1;
      while (v < end && is_space(*v)) v++;
      if (v < end && *v == '=') {
        const char *weight_end = ++v;
        while (weight_end < end && *weight_end != ';') weight_end++;
        return !weight_is_zero(v, weight_end);
      }
    }
    while (p < end && *p != ';') p++;
  }
  return 1;
}

void dc_accept_gzip_parse(dc_accept_gzip *a, const char *value, size_t len) {
  const char *p = value, *end = value + len;
  while (p < end) {
    const char *elem_end = p;
    while (elem_end < end && *elem_end != ',') elem_end++;
    while (p < elem_end && is_space(*p)) p++;
    const char *name = p;
    while (p < elem_end && *p != ';' && !is_space(*p)) p++;
    size_t name_len = (size_t)(p - name);
    int accepted = accepted_by(p, elem_end);
    if ((name_len == 4 && strncasecmp(name, "gzip", 4) == 0) || (name_len == 6 && strncasecmp(name, "x-gzip", 6) == 0))
      a->gzip = accepted;
    else if (name_len == 1 && *name == '*') a->any = accepted;
    p = elem_end < end ? elem_end + 1 : end;
  }
}

bool dc_accept_gzip_result(const dc_accept_gzip *a) { return a->gzip >= 0 ? a->gzip == 1 : a->any == 1; }
