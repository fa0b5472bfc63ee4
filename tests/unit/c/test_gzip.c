/* test_gzip.c - unit tests for runtime/gzip.c (cmocka): Accept-Encoding and the gzip form. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "gzip.h"

static bool takes(const char *value) {
  dc_accept_gzip a;
  dc_accept_gzip_init(&a);
  dc_accept_gzip_parse(&a, value, strlen(value));
  return dc_accept_gzip_result(&a);
}

static void test_accepts(void **state) {
  (void)state;
  const char *yes[] = {"gzip",
                       "GZip",
                       "x-gzip",
                       "*",
                       "deflate, gzip",
                       "gzip;q=0.5",
                       "gzip ; q = 1",
                       "br;q=1.0, gzip;q=0.001",
                       "identity;q=0.1, *;q=1",
                       "gzip;level=1",
                       " gzip ,br"};
  const char *no[] = {"",      "identity",    "deflate, br", "gzip;q=0", "gzip;q=0.000", "GZIP; Q=0.0",
                      "*;q=0", "gzip;q=0, *", "gzipx",       "gzi",      ",,,",          ";q=1"};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
    if (!takes(yes[i])) fail_msg("should take gzip: '%s'", yes[i]);
  for (size_t i = 0; i < sizeof no / sizeof *no; i++)
    if (takes(no[i])) fail_msg("should not take gzip: '%s'", no[i]);
}

static void test_several_headers(void **state) {
  (void)state;
  dc_accept_gzip a;
  dc_accept_gzip_init(&a);
  assert_false(dc_accept_gzip_result(&a)); /* no header: identity */
  dc_accept_gzip_parse(&a, "*", 1);
  dc_accept_gzip_parse(&a, "gzip;q=0", 8); /* gzip named: "*" no longer speaks for it */
  assert_false(dc_accept_gzip_result(&a));
}

static void test_round_trip(void **state) {
  (void)state;
  size_t len = 200000;
  char *text = malloc(len);
  assert_non_null(text);
  for (size_t i = 0; i < len; i++) text[i] = "dconn_prediction_abs_error{target=\"a\"} 0.25\n"[i % 44];
  size_t packed_len = 0;
  char *packed = dc_gzip(text, len, &packed_len);
  assert_non_null(packed);
  assert_true(packed_len < len / 20);
  assert_int_equal(0x1f, (unsigned char)packed[0]); /* the gzip magic */
  assert_int_equal(0x8b, (unsigned char)packed[1]);
  char *back = malloc(len);
  z_stream z = {0};
  assert_int_equal(Z_OK, inflateInit2(&z, 15 + 16));
  z.next_in = (Bytef *)packed, z.avail_in = (uInt)packed_len;
  z.next_out = (Bytef *)back, z.avail_out = (uInt)len;
  assert_int_equal(Z_STREAM_END, inflate(&z, Z_FINISH));
  assert_int_equal(len, z.total_out);
  inflateEnd(&z);
  assert_memory_equal(text, back, len);
  free(back);
  free(packed);
  size_t empty_len = 0;
  char *empty = dc_gzip("", 0, &empty_len);
  assert_non_null(empty);
  assert_true(empty_len >= 18); /* header and trailer */
  free(empty);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accepts),
      cmocka_unit_test(test_several_headers),
      cmocka_unit_test(test_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
