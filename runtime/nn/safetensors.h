/*
 * safetensors: a strict reader and a small writer, plain C (no Lua), so the parser can be
 * fuzzed on its own (tests/fuzz/fuzz_safetensors.c).
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON (an object: tensor name ->
 * {"dtype", "shape", "data_offsets"}, plus an optional "__metadata__" object of strings), then
 * the data. Offsets are relative to the start of the data. The reader accepts only files the
 * reference implementation writes: tensors cover the data exactly, without overlap or gaps, and
 * nothing follows the last one.
 */
#ifndef DCONN_SAFETENSORS_H
#define DCONN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DC_ST_MAX_DIMS 8
/* The reference implementation refuses headers over 100 MB; so do we. */
#define DC_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

typedef enum { DC_ST_F32, DC_ST_F16, DC_ST_BF16, DC_ST_F64 } dc_st_dtype;

typedef struct dc_st_tensor {
  char *name;
  dc_st_dtype dtype;
  int ndim;
  uint64_t shape[DC_ST_MAX_DIMS];
  uint64_t numel;
  uint64_t begin, end; /* byte offsets into the data */
} dc_st_tensor;

typedef struct dc_st_meta {
  char *key, *value;
} dc_st_meta;

typedef struct dc_st_header {
  uint64_t data_start; /* 8 + header length */
  uint64_t data_size;
  int ntensors;
  dc_st_tensor *tensors; /* in file order */
  int nmeta;
  dc_st_meta *meta;
} dc_st_header;

/* Reads a whole file into memory (malloc'd *out of *size bytes; free it): read, not mapped, so a
 * file truncated or rewritten while it is read is an error here ("file shrank while being
 * read"), never a SIGBUS later. 0, or -1 with the reason in err. */
int dc_st_read_file(const char *path, unsigned char **out, size_t *size, char *err, size_t errlen);
/* The part of dc_st_read_file after open and fstat: reads size bytes (what fstat said) from fd. */
int dc_st_read_fd(int fd, size_t size, unsigned char **out, char *err, size_t errlen);

/* Parses and validates a whole file held in memory. 0 on success (free h with dc_st_free), or
 * -1 with a message in err naming the tensor or byte offset at fault (h is then empty). */
int dc_st_parse(const unsigned char *buf, size_t size, dc_st_header *h, char *err, size_t errlen);
void dc_st_free(dc_st_header *h);

const char *dc_st_dtype_name(dc_st_dtype t);
size_t dc_st_dtype_size(dc_st_dtype t);
/* The tensor's values as float32 (numel of them) from the file's data section. */
void dc_st_to_f32(const dc_st_tensor *t, const unsigned char *data, float *out);
/* The index of the tensor with that name, or -1. */
int dc_st_find(const dc_st_header *h, const char *name);

/* One tensor to write, float32, contiguous. */
typedef struct dc_st_out {
  const char *name;
  int ndim;
  const uint64_t *shape;
  const float *data;
} dc_st_out;

/* Writes float32 tensors (and metadata pairs, may be 0) to f in file order. 0 or -1 (errno). */
int dc_st_write(FILE *f, const dc_st_out *tensors, int n, const dc_st_meta *meta, int nmeta);

#endif
