/*
 * gzip for HTTP responses: a body compressed once (zlib), and whether a request's
 * Accept-Encoding takes it (RFC 9110 section 12.5.3: "gzip" or "x-gzip" named with a weight
 * other than q=0; failing a mention of either, "*" with such a weight).
 *
 *     dc_accept_gzip a;
 *     dc_accept_gzip_init(&a);
 *     for each Accept-Encoding header: dc_accept_gzip_parse(&a, value, len);
 *     if (dc_accept_gzip_result(&a)) ... send the gzip form
 */
#ifndef DCONN_GZIP_H
#define DCONN_GZIP_H

#include <stdbool.h>
#include <stddef.h>

/* The gzip form of data[0..len) in a malloc'd buffer of *out_len bytes; NULL when out of memory. */
char *dc_gzip(const char *data, size_t len, size_t *out_len);

typedef struct dc_accept_gzip {
  int gzip, any; /* what the headers said of gzip and of "*": -1 nothing, 0 refused, 1 accepted */
} dc_accept_gzip;

void dc_accept_gzip_init(dc_accept_gzip *a);
void dc_accept_gzip_parse(dc_accept_gzip *a, const char *value, size_t len);
bool dc_accept_gzip_result(const dc_accept_gzip *a);

#endif
