/*
 * dconn predict: loads a model, runs it on one input tensor, writes the output tensor. The work
 * is lua/dconn/model.lua's main(), run as a task on a loop of its own so large batches use the
 * thread pool exactly as they do in a policy.
 */
#include "model_cli.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "host.h"

const char *const DC_PREDICT_HELP =
    "Usage: dconn predict --spec SPEC --weights W.safetensors --input IN.safetensors[:TENSOR]\n"
    "                     --output OUT.safetensors\n"
    "\n"
    "Batch inference: loads the model described by SPEC (a .lua file returning a table, or a\n"
    ".json file; see examples/cloudedge/lstm_spec.lua) with the state_dict in W (safetensors,\n"
    "F32/F16/BF16/F64), runs it on the tensor TENSOR of IN ([batch, seq, features], or\n"
    "[batch, features] for models without recurrent layers; TENSOR may be left out when IN\n"
    "holds one tensor) and writes the result to OUT as the float32 tensor `output`.\n"
    "\n"
    "Exit status: 0 ok; 2 bad arguments, spec, weights or input (one message on stderr);\n"
    "1 the output could not be computed or written.\n";

typedef struct run_state {
  int code;
} run_state;

static void on_done(dc_task *t, int status, const char *err, void *ud) {
  run_state *s = ud;
  lua_State *co = dc_task_thread(t);
  if (status != LUA_OK) {
    fprintf(stderr, "dconn predict: %s\n", err);
    s->code = 1;
  } else {
    s->code = lua_gettop(co) > 0 && lua_isinteger(co, -1) ? (int)lua_tointeger(co, -1) : 1;
  }
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int dc_predict_main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(DC_PREDICT_HELP, stdout);
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
  lua_pushliteral(L, "dconn.model");
  if (dc_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "dconn predict: cannot load the dconn Lua library: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
    if (dc_task_spawn(L, argc - 1, "predict", -1, on_done, &s)) uv_run(&loop, UV_RUN_DEFAULT);
  }
  dc_host_free(H);
done:
  uv_walk(&loop, close_handle, NULL);
  uv_run(&loop, UV_RUN_DEFAULT); /* lets a cancelled work item finish and free itself */
  uv_loop_close(&loop);
  return s.code;
}
