/*
 * Option tables: every C binding that takes {key = value, ...} reads it through these, so a
 * misspelt or mistyped option is always an error that names it ("what" names the function):
 *
 *     static const char *const KEYS[] = {"url", "timeout", NULL};
 *     dc_opts_check(L, 1, "http", KEYS);   -- http: unknown field 'tiemout' (known: url, timeout)
 *     const char *url = NULL;
 *     dc_opt_string(L, 1, "http", "url", &url, NULL);  -- false (url untouched) when absent
 *     lua_Number timeout = 0;
 *     dc_opt_number(L, 1, "http", "timeout", 0, HUGE_VAL, &timeout);  -- http: 'timeout' must be...
 *
 * Fields are read raw (no __index): an options table is plain data, and a string read from it
 * stays valid as long as the table is on the stack and unchanged. idx may be relative.
 */
#ifndef DCONN_LUAOPTS_H
#define DCONN_LUAOPTS_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

/* Raises "<what>: unknown field 'k' (known: a, b, c)" for the first key of the table at idx that
 * is not one of keys (a NULL-terminated list). */
static inline void dc_opts_check(lua_State *L, int idx, const char *what, const char *const *keys) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 3, what);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    bool known = false;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (const char *const *k = keys; *k && !known; k++) known = strcmp(*k, lua_tostring(L, -1)) == 0;
    if (known) continue;
    const char *key = luaL_tolstring(L, -1, NULL);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *const *k = keys; *k; k++) {
      if (k != keys) luaL_addstring(&b, ", ");
      luaL_addstring(&b, *k);
    }
    luaL_pushresult(&b);
    luaL_error(L, "%s: unknown field '%s' (known: %s)", what, key, lua_tostring(L, -1));
  }
}

/* Pushes field key of the table at idx (raw) and returns its type. */
static inline int dc_opt_field(lua_State *L, int idx, const char *key) {
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 2, key);
  lua_pushstring(L, key);
  return lua_rawget(L, idx);
}

/* Raises "<what>: '<key>' must be <must>, got <the value's type>"; the value is on top. */
static inline int dc_opt_error(lua_State *L, const char *what, const char *key, const char *must) {
  return luaL_error(L, "%s: '%s' must be %s, got %s", what, key, must, luaL_typename(L, -1));
}

/* The same for numeric options: a number out of range is shown ("got 11"). */
static inline int dc_opt_range_error(lua_State *L, const char *what, const char *key, const char *must) {
  if (lua_type(L, -1) != LUA_TNUMBER) return dc_opt_error(L, what, key, must);
  return luaL_error(L, "%s: '%s' must be %s, got %s", what, key, must, luaL_tolstring(L, -1, NULL));
}

/* Each reader returns false, leaving *out alone, when the field is absent (nil); sets *out and
 * returns true when it has the right type (and range); raises otherwise. Nothing stays pushed. */

static inline bool dc_opt_string(lua_State *L, int idx, const char *what, const char *key, const char **out,
                                 size_t *len) {
  int type = dc_opt_field(L, idx, key);
  if (type == LUA_TNIL) {
    lua_pop(L, 1);
    return false;
  }
  if (type != LUA_TSTRING) dc_opt_error(L, what, key, "a string");
  *out = lua_tolstring(L, -1, len); /* held by the table */
  lua_pop(L, 1);
  return true;
}

static inline bool dc_opt_boolean(lua_State *L, int idx, const char *what, const char *key, bool *out) {
  int type = dc_opt_field(L, idx, key);
  if (type == LUA_TNIL) {
    lua_pop(L, 1);
    return false;
  }
  if (type != LUA_TBOOLEAN) dc_opt_error(L, what, key, "true or false");
  *out = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return true;
}

/* An integer from lo to hi (LUA_MININTEGER, LUA_MAXINTEGER: any). */
static inline bool dc_opt_integer(lua_State *L, int idx, const char *what, const char *key, lua_Integer lo,
                                  lua_Integer hi, lua_Integer *out) {
  if (dc_opt_field(L, idx, key) == LUA_TNIL) {
    lua_pop(L, 1);
    return false;
  }
  int isint = 0; /* an integer, or a float with an integer value (3.0) */
  lua_Integer v = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
  if (!isint || v < lo || v > hi) {
    if (lo == LUA_MININTEGER && hi == LUA_MAXINTEGER) dc_opt_range_error(L, what, key, "an integer");
    if (hi == LUA_MAXINTEGER) lua_pushfstring(L, "an integer >= %I", lo);
    else if (lo == LUA_MININTEGER) lua_pushfstring(L, "an integer <= %I", hi);
    else lua_pushfstring(L, "an integer from %I to %I", lo, hi);
    lua_insert(L, -2);
    dc_opt_range_error(L, what, key, lua_tostring(L, -2));
  }
  *out = v;
  lua_pop(L, 1);
  return true;
}

/* A finite number from lo to hi (lo = -HUGE_VAL, hi = HUGE_VAL: no bound that way). */
static inline bool dc_opt_number(lua_State *L, int idx, const char *what, const char *key, lua_Number lo, lua_Number hi,
                                 lua_Number *out) {
  if (dc_opt_field(L, idx, key) == LUA_TNIL) {
    lua_pop(L, 1);
    return false;
  }
  int isnum = lua_type(L, -1) == LUA_TNUMBER;
  lua_Number v = lua_tonumber(L, -1);
  if (!isnum || !isfinite(v) || !(v >= lo && v <= hi)) {
    char must[96] = "a finite number";
    if (hi == HUGE_VAL && lo != -HUGE_VAL) snprintf(must, sizeof must, "a number >= %.14g", (double)lo);
    else if (hi != HUGE_VAL && lo == -HUGE_VAL) snprintf(must, sizeof must, "a number <= %.14g", (double)hi);
    else if (hi != HUGE_VAL) snprintf(must, sizeof must, "a number from %.14g to %.14g", (double)lo, (double)hi);
    dc_opt_range_error(L, what, key, must);
  }
  *out = v;
  lua_pop(L, 1);
  return true;
}

/* A field of the given type (a table, a function...): pushed, and true; nothing pushed and false
 * when absent. */
static inline bool dc_opt_push(lua_State *L, int idx, const char *what, const char *key, int type) {
  int got = dc_opt_field(L, idx, key);
  if (got == LUA_TNIL) {
    lua_pop(L, 1);
    return false;
  }
  if (got != type) {
    const char *name = lua_typename(L, type);
    bool vowel = strchr("aeiou", name[0]) != NULL;
    lua_pushfstring(L, "%s %s", vowel ? "an" : "a", name);
    lua_insert(L, -2);
    dc_opt_error(L, what, key, lua_tostring(L, -2));
  }
  return true;
}

#endif
