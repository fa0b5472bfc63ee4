/*
 * dconn._json: what lua/dconn/json.lua needs beside lua-cjson, in C because it reads the whole
 * text: a Lua pattern over a megabyte of MLflow answer costs more than decoding it.
 *
 *   _json.may_overflow(text) -> boolean
 *
 * lua-cjson reads a number too large for a double (1e999, or 400 digits) as an infinity without
 * a word. Only a number with more than 308 digits before its exponent, or an exponent of three
 * significant digits, can be one; this says whether text has either, so that the decoded value
 * is walked for infinities only then. (A false alarm costs the walk, never a wrong answer.)
 */
#include <ctype.h>
#include <stdbool.h>

#include <lauxlib.h>
#include <lua.h>

#include "modules.h"

#define OVERFLOW_DIGITS 309 /* DBL_MAX is 1.8e308: 309 digits */
#define OVERFLOW_EXPONENT 3 /* significant digits of an exponent that may overflow (e100 and up) */

static bool may_overflow(const unsigned char *s, size_t n) {
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    if (isdigit(s[i])) {
      if (++run >= OVERFLOW_DIGITS) return true;
      continue;
    }
    run = 0;
    if ((s[i] == 'e' || s[i] == 'E') && i > 0 && isdigit(s[i - 1])) {
      size_t j = i + 1;
      if (j < n && (s[j] == '+' || s[j] == '-')) j++;
      while (j < n && s[j] == '0') j++;
      size_t digits = 0;
      while (j < n && isdigit(s[j])) j++, digits++;
      if (digits >= OVERFLOW_EXPONENT) return true;
    }
  }
  return false;
}

static int json_may_overflow(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_pushboolean(L, may_overflow((const unsigned char *)s, n));
  return 1;
}

int luaopen_dconn_json(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, json_may_overflow);
  lua_setfield(L, -2, "may_overflow");
  return 1;
}
