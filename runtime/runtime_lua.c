/* dconn.runtime: what the running binary is and how it was configured (read-only). */
#include <lauxlib.h>
#include <uv.h>

#include "clock.h"
#include "modules.h"
#include "version.h"

/* Command-line settings meant for the Lua side (run's --listen, --api-token-file): a table in
 * the registry, copied into every runtime.options() result. */
static const char CLI_OPTIONS_KEY = 'O';

/* stack: key value -> (sets registry[CLI_OPTIONS_KEY][key] = value) */
static int set_cli_option(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CLI_OPTIONS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CLI_OPTIONS_KEY);
  }
  lua_insert(L, 1);
  lua_rawset(L, 1);
  return 0;
}

int dc_runtime_set_option(dc_host *H, const char *key, const char *value) {
  lua_State *L = dc_host_state(H);
  lua_pushcfunction(L, set_cli_option);
  lua_pushstring(L, key);
  lua_pushstring(L, value);
  if (dc_pcall(L, 2, 0) == LUA_OK) return 0;
  lua_pop(L, 1);
  return -1;
}

/* runtime.options() -> { unsafe =, memory_limit =, max_instructions =, check_only =, plus the
 * command line's settings for Lua, e.g. listen =, api_token_file = } */
static int runtime_options(lua_State *L) {
  const dc_host_options *o = dc_host_options_of(dc_host_of(L));
  lua_createtable(L, 0, 6);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CLI_OPTIONS_KEY) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -5);
    }
  }
  lua_pop(L, 1);
  lua_pushboolean(L, o->unsafe);
  lua_setfield(L, -2, "unsafe");
  lua_pushinteger(L, (lua_Integer)o->memory_limit);
  lua_setfield(L, -2, "memory_limit");
  lua_pushinteger(L, (lua_Integer)o->max_instructions);
  lua_setfield(L, -2, "max_instructions");
  lua_pushnumber(L, o->max_run_time);
  lua_setfield(L, -2, "max_run_time");
  lua_pushboolean(L, o->check_only);
  lua_setfield(L, -2, "check_only");
  return 1;
}

/* runtime.memory() -> bytes the Lua heap holds now */
static int runtime_memory(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lua_gc(L, LUA_GCCOUNT) * 1024 + lua_gc(L, LUA_GCCOUNTB));
  return 1;
}

/* runtime.tasks() -> tasks alive (running or waiting) */
static int runtime_tasks(lua_State *L) {
  lua_pushinteger(L, dc_host_task_count(dc_host_of(L)));
  return 1;
}

static const luaL_Reg runtime_functions[] = {
    {"options", runtime_options},
    {"memory", runtime_memory},
    {"tasks", runtime_tasks},
    {NULL, NULL},
};

int luaopen_dconn_runtime(lua_State *L) {
  luaL_newlib(L, runtime_functions);
  lua_pushliteral(L, DCONN_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
