/* The native modules the host preloads, and the hooks they share with it. */
#ifndef DCONN_MODULES_H
#define DCONN_MODULES_H

#include <lua.h>

#include "host.h"

typedef struct dc_module {
  const char *name;
  lua_CFunction open;
} dc_module;

/* NULL-terminated list of package.preload entries. */
extern const dc_module dc_modules[];

int luaopen_dconn_log(lua_State *L);
int luaopen_dconn_timer(lua_State *L);
int luaopen_dconn_runtime(lua_State *L);
int luaopen_dconn_nn(lua_State *L);
int luaopen_dconn_server(lua_State *L);
int luaopen_dconn_httpc(lua_State *L);
int luaopen_dconn_task(lua_State *L);

/* A command-line setting for the Lua side, seen in dconn.runtime.options() (info.c); 0 or -1. */
int dc_runtime_set_option(dc_host *H, const char *key, const char *value);
/* Makes os.time() and os.date() read the host clock (timer.c). */
void dc_clock_install_os(lua_State *L);
/* Releases module state that lives outside Lua before the state closes. */
void dc_modules_close(dc_host *H);

#endif
