/* dconn.log: the Lua face of the logger (log.c). */
#include <lauxlib.h>

#include "log.h"
#include "modules.h"

/* log.info(fmt, ...): string.format when there are arguments, tostring otherwise. */
static int log_at(lua_State *L, int level) {
  if (!dc_log_enabled(level)) return 0;
  int n = lua_gettop(L);
  if (n > 1) {
    lua_pushvalue(L, lua_upvalueindex(1)); /* string.format */
    lua_insert(L, 1);
    lua_call(L, n, 1);
  } else {
    luaL_tolstring(L, 1, NULL);
  }
  dc_log_fields(dc_host_of(L), level, lua_tostring(L, -1), NULL, 0);
  return 0;
}

static int log_debug(lua_State *L) { return log_at(L, DC_LOG_DEBUG); }
static int log_info(lua_State *L) { return log_at(L, DC_LOG_INFO); }
static int log_warning(lua_State *L) { return log_at(L, DC_LOG_WARNING); }
static int log_error(lua_State *L) { return log_at(L, DC_LOG_ERROR); }
static int log_critical(lua_State *L) { return log_at(L, DC_LOG_CRITICAL); }

/* log.level([name]) -> previous level name */
static int log_level(lua_State *L) {
  lua_pushstring(L, dc_log_level_name(dc_log_get_level()));
  if (!lua_isnoneornil(L, 1)) {
    int level = dc_log_parse_level(luaL_checkstring(L, 1));
    luaL_argcheck(L, level >= 0, 1, "unknown level (debug, info, warning, error, critical)");
    dc_log_set_level(level);
  }
  return 1;
}

/* log.format([name]) -> previous format name */
static int log_format(lua_State *L) {
  lua_pushstring(L, dc_log_get_format() == DC_LOG_JSON ? "json" : "text");
  if (!lua_isnoneornil(L, 1)) {
    int format = dc_log_parse_format(luaL_checkstring(L, 1));
    luaL_argcheck(L, format >= 0, 1, "unknown format (text, json)");
    dc_log_set_format((dc_log_format)format);
  }
  return 1;
}

static const luaL_Reg log_functions[] = {
    {"debug", log_debug},  {"info", log_info},     {"warning", log_warning},
    {"warn", log_warning}, {"error", log_error},   {"critical", log_critical},
    {"level", log_level},  {"format", log_format}, {NULL, NULL},
};

int luaopen_dconn_log(lua_State *L) {
  luaL_newlibtable(L, log_functions);
  lua_getglobal(L, "string");
  lua_getfield(L, -1, "format");
  lua_remove(L, -2);
  luaL_setfuncs(L, log_functions, 1);
  return 1;
}
