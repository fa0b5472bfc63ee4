/*
 * Subcommands whose work is a Lua function: `dconn NAME args...` runs require(MODULE).main(args...)
 * as a task on a loop of its own (so HTTP calls and thread-pool work wait on it exactly as they
 * do in a policy); main returns the exit status.
 */
#include "commands.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "host.h"
#include "modules.h"

static const char *const PREDICT_HELP =
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

static const char *const RUNS_HELP =
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

static const char *const PLACE_HELP =
    "Usage: dconn place --namespace NS --deployment NAME --node NODE [--kubeconfig FILE]\n"
    "                   [--context NAME] [--simulate STATE.json] [--dry-run]\n"
    "\n"
    "Pins the Deployment's pod template to NODE by setting\n"
    "spec.template.spec.nodeSelector[\"kubernetes.io/hostname\"] to the node's hostname label\n"
    "(a strategic merge patch, fieldManager=dconn, conditional on the version read). A node that\n"
    "does not exist, is NotReady, cordoned or has a NoSchedule/NoExecute taint the pod template\n"
    "does not tolerate is refused. An Event is recorded on the Deployment (best effort).\n"
    "Configuration is found like kubectl's: --kubeconfig, else KUBECONFIG, else ~/.kube/config,\n"
    "else the in-cluster service account, else (loudly) a simulated cluster kept in the JSON file\n"
    "named by --simulate or DCONN_K8S_SIM_STATE. --dry-run sends the patch with dryRun=All.\n"
    "\n"
    "Exit status: 0 patched or already there; 1 refused or failed (reason on stderr); 2 usage.\n";

static const char *const POLICY_HELP =
    "Usage: dconn policy   (or dconn help policy)\n"
    "\n"
    "Prints the reference of a policy file's settings: each key, what it means, its default and\n"
    "the environment variable that gives the default. A policy is a Lua file returning a table;\n"
    "`schedule`, `model` and `rule` say when it runs, what predicts and what it does with the\n"
    "predictions. `dconn check POLICY.lua` validates one.\n";

static const dc_command COMMANDS[] = {
    {"policy", "dconn.policy", POLICY_HELP},
    {"predict", "dconn.model", PREDICT_HELP},
    {"runs", "dconn.cli.runs", RUNS_HELP},
    {"place", "dconn.cli.place", PLACE_HELP},
};

const dc_command *dc_command_find(const char *name) {
  for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
    if (strcmp(COMMANDS[i].name, name) == 0) return &COMMANDS[i];
  return NULL;
}

typedef struct run_state {
  const dc_command *cmd;
  int code;
} run_state;

static void on_done(dc_task *t, int status, const char *err, void *ud) {
  run_state *s = ud;
  lua_State *co = dc_task_thread(t);
  if (status != LUA_OK) {
    fprintf(stderr, "dconn %s: %s\n", s->cmd->name, err);
    s->code = 1;
  } else {
    s->code = lua_gettop(co) > 0 && lua_isinteger(co, -1) ? (int)lua_tointeger(co, -1) : 1;
  }
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int dc_command_main(const dc_command *cmd, int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(cmd->help, stdout);
      return 0;
    }
  uv_loop_t loop;
  uv_loop_init(&loop);
  dc_host_options opts = {.memory_limit = DC_DEFAULT_MEMORY_LIMIT,
                          .max_instructions = DC_DEFAULT_MAX_INSTRUCTIONS,
                          .modules = dc_modules};
  run_state s = {.cmd = cmd, .code = 1};
  dc_host *H = dc_host_new(&loop, &opts);
  if (!H) goto done;
  lua_State *L = dc_host_state(H);
  lua_getglobal(L, "require");
  lua_pushstring(L, cmd->module);
  if (dc_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "dconn %s: cannot load the dconn Lua library: %s\n", cmd->name, lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
    if (dc_task_spawn(L, argc - 1, cmd->name, -1, on_done, &s)) uv_run(&loop, UV_RUN_DEFAULT);
  }
  dc_host_free(H);
done:
  uv_walk(&loop, close_handle, NULL);
  uv_run(&loop, UV_RUN_DEFAULT); /* lets a cancelled work item finish and free itself */
  uv_loop_close(&loop);
  return s.code;
}
