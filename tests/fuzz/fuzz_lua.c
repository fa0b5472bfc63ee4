/* libFuzzer harness for the parsers written in Lua: one binary per target, each built from this
 * file with FUZZ_SCRIPT naming tests/fuzz/<target>.lua and linked with the host and its native
 * modules, so the script runs in the same state `dconn` gives the library (package.path found
 * from the binary's place, as runtime/host.c finds it). The script returns a function that gets
 * each input as a string. It returns whether the input parsed or not, and raises only when the
 * code under test broke its contract (raised instead of answering nil, err; answered something
 * inconsistent): the harness prints that error and aborts, so libFuzzer keeps the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "host.h"
#include "modules.h"

#ifndef FUZZ_SCRIPT
#error "FUZZ_SCRIPT must name the target's Lua script"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static dc_host *host;
static int target_ref = LUA_NOREF;

/* One host for the whole run, as one agent keeps one: what leaks from one input to the next
 * shows up as growth, which libFuzzer's -rss_limit_mb catches. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  uv_loop_init(&loop);
  dc_host_options opts = {.memory_limit = (size_t)512 << 20, .modules = dc_modules};
  host = dc_host_new(&loop, &opts);
  if (!host) abort();
  lua_State *L = dc_host_state(host);
  if (luaL_loadfile(L, FUZZ_SCRIPT) != LUA_OK || dc_pcall(L, 0, 1) != LUA_OK || !lua_isfunction(L, -1)) {
    fprintf(stderr, "fuzz: %s: %s\n", FUZZ_SCRIPT,
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "does not return a function");
    abort();
  }
  target_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = dc_host_state(host);
  lua_rawgeti(L, LUA_REGISTRYINDEX, target_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (dc_pcall(L, 1, 0) != LUA_OK) {
    fprintf(stderr, "fuzz: %s: %s\n", FUZZ_SCRIPT, lua_tostring(L, -1));
    abort();
  }
  uv_run(&loop, UV_RUN_NOWAIT); /* what the code under test started on the loop (none expected) */
  return 0;
}
