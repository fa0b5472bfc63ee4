/* Loading native modules from shared objects on first use (see plugin.h). */
#include "plugin.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

/* Writes the first existing candidate path of FILE into out; false when there is none. */
static bool find_plugin(const char *file, char *out, size_t n) {
  const char *dir = getenv("DCONN_PLUGIN_DIR");
  if (dir) {
    snprintf(out, n, "%s/%s", dir, file);
    return access(out, R_OK) == 0;
  }
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) return false;
  exe[len] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash) *slash = '\0';
  static const char *const places[] = {"", "/../lib/dconn"};
  for (size_t i = 0; i < sizeof places / sizeof *places; i++) {
    if (snprintf(out, n, "%s%s/%s", exe, places[i], file) >= (int)n) continue;
    if (access(out, R_OK) == 0) return true;
  }
  return false;
}

int dc_plugin_call(lua_State *L, const char *file, const char *symbol) {
  char path[PATH_MAX + 64];
  if (!find_plugin(file, path, sizeof path))
    return luaL_error(L,
                      "cannot find %s next to the dconn binary or in ../lib/dconn "
                      "(set DCONN_PLUGIN_DIR to its folder)",
                      file);
  /* never closed: the module's functions stay in use for the life of the process */
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) return luaL_error(L, "cannot load %s: %s", path, dlerror());
  lua_CFunction open = (lua_CFunction)dlsym(lib, symbol);
  if (!open) return luaL_error(L, "%s has no %s", path, symbol);
  return open(L);
}
