/* The preload table: one line per native module. */
#include "modules.h"

#include <lua-cjson.h>

#include "http.h"
#include "plugin.h"
#include "scheduler.h"
#include "server.h"

/* The model engine and its BLAS/LAPACK load only when a policy first uses dconn.model. */
static int open_nn_plugin(lua_State *L) { return dc_plugin_call(L, "dconn-nn.so", "luaopen_dconn_nn"); }

const dc_module dc_modules[] = {
    {"dconn.cjson", luaopen_cjson}, /* wrapped by lua/dconn/json.lua */
    {"dconn.log", luaopen_dconn_log},
    {"dconn.timer", luaopen_dconn_timer},
    {"dconn.runtime", luaopen_dconn_runtime},
    {"dconn.httpc", luaopen_dconn_httpc},
    {"dconn.server", luaopen_dconn_server},
    {"dconn._task", luaopen_dconn_task}, /* wrapped by lua/dconn/task.lua */
    {"dconn.nn", open_nn_plugin}, /* wrapped by lua/dconn/model.lua */
    {NULL, NULL},
};

void dc_modules_close(dc_host *H) {
  dc_sched_close(H);
  dc_http_close(H);
  dc_server_close_all(H);
}
