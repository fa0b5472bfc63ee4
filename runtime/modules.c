/* The native modules: one record per module, {package.preload name, open, close}. */
#include "modules.h"

#include <lua-cjson.h>

#include "http.h"
#include "plugin.h"
#include "scheduler.h"
#include "server.h"

/* The model engine and its BLAS/LAPACK load only when a policy first uses dconn.model. */
static int open_nn_plugin(lua_State *L) { return dc_plugin_call(L, "dconn-nn.so", "luaopen_dconn_nn"); }

/* Closed in this order when the host ends: the scheduler's jobs, then requests in flight, then
 * the servers (whose closing runs the loop a last time). */
const dc_module dc_modules[] = {
    {"dconn.cjson", luaopen_cjson, NULL}, /* wrapped by lua/dconn/json.lua */
    {"dconn._json", luaopen_dconn_json, NULL}, /* json.lua's scan of the text */
    {"dconn.log", luaopen_dconn_log, NULL},
    {"dconn.timer", luaopen_dconn_timer, dc_sched_close},
    {"dconn.runtime", luaopen_dconn_runtime, NULL},
    {"dconn._fs", luaopen_dconn_fs, NULL}, /* wrapped by lua/dconn/fs.lua */
    {"dconn.httpc", luaopen_dconn_httpc, dc_http_close},
    {"dconn.server", luaopen_dconn_server, dc_server_close_all},
    {"dconn._task", luaopen_dconn_task, NULL}, /* wrapped by lua/dconn/task.lua */
    {"dconn._pattern", luaopen_dconn_pattern, NULL}, /* the sandbox's bounded string matching */
    {"dconn._columns", luaopen_dconn_columns, NULL}, /* the placement engine's per-candidate numbers */
    {"dconn.nn", open_nn_plugin, NULL}, /* wrapped by lua/dconn/model.lua */
    {NULL, NULL, NULL},
};
