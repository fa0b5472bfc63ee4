/*
 * dconn.nn tensors (see tensor.h). Indexing is 1-based like Lua: t[i] is a number for a 1-D
 * tensor and a view of row i otherwise. Misuse (bad index, ragged table, shape mismatch)
 * raises; nothing here does I/O.
 */
#include "tensor.h"

#include <math.h>
#include <string.h>

#include <lauxlib.h>

/* Elements in one tensor; beyond this a shape is a mistake, not a workload. */
#define MAX_NUMEL ((int64_t)1 << 34)

int64_t dc_tensor_numel(const dc_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  return n;
}

bool dc_tensor_is_contiguous(const dc_tensor *t) {
  int64_t expect = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && t->stride[d] != expect) return false;
    expect *= t->shape[d];
  }
  return true;
}

dc_tensor *dc_tensor_test(lua_State *L, int idx) { return luaL_testudata(L, idx, DC_TENSOR_MT); }
dc_tensor *dc_tensor_check(lua_State *L, int idx) { return luaL_checkudata(L, idx, DC_TENSOR_MT); }

/* Pushes a view header sharing the storage of the tensor at idx (its first user value). */
static dc_tensor *push_view(lua_State *L, int idx, const dc_tensor *like) {
  idx = lua_absindex(L, idx);
  dc_tensor *v = lua_newuserdatauv(L, sizeof *v, 1);
  *v = *like;
  luaL_setmetatable(L, DC_TENSOR_MT);
  lua_getiuservalue(L, idx, 1);
  lua_setiuservalue(L, -2, 1);
  return v;
}

dc_tensor *dc_tensor_push(lua_State *L, int ndim, const int64_t *shape) {
  if (ndim < 1 || ndim > DC_TENSOR_MAX_DIMS) luaL_error(L, "tensor: expected 1 to 8 dimensions, got %d", ndim);
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) {
    /* each entry bounded too: after a 0 the product stays 0, but the strides would overflow */
    if (shape[d] < 0 || shape[d] > MAX_NUMEL || (shape[d] && n > MAX_NUMEL / shape[d]))
      luaL_error(L, "tensor: bad shape (dimension %d is %I)", d + 1, (lua_Integer)shape[d]);
    n *= shape[d];
  }
  dc_tensor *t = lua_newuserdatauv(L, sizeof *t, 1);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, DC_TENSOR_MT);
  t->data = lua_newuserdatauv(L, (size_t)n * sizeof(float), 0); /* the storage */
  memset(t->data, 0, (size_t)n * sizeof(float));
  lua_setiuservalue(L, -2, 1);
  t->ndim = ndim;
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    t->shape[d] = shape[d];
    t->stride[d] = s;
    s *= shape[d];
  }
  return t;
}

/* Calls fn(element pointer, ud) for every element in row-major order. */
static void each(const dc_tensor *t, void (*fn)(float *, void *), void *ud) {
  int64_t idx[DC_TENSOR_MAX_DIMS] = {0};
  int64_t n = dc_tensor_numel(t);
  float *p = t->data;
  for (int64_t k = 0; k < n; k++) {
    fn(p, ud);
    for (int d = t->ndim - 1; d >= 0; d--) {
      p += t->stride[d];
      if (++idx[d] < t->shape[d]) break;
      p -= t->stride[d] * t->shape[d];
      idx[d] = 0;
    }
  }
}

/* cppcheck-suppress constParameter ; the signature each() calls */
static void pack_one(float *p, void *ud) {
  float **out = ud;
  *(*out)++ = *p;
}

void dc_tensor_pack(const dc_tensor *t, float *out) {
  if (dc_tensor_is_contiguous(t)) {
    memcpy(out, t->data, (size_t)dc_tensor_numel(t) * sizeof(float));
    return;
  }
  each(t, pack_one, &out);
}

/* ---- construction from Lua tables ---- */

/* The shape of a nested table, read down the first elements. */
static int table_shape(lua_State *L, int idx, int64_t *shape) {
  int ndim = 0;
  lua_pushvalue(L, idx);
  while (lua_type(L, -1) == LUA_TTABLE) {
    if (ndim == DC_TENSOR_MAX_DIMS) luaL_error(L, "tensor: more than 8 levels of nesting");
    shape[ndim++] = (int64_t)lua_rawlen(L, -1);
    if (lua_rawlen(L, -1) == 0) break;
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
  return ndim;
}

/* Fills out from the nested table at idx (depth d of ndim), checking it is not ragged. */
static void fill_from(lua_State *L, int idx, int d, int ndim, const int64_t *shape, float **out, int64_t *path) {
  if ((int64_t)lua_rawlen(L, idx) != shape[d])
    luaL_error(L, "tensor: ragged table: a row at depth %d has %I elements, expected %I", d + 1,
               (lua_Integer)lua_rawlen(L, idx), (lua_Integer)shape[d]);
  luaL_checkstack(L, 2, "tensor nesting");
  for (int64_t i = 1; i <= shape[d]; i++) {
    int type = lua_rawgeti(L, idx, (lua_Integer)i);
    path[d] = i;
    if (d + 1 < ndim) {
      if (type != LUA_TTABLE)
        luaL_error(L, "tensor: expected a table at depth %d, got %s", d + 2, lua_typename(L, type));
      fill_from(L, lua_gettop(L), d + 1, ndim, shape, out, path);
    } else {
      int isnum;
      lua_Number v = lua_tonumberx(L, -1, &isnum);
      if (!isnum || type != LUA_TNUMBER) luaL_error(L, "tensor: expected a number, got %s", lua_typename(L, type));
      *(*out)++ = (float)v;
    }
    lua_pop(L, 1);
  }
}

static int read_shape(lua_State *L, int idx, int64_t *shape) {
  luaL_checktype(L, idx, LUA_TTABLE);
  int ndim = (int)lua_rawlen(L, idx);
  luaL_argcheck(L, ndim >= 1 && ndim <= DC_TENSOR_MAX_DIMS, idx, "a shape has 1 to 8 dimensions");
  for (int d = 0; d < ndim; d++) {
    lua_rawgeti(L, idx, d + 1);
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    luaL_argcheck(L, isint && v >= 0, idx, "shape entries must be integers >= 0");
    shape[d] = v;
    lua_pop(L, 1);
  }
  return ndim;
}

dc_tensor *dc_tensor_arg(lua_State *L, int idx) {
  dc_tensor *t = dc_tensor_test(L, idx);
  if (t) return t;
  idx = lua_absindex(L, idx);
  luaL_argexpected(L, lua_type(L, idx) == LUA_TTABLE, idx, "tensor or table");
  int64_t shape[DC_TENSOR_MAX_DIMS], path[DC_TENSOR_MAX_DIMS];
  int ndim = table_shape(L, idx, shape);
  t = dc_tensor_push(L, ndim, shape);
  float *out = t->data;
  fill_from(L, idx, 0, ndim, shape, &out, path);
  lua_replace(L, idx);
  return t;
}

/* tensor(nested_table) | tensor(flat_table, shape) | tensor(other_tensor) (a copy) */
static int t_new(lua_State *L) {
  dc_tensor *src = dc_tensor_test(L, 1);
  if (src) {
    dc_tensor *t = dc_tensor_push(L, src->ndim, src->shape);
    dc_tensor_pack(src, t->data);
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    dc_tensor_arg(L, 1);
    return 1;
  }
  int64_t shape[DC_TENSOR_MAX_DIMS];
  int ndim = read_shape(L, 2, shape);
  dc_tensor *t = dc_tensor_push(L, ndim, shape);
  int64_t n = dc_tensor_numel(t);
  luaL_argcheck(L, (int64_t)lua_rawlen(L, 1) == n, 1, "the flat table's length must be the product of the shape");
  for (int64_t i = 0; i < n; i++) {
    lua_rawgeti(L, 1, (lua_Integer)i + 1);
    int isnum;
    t->data[i] = (float)lua_tonumberx(L, -1, &isnum);
    if (!isnum || lua_type(L, -1) != LUA_TNUMBER) return luaL_argerror(L, 1, "expected numbers");
    lua_pop(L, 1);
  }
  return 1;
}

static void set_value(float *p, void *ud) { *p = *(float *)ud; }

/* zeros(shape), full(shape, value) */
static int t_full(lua_State *L) {
  int64_t shape[DC_TENSOR_MAX_DIMS];
  int ndim = read_shape(L, 1, shape);
  float v = (float)luaL_optnumber(L, 2, 0);
  dc_tensor *t = dc_tensor_push(L, ndim, shape);
  if (v != 0) each(t, set_value, &v);
  return 1;
}

static int t_zeros(lua_State *L) {
  lua_settop(L, 1);
  return t_full(L);
}

static int t_is_tensor(lua_State *L) {
  lua_pushboolean(L, dc_tensor_test(L, 1) != NULL);
  return 1;
}

/* ---- methods ---- */

/* A 1-based index into dimension d; negative counts from the end when allowed. */
static int64_t check_index(lua_State *L, int arg, const dc_tensor *t, int d, bool negative) {
  lua_Integer i = luaL_checkinteger(L, arg);
  if (negative && i < 0) i += t->shape[d] + 1;
  if (i < 1 || i > t->shape[d])
    luaL_error(L, "tensor: index %I out of range for dimension %d of size %I", luaL_checkinteger(L, arg), d + 1,
               (lua_Integer)t->shape[d]);
  return i - 1;
}

static float *element(lua_State *L, const dc_tensor *t, int first_arg) {
  int n = lua_gettop(L) - first_arg + 1;
  if (n < t->ndim) luaL_error(L, "tensor: %d indexes for a %d-dimensional tensor", n, t->ndim);
  float *p = t->data;
  for (int d = 0; d < t->ndim; d++) p += check_index(L, first_arg + d, t, d, false) * t->stride[d];
  return p;
}

static int m_get(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  lua_pushnumber(L, *element(L, t, 2));
  return 1;
}

static int m_set(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  lua_Number v = luaL_checknumber(L, t->ndim + 2);
  lua_settop(L, t->ndim + 1);
  *element(L, t, 2) = (float)v;
  return 0;
}

static int m_shape(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) {
    lua_pushinteger(L, t->shape[d]);
    lua_rawseti(L, -2, d + 1);
  }
  return 1;
}

static int m_size(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  lua_Integer d = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, d >= 1 && d <= t->ndim, 2, "no such dimension");
  lua_pushinteger(L, t->shape[d - 1]);
  return 1;
}

static int m_dim(lua_State *L) {
  lua_pushinteger(L, dc_tensor_check(L, 1)->ndim);
  return 1;
}

static int m_numel(lua_State *L) {
  lua_pushinteger(L, dc_tensor_numel(dc_tensor_check(L, 1)));
  return 1;
}

static int m_dtype(lua_State *L) {
  dc_tensor_check(L, 1);
  lua_pushliteral(L, "float32");
  return 1;
}

static int m_is_contiguous(lua_State *L) {
  lua_pushboolean(L, dc_tensor_is_contiguous(dc_tensor_check(L, 1)));
  return 1;
}

static void push_nested(lua_State *L, const float *p, const dc_tensor *t, int d) {
  luaL_checkstack(L, 3, "tensor nesting");
  lua_createtable(L, (int)t->shape[d], 0);
  for (int64_t i = 0; i < t->shape[d]; i++, p += t->stride[d]) {
    if (d + 1 == t->ndim) lua_pushnumber(L, *p);
    else push_nested(L, p, t, d + 1);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

static int m_totable(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  push_nested(L, t->data, t, 0);
  return 1;
}

/* t:select(dim, i): the view with dimension dim fixed at i (one dimension fewer). */
static int select_view(lua_State *L, dc_tensor *t, int d, int64_t i) {
  if (t->ndim == 1) {
    lua_pushnumber(L, t->data[i * t->stride[0]]);
    return 1;
  }
  dc_tensor v = *t;
  v.data += i * t->stride[d];
  v.ndim--;
  for (int k = d; k < v.ndim; k++) {
    v.shape[k] = t->shape[k + 1];
    v.stride[k] = t->stride[k + 1];
  }
  push_view(L, 1, &v);
  return 1;
}

static int m_select(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  lua_Integer d = luaL_checkinteger(L, 2);
  luaL_argcheck(L, d >= 1 && d <= t->ndim, 2, "no such dimension");
  return select_view(L, t, (int)d - 1, check_index(L, 3, t, (int)d - 1, true));
}

/* t:slice(from [, to [, dim]]): rows from..to (inclusive, negative from the end), no copy. */
static int m_slice(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  lua_Integer d = luaL_optinteger(L, 4, 1);
  luaL_argcheck(L, d >= 1 && d <= t->ndim, 4, "no such dimension");
  d--;
  lua_Integer n = t->shape[d];
  lua_Integer from = luaL_checkinteger(L, 2), to = luaL_optinteger(L, 3, n);
  if (from < 0) from += n + 1;
  if (to < 0) to += n + 1;
  luaL_argcheck(L, from >= 1 && from <= n + 1, 2, "out of range");
  luaL_argcheck(L, to >= from - 1 && to <= n, 3, "out of range");
  dc_tensor v = *t;
  v.data += (from - 1) * t->stride[d];
  v.shape[d] = to - from + 1;
  push_view(L, 1, &v);
  return 1;
}

/* t:windows(size [, step]): [T, ...] -> [n, size, ...] overlapping windows over dimension 1,
 * n = floor((T - size) / step) + 1, sharing t's memory. */
static int m_windows(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  lua_Integer size = luaL_checkinteger(L, 2), step = luaL_optinteger(L, 3, 1);
  luaL_argcheck(L, size >= 1, 2, "window size must be >= 1");
  luaL_argcheck(L, step >= 1, 3, "step must be >= 1");
  luaL_argcheck(L, t->ndim < DC_TENSOR_MAX_DIMS, 1, "too many dimensions");
  if (size > t->shape[0])
    return luaL_error(L, "tensor:windows: a window of %I needs at least %I rows, the tensor has %I", size, size,
                      (lua_Integer)t->shape[0]);
  /* a step past the rows gives one window: clamped so that step * stride cannot overflow */
  if (step > t->shape[0]) step = t->shape[0];
  dc_tensor v = *t;
  v.ndim = t->ndim + 1;
  v.shape[0] = (t->shape[0] - size) / step + 1;
  v.stride[0] = step * t->stride[0];
  v.shape[1] = size;
  v.stride[1] = t->stride[0];
  for (int k = 1; k < t->ndim; k++) {
    v.shape[k + 1] = t->shape[k];
    v.stride[k + 1] = t->stride[k];
  }
  push_view(L, 1, &v);
  return 1;
}

static int m_clone(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  dc_tensor *c = dc_tensor_push(L, t->ndim, t->shape);
  dc_tensor_pack(t, c->data);
  return 1;
}

static int m_contiguous(lua_State *L) {
  if (dc_tensor_is_contiguous(dc_tensor_check(L, 1))) {
    lua_settop(L, 1);
    return 1;
  }
  return m_clone(L);
}

/* t:reshape(shape) (one entry may be -1): a view when t is contiguous, else a copy. */
static int m_reshape(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int ndim = (int)lua_rawlen(L, 2), infer = -1;
  luaL_argcheck(L, ndim >= 1 && ndim <= DC_TENSOR_MAX_DIMS, 2, "a shape has 1 to 8 dimensions");
  int64_t shape[DC_TENSOR_MAX_DIMS], known = 1, n = dc_tensor_numel(t);
  for (int d = 0; d < ndim; d++) {
    lua_rawgeti(L, 2, d + 1);
    int isint;
    shape[d] = lua_tointegerx(L, -1, &isint);
    lua_pop(L, 1);
    luaL_argcheck(L, isint && (shape[d] >= 0 || (shape[d] == -1 && infer < 0)), 2, "bad shape entry");
    luaL_argcheck(L, shape[d] <= MAX_NUMEL, 2, "shape entry too large");
    if (shape[d] == -1) infer = d;
    else if (shape[d] && known > MAX_NUMEL / shape[d]) return luaL_argerror(L, 2, "shape too large");
    else known *= shape[d];
  }
  if (infer >= 0) {
    luaL_argcheck(L, known > 0 && n % known == 0, 2, "cannot infer the -1 dimension");
    shape[infer] = n / known;
    known = n;
  }
  if (known != n) return luaL_error(L, "tensor:reshape: %I elements cannot take that shape", (lua_Integer)n);
  if (dc_tensor_is_contiguous(t)) {
    dc_tensor v = {.data = t->data, .ndim = ndim};
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
      v.shape[d] = shape[d];
      v.stride[d] = s;
      s *= shape[d];
    }
    push_view(L, 1, &v);
    return 1;
  }
  dc_tensor *c = dc_tensor_push(L, ndim, shape);
  dc_tensor_pack(t, c->data);
  return 1;
}

static int m_fill(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  float v = (float)luaL_checknumber(L, 2);
  each(t, set_value, &v);
  lua_settop(L, 1);
  return 1;
}

/* cppcheck-suppress constParameter ; the signature each() calls */
static void check_finite(float *p, void *ud) {
  if (!isfinite(*p)) *(bool *)ud = false;
}

static int m_finite(lua_State *L) {
  bool ok = true;
  each(dc_tensor_check(L, 1), check_finite, &ok);
  lua_pushboolean(L, ok);
  return 1;
}

/* cppcheck-suppress constParameter ; the signature each() calls */
static void add_value(float *p, void *ud) { *(double *)ud += *p; }

static int m_sum(lua_State *L) {
  double sum = 0;
  each(dc_tensor_check(L, 1), add_value, &sum);
  lua_pushnumber(L, sum);
  return 1;
}

/* t:max_diff(u): max |t - u| over all elements (same shape), for parity checks; NaN anywhere
 * gives NaN. */
static int m_max_diff(lua_State *L) {
  dc_tensor *a = dc_tensor_check(L, 1);
  dc_tensor *b = dc_tensor_arg(L, 2);
  luaL_argcheck(L, a->ndim == b->ndim && memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) == 0, 2,
                "shapes differ");
  int64_t n = dc_tensor_numel(a);
  float *x = lua_newuserdatauv(L, (size_t)n * 2 * sizeof(float), 0);
  dc_tensor_pack(a, x);
  dc_tensor_pack(b, x + n);
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)x[i] - (double)x[n + i]);
    if (isnan(d)) worst = NAN;
    else if (d > worst) worst = d;
  }
  lua_pushnumber(L, worst);
  return 1;
}

static int mt_index(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER) return select_view(L, t, 0, check_index(L, 2, t, 0, false));
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int mt_newindex(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  if (t->ndim != 1) return luaL_error(L, "tensor: t[i] = v needs a 1-D tensor (use t:set(i, j, ..., v))");
  int64_t i = check_index(L, 2, t, 0, false);
  t->data[i * t->stride[0]] = (float)luaL_checknumber(L, 3);
  return 0;
}

static int mt_len(lua_State *L) {
  lua_pushinteger(L, dc_tensor_check(L, 1)->shape[0]);
  return 1;
}

static int mt_tostring(lua_State *L) {
  dc_tensor *t = dc_tensor_check(L, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "tensor<float32>[");
  for (int d = 0; d < t->ndim; d++) {
    if (d) luaL_addchar(&b, 'x');
    lua_pushinteger(L, t->shape[d]);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, ']');
  luaL_pushresult(&b);
  return 1;
}

static const luaL_Reg functions[] = {
    {"tensor", t_new}, {"zeros", t_zeros}, {"full", t_full}, {"is_tensor", t_is_tensor}, {NULL, NULL},
};

static const luaL_Reg methods[] = {
    {"get", m_get},
    {"set", m_set},
    {"shape", m_shape},
    {"size", m_size},
    {"dim", m_dim},
    {"numel", m_numel},
    {"dtype", m_dtype},
    {"totable", m_totable},
    {"select", m_select},
    {"slice", m_slice},
    {"windows", m_windows},
    {"clone", m_clone},
    {"contiguous", m_contiguous},
    {"is_contiguous", m_is_contiguous},
    {"reshape", m_reshape},
    {"fill", m_fill},
    {"finite", m_finite},
    {"sum", m_sum},
    {"max_diff", m_max_diff},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__index", mt_index}, {"__newindex", mt_newindex}, {"__len", mt_len}, {"__tostring", mt_tostring}, {NULL, NULL},
};

void dc_tensor_open(lua_State *L) {
  luaL_setfuncs(L, functions, 0);
  luaL_newmetatable(L, DC_TENSOR_MT);
  luaL_setfuncs(L, metamethods, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__methods");
  lua_pop(L, 1);
}
