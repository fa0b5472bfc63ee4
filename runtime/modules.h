/* The native modules of dconn (the list the program gives the host) and their entry points. */
#ifndef DCONN_MODULES_H
#define DCONN_MODULES_H

#include <lua.h>

#include "host.h"

/* Every native module, ended by a {NULL} record: dc_host_options.modules for the dconn binary. */
extern const dc_module dc_modules[];

int luaopen_dconn_log(lua_State *L);
int luaopen_dconn_timer(lua_State *L);
int luaopen_dconn_runtime(lua_State *L);
int luaopen_dconn_nn(lua_State *L);
int luaopen_dconn_server(lua_State *L);
int luaopen_dconn_httpc(lua_State *L);
int luaopen_dconn_task(lua_State *L);
int luaopen_dconn_fs(lua_State *L);
int luaopen_dconn_pattern(lua_State *L);
int luaopen_dconn_columns(lua_State *L);
int luaopen_dconn_json(lua_State *L);

/* A command-line setting for the Lua side, seen in dconn.runtime.options() (runtime_lua.c);
 * 0 or -1. */
int dc_runtime_set_option(dc_host *H, const char *key, const char *value);

#endif
