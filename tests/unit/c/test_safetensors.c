/* test_safetensors.c - unit tests for runtime/nn/safetensors.c (cmocka): the strict reader, the
 * dtype conversions and the writer. Every bad file must give a clear error, never a crash. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/safetensors.h"

/* A file: 8-byte length of header, header, then data_len bytes 0, 1, 2, ... */
typedef struct file {
  unsigned char *bytes;
  size_t size;
} file;

static file make(const char *header, size_t data_len) {
  size_t n = strlen(header);
  file f = {malloc(8 + n + data_len + 1), 8 + n + data_len};
  assert_non_null(f.bytes);
  for (int i = 0; i < 8; i++) f.bytes[i] = (unsigned char)((uint64_t)n >> (8 * i));
  memcpy(f.bytes + 8, header, n);
  for (size_t i = 0; i < data_len; i++) f.bytes[8 + n + i] = (unsigned char)i;
  return f;
}

/* Parses and expects failure with `needle` in the message. */
static void expect_error(const char *header, size_t data_len, const char *needle) {
  file f = make(header, data_len);
  dc_st_header h;
  char err[512] = "";
  int rc = dc_st_parse(f.bytes, f.size, &h, err, sizeof err);
  if (rc == 0 || !strstr(err, needle)) {
    print_error("header %s: expected an error with '%s', got rc %d, '%s'\n", header, needle, rc, err);
    if (rc == 0) dc_st_free(&h);
    free(f.bytes);
    fail();
  }
  assert_int_equal(h.ntensors, 0);
  assert_null(h.tensors);
  free(f.bytes);
}

static void expect_ok(const char *header, size_t data_len, dc_st_header *h) {
  file f = make(header, data_len);
  char err[512] = "";
  int rc = dc_st_parse(f.bytes, f.size, h, err, sizeof err);
  if (rc != 0) print_error("header %s: %s\n", header, err);
  free(f.bytes);
  assert_int_equal(rc, 0);
}

static void test_valid_files(void **state) {
  (void)state;
  dc_st_header h;
  expect_ok("{}", 0, &h);
  assert_int_equal(h.ntensors, 0);
  dc_st_free(&h);

  expect_ok("{\"__metadata__\":{\"format\":\"pt\",\"b\":\"2\"},"
            " \"lstm.weight_ih_l0\" : {\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
            "\"caf\\u00e9\\ud83d\\ude00\":{\"shape\":[],\"data_offsets\":[24,26],\"dtype\":\"BF16\"},"
            "\"empty\":{\"dtype\":\"F64\",\"shape\":[0,4],\"data_offsets\":[26,26]}}    ",
            26, &h);
  assert_int_equal(h.ntensors, 3);
  assert_string_equal(h.tensors[0].name, "lstm.weight_ih_l0");
  assert_int_equal(h.tensors[0].dtype, DC_ST_F32);
  assert_int_equal(h.tensors[0].ndim, 2);
  assert_int_equal(h.tensors[0].numel, 6);
  assert_string_equal(h.tensors[1].name, "caf\xc3\xa9\xf0\x9f\x98\x80");
  assert_int_equal(h.tensors[1].ndim, 0);
  assert_int_equal(h.tensors[1].numel, 1);
  assert_int_equal(h.tensors[2].numel, 0);
  assert_int_equal(dc_st_find(&h, "empty"), 2);
  assert_int_equal(dc_st_find(&h, "nope"), -1);
  assert_int_equal(h.nmeta, 2);
  assert_string_equal(h.meta[0].key, "b"); /* sorted */
  assert_string_equal(h.meta[1].value, "pt");
  dc_st_free(&h);
}

static void test_conversions(void **state) {
  (void)state;
  /* F16: 1, -2, 2^-24 (smallest subnormal), inf; BF16: 1, -0.5; F64: 1.5, -1e-3; F32: 3.25 */
  static const unsigned char f16[] = {0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0x00, 0x7C};
  static const unsigned char bf16[] = {0x80, 0x3F, 0x00, 0xBF};
  unsigned char f64[16], f32[4];
  double d[2] = {1.5, -1e-3};
  float s = 3.25f;
  memcpy(f64, d, sizeof f64); /* little-endian host */
  memcpy(f32, &s, sizeof f32);
  float out[4];
  dc_st_tensor t = {.dtype = DC_ST_F16, .numel = 4, .begin = 0};
  dc_st_to_f32(&t, f16, out);
  assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == ldexpf(1, -24) && isinf(out[3]));
  t = (dc_st_tensor){.dtype = DC_ST_BF16, .numel = 2};
  dc_st_to_f32(&t, bf16, out);
  assert_true(out[0] == 1.0f && out[1] == -0.5f);
  t = (dc_st_tensor){.dtype = DC_ST_F64, .numel = 2};
  dc_st_to_f32(&t, f64, out);
  assert_true(out[0] == 1.5f && out[1] == (float)-1e-3);
  t = (dc_st_tensor){.dtype = DC_ST_F32, .numel = 1};
  dc_st_to_f32(&t, f32, out);
  assert_true(out[0] == 3.25f);
  assert_string_equal(dc_st_dtype_name(DC_ST_BF16), "BF16");
  assert_int_equal(dc_st_dtype_size(DC_ST_F64), 8);
}

static void test_length_errors(void **state) {
  (void)state;
  dc_st_header h;
  char err[256];
  static const unsigned char short_file[] = {1, 0, 0};
  assert_int_equal(dc_st_parse(short_file, sizeof short_file, &h, err, sizeof err), -1);
  assert_non_null(strstr(err, "too short"));
  /* a 4 GB header length in a small file */
  unsigned char big[16] = {0, 0, 0, 0, 1, 0, 0, 0, '{', '}'};
  assert_int_equal(dc_st_parse(big, sizeof big, &h, err, sizeof err), -1);
  assert_non_null(strstr(err, "header length 4294967296 runs past the end of the file"));
  /* 2^64 - 1 */
  memset(big, 0xFF, 8);
  assert_int_equal(dc_st_parse(big, sizeof big, &h, err, sizeof err), -1);
  assert_non_null(strstr(err, "runs past the end"));
  /* a truncated file: the data ends before the tensor does */
  file f = make("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
  assert_int_equal(dc_st_parse(f.bytes, f.size - 5, &h, err, sizeof err), -1);
  assert_non_null(strstr(err, "tensor 'w': data_offsets [0, 16] out of range (the data holds 11 bytes)"));
  /* truncated inside the header */
  assert_int_equal(dc_st_parse(f.bytes, 20, &h, err, sizeof err), -1);
  assert_non_null(strstr(err, "runs past the end"));
  /* zero-length header */
  memset(big, 0, sizeof big);
  assert_int_equal(dc_st_parse(big, sizeof big, &h, err, sizeof err), -1);
  assert_non_null(strstr(err, "JSON object"));
  free(f.bytes);
}

static void test_layout_errors(void **state) {
  (void)state;
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "tensors 'a' and 'b' overlap (bytes 0..8 and 4..12)");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8, "overlap");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
               "unused bytes 0..4 of the data before tensor 'a'");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 7,
               "3 bytes of trailing data after the last tensor");
  expect_error("{}", 5, "5 bytes of trailing data after the header, but no tensors");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12,
               "tensor 'a': 12 bytes of data, but F32 with 4 elements needs 16");
  expect_error("{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4, "needs 6");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "run backwards");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, "tensor 'a' appears twice");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999]}}", 4, "out of range");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[9007199254740992,9007199254740992],\"data_offsets\":[0,4]}}", 4,
               "shape too large");
}

static void test_dtype_errors(void **state) {
  (void)state;
  expect_error("{\"a\":{\"dtype\":\"X9\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               "tensor 'a': unknown dtype 'X9' (F32, F16, BF16 and F64 are read)");
  expect_error("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "unsupported dtype 'I64'");
  expect_error("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'f32'");
  expect_error("{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "expected '\"'");
}

static void test_json_errors(void **state) {
  (void)state;
  expect_error("[]", 0, "JSON object");
  expect_error(" {}", 0, "JSON object");
  expect_error("{", 0, "unexpected end");
  expect_error("{\"a\"", 0, "expected ':'");
  expect_error("{\"a", 0, "unterminated string");
  expect_error("{}x", 0, "unexpected text after the object");
  expect_error("{},", 0, "unexpected text after the object");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", 4, "expected '\"'");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}", 4, "non-negative integers");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "negative shape");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "non-negative integers");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}", 4, "non-negative integers");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, "non-negative integers");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4, "too large");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets must have 2 values");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
               "data_offsets must have 2 values");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
               "more than 8 dimensions");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing shape");
  expect_error("{\"a\":{}}", 0, "missing dtype, shape and data_offsets");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4,
               "unknown field 'extra'");
  expect_error("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "given twice");
  expect_error("{\"a\":[]}", 0, "expected '{'");
  expect_error("{\"__metadata__\":{\"k\":1}}", 0, "value of 'k' must be a string");
  expect_error("{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, "key 'k' given twice");
  expect_error("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ given twice");
  expect_error("{\"a\\q\":{}}", 0, "bad escape");
  expect_error("{\"a\\u12\":{}}", 0, "bad escape");
  expect_error("{\"\\ud800\":{}}", 0, "unpaired surrogate");
  expect_error("{\"\\udc00\":{}}", 0, "unpaired surrogate");
  expect_error("{\"\\u0000\":{}}", 0, "NUL character");
  expect_error("{\"\xff\":{}}", 0, "invalid UTF-8");
  expect_error("{\"\xc0\xaf\":{}}", 0, "invalid UTF-8");        /* overlong '/' */
  expect_error("{\"\xed\xa0\x80\":{}}", 0, "invalid UTF-8");    /* encoded surrogate */
  expect_error("{\"a\tb\":{}}", 0, "control character");
}

static void test_writer_round_trip(void **state) {
  (void)state;
  char *text = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&text, &len);
  assert_non_null(fp);
  const float a[6] = {1, 2, 3, 4, 5, 6}, b[1] = {-7.5f};
  const uint64_t sa[2] = {2, 3}, sb[1] = {1};
  dc_st_out out[2] = {{"we\"ird\\name\n", 2, sa, a}, {"b", 1, sb, b}};
  dc_st_meta meta[1] = {{"producer", "test"}};
  assert_int_equal(dc_st_write(fp, out, 2, meta, 1), 0);
  fclose(fp);
  assert_int_equal((8 + (text[0] | text[1] << 8)) % 8, 0); /* data aligned */
  dc_st_header h;
  char err[256] = "";
  int rc = dc_st_parse((unsigned char *)text, len, &h, err, sizeof err);
  if (rc) print_error("%s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(h.ntensors, 2);
  int i = dc_st_find(&h, "we\"ird\\name\n");
  assert_true(i >= 0);
  float back[6];
  dc_st_to_f32(&h.tensors[i], (unsigned char *)text + h.data_start, back);
  assert_memory_equal(back, a, sizeof a);
  assert_string_equal(h.meta[0].value, "test");
  dc_st_free(&h);
  free(text);
}

/* Random corruption of a valid file: the parser must fail cleanly or succeed with a
 * consistent layout (the sanitizers watch every access). */
static void test_mutations(void **state) {
  (void)state;
  file f = make("{\"__metadata__\":{\"m\":\"x\"},\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]}}",
                20);
  unsigned char *copy = malloc(f.size);
  unsigned seed = 12345;
  int ok = 0;
  for (int round = 0; round < 20000; round++) {
    memcpy(copy, f.bytes, f.size);
    size_t size = f.size;
    for (int k = 0; k < 1 + round % 4; k++) {
      seed = seed * 1103515245u + 12345u;
      size_t at = (seed >> 8) % f.size;
      copy[at] = (unsigned char)(seed >> 20);
    }
    if (round % 7 == 0) size = (seed >> 4) % f.size;
    dc_st_header h;
    char err[256];
    if (dc_st_parse(copy, size, &h, err, sizeof err) == 0) {
      ok++;
      for (int i = 0; i < h.ntensors; i++) {
        assert_true(h.tensors[i].end <= h.data_size);
        float *out = malloc(h.tensors[i].numel * sizeof(float) + 1);
        dc_st_to_f32(&h.tensors[i], copy + h.data_start, out);
        free(out);
      }
      dc_st_free(&h);
    } else {
      assert_true(strlen(err) > 0);
    }
  }
  assert_true(ok > 0); /* mutations of the data section keep the file valid */
  free(copy);
  free(f.bytes);
}

/* A valid weights file at path (16 floats). */
static void write_weights(const char *path) {
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  float data[16];
  for (int i = 0; i < 16; i++) data[i] = (float)i;
  const uint64_t shape[1] = {16};
  dc_st_out out[1] = {{"w", 1, shape, data}};
  assert_int_equal(dc_st_write(fp, out, 1, NULL, 0), 0);
  assert_int_equal(fclose(fp), 0);
}

/* A weights file truncated while it is read (after open and fstat, before the bytes are in):
 * an error that says so, never SIGBUS (the reader reads, it does not map). Truncated after it
 * was read: the tensors are intact, they live in memory. */
static void test_truncated_while_read(void **state) {
  (void)state;
  char path[] = "/tmp/dconn-test-st-XXXXXX";
  int made = mkstemp(path);
  assert_true(made >= 0);
  close(made);
  write_weights(path);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  assert_int_equal(truncate(path, st.st_size / 2), 0); /* another process rewrites the file */
  unsigned char *bytes = (unsigned char *)"untouched";
  char err[256] = "";
  assert_int_equal(dc_st_read_fd(fd, (size_t)st.st_size, &bytes, err, sizeof err), -1);
  assert_null(bytes);
  assert_non_null(strstr(err, "file shrank while being read"));
  close(fd);

  /* the truncated file, read from the start: a short file, a parse error */
  size_t size = 0;
  assert_int_equal(dc_st_read_file(path, &bytes, &size, err, sizeof err), 0);
  dc_st_header h;
  assert_int_equal(dc_st_parse(bytes, size, &h, err, sizeof err), -1);
  free(bytes);

  /* read whole, then truncated to nothing: the values are still there */
  write_weights(path);
  assert_int_equal(dc_st_read_file(path, &bytes, &size, err, sizeof err), 0);
  assert_int_equal(truncate(path, 0), 0);
  assert_int_equal(dc_st_parse(bytes, size, &h, err, sizeof err), 0);
  float back[16];
  dc_st_to_f32(&h.tensors[0], bytes + h.data_start, back);
  assert_true(back[15] == 15.0f);
  dc_st_free(&h);
  free(bytes);

  /* a path that is not a regular file, and one that does not exist */
  assert_int_equal(dc_st_read_file("/tmp", &bytes, &size, err, sizeof err), -1);
  assert_string_equal(err, "not a regular file");
  unlink(path);
  assert_int_equal(dc_st_read_file(path, &bytes, &size, err, sizeof err), -1);
  assert_non_null(strstr(err, "No such file"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_files),          cmocka_unit_test(test_conversions),
      cmocka_unit_test(test_length_errors),        cmocka_unit_test(test_layout_errors),
      cmocka_unit_test(test_dtype_errors),         cmocka_unit_test(test_json_errors),
      cmocka_unit_test(test_writer_round_trip),    cmocka_unit_test(test_mutations),
      cmocka_unit_test(test_truncated_while_read),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
