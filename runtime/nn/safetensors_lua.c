/*
 * dconn.nn safetensors files: nn.open(path) reads a file into memory and validates it whole
 * (safetensors.c); file:get(name) converts one tensor to a float32 tensor in the Lua heap, so
 * no tensor points into the file's bytes and file:close() can free them at once. Read, not
 * mapped: a mapped file truncated underneath kills the process with SIGBUS; a read one is
 * either whole or an error. nn.save writes float32
 * tensors next to the destination and renames, so readers never see half a file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#include "safetensors.h"
#include "tensor.h"

#define FILE_MT "dconn.safetensors"

typedef struct st_file {
  unsigned char *map; /* the file's bytes; NULL when closed */
  size_t size;
  dc_st_header h;
} st_file;

static st_file *check_file(lua_State *L) {
  st_file *f = luaL_checkudata(L, 1, FILE_MT);
  luaL_argcheck(L, f->map != NULL, 1, "file is closed");
  return f;
}

/* Idempotent: __gc, __close and :close(). */
static int f_close(lua_State *L) {
  st_file *f = luaL_checkudata(L, 1, FILE_MT);
  free(f->map);
  f->map = NULL;
  dc_st_free(&f->h);
  return 0;
}

/* Reads and validates path into f; 0, or -1 with the reason in err. */
static int map_file(st_file *f, const char *path, char *err, size_t errlen) {
  if (dc_st_read_file(path, &f->map, &f->size, err, errlen) != 0) return -1;
  static const unsigned char empty[1];
  /* an empty file fails here (too short), so an open file always has its bytes */
  if (dc_st_parse(f->map ? f->map : empty, f->size, &f->h, err, errlen) == 0) return 0;
  free(f->map);
  f->map = NULL;
  f->size = 0;
  return -1;
}

/* nn.open(path) -> file | nil, "path: reason" */
static int st_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  st_file *f = lua_newuserdatauv(L, sizeof *f, 0);
  memset(f, 0, sizeof *f); /* closed until read */
  luaL_setmetatable(L, FILE_MT);
  char err[512];
  if (map_file(f, path, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, err);
    return 2;
  }
  return 1;
}

static int f_names(lua_State *L) {
  st_file *f = check_file(L);
  lua_createtable(L, f->h.ntensors, 0);
  for (int i = 0; i < f->h.ntensors; i++) {
    lua_pushstring(L, f->h.tensors[i].name);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int f_info(lua_State *L) {
  st_file *f = check_file(L);
  int i = dc_st_find(&f->h, luaL_checkstring(L, 2));
  if (i < 0) return 0;
  const dc_st_tensor *t = &f->h.tensors[i];
  lua_createtable(L, 0, 3);
  lua_pushstring(L, dc_st_dtype_name(t->dtype));
  lua_setfield(L, -2, "dtype");
  lua_createtable(L, t->ndim, 0);
  for (int d = 0; d < t->ndim; d++) {
    lua_pushinteger(L, (lua_Integer)t->shape[d]);
    lua_rawseti(L, -2, d + 1);
  }
  lua_setfield(L, -2, "shape");
  lua_createtable(L, 2, 0);
  lua_pushinteger(L, (lua_Integer)t->begin);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, (lua_Integer)t->end);
  lua_rawseti(L, -2, 2);
  lua_setfield(L, -2, "data_offsets");
  return 1;
}

/* file:get(name) -> float32 tensor (a 0-d tensor comes back with shape {1}) | nil, err */
static int f_get(lua_State *L) {
  st_file *f = check_file(L);
  const char *name = luaL_checkstring(L, 2);
  int i = dc_st_find(&f->h, name);
  if (i < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "no tensor named '%s'", name);
    return 2;
  }
  const dc_st_tensor *t = &f->h.tensors[i];
  int64_t shape[DC_ST_MAX_DIMS] = {1};
  for (int d = 0; d < t->ndim; d++) shape[d] = (int64_t)t->shape[d];
  dc_tensor *out = dc_tensor_push(L, t->ndim ? t->ndim : 1, shape);
  dc_st_to_f32(t, f->map + f->h.data_start, out->data);
  return 1;
}

static int f_metadata(lua_State *L) {
  st_file *f = check_file(L);
  lua_createtable(L, 0, f->h.nmeta);
  for (int i = 0; i < f->h.nmeta; i++) {
    lua_pushstring(L, f->h.meta[i].value);
    lua_setfield(L, -2, f->h.meta[i].key);
  }
  return 1;
}

static int f_tostring(lua_State *L) {
  st_file *f = luaL_checkudata(L, 1, FILE_MT);
  if (!f->map) lua_pushliteral(L, "safetensors (closed)");
  else lua_pushfstring(L, "safetensors (%d tensors, %I bytes)", f->h.ntensors, (lua_Integer)f->size);
  return 1;
}

/* ---- writing ---- */

typedef struct save_state {
  dc_st_out *out;
  dc_st_meta *meta;
  uint64_t *shapes;
  FILE *fp;
  char *tmp;
} save_state;

static int save_cleanup(lua_State *L) {
  save_state *s = lua_touserdata(L, 1);
  if (s->fp) fclose(s->fp);
  if (s->tmp) {
    unlink(s->tmp);
    free(s->tmp);
  }
  free(s->out);
  free(s->meta);
  free(s->shapes);
  memset(s, 0, sizeof *s);
  return 0;
}

static int cmp_out(const void *a, const void *b) {
  return strcmp(((const dc_st_out *)a)->name, ((const dc_st_out *)b)->name);
}

/* nn.save(path, {name = tensor, ...} [, metadata]) -> true | nil, err. Tensors are written in
 * name order as F32. */
static int st_save(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  int n = 0, nmeta = 0;
  for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
    luaL_argcheck(L, lua_type(L, -2) == LUA_TSTRING, 2, "tensor names must be strings");
    luaL_argcheck(L, dc_tensor_test(L, -1) != NULL, 2, "values must be tensors");
    n++;
  }
  if (!lua_isnil(L, 3))
    for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) {
      luaL_argcheck(L, lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING, 3,
                    "metadata keys and values must be strings");
      nmeta++;
    }
  /* everything below lives in a to-be-closed box, so a raise cannot leak it */
  save_state *s = lua_newuserdatauv(L, sizeof *s, 1); /* index 4 */
  memset(s, 0, sizeof *s);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, save_cleanup);
  lua_setfield(L, -2, "__close");
  lua_setmetatable(L, 4);
  lua_toclose(L, 4);
  lua_createtable(L, n, 0); /* index 5: contiguous copies stay anchored here */
  s->out = calloc((size_t)n + 1, sizeof *s->out);
  s->meta = calloc((size_t)nmeta + 1, sizeof *s->meta);
  s->shapes = calloc((size_t)n * DC_TENSOR_MAX_DIMS + 1, sizeof *s->shapes);
  size_t plen = strlen(path);
  s->tmp = malloc(plen + 32);
  if (!s->out || !s->meta || !s->shapes || !s->tmp) return luaL_error(L, "nn.save: out of memory");
  snprintf(s->tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
  int i = 0;
  for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
    dc_tensor *t = dc_tensor_test(L, -1);
    if (!dc_tensor_is_contiguous(t)) {
      dc_tensor *c = dc_tensor_push(L, t->ndim, t->shape);
      dc_tensor_pack(t, c->data);
      lua_rawseti(L, 5, i + 1);
      t = c;
    }
    s->out[i].name = lua_tostring(L, -2);
    s->out[i].ndim = t->ndim;
    s->out[i].shape = s->shapes + (size_t)i * DC_TENSOR_MAX_DIMS;
    for (int d = 0; d < t->ndim; d++) s->shapes[(size_t)i * DC_TENSOR_MAX_DIMS + d] = (uint64_t)t->shape[d];
    s->out[i].data = t->data;
    i++;
  }
  qsort(s->out, (size_t)n, sizeof *s->out, cmp_out);
  i = 0;
  if (nmeta)
    for (lua_pushnil(L); lua_next(L, 3); lua_pop(L, 1)) {
      s->meta[i].key = (char *)lua_tostring(L, -2);
      s->meta[i++].value = (char *)lua_tostring(L, -1);
    }
  s->fp = fopen(s->tmp, "wb");
  int ok = s->fp && dc_st_write(s->fp, s->out, n, s->meta, nmeta) == 0;
  if (s->fp && fclose(s->fp) != 0) ok = 0;
  s->fp = NULL;
  if (ok && rename(s->tmp, path) == 0) {
    free(s->tmp);
    s->tmp = NULL;
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", path, strerror(errno));
  return 2;
}

static const luaL_Reg functions[] = {{"open", st_open}, {"save", st_save}, {NULL, NULL}};

static const luaL_Reg methods[] = {
    {"names", f_names}, {"info", f_info}, {"get", f_get}, {"metadata", f_metadata}, {"close", f_close}, {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__gc", f_close}, {"__close", f_close}, {"__tostring", f_tostring}, {"__index", NULL}, {NULL, NULL},
};

void dc_st_lua_open(lua_State *L) {
  luaL_setfuncs(L, functions, 0);
  luaL_newmetatable(L, FILE_MT);
  luaL_setfuncs(L, metamethods, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
