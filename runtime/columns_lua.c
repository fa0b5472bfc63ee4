/*
 * dconn._columns: numbers per candidate as flat C arrays, for the placement engine. A tick of
 * 1,000 apps over 100 nodes holds 100,000 predictions, errors and noise figures; as Lua tables
 * that is hundreds of megabytes and most of the tick. Here a column is one block of doubles, and
 * the work on a whole column (its best value, its spread, this tick's errors) is one C call.
 *
 *   columns.new(n) -> col           n values, all missing
 *   col[i] -> number | nil          1-based; missing (and out of range) reads as nil
 *   col[i] = number | nil           nil makes it missing
 *   #col
 *   col:max() -> value, i | nil     the highest present value, ties to the lowest i
 *   col:stats() -> count, sd, population sd   (sd 0 with one value; nil sds with none)
 *   col:abs_diff(a, b)              col[i] = |a[i] - b[i]|, missing where either is
 *
 *   columns.ring(n, width) -> ring  per row, the last `width` values pushed (a moving window)
 *   ring:push(col)                  each row takes col[i] where it is present
 *   ring:mean(col)                  col[i] = the mean of row i's window, missing when it is empty
 *   ring:clear(i)                   forgets row i
 *   ring:copy_row(from_ring, from_i, i)   row i takes from_ring's row from_i
 *   #ring, ring:width()
 *
 * Missing is NaN inside; NaN never comes out (it reads as nil), and a NaN set in is missing too.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "modules.h"

#define COLUMN_MT "dconn.column"
#define RING_MT "dconn.ring"
#define MAX_ROWS (1 << 24) /* 16M values (128 MiB) in a column or a ring: far beyond any cluster */
#define MAX_WIDTH 1024

typedef struct {
  lua_Integer n;
  double v[];
} column;

typedef struct {
  lua_Integer n, width;
  int *count; /* values in each row's window */
  int *next;  /* where each row writes next */
  double *v;  /* n rows of width values */
} ring;

static lua_Integer check_size(lua_State *L, int arg, lua_Integer max, const char *what) {
  lua_Integer n = luaL_checkinteger(L, arg);
  if (n < 0 || n > max) luaL_error(L, "columns: %s must be 0 to %I, got %I", what, max, n);
  return n;
}

static column *check_column(lua_State *L, int arg) { return luaL_checkudata(L, arg, COLUMN_MT); }

static int column_new(lua_State *L) {
  lua_Integer n = check_size(L, 1, MAX_ROWS, "a column's length");
  column *c = lua_newuserdatauv(L, offsetof(column, v) + (size_t)n * sizeof(double), 0);
  c->n = n;
  for (lua_Integer i = 0; i < n; i++) c->v[i] = NAN;
  luaL_setmetatable(L, COLUMN_MT);
  return 1;
}

/* The 0-based slot of index arg, or -1 when it is out of range (or not an integer). */
static lua_Integer slot(lua_State *L, int arg, lua_Integer n) {
  int isint = 0;
  lua_Integer i = lua_tointegerx(L, arg, &isint);
  if (!isint || i < 1 || i > n) return -1;
  return i - 1;
}

static int column_index(lua_State *L) {
  column *c = check_column(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) { /* a method */
    lua_getmetatable(L, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
  }
  lua_Integer i = slot(L, 2, c->n);
  if (i < 0 || isnan(c->v[i])) lua_pushnil(L);
  else lua_pushnumber(L, c->v[i]);
  return 1;
}

static int column_newindex(lua_State *L) {
  column *c = check_column(L, 1);
  lua_Integer i = slot(L, 2, c->n);
  if (i < 0) return luaL_error(L, "columns: index %s is outside 1..%I", luaL_tolstring(L, 2, NULL), c->n);
  if (lua_isnil(L, 3)) {
    c->v[i] = NAN;
    return 0;
  }
  int isnum = 0;
  lua_Number v = lua_tonumberx(L, 3, &isnum);
  if (!isnum || lua_type(L, 3) != LUA_TNUMBER)
    return luaL_error(L, "columns: a value must be a number or nil, got %s", luaL_typename(L, 3));
  c->v[i] = v;
  return 0;
}

static int column_len(lua_State *L) {
  lua_pushinteger(L, check_column(L, 1)->n);
  return 1;
}

static int column_max(lua_State *L) {
  column *c = check_column(L, 1);
  lua_Integer best = -1;
  for (lua_Integer i = 0; i < c->n; i++)
    if (!isnan(c->v[i]) && (best < 0 || c->v[i] > c->v[best])) best = i;
  if (best < 0) return 0;
  lua_pushnumber(L, c->v[best]);
  lua_pushinteger(L, best + 1);
  return 2;
}

static int column_stats(lua_State *L) {
  column *c = check_column(L, 1);
  lua_Integer count = 0;
  double sum = 0;
  for (lua_Integer i = 0; i < c->n; i++)
    if (!isnan(c->v[i])) {
      count++;
      sum += c->v[i];
    }
  lua_pushinteger(L, count);
  if (count == 0) return 1;
  double mean = sum / (double)count, ss = 0;
  for (lua_Integer i = 0; i < c->n; i++)
    if (!isnan(c->v[i])) ss += (c->v[i] - mean) * (c->v[i] - mean);
  lua_pushnumber(L, count > 1 ? sqrt(ss / (double)(count - 1)) : 0);
  lua_pushnumber(L, sqrt(ss / (double)count));
  return 3;
}

static int column_abs_diff(lua_State *L) {
  column *out = check_column(L, 1), *a = check_column(L, 2), *b = check_column(L, 3);
  if (a->n != out->n || b->n != out->n)
    return luaL_error(L, "columns: abs_diff of columns of %I and %I values into %I", a->n, b->n, out->n);
  for (lua_Integer i = 0; i < out->n; i++) out->v[i] = fabs(a->v[i] - b->v[i]); /* NaN stays NaN */
  return 0;
}

static int column_tostring(lua_State *L) {
  lua_pushfstring(L, "column (%I values)", check_column(L, 1)->n);
  return 1;
}

static ring *check_ring(lua_State *L, int arg) { return luaL_checkudata(L, arg, RING_MT); }

static int ring_new(lua_State *L) {
  lua_Integer n = check_size(L, 1, MAX_ROWS, "a ring's rows");
  lua_Integer width = check_size(L, 2, MAX_WIDTH, "a ring's width");
  if (width < 1) return luaL_error(L, "columns: a ring's width must be 1 to %d, got 0", MAX_WIDTH);
  if (n * width > MAX_ROWS) return luaL_error(L, "columns: a ring of %I x %I values is too large", n, width);
  /* one block: the header, then counts, next slots and values (one userdata, freed by Lua) */
  size_t ints = 2 * (size_t)n * sizeof(int), values = (size_t)n * (size_t)width * sizeof(double);
  size_t head = (sizeof(ring) + sizeof(double) - 1) / sizeof(double) * sizeof(double);
  size_t ints_padded = (ints + sizeof(double) - 1) / sizeof(double) * sizeof(double);
  char *block = lua_newuserdatauv(L, head + ints_padded + values, 0);
  ring *r = (ring *)(void *)block;
  r->n = n;
  r->width = width;
  r->count = (int *)(void *)(block + head);
  r->next = r->count + n;
  r->v = (double *)(void *)(block + head + ints_padded);
  memset(r->count, 0, ints);
  luaL_setmetatable(L, RING_MT);
  return 1;
}

static int ring_push(lua_State *L) {
  ring *r = check_ring(L, 1);
  column *c = check_column(L, 2);
  if (c->n != r->n) return luaL_error(L, "columns: pushing a column of %I values into a ring of %I rows", c->n, r->n);
  for (lua_Integer i = 0; i < r->n; i++) {
    if (isnan(c->v[i])) continue;
    r->v[i * r->width + r->next[i]] = c->v[i];
    r->next[i] = (int)((r->next[i] + 1) % r->width);
    if (r->count[i] < r->width) r->count[i]++;
  }
  return 0;
}

static int ring_mean(lua_State *L) {
  ring *r = check_ring(L, 1);
  column *c = check_column(L, 2);
  if (c->n != r->n) return luaL_error(L, "columns: the mean of a ring of %I rows into %I values", r->n, c->n);
  for (lua_Integer i = 0; i < r->n; i++) {
    if (r->count[i] == 0) {
      c->v[i] = NAN;
      continue;
    }
    double sum = 0;
    for (int k = 0; k < r->count[i]; k++) sum += r->v[i * r->width + k];
    c->v[i] = sum / r->count[i];
  }
  return 0;
}

static lua_Integer ring_row(lua_State *L, ring *r, int arg) {
  lua_Integer i = luaL_checkinteger(L, arg);
  if (i < 1 || i > r->n) luaL_error(L, "columns: row %I is outside 1..%I", i, r->n);
  return i - 1;
}

static int ring_clear(lua_State *L) {
  ring *r = check_ring(L, 1);
  lua_Integer i = ring_row(L, r, 2);
  r->count[i] = r->next[i] = 0;
  return 0;
}

static int ring_copy_row(lua_State *L) {
  ring *to = check_ring(L, 1), *from = check_ring(L, 2);
  lua_Integer j = ring_row(L, from, 3), i = ring_row(L, to, 4);
  if (from->width != to->width) return luaL_error(L, "columns: copying a row between rings of other widths");
  memmove(&to->v[i * to->width], &from->v[j * from->width], (size_t)to->width * sizeof(double));
  to->count[i] = from->count[j];
  to->next[i] = from->next[j];
  return 0;
}

static int ring_len(lua_State *L) {
  lua_pushinteger(L, check_ring(L, 1)->n);
  return 1;
}

static int ring_width(lua_State *L) {
  lua_pushinteger(L, check_ring(L, 1)->width);
  return 1;
}

static int ring_tostring(lua_State *L) {
  ring *r = check_ring(L, 1);
  lua_pushfstring(L, "ring (%I rows of %I)", r->n, r->width);
  return 1;
}

static const luaL_Reg column_methods[] = {
    {"__index", column_index},     {"__newindex", column_newindex},
    {"__len", column_len},         {"__tostring", column_tostring},
    {"max", column_max},           {"stats", column_stats},
    {"abs_diff", column_abs_diff}, {NULL, NULL},
};

static const luaL_Reg ring_methods[] = {
    {"__len", ring_len},   {"__tostring", ring_tostring}, {"push", ring_push},   {"mean", ring_mean},
    {"clear", ring_clear}, {"copy_row", ring_copy_row},   {"width", ring_width}, {NULL, NULL},
};

int luaopen_dconn_columns(lua_State *L) {
  luaL_newmetatable(L, COLUMN_MT);
  luaL_setfuncs(L, column_methods, 0);
  lua_pop(L, 1);
  luaL_newmetatable(L, RING_MT);
  luaL_setfuncs(L, ring_methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, column_new);
  lua_setfield(L, -2, "new");
  lua_pushcfunction(L, ring_new);
  lua_setfield(L, -2, "ring");
  return 1;
}
