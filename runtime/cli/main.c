/*
 * dconn: the command line. The arguments are parsed once, in Lua, by the one registry of
 * commands (lua/dconn/cli/: a table per command, the global options, the help made from them):
 * require("dconn.cli").start(argv...) prints help and usage errors, or returns the command and
 * its parsed options. C applies the global options (logging, the host's budgets) and runs the
 * command: run, check and script by agent.c, repl by repl.c, a Lua command by commands.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <uv.h>

#include "agent.h"
#include "commands.h"
#include "host.h"
#include "log.h"
#include "modules.h"
#include "repl.h"
#include "server.h"
#include "version.h"

static void print_version(void) {
  const curl_version_info_data *curl = curl_version_info(CURLVERSION_NOW);
  lua_State *L = luaL_newstate();
  const char *cjson = "unknown";
  if (L) {
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_getfield(L, -1, "_VERSION");
    if (lua_isstring(L, -1)) cjson = lua_tostring(L, -1);
  }
  printf("dconn %s\n", DCONN_VERSION);
  printf("%s\n", LUA_RELEASE);
  printf("libuv %s\n", uv_version_string());
  printf("libcurl %s\n", curl->version);
  printf("lua-cjson %s\n", cjson);
  if (L) lua_close(L);
}

/* Fields of the parsed table at index t. Strings stay valid while the table is referenced. */
static const char *get_string(lua_State *L, int t, const char *key) {
  lua_getfield(L, t, key);
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1);
  return s;
}

static bool get_bool(lua_State *L, int t, const char *key) {
  lua_getfield(L, t, key);
  bool b = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

/* fallback when the field is not a number */
static double get_number(lua_State *L, int t, const char *key, double fallback) {
  lua_getfield(L, t, key);
  double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : fallback;
  lua_pop(L, 1);
  return v;
}

/* Parses the arguments: leaves the parsed table on the stack and returns -1, or returns the exit
 * status when nothing more is to be done (help printed, a usage error, --version). */
static int parse(lua_State *L, int argc, char **argv) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "dconn.cli");
  if (dc_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "dconn: cannot load the command line (dconn.cli): %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return DC_EXIT_FAILURE;
  }
  lua_getfield(L, -1, "start");
  lua_remove(L, -2);
  if (!lua_checkstack(L, argc)) {
    lua_pop(L, 1);
    fprintf(stderr, "dconn: too many arguments\n");
    return DC_EXIT_USAGE;
  }
  for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
  if (dc_pcall(L, argc - 1, 1) != LUA_OK || !lua_istable(L, -1)) {
    fprintf(stderr, "dconn: parsing the command line failed: %s\n", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
    return DC_EXIT_FAILURE;
  }
  int t = lua_gettop(L);
  if (lua_getfield(L, t, "exit") == LUA_TNUMBER) {
    int code = (int)lua_tointeger(L, -1);
    lua_pop(L, 2);
    return code;
  }
  lua_pop(L, 1);
  if (get_bool(L, t, "version")) {
    lua_pop(L, 1);
    print_version();
    return DC_EXIT_OK;
  }
  return -1;
}

/* The global options (parsed.globals): logging, and the host's heap cap and budgets. */
static void apply_globals(dc_host *H, lua_State *L, int parsed) {
  lua_getfield(L, parsed, "globals");
  int g = lua_gettop(L);
  const char *format = get_string(L, g, "log_format"), *level = get_string(L, g, "log_level");
  const char *timezone = get_string(L, g, "timezone");
  if (format && dc_log_parse_format(format) >= 0) dc_log_set_format(dc_log_parse_format(format));
  if (level && dc_log_parse_level(level) >= 0) dc_log_set_level(dc_log_parse_level(level));
  if (timezone) dc_log_set_utc(strcmp(timezone, "local") != 0);
  dc_host_options o = *dc_host_options_of(H);
  o.memory_limit = (size_t)get_number(L, g, "memory_limit", (double)o.memory_limit);
  o.max_instructions = (long long)get_number(L, g, "max_instructions", (double)o.max_instructions);
  o.max_run_time = get_number(L, g, "max_run_time", o.max_run_time);
  o.unsafe = get_bool(L, g, "unsafe");
  dc_host_set_options(H, &o);
  lua_pop(L, 1);
}

/* run, check, repl, script: parsed.opts read into the agent's options. Frees the host. */
static int run_native(dc_host *H, lua_State *L, const char *command, int opts, char *program) {
  dc_agent_options agent = {.grace = 10};
  const char *file = get_string(L, opts, "file");
  double every = get_number(L, opts, "every", 0);
  if (every > 0) {
    char text[64];
    snprintf(text, sizeof text, "%.17g", every);
    if (dc_runtime_set_option(H, "every", text) != 0) {
      dc_host_free(H);
      return DC_EXIT_FAILURE;
    }
  }
  if (strcmp(command, "repl") == 0) return dc_repl_main(H, file);
  if (strcmp(command, "check") == 0) {
    dc_host_options o = *dc_host_options_of(H);
    o.check_only = true;
    dc_host_set_options(H, &o);
    const char *args[] = {file};
    return dc_agent_main(H, &agent, "check", 1, args);
  }
  if (strcmp(command, "run") == 0) {
    bool once = get_bool(L, opts, "once");
    const char *listen = get_string(L, opts, "listen"), *token = get_string(L, opts, "api_token_file");
    const char *shadow = get_string(L, opts, "shadow");
    agent.grace = get_number(L, opts, "grace", agent.grace);
    agent.stop_after = get_number(L, opts, "stop_after", 0);
    agent.keep_alive = true;
    agent.reloadable = !once;
    if (agent.reloadable && !get_bool(L, opts, "no_watch")) agent.watch_path = file;
    if ((listen && dc_runtime_set_option(H, "listen", listen) != 0) ||
        (token && dc_runtime_set_option(H, "api_token_file", token) != 0) ||
        (shadow && dc_runtime_set_option(H, "shadow", shadow) != 0) ||
        (get_bool(L, opts, "dry_run") && dc_runtime_set_option(H, "dry_run", "1") != 0)) {
      dc_host_free(H);
      return DC_EXIT_FAILURE;
    }
    const char *args[] = {file, once ? "once" : "run"};
    return dc_agent_main(H, &agent, "run", 2, args);
  }
  /* script: FILE.lua, the program's name, then the script's own arguments */
  lua_getfield(L, opts, "args");
  int n = lua_istable(L, -1) ? (int)lua_rawlen(L, -1) : 0;
  const char **args = calloc((size_t)n + 2, sizeof *args);
  if (!args) {
    dc_host_free(H);
    return DC_EXIT_FAILURE;
  }
  args[0] = file;
  args[1] = program;
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, -1, i + 1);
    args[i + 2] = lua_tostring(L, -1); /* anchored in the parsed table */
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  int code = dc_agent_main(H, &agent, "script", n + 2, args);
  free(args);
  return code;
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* After the host is freed: closes what is left on the loop (the clock's timer, ...), then it. */
static int close_loop(uv_loop_t *loop, int code) {
  uv_walk(loop, close_handle, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return code;
}

int main(int argc, char **argv) {
  /* `dconn runs | head -1`: output cut short is not a failure; writes past it just fail */
  dc_survive_sigpipe();
  uv_loop_t loop;
  uv_loop_init(&loop);
  dc_host_options defaults = {.memory_limit = DC_DEFAULT_MEMORY_LIMIT,
                              .max_instructions = DC_DEFAULT_MAX_INSTRUCTIONS,
                              .max_run_time = DC_DEFAULT_MAX_RUN_TIME,
                              .modules = dc_modules};
  dc_host *H = dc_host_new(&loop, &defaults);
  if (!H) return close_loop(&loop, DC_EXIT_FAILURE);
  lua_State *L = dc_host_state(H);
  int code = parse(L, argc, argv);
  if (code >= 0) {
    dc_host_free(H);
    return close_loop(&loop, code);
  }
  /* the parsed table lives in the registry while the command runs: its strings are used */
  int parsed = lua_gettop(L);
  apply_globals(H, L, parsed);
  char command[32];
  const char *name = get_string(L, parsed, "name");
  snprintf(command, sizeof command, "%s", name ? name : "");
  if (!get_bool(L, parsed, "native")) {
    code = dc_command_run(H, command); /* pops the parsed table */
  } else {
    lua_pushvalue(L, parsed);
    luaL_ref(L, LUA_REGISTRYINDEX); /* anchors the strings read from it until the host goes */
    lua_getfield(L, parsed, "opts");
    code = run_native(H, L, command, lua_gettop(L), argv[0]);
  }
  return close_loop(&loop, code); /* the host is freed by whoever ran the command */
}
