/*
 * Native modules with heavy dependencies live in shared objects next to the binary and load on
 * first require, so an agent that never uses them does not pay for them at start-up.
 */
#ifndef DCONN_PLUGIN_H
#define DCONN_PLUGIN_H

#include <lua.h>

/* Loads FILE (found next to the binary, in ../lib/dconn/ from it, or in $DCONN_PLUGIN_DIR) and
 * calls its function SYMBOL as a lua_CFunction; raises a clear error when it cannot. */
int dc_plugin_call(lua_State *L, const char *file, const char *symbol);

#endif
