/*
 * dconn.nn: the native half of dconn.model (lua/dconn/model.lua reads specs and names
 * tensors; this file builds networks from already-checked layer tables and runs them).
 *
 *   nn.network(layers) -> net          net:predict(x [, {pool = true|false}]) -> tensor | nil, err
 *   nn.tensor / zeros / full (tensor.c), nn.open / save (st_lua.c), forecasters (forecast.c)
 *
 * predict runs small batches inline; batches above POOL_FLOPS go to the libuv thread pool
 * while the calling coroutine waits (host.h). The worker gets a packed copy of the input and
 * a reference on the network, never Lua memory, so abandoning the wait (job removed,
 * shutdown) is safe at any moment: a queued item is uv_cancel'led, a running one finishes and
 * its result is dropped.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lauxlib.h>

#include "host.h"
#include "luaopts.h"
#include "modules.h"
#include "nn.h"
#include "tensor.h"

#define NET_MT "dconn.nn.network"
/* Above this much work (~16 windows of the original LSTM, ~1-2 ms) the loop should not block. */
#define POOL_FLOPS 64e6

void dc_st_lua_open(lua_State *L);
void dc_forecast_open(lua_State *L);

typedef struct net_ud {
  dc_nn *net; /* NULL when closed */
} net_ud;

static dc_nn *check_net(lua_State *L) {
  net_ud *u = luaL_checkudata(L, 1, NET_MT);
  luaL_argcheck(L, u->net != NULL, 1, "network is closed");
  return u->net;
}

static int net_close(lua_State *L) {
  net_ud *u = luaL_checkudata(L, 1, NET_MT);
  dc_nn_unref(u->net);
  u->net = NULL;
  return 0;
}

/* ---- building ---- */

/* The tensor in field `key` of the table at idx, copied into a malloc'd array of exactly
 * rows x cols floats (cols 0: a vector of rows). Raises when missing or misshapen. */
static float *take(lua_State *L, int idx, const char *key, int k, int64_t rows, int64_t cols, bool optional) {
  if (k >= 0) {
    if (lua_getfield(L, idx, key) != LUA_TTABLE) {
      lua_pop(L, 1);
      if (optional) return NULL;
      luaL_error(L, "nn.network: field '%s' must be a list of tensors", key);
    }
    lua_rawgeti(L, -1, k + 1);
    lua_remove(L, -2);
  } else {
    lua_getfield(L, idx, key);
  }
  dc_tensor *t = dc_tensor_test(L, -1);
  if (!t) {
    lua_pop(L, 1);
    if (optional) return NULL;
    luaL_error(L, "nn.network: field '%s' must be a tensor", key);
  }
  bool shape_ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                       : (t->ndim == 1 && t->shape[0] == rows);
  if (!shape_ok) luaL_error(L, "nn.network: '%s' has the wrong shape", key);
  float *p = malloc((size_t)(rows * (cols ? cols : 1)) * sizeof(float) + 1);
  if (!p) luaL_error(L, "nn.network: out of memory");
  dc_tensor_pack(t, p);
  lua_pop(L, 1);
  return p;
}

static int int_field(lua_State *L, int idx, const char *key, int dflt) {
  lua_Integer v = dflt;
  dc_opt_integer(L, idx, "nn.network", key, 0, 1 << 20, &v);
  return (int)v;
}

static void build_rnn(lua_State *L, int idx, dc_nn_layer *l) {
  int G = l->kind == DC_NN_LSTM ? 4 : 3;
  l->in = int_field(L, idx, "input", 0);
  l->hidden = int_field(L, idx, "hidden", 0);
  l->num_layers = int_field(L, idx, "num_layers", 1);
  l->out = l->hidden;
  lua_getfield(L, idx, "sequence");
  l->sequence = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (l->in < 1 || l->hidden < 1 || l->num_layers < 1 || l->num_layers > DC_NN_MAX_RNN_LAYERS)
    luaL_error(L, "nn.network: bad recurrent layer sizes");
  int64_t GH = (int64_t)G * l->hidden, H = l->hidden;
  for (int k = 0; k < l->num_layers; k++) {
    l->w_ih[k] = take(L, idx, "w_ih", k, GH, k ? H : l->in, false);
    l->w_hh[k] = take(L, idx, "w_hh", k, GH, H, false);
    /* b_hh is read whole into b_hn first, then folded: adding it to the input-side bias is
     * exact for every gate except GRU's n, where b_hn is multiplied by r and stays apart. */
    l->b_x[k] = take(L, idx, "b_ih", k, GH, 0, true);
    if (!l->b_x[k] && !(l->b_x[k] = calloc((size_t)GH, sizeof(float)))) luaL_error(L, "nn.network: out of memory");
    l->b_hn[k] = take(L, idx, "b_hh", k, GH, 0, true);
    if (!l->b_hn[k] && !(l->b_hn[k] = calloc((size_t)GH, sizeof(float)))) luaL_error(L, "nn.network: out of memory");
    for (int64_t j = 0; j < GH; j++) {
      if (G == 3 && j >= 2 * H) l->b_hn[k][j - 2 * H] = l->b_hn[k][j];
      else l->b_x[k][j] += l->b_hn[k][j];
    }
  }
}

static void build_layer(lua_State *L, int idx, dc_nn_layer *l) {
  static const char *const kinds[] = {"linear", "relu", "tanh", "sigmoid", "lstm", "gru", "scale", NULL};
  lua_getfield(L, idx, "kind");
  l->kind = (dc_nn_kind)luaL_checkoption(L, -1, NULL, kinds);
  lua_pop(L, 1);
  switch (l->kind) {
  case DC_NN_LINEAR:
    lua_getfield(L, idx, "w");
    if (!dc_tensor_test(L, -1) || dc_tensor_test(L, -1)->ndim != 2)
      luaL_error(L, "nn.network: linear 'w' must be a 2-D tensor");
    l->out = (int)dc_tensor_test(L, -1)->shape[0];
    l->in = (int)dc_tensor_test(L, -1)->shape[1];
    lua_pop(L, 1);
    if (l->in < 1 || l->out < 1) luaL_error(L, "nn.network: empty linear layer");
    l->w = take(L, idx, "w", -1, l->out, l->in, false);
    l->b = take(L, idx, "b", -1, l->out, 0, true);
    break;
  case DC_NN_LSTM:
  case DC_NN_GRU: build_rnn(L, idx, l); break;
  case DC_NN_SCALE:
    lua_getfield(L, idx, "a");
    if (!dc_tensor_test(L, -1) || dc_tensor_test(L, -1)->ndim != 1)
      luaL_error(L, "nn.network: scale 'a' must be a 1-D tensor");
    l->in = l->out = (int)dc_tensor_test(L, -1)->shape[0];
    lua_pop(L, 1);
    l->a = take(L, idx, "a", -1, l->in, 0, false);
    l->c = take(L, idx, "c", -1, l->in, 0, false);
    lua_getfield(L, idx, "divide");
    l->divide = lua_toboolean(L, -1);
    lua_pop(L, 1);
    break;
  default: /* activations take the width of their input */ break;
  }
}

/* nn.network(layers) -> net. The layer tables come from dconn.model, which has already
 * checked names and shapes; a mismatch here raises. */
static int nn_network(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 1000, 1, "expected a list of 1 to 1000 layers");
  net_ud *u = lua_newuserdatauv(L, sizeof *u, 0); /* closed until built */
  u->net = NULL;
  luaL_setmetatable(L, NET_MT);
  u->net = dc_nn_new(n);
  if (!u->net) return luaL_error(L, "nn.network: out of memory");
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    luaL_argcheck(L, lua_istable(L, -1), 1, "layers must be tables");
    build_layer(L, lua_gettop(L), &u->net->layers[i]); /* on a raise, __gc frees the partial net */
    if (dc_nn_pack_layer(&u->net->layers[i]) != 0) return luaL_error(L, "nn.network: out of memory");
    lua_pop(L, 1);
  }
  return 1;
}

static int net_flops(lua_State *L) {
  dc_nn *net = check_net(L);
  lua_Integer steps = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, steps >= 1 && steps < (1 << 24), 2, "expected a sequence length >= 1");
  lua_pushnumber(L, dc_nn_flops(net, (int)steps));
  return 1;
}

/* ---- predict ---- */

typedef struct predict_op {
  uv_work_t req;
  dc_nn *net;
  dc_task *task;
  float *x, *out;
  int64_t B;
  int L, F, ndim_out;
  int64_t shape_out[3];
  bool seq, cancelled;
  int status;
} predict_op;

static void op_free(predict_op *op) {
  dc_nn_unref(op->net);
  free(op->x);
  free(op->out);
  free(op);
}

static void work_run(uv_work_t *req) {
  predict_op *op = req->data;
  op->status = dc_nn_run(op->net, op->x, op->B, op->seq, op->L, op->F, op->out);
}

/* tensor | nil, err; run protected by dc_task_deliver: the result tensor may not fit under the
 * heap cap. */
static int push_result(lua_State *L, void *ud) {
  const predict_op *op = ud;
  if (op->status != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "predict: out of memory");
    return 2;
  }
  dc_tensor *t = dc_tensor_push(L, op->ndim_out, op->shape_out);
  memcpy(t->data, op->out, (size_t)dc_tensor_numel(t) * sizeof(float));
  return 1;
}

static void work_done(uv_work_t *req, int status) {
  predict_op *op = req->data;
  if (op->cancelled || status == UV_ECANCELED) { /* nobody waits: drop the result */
    op_free(op);
    return;
  }
  dc_task_deliver(op->task, push_result, op); /* work_cancel is not called from here on */
  op_free(op);
}

static void work_cancel(void *ud) {
  predict_op *op = ud;
  op->cancelled = true;
  uv_cancel((uv_req_t *)&op->req); /* fails when already running: work_done drops it then */
}

/* The first non-finite element of a packed [B, L, F] input, as an error message; 0 if none. */
static int check_input(lua_State *L, const float *x, int64_t B, int64_t L_, int64_t F) {
  int64_t n = B * L_ * F;
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) {
      lua_pushnil(L);
      lua_pushfstring(L, "predict: the input has a non-finite value (%f) at window %I, step %I, feature %I",
                      (double)x[i], (lua_Integer)(i / (L_ * F) + 1), (lua_Integer)(i / F % L_ + 1),
                      (lua_Integer)(i % F + 1));
      return 2;
    }
  return 0;
}

/* Whether the running code may wait: inside a task's own coroutine, yieldable, not checking. */
static bool can_wait(lua_State *L) {
  dc_host *H = dc_host_of(L);
  return dc_host_running_thread(H) == L && lua_isyieldable(L) && !dc_host_options_of(H)->check_only;
}

/* net:predict(x [, {pool = true|false}]) -> tensor [B, out] (or [B, L, out]) | nil, err.
 * x: [B, L, F] for recurrent networks, [B, F] or [B, L, F] otherwise (tensor or nested table). */
static int net_predict(lua_State *L) {
  dc_nn *net = check_net(L);
  dc_tensor *x = dc_tensor_arg(L, 2);
  int pool = -1; /* auto */
  if (!lua_isnoneornil(L, 3)) {
    static const char *const keys[] = {"pool", NULL};
    luaL_checktype(L, 3, LUA_TTABLE);
    dc_opts_check(L, 3, "predict", keys);
    bool given;
    if (dc_opt_boolean(L, 3, "predict", "pool", &given)) pool = given;
  }
  luaL_argcheck(L, x->ndim == 2 || x->ndim == 3, 2, "expected [batch, seq, features] or [batch, features]");
  bool seq = x->ndim == 3, out_seq;
  int64_t B = x->shape[0], steps = seq ? x->shape[1] : 1, F = x->shape[x->ndim - 1];
  luaL_argcheck(L, steps >= 1 && steps < (1 << 24) && F >= 1 && F < (1 << 24), 2, "empty or oversized window");
  int out_f;
  char err[256];
  if (dc_nn_output_shape(net, seq, (int)F, &out_seq, &out_f, err, sizeof err) != 0)
    return luaL_error(L, "predict: %s", err);
  /* B * steps is bounded by x's element count; the output's count must be bounded as well */
  luaL_argcheck(L, out_f >= 1 && B * steps <= ((int64_t)1 << 34) / out_f, 2, "the output would be too large");
  int64_t shape_out[3] = {B, out_seq ? steps : out_f, out_f};
  int ndim_out = out_seq ? 3 : 2;
  double flops = (double)B * dc_nn_flops(net, (int)steps);
  bool use_pool = pool == 1 || (pool < 0 && flops >= POOL_FLOPS && can_wait(L));
  if (!use_pool) {
    const float *in = x->data;
    float *packed = NULL;
    if (!dc_tensor_is_contiguous(x)) {
      packed = lua_newuserdatauv(L, (size_t)(B * steps * F) * sizeof(float) + 1, 0);
      dc_tensor_pack(x, packed);
      in = packed;
    }
    int bad = check_input(L, in, B, steps, F);
    if (bad) return bad;
    dc_tensor *out = dc_tensor_push(L, ndim_out, shape_out);
    if (dc_nn_run(net, in, B, seq, (int)steps, (int)F, out->data) != 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "predict: out of memory");
      return 2;
    }
    return 1;
  }
  dc_task *task = dc_wait_check(L, "dconn.model predict on the thread pool");
  predict_op *op = calloc(1, sizeof *op);
  size_t out_n = (size_t)(B * (out_seq ? steps : 1) * out_f);
  if (op) {
    op->x = malloc((size_t)(B * steps * F) * sizeof(float) + 1);
    op->out = malloc(out_n * sizeof(float) + 1);
  }
  if (!op || !op->x || !op->out) {
    if (op) op_free(op);
    lua_pushnil(L);
    lua_pushliteral(L, "predict: out of memory");
    return 2;
  }
  dc_tensor_pack(x, op->x);
  int bad = check_input(L, op->x, B, steps, F);
  if (bad) {
    op_free(op);
    return bad;
  }
  op->net = net;
  dc_nn_ref(net);
  op->task = task;
  op->B = B, op->L = (int)steps, op->F = (int)F, op->seq = seq;
  op->ndim_out = ndim_out;
  memcpy(op->shape_out, shape_out, sizeof shape_out);
  op->req.data = op;
  int rc = uv_queue_work(dc_host_loop(dc_host_of(L)), &op->req, work_run, work_done);
  if (rc != 0) {
    op_free(op);
    lua_pushnil(L);
    lua_pushfstring(L, "predict: %s", uv_strerror(rc));
    return 2;
  }
  return dc_wait(L, task, DC_WAIT_IO, work_cancel, op);
}

/* ---- BLAS facts for benchmarks and the REPL ---- */

static int nn_blas(lua_State *L) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, openblas_get_config());
  lua_setfield(L, -2, "config");
  lua_pushstring(L, openblas_get_corename());
  lua_setfield(L, -2, "core");
  lua_pushinteger(L, openblas_get_num_threads());
  lua_setfield(L, -2, "threads");
  lua_pushstring(L, dc_nn_kernels_name());
  lua_setfield(L, -2, "kernels");
  lua_pushstring(L, dc_nn_small_gemm_name());
  lua_setfield(L, -2, "small_gemm");
  return 1;
}

/* nn.sgemm_gflops(m, n, k [, seconds]) -> GFLOP/s of C = A B^T at that size, measured now. */
static int nn_sgemm_gflops(lua_State *L) {
  lua_Integer m = luaL_checkinteger(L, 1), n = luaL_checkinteger(L, 2), k = luaL_checkinteger(L, 3);
  double seconds = luaL_optnumber(L, 4, 0.3);
  luaL_argcheck(L,
                m >= 1 && n >= 1 && k >= 1 && m < (1 << 27) && n < (1 << 27) && k < (1 << 27) &&
                    m * k + n * k + m * n < (1 << 27),
                1, "sizes out of range");
  float *mem = malloc((size_t)(m * k + n * k + m * n) * sizeof(float));
  if (!mem) return luaL_error(L, "sgemm_gflops: out of memory");
  for (lua_Integer i = 0; i < m * k + n * k; i++) mem[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
  float *A = mem, *W = mem + m * k, *C = W + n * k;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1, A, (int)k, W, (int)k, 0, C, (int)n);
  uint64_t t0 = uv_hrtime(), t;
  long reps = 0;
  do {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1, A, (int)k, W, (int)k, 0, C, (int)n);
    reps++;
    t = uv_hrtime();
  } while ((double)(t - t0) / 1e9 < seconds);
  free(mem);
  lua_pushnumber(L, 2.0 * (double)m * (double)n * (double)k * (double)reps / ((double)(t - t0)));
  return 1;
}

static const luaL_Reg functions[] = {
    {"network", nn_network},
    {"blas", nn_blas},
    {"sgemm_gflops", nn_sgemm_gflops},
    {NULL, NULL},
};

static const luaL_Reg methods[] = {{"predict", net_predict}, {"flops", net_flops}, {"close", net_close}, {NULL, NULL}};

static const luaL_Reg metamethods[] = {{"__gc", net_close}, {"__close", net_close}, {"__index", NULL}, {NULL, NULL}};

int luaopen_dconn_nn(lua_State *L) {
  dc_nn_kernels_init();
  luaL_newlib(L, functions);
  luaL_newmetatable(L, NET_MT);
  luaL_setfuncs(L, metamethods, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  dc_tensor_open(L);
  dc_st_lua_open(L);
  dc_forecast_open(L);
  lua_pushinteger(L, (lua_Integer)POOL_FLOPS);
  lua_setfield(L, -2, "POOL_FLOPS");
  return 1;
}
