/* dconn.runtime: what the running binary is and how it was configured (read-only). */
#include <lauxlib.h>
#include <uv.h>

#include "clock.h"
#include "modules.h"
#include "version.h"

/* runtime.options() -> { unsafe =, memory_limit =, max_instructions =, check_only =, lua_dir = } */
static int runtime_options(lua_State *L) {
  const dc_host_options *o = dc_host_options_of(dc_host_of(L));
  lua_createtable(L, 0, 4);
  lua_pushboolean(L, o->unsafe);
  lua_setfield(L, -2, "unsafe");
  lua_pushinteger(L, (lua_Integer)o->memory_limit);
  lua_setfield(L, -2, "memory_limit");
  lua_pushinteger(L, (lua_Integer)o->max_instructions);
  lua_setfield(L, -2, "max_instructions");
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
