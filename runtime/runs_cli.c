/*
 * dconn runs: lists an MLflow experiment's recent runs. The work is lua/dconn/tracker_cli.lua's
 * main(), run as a task on a loop of its own (HTTP calls yield to that loop).
 */
#include "runs_cli.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "host.h"

const char *const DC_RUNS_HELP =
    "Usage: dconn runs [--tracker URI] --experiment NAME [--filter F] [--limit N] [--json]\n"
    "\n"
    "Lists the most recent runs of experiment NAME, newest first, with their metrics and params.\n"
    "  --tracker URI   http(s)://host:port of an MLflow server, or file:PATH of an MLflow file\n"
    "                  store (default: $MLFLOW_TRACKING_URI, $SCANFLOW_TRACKER_URI, file:./mlruns)\n"
    "  --filter F      an MLflow search filter, e.g. \"metrics.max_qos > 25 AND params.x = 'y'\"\n"
    "  --limit N       at most N runs (default 10)\n"
    "  --json          one JSON array of runs instead of text\n"
    "Credentials, TLS and retries come from the MLFLOW_TRACKING_* and MLFLOW_HTTP_REQUEST_*\n"
    "variables, as for the MLflow Python client.\n"
    "\n"
    "Exit status: 0 ok; 2 usage error; 1 the tracker failed (unknown experiment, bad filter,\n"
    "server down).\n";

typedef struct run_state {
  int code;
} run_state;

static void on_done(dc_task *t, int status, const char *err, void *ud) {
  run_state *s = ud;
  lua_State *co = dc_task_thread(t);
  if (status != LUA_OK) {
    fprintf(stderr, "dconn runs: %s\n", err);
    s->code = 1;
  } else {
    s->code = lua_gettop(co) > 0 && lua_isinteger(co, -1) ? (int)lua_tointeger(co, -1) : 1;
  }
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int dc_runs_main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(DC_RUNS_HELP, stdout);
      return 0;
    }
  uv_loop_t loop;
  uv_loop_init(&loop);
  dc_host_options opts = {.memory_limit = DC_DEFAULT_MEMORY_LIMIT, .max_instructions = DC_DEFAULT_MAX_INSTRUCTIONS};
  run_state s = {.code = 1};
  dc_host *H = dc_host_new(&loop, &opts);
  if (!H) goto done;
  lua_State *L = dc_host_state(H);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "dconn.tracker_cli");
  if (dc_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "dconn runs: cannot load the dconn Lua library: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
    if (dc_task_spawn(L, argc - 1, "runs", -1, on_done, &s)) uv_run(&loop, UV_RUN_DEFAULT);
  }
  dc_host_free(H);
done:
  uv_walk(&loop, close_handle, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return s.code;
}
