/*
 * safetensors reader and writer (see safetensors.h).
 *
 * The header is parsed by a small JSON reader written for this format only, not by lua-cjson
 * through the Lua state: the parser then runs without a Lua state (libFuzzer drives it
 * directly), it knows where each value sits so errors name the tensor and the byte, and it
 * rejects what a general decoder would let through (duplicate keys, which cjson silently
 * merges; numbers beyond 2^53, which cjson rounds; fractions in offsets).
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct reader {
  const unsigned char *start, *p, *end; /* the header text */
  char *err;
  size_t errlen;
  bool failed;
} reader;

static void fail(reader *r, const char *fmt, ...) {
  if (r->failed) return;
  r->failed = true;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, r->errlen, fmt, ap);
  va_end(ap);
}

/* Byte offset in the file of the reader's position (the header starts after 8 bytes). */
static unsigned long long where(const reader *r) { return 8ULL + (unsigned long long)(r->p - r->start); }

static void skip_ws(reader *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static bool expect(reader *r, char c) {
  skip_ws(r);
  if (r->p < r->end && *r->p == (unsigned char)c) {
    r->p++;
    return true;
  }
  if (r->p >= r->end) fail(r, "invalid header: unexpected end at byte %llu, expected '%c'", where(r), c);
  else fail(r, "invalid header: expected '%c' at byte %llu", c, where(r));
  return false;
}

/* Next non-space byte without consuming it, or -1 at the end. */
static int peek(reader *r) {
  skip_ws(r);
  return r->p < r->end ? *r->p : -1;
}

static int hex4(const unsigned char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int c = p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v * 16 + d;
  }
  return v;
}

static size_t put_utf8(char *out, unsigned cp) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates), or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned c = p[0];
  size_t n;
  unsigned cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
  else return 0;
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

/* A JSON string -> malloc'd UTF-8 without NULs, or NULL (r failed). */
static char *read_string(reader *r) {
  if (!expect(r, '"')) return NULL;
  /* decoded text is never longer than the source */
  const unsigned char *q = r->p;
  while (q < r->end && *q != '"') q += (*q == '\\' && q + 1 < r->end) ? 2 : 1;
  if (q >= r->end) {
    fail(r, "invalid header: unterminated string at byte %llu", where(r));
    return NULL;
  }
  char *out = malloc((size_t)(q - r->p) + 1);
  if (!out) {
    fail(r, "out of memory");
    return NULL;
  }
  size_t n = 0;
  while (*r->p != '"') {
    unsigned c = *r->p;
    if (c < 0x20) {
      fail(r, "invalid header: control character in a string at byte %llu", where(r));
      goto fail;
    }
    if (c != '\\') {
      size_t len = utf8_len(r->p, r->end);
      if (len == 0) {
        fail(r, "invalid header: invalid UTF-8 at byte %llu", where(r));
        goto fail;
      }
      memcpy(out + n, r->p, len);
      n += len;
      r->p += len;
      continue;
    }
    c = r->p[1];
    r->p += 2;
    const char *simple = strchr("\"\\/bfnrt", (int)c);
    if (c && simple) {
      static const char map[] = "\"\\/\b\f\n\r\t";
      out[n++] = map[simple - "\"\\/bfnrt"];
      continue;
    }
    if (c != 'u' || r->end - r->p < 4 || hex4(r->p) < 0) {
      fail(r, "invalid header: bad escape in a string at byte %llu", where(r));
      goto fail;
    }
    unsigned cp = (unsigned)hex4(r->p);
    r->p += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF) { /* a high surrogate needs its low half */
      int lo = (r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') ? hex4(r->p + 2) : -1;
      if (lo < 0xDC00 || lo > 0xDFFF) {
        fail(r, "invalid header: unpaired surrogate in a string at byte %llu", where(r));
        goto fail;
      }
      cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned)lo - 0xDC00);
      r->p += 6;
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
      fail(r, "invalid header: unpaired surrogate in a string at byte %llu", where(r));
      goto fail;
    }
    if (cp == 0) {
      fail(r, "invalid header: NUL character in a string at byte %llu", where(r));
      goto fail;
    }
    n += put_utf8(out + n, cp); /* never longer than the 6-byte escape it replaces */
  }
  r->p++; /* closing quote */
  out[n] = '\0';
  return out;
fail:
  free(out);
  return NULL;
}

/* A non-negative JSON integer up to 2^53 (what every JSON reader agrees on). */
static bool read_uint(reader *r, uint64_t *out, const char *name, const char *field) {
  skip_ws(r);
  const unsigned char *s = r->p;
  uint64_t v = 0;
  while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
    v = v * 10 + (uint64_t)(*r->p - '0');
    r->p++;
    if (v > ((uint64_t)1 << 53)) {
      fail(r, "tensor '%s': %s value too large at byte %llu", name, field, where(r));
      return false;
    }
  }
  if (r->p == s || (r->p - s > 1 && *s == '0') || (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))) {
    if (r->p == s && r->p < r->end && *r->p == '-')
      fail(r, "tensor '%s': negative %s at byte %llu", name, field, where(r));
    else fail(r, "tensor '%s': %s must hold non-negative integers (byte %llu)", name, field, where(r));
    return false;
  }
  *out = v;
  return true;
}

static const struct {
  const char *name;
  int dtype; /* -1: a real safetensors dtype this reader does not convert */
} DTYPES[] = {
    {"F32", DC_ST_F32}, {"F16", DC_ST_F16}, {"BF16", DC_ST_BF16}, {"F64", DC_ST_F64}, {"I8", -1},
    {"I16", -1},        {"I32", -1},        {"I64", -1},          {"U8", -1},         {"U16", -1},
    {"U32", -1},        {"U64", -1},        {"BOOL", -1},         {"F8_E4M3", -1},    {"F8_E5M2", -1},
};

static bool read_tensor(reader *r, dc_st_tensor *t) {
  bool seen[3] = {false, false, false};
  uint64_t offs[2] = {0, 0};
  if (!expect(r, '{')) return false;
  if (peek(r) == '}') {
    fail(r, "tensor '%s': missing dtype, shape and data_offsets", t->name);
    return false;
  }
  do {
    char *key = read_string(r);
    if (!key) return false;
    int k = strcmp(key, "dtype") == 0 ? 0 : strcmp(key, "shape") == 0 ? 1 : strcmp(key, "data_offsets") == 0 ? 2 : -1;
    if (k < 0) fail(r, "tensor '%s': unknown field '%s'", t->name, key);
    else if (seen[k]) fail(r, "tensor '%s': field '%s' given twice", t->name, key);
    free(key);
    if (r->failed || !expect(r, ':')) return false;
    seen[k] = true;
    if (k == 0) {
      char *dtype = read_string(r);
      if (!dtype) return false;
      size_t i = 0;
      while (i < sizeof DTYPES / sizeof *DTYPES && strcmp(DTYPES[i].name, dtype) != 0) i++;
      if (i == sizeof DTYPES / sizeof *DTYPES || DTYPES[i].dtype < 0)
        fail(r, "tensor '%s': %s dtype '%s' (F32, F16, BF16 and F64 are read)", t->name,
             i == sizeof DTYPES / sizeof *DTYPES ? "unknown" : "unsupported", dtype);
      else t->dtype = (dc_st_dtype)DTYPES[i].dtype;
      free(dtype);
      if (r->failed) return false;
    } else {
      const char *field = k == 1 ? "shape" : "data_offsets";
      int n = 0;
      if (!expect(r, '[')) return false;
      if (peek(r) != ']') {
        do {
          uint64_t v;
          if (n == (k == 1 ? DC_ST_MAX_DIMS : 2)) {
            fail(r, k == 1 ? "tensor '%s': more than 8 dimensions" : "tensor '%s': data_offsets must have 2 values",
                 t->name);
            return false;
          }
          if (!read_uint(r, &v, t->name, field)) return false;
          if (k == 1) t->shape[n++] = v;
          else offs[n++] = v;
        } while (peek(r) == ',' && (r->p++, true));
      }
      if (!expect(r, ']')) return false;
      if (k == 1) t->ndim = n;
      else if (n != 2) {
        fail(r, "tensor '%s': data_offsets must have 2 values", t->name);
        return false;
      }
    }
  } while (peek(r) == ',' && (r->p++, true));
  if (!expect(r, '}')) return false;
  for (int k = 0; k < 3; k++)
    if (!seen[k]) {
      fail(r, "tensor '%s': missing %s", t->name, k == 0 ? "dtype" : k == 1 ? "shape" : "data_offsets");
      return false;
    }
  t->begin = offs[0];
  t->end = offs[1];
  t->numel = 1;
  for (int d = 0; d < t->ndim; d++) {
    if (t->shape[d] && t->numel > (((uint64_t)1 << 53) / t->shape[d])) {
      fail(r, "tensor '%s': shape too large", t->name);
      return false;
    }
    t->numel *= t->shape[d];
  }
  return true;
}

/* Room for one more element in a doubling array; false (r failed) when out of memory. */
static bool grow(reader *r, void **items, int count, size_t size) {
  if (count & (count - 1)) return true; /* capacity is the next power of two */
  void *grown = realloc(*items, (count ? (size_t)count * 2 : 1) * size);
  if (!grown) {
    fail(r, "out of memory");
    return false;
  }
  *items = grown;
  return true;
}

static bool read_metadata(reader *r, dc_st_header *h) {
  if (!expect(r, '{')) return false;
  if (peek(r) == '}') return r->p++, true;
  do {
    if (!grow(r, (void **)&h->meta, h->nmeta, sizeof *h->meta)) return false;
    dc_st_meta *m = &h->meta[h->nmeta];
    m->key = read_string(r);
    if (!m->key) return false;
    m->value = NULL;
    h->nmeta++;
    if (!expect(r, ':')) return false;
    if (peek(r) != '"') {
      fail(r, "__metadata__: value of '%s' must be a string (byte %llu)", m->key, where(r));
      return false;
    }
    m->value = read_string(r);
    if (!m->value) return false;
  } while (peek(r) == ',' && (r->p++, true));
  return expect(r, '}');
}

static int cmp_names(const void *a, const void *b) {
  return strcmp((*(const dc_st_tensor *const *)a)->name, (*(const dc_st_tensor *const *)b)->name);
}

static int cmp_offsets(const void *a, const void *b) {
  const dc_st_tensor *x = *(const dc_st_tensor *const *)a, *y = *(const dc_st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static int cmp_meta(const void *a, const void *b) {
  return strcmp(((const dc_st_meta *)a)->key, ((const dc_st_meta *)b)->key);
}

/* Names unique; each tensor's bytes match dtype x shape; together they tile the data exactly. */
static bool check_layout(reader *r, dc_st_header *h) {
  for (int i = 1; i < h->nmeta; i++)
    if (strcmp(h->meta[i].key, h->meta[i - 1].key) == 0) {
      fail(r, "__metadata__: key '%s' given twice", h->meta[i].key);
      return false;
    }
  if (h->ntensors == 0) {
    if (h->data_size)
      fail(r, "%llu bytes of trailing data after the header, but no tensors", (unsigned long long)h->data_size);
    return !r->failed;
  }
  dc_st_tensor **order = malloc((size_t)h->ntensors * sizeof *order);
  if (!order) {
    fail(r, "out of memory");
    return false;
  }
  for (int i = 0; i < h->ntensors; i++) order[i] = &h->tensors[i];
  qsort(order, (size_t)h->ntensors, sizeof *order, cmp_names);
  for (int i = 1; i < h->ntensors && !r->failed; i++)
    if (strcmp(order[i]->name, order[i - 1]->name) == 0) fail(r, "tensor '%s' appears twice", order[i]->name);
  for (int i = 0; i < h->ntensors && !r->failed; i++) {
    const dc_st_tensor *t = &h->tensors[i];
    if (t->begin > t->end)
      fail(r, "tensor '%s': data_offsets [%llu, %llu] run backwards", t->name, (unsigned long long)t->begin,
           (unsigned long long)t->end);
    else if (t->end > h->data_size)
      fail(r, "tensor '%s': data_offsets [%llu, %llu] out of range (the data holds %llu bytes)", t->name,
           (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)h->data_size);
    else if (t->end - t->begin != t->numel * dc_st_dtype_size(t->dtype))
      fail(r, "tensor '%s': %llu bytes of data, but %s with %llu elements needs %llu", t->name,
           (unsigned long long)(t->end - t->begin), dc_st_dtype_name(t->dtype), (unsigned long long)t->numel,
           (unsigned long long)(t->numel * dc_st_dtype_size(t->dtype)));
  }
  if (!r->failed) {
    qsort(order, (size_t)h->ntensors, sizeof *order, cmp_offsets);
    uint64_t at = 0;
    for (int i = 0; i < h->ntensors && !r->failed; i++) {
      if (order[i]->begin < at)
        fail(r, "tensors '%s' and '%s' overlap (bytes %llu..%llu and %llu..%llu)", order[i - 1]->name, order[i]->name,
             (unsigned long long)order[i - 1]->begin, (unsigned long long)order[i - 1]->end,
             (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end);
      else if (order[i]->begin > at)
        fail(r, "unused bytes %llu..%llu of the data before tensor '%s'", (unsigned long long)at,
             (unsigned long long)order[i]->begin, order[i]->name);
      at = order[i]->end;
    }
    if (!r->failed && at != h->data_size)
      fail(r, "%llu bytes of trailing data after the last tensor", (unsigned long long)(h->data_size - at));
  }
  free(order);
  return !r->failed;
}

void dc_st_free(dc_st_header *h) {
  for (int i = 0; i < h->ntensors; i++) free(h->tensors[i].name);
  for (int i = 0; i < h->nmeta; i++) {
    free(h->meta[i].key);
    free(h->meta[i].value);
  }
  free(h->tensors);
  free(h->meta);
  memset(h, 0, sizeof *h);
}

int dc_st_parse(const unsigned char *buf, size_t size, dc_st_header *h, char *err, size_t errlen) {
  memset(h, 0, sizeof *h);
  reader r = {.err = err, .errlen = errlen};
  if (size < 8) {
    snprintf(err, errlen, "file too short (%zu bytes) for the 8-byte header length", size);
    return -1;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
  if (n > size - 8) {
    snprintf(err, errlen, "header length %llu runs past the end of the file (%zu bytes): truncated or not safetensors",
             (unsigned long long)n, size);
    return -1;
  }
  if (n > DC_ST_MAX_HEADER) {
    snprintf(err, errlen, "header length %llu is over the 100 MB limit", (unsigned long long)n);
    return -1;
  }
  h->data_start = 8 + n;
  h->data_size = size - 8 - n;
  r.start = r.p = buf + 8;
  r.end = r.p + n;
  if (n == 0 || buf[8] != '{') {
    snprintf(err, errlen, "invalid header: it must be a JSON object starting at byte 8");
    return -1;
  }
  r.p++;
  if (peek(&r) == '}') r.p++;
  else {
    bool have_meta = false;
    do {
      char *name = read_string(&r);
      if (!name) break;
      if (!expect(&r, ':')) {
        free(name);
        break;
      }
      if (strcmp(name, "__metadata__") == 0) {
        free(name);
        if (have_meta) fail(&r, "__metadata__ given twice");
        have_meta = true;
        if (r.failed || !read_metadata(&r, h)) break;
        continue;
      }
      if (!grow(&r, (void **)&h->tensors, h->ntensors, sizeof *h->tensors)) {
        free(name);
        break;
      }
      dc_st_tensor *t = &h->tensors[h->ntensors++];
      memset(t, 0, sizeof *t);
      t->name = name;
      if (!read_tensor(&r, t)) break;
    } while (peek(&r) == ',' && (r.p++, true));
    if (!r.failed) expect(&r, '}');
  }
  if (!r.failed && peek(&r) != -1) fail(&r, "invalid header: unexpected text after the object at byte %llu", where(&r));
  if (!r.failed && h->nmeta > 1) qsort(h->meta, (size_t)h->nmeta, sizeof *h->meta, cmp_meta);
  if (r.failed || !check_layout(&r, h)) {
    dc_st_free(h);
    return -1;
  }
  return 0;
}

const char *dc_st_dtype_name(dc_st_dtype t) {
  switch (t) {
  case DC_ST_F32: return "F32";
  case DC_ST_F16: return "F16";
  case DC_ST_BF16: return "BF16";
  case DC_ST_F64: return "F64";
  }
  return "?";
}

size_t dc_st_dtype_size(dc_st_dtype t) { return t == DC_ST_F64 ? 8 : t == DC_ST_F32 ? 4 : 2; }

int dc_st_find(const dc_st_header *h, const char *name) {
  for (int i = 0; i < h->ntensors; i++)
    if (strcmp(h->tensors[i].name, name) == 0) return i;
  return -1;
}

static float f32_from_bits(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* IEEE half -> float, exact (every half is a float), subnormals, infinities and NaN kept. */
static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000u | (mant << 13));
  if (exp == 0) { /* zero or subnormal: mant * 2^-24 */
    float v = (float)mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

void dc_st_to_f32(const dc_st_tensor *t, const unsigned char *data, float *out) {
  const unsigned char *p = data + t->begin;
  size_t n = (size_t)t->numel;
  switch (t->dtype) {
  case DC_ST_F32:
    for (size_t i = 0; i < n; i++, p += 4)
      out[i] = f32_from_bits((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    break;
  case DC_ST_F16:
    for (size_t i = 0; i < n; i++, p += 2) out[i] = half_to_float((uint16_t)(p[0] | p[1] << 8));
    break;
  case DC_ST_BF16:
    for (size_t i = 0; i < n; i++, p += 2) out[i] = f32_from_bits((uint32_t)p[0] << 16 | (uint32_t)p[1] << 24);
    break;
  case DC_ST_F64:
    for (size_t i = 0; i < n; i++, p += 8) {
      uint64_t bits = 0;
      for (int b = 7; b >= 0; b--) bits = (bits << 8) | p[b];
      double d;
      memcpy(&d, &bits, sizeof d);
      out[i] = (float)d;
    }
    break;
  }
}

/* ---- writer ---- */

typedef struct buf {
  char *s;
  size_t len, cap;
  bool oom;
} buf;

static void put(buf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *grown = realloc(b->s, cap);
    if (!grown) {
      b->oom = true;
      return;
    }
    b->s = grown;
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_json_string(buf *b, const char *s) {
  puts_(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      put(b, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      puts_(b, esc);
    } else {
      put(b, (const char *)&c, 1);
    }
  }
  puts_(b, "\"");
}

int dc_st_write(FILE *f, const dc_st_out *tensors, int n, const dc_st_meta *meta, int nmeta) {
  buf b = {0};
  char num[64];
  uint64_t at = 0;
  puts_(&b, "{");
  if (nmeta > 0) {
    puts_(&b, "\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
      if (i) puts_(&b, ",");
      put_json_string(&b, meta[i].key);
      puts_(&b, ":");
      put_json_string(&b, meta[i].value);
    }
    puts_(&b, "}");
  }
  for (int i = 0; i < n; i++) {
    uint64_t numel = 1;
    if (i || nmeta > 0) puts_(&b, ",");
    put_json_string(&b, tensors[i].name);
    puts_(&b, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int d = 0; d < tensors[i].ndim; d++) {
      snprintf(num, sizeof num, "%s%llu", d ? "," : "", (unsigned long long)tensors[i].shape[d]);
      puts_(&b, num);
      numel *= tensors[i].shape[d];
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
             (unsigned long long)(at + numel * 4));
    puts_(&b, num);
    at += numel * 4;
  }
  puts_(&b, "}");
  while (!b.oom && (8 + b.len) % 8) puts_(&b, " "); /* the data starts 8-byte aligned */
  if (b.oom) {
    free(b.s);
    errno = ENOMEM;
    return -1;
  }
  unsigned char len[8];
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)b.len >> (8 * i));
  int rc = fwrite(len, 1, 8, f) == 8 && fwrite(b.s, 1, b.len, f) == b.len ? 0 : -1;
  free(b.s);
  for (int i = 0; i < n && rc == 0; i++) {
    uint64_t numel = 1;
    for (int d = 0; d < tensors[i].ndim; d++) numel *= tensors[i].shape[d];
    /* little-endian on disk, as on every machine dconn targets (x86-64, arm64) */
    if (numel && fwrite(tensors[i].data, 4, (size_t)numel, f) != numel) rc = -1;
  }
  return rc;
}

/* ---- reading a file ---- */

int dc_st_read_fd(int fd, size_t size, unsigned char **out, char *err, size_t errlen) {
  *out = NULL;
  if (size == 0) return 0;
  unsigned char *bytes = malloc(size);
  if (!bytes) {
    snprintf(err, errlen, "out of memory (%zu bytes)", size);
    return -1;
  }
  size_t got = 0;
  while (got < size) {
    ssize_t n = read(fd, bytes + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      snprintf(err, errlen, "%s", strerror(errno));
      free(bytes);
      return -1;
    }
    if (n == 0) {
      snprintf(err, errlen, "file shrank while being read (%zu of %zu bytes)", got, size);
      free(bytes);
      return -1;
    }
    got += (size_t)n;
  }
  *out = bytes;
  return 0;
}

int dc_st_read_file(const char *path, unsigned char **out, size_t *size, char *err, size_t errlen) {
  *out = NULL;
  *size = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "%s", strerror(errno));
    return -1;
  }
  struct stat st;
  int rc = -1;
  if (fstat(fd, &st) != 0) snprintf(err, errlen, "%s", strerror(errno));
  else if (!S_ISREG(st.st_mode)) snprintf(err, errlen, "not a regular file");
  else rc = dc_st_read_fd(fd, (size_t)st.st_size, out, err, errlen);
  if (rc == 0) *size = (size_t)st.st_size;
  close(fd);
  return rc;
}
