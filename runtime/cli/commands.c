/*
 * The commands written in Lua: `dconn NAME args...` runs require("dconn.cli").execute(parsed),
 * which calls the command table's run(opts), as a task on the host's loop (so HTTP calls and
 * thread-pool work wait on it exactly as they do in a policy); run returns the exit status.
 */
#include "commands.h"

#include <stdio.h>

#include <lauxlib.h>
#include <uv.h>

#include "agent.h"

typedef struct run_state {
  char name[32];
  int code;
} run_state;

static void on_done(dc_task *t, int status, const char *err, void *ud) {
  run_state *s = ud;
  lua_State *co = dc_task_thread(t);
  if (status != LUA_OK) {
    fprintf(stderr, "dconn %s: %s\n", s->name, err);
    s->code = DC_EXIT_FAILURE;
  } else {
    s->code = lua_gettop(co) > 0 && lua_isinteger(co, -1) ? (int)lua_tointeger(co, -1) : DC_EXIT_FAILURE;
  }
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int dc_command_run(dc_host *H, const char *name) {
  uv_loop_t *loop = dc_host_loop(H);
  lua_State *L = dc_host_state(H);
  run_state s = {.code = DC_EXIT_FAILURE};
  snprintf(s.name, sizeof s.name, "%s", name);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "dconn.cli");
  if (dc_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "dconn %s: cannot load the dconn Lua library: %s\n", s.name, lua_tostring(L, -1));
    lua_pop(L, 2);
  } else {
    lua_getfield(L, -1, "execute");
    lua_remove(L, -2);
    lua_insert(L, -2); /* execute, parsed */
    if (dc_task_spawn(L, 1, s.name, -1, on_done, &s)) uv_run(loop, UV_RUN_DEFAULT);
  }
  dc_host_free(H);
  uv_walk(loop, close_handle, NULL);
  uv_run(loop, UV_RUN_DEFAULT); /* lets a cancelled work item finish and free itself */
  return s.code;
}
