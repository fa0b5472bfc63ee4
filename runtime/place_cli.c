/*
 * dconn place: pins a Deployment to a node through the Kubernetes API. The work is
 * lua/dconn/k8s_cli.lua's main(), run as a task on a loop of its own (the HTTP engine and the
 * client's rate limiter sleep on that loop).
 */
#include "place_cli.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "host.h"

const char *const DC_PLACE_HELP =
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

typedef struct run_state {
  int code;
} run_state;

static void on_done(dc_task *t, int status, const char *err, void *ud) {
  run_state *s = ud;
  lua_State *co = dc_task_thread(t);
  if (status != LUA_OK) {
    fprintf(stderr, "dconn place: %s\n", err);
    s->code = 1;
  } else {
    s->code = lua_gettop(co) > 0 && lua_isinteger(co, -1) ? (int)lua_tointeger(co, -1) : 1;
  }
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int dc_place_main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(DC_PLACE_HELP, stdout);
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
  lua_pushliteral(L, "dconn.k8s_cli");
  if (dc_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "dconn place: cannot load the dconn Lua library: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
    if (dc_task_spawn(L, argc - 1, "place", -1, on_done, &s)) uv_run(&loop, UV_RUN_DEFAULT);
  }
  dc_host_free(H);
done:
  uv_walk(&loop, close_handle, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return s.code;
}
