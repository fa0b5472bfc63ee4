/*
 * dconn.nn forecasters: the naive baselines a learned model must beat, fitted natively so a
 * policy can backtest them on every machine at every tick.
 *
 *   persistence  next = last value
 *   ewma         level l_t = a y_t + (1-a) l_{t-1}, l_1 = y_1; forecast l_n at every horizon
 *   holt         l_t = a y_t + (1-a)(l_{t-1} + b_{t-1}), b_t = B (l_t - l_{t-1}) + (1-B) b_{t-1},
 *                l_1 = y_1, b_1 = y_2 - y_1; forecast l_n + h b_n
 *   ridge        y_t = c + sum_k w_k y_{t-k} (k = 1..lags), min |r|^2 + lambda |w|^2 with the
 *                intercept unpenalised (centred), solved with LAPACK dposv; h steps ahead by
 *                feeding forecasts back
 *
 * Smoothing constants not given are fitted by minimising the in-sample one-step squared error
 * over a grid (ewma: 0.01..0.99 by 0.01; holt: 0.05..0.95 by 0.05 for both): deterministic,
 * and cheap enough for rolling backtests. Everything is double precision: series are Lua
 * numbers, and the normal equations of lagged, strongly correlated values are
 * ill-conditioned in float32 (hence dposv rather than sposv).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>
#include <lauxlib.h>

#include "luaopts.h"
#include "tensor.h"

#define FC_MT "dconn.forecaster"
#define MAX_LAGS 64

typedef enum { FC_PERSISTENCE, FC_EWMA, FC_HOLT, FC_RIDGE } fc_kind;
static const char *const KINDS[] = {"persistence", "ewma", "holt", "ridge", NULL};

typedef struct fc {
  fc_kind kind;
  double alpha, beta, lambda; /* < 0: fit */
  int lags;
  /* fitted state */
  bool fitted;
  double fit_alpha, fit_beta, level, trend, intercept;
  double coef[MAX_LAGS], hist[MAX_LAGS]; /* hist[0] is the newest value */
} fc;

static int min_points(const fc *f) { return f->kind == FC_HOLT ? 2 : f->kind == FC_RIDGE ? f->lags + 1 : 1; }

/* One-step in-sample SSE of simple smoothing with alpha a; leaves the final level in *level. */
static double ewma_run(const double *y, int n, double a, double *level) {
  double l = y[0], sse = 0;
  for (int t = 1; t < n; t++) {
    double e = y[t] - l;
    sse += e * e;
    l += a * e;
  }
  *level = l;
  return sse;
}

static double holt_run(const double *y, int n, double a, double b, double *level, double *trend) {
  double l = y[0], tr = y[1] - y[0], sse = 0;
  for (int t = 1; t < n; t++) {
    double pred = l + tr, e = y[t] - pred;
    if (t >= 2) sse += e * e; /* t = 1 is the initial trend itself */
    double prev = l;
    l = a * y[t] + (1 - a) * pred;
    tr = b * (l - prev) + (1 - b) * tr;
  }
  *level = l;
  *trend = tr;
  return sse;
}

static int fit_ridge(fc *f, const double *y, int n, char *err, size_t errlen) {
  int p = f->lags, m = n - p;
  double A[MAX_LAGS * MAX_LAGS], rhs[MAX_LAGS], mx[MAX_LAGS] = {0}, my = 0;
  for (int t = p; t < n; t++) {
    my += y[t];
    for (int k = 0; k < p; k++) mx[k] += y[t - 1 - k];
  }
  my /= m;
  for (int k = 0; k < p; k++) mx[k] /= m;
  memset(A, 0, sizeof(double) * (size_t)(p * p));
  memset(rhs, 0, sizeof(double) * (size_t)p);
  for (int t = p; t < n; t++) {
    double yc = y[t] - my;
    for (int i = 0; i < p; i++) {
      double xi = y[t - 1 - i] - mx[i];
      rhs[i] += xi * yc;
      for (int j = i; j < p; j++) A[i * p + j] += xi * (y[t - 1 - j] - mx[j]);
    }
  }
  for (int i = 0; i < p; i++) A[i * p + i] += f->lambda;
  lapack_int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', p, 1, A, p, rhs, 1);
  if (info != 0) {
    snprintf(err, errlen, "ridge: the lagged values are collinear (a constant series?); use lambda > 0");
    return -1;
  }
  f->intercept = my;
  for (int k = 0; k < p; k++) {
    f->coef[k] = rhs[k];
    f->intercept -= rhs[k] * mx[k];
  }
  return 0;
}

/* Fits f on y[0..n); 0, or -1 with a message. */
static int fc_fit(fc *f, const double *y, int n, char *err, size_t errlen) {
  f->fitted = false;
  if (n < min_points(f)) {
    snprintf(err, errlen, "%s needs at least %d values, got %d", KINDS[f->kind], min_points(f), n);
    return -1;
  }
  switch (f->kind) {
  case FC_PERSISTENCE: break;
  case FC_EWMA:
    f->fit_alpha = f->alpha;
    if (f->alpha < 0) {
      double best = INFINITY;
      for (int i = 1; i <= 99; i++) {
        double sse = ewma_run(y, n, i / 100.0, &f->level);
        if (sse < best) best = sse, f->fit_alpha = i / 100.0;
      }
    }
    ewma_run(y, n, f->fit_alpha, &f->level);
    break;
  case FC_HOLT:
    f->fit_alpha = f->alpha;
    f->fit_beta = f->beta;
    if (f->alpha < 0 || f->beta < 0) {
      double best = INFINITY;
      int na = f->alpha < 0 ? 19 : 1, nb = f->beta < 0 ? 19 : 1;
      for (int i = 1; i <= na; i++)
        for (int j = 1; j <= nb; j++) {
          double a = f->alpha < 0 ? i / 20.0 : f->alpha, b = f->beta < 0 ? j / 20.0 : f->beta;
          double sse = holt_run(y, n, a, b, &f->level, &f->trend);
          if (sse < best) best = sse, f->fit_alpha = a, f->fit_beta = b;
        }
    }
    holt_run(y, n, f->fit_alpha, f->fit_beta, &f->level, &f->trend);
    break;
  case FC_RIDGE:
    if (fit_ridge(f, y, n, err, errlen) != 0) return -1;
    break;
  }
  int keep = n < MAX_LAGS ? n : MAX_LAGS;
  for (int k = 0; k < keep; k++) f->hist[k] = y[n - 1 - k];
  f->fitted = true;
  return 0;
}

/* The forecast h >= 1 steps after the last fitted value. */
static double fc_predict(const fc *f, int h) {
  switch (f->kind) {
  case FC_PERSISTENCE: return f->hist[0];
  case FC_EWMA: return f->level;
  case FC_HOLT: return f->level + h * f->trend;
  case FC_RIDGE: {
    double win[MAX_LAGS], next = 0;
    memcpy(win, f->hist, sizeof win);
    for (int step = 0; step < h; step++) {
      next = f->intercept;
      for (int k = 0; k < f->lags; k++) next += f->coef[k] * win[k];
      memmove(win + 1, win, sizeof(double) * (MAX_LAGS - 1));
      win[0] = next;
    }
    return next;
  }
  }
  return NAN;
}

/* ---- rolling origin, incrementally ----
 *
 * On an expanding window the fit at origin o is the fit at o - 1 plus one value, so a backtest
 * keeps the fitted state instead of refitting from scratch at every origin: EWMA and Holt keep,
 * for every point of their parameter grid, the smoothing state and the running in-sample error
 * (the fit at an origin is the grid point with the lowest error so far, first on ties, exactly
 * as fc_fit chooses it); ridge keeps the means and the centred co-moments of the lagged values
 * (Welford's updates, stable for a constant series) and solves its p x p system per origin.
 * O(n x grid) for a series of n values instead of O(n^2 x grid). */

#define EWMA_GRID 99
#define HOLT_GRID 19

typedef struct smooth {
  double a, b, level, trend, sse;
} smooth;

typedef struct rolling {
  fc *f;
  int grid; /* smoothing states in use */
  smooth *s;
  /* ridge: lagged values seen, their means and co-moments */
  int m;
  double mx[MAX_LAGS], my, cxx[MAX_LAGS * MAX_LAGS], cxy[MAX_LAGS];
} rolling;

static void rolling_init(rolling *r, fc *f, smooth *states) {
  memset(r, 0, sizeof *r);
  r->f = f;
  r->s = states;
  if (f->kind == FC_EWMA) {
    int k = 0;
    if (f->alpha >= 0) states[k++].a = f->alpha;
    else
      for (int i = 1; i <= EWMA_GRID; i++) states[k++].a = i / 100.0;
    r->grid = k;
  } else if (f->kind == FC_HOLT) {
    int k = 0, na = f->alpha < 0 ? HOLT_GRID : 1, nb = f->beta < 0 ? HOLT_GRID : 1;
    for (int i = 1; i <= na; i++)
      for (int j = 1; j <= nb; j++, k++) {
        states[k].a = f->alpha < 0 ? i / 20.0 : f->alpha;
        states[k].b = f->beta < 0 ? j / 20.0 : f->beta;
      }
    r->grid = k;
  }
}

/* Adds y[t] (the values before it are y[0..t)) to the state. */
static void rolling_add(rolling *r, const double *y, int t) {
  fc *f = r->f;
  if (f->kind == FC_EWMA) {
    for (int k = 0; k < r->grid; k++) {
      smooth *s = &r->s[k];
      if (t == 0) s->level = y[0];
      else {
        double e = y[t] - s->level;
        s->sse += e * e;
        s->level += s->a * e;
      }
    }
  } else if (f->kind == FC_HOLT) {
    for (int k = 0; k < r->grid; k++) {
      smooth *s = &r->s[k];
      if (t == 0) continue;
      if (t == 1) s->level = y[0], s->trend = y[1] - y[0];
      double pred = s->level + s->trend, e = y[t] - pred;
      if (t >= 2) s->sse += e * e;
      double prev = s->level;
      s->level = s->a * y[t] + (1 - s->a) * pred;
      s->trend = s->b * (s->level - prev) + (1 - s->b) * s->trend;
    }
  } else if (f->kind == FC_RIDGE && t >= f->lags) {
    int p = f->lags;
    double dx[MAX_LAGS], dy;
    r->m++;
    for (int i = 0; i < p; i++) {
      dx[i] = y[t - 1 - i] - r->mx[i];
      r->mx[i] += dx[i] / r->m;
    }
    dy = y[t] - r->my;
    r->my += dy / r->m;
    for (int i = 0; i < p; i++) {
      r->cxy[i] += dx[i] * (y[t] - r->my);
      for (int j = i; j < p; j++) r->cxx[i * p + j] += dx[i] * (y[t - 1 - j] - r->mx[j]);
    }
  }
}

/* Sets r->f as fitted on y[0..n); 0, or -1 with a message. */
static int rolling_fit(rolling *r, const double *y, int n, char *err, size_t errlen) {
  fc *f = r->f;
  f->fitted = false;
  if (n < min_points(f)) {
    snprintf(err, errlen, "%s needs at least %d values, got %d", KINDS[f->kind], min_points(f), n);
    return -1;
  }
  if (f->kind == FC_EWMA || f->kind == FC_HOLT) {
    int best = 0;
    for (int k = 1; k < r->grid; k++)
      if (r->s[k].sse < r->s[best].sse) best = k;
    f->fit_alpha = r->s[best].a;
    f->fit_beta = r->s[best].b;
    f->level = r->s[best].level;
    f->trend = r->s[best].trend;
  } else if (f->kind == FC_RIDGE) {
    int p = f->lags;
    double A[MAX_LAGS * MAX_LAGS], rhs[MAX_LAGS];
    memset(A, 0, sizeof(double) * (size_t)(p * p));
    for (int i = 0; i < p; i++) {
      rhs[i] = r->cxy[i];
      for (int j = i; j < p; j++) A[i * p + j] = r->cxx[i * p + j];
      A[i * p + i] += f->lambda;
    }
    if (LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', p, 1, A, p, rhs, 1) != 0) {
      snprintf(err, errlen, "ridge: the lagged values are collinear (a constant series?); use lambda > 0");
      return -1;
    }
    f->intercept = r->my;
    for (int k = 0; k < p; k++) {
      f->coef[k] = rhs[k];
      f->intercept -= rhs[k] * r->mx[k];
    }
  }
  int keep = n < MAX_LAGS ? n : MAX_LAGS;
  for (int k = 0; k < keep; k++) f->hist[k] = y[n - 1 - k];
  f->fitted = true;
  return 0;
}

/* ---- Lua ---- */

/* The series at idx (a list of numbers or a 1-D tensor) as doubles in a Lua-owned block
 * pushed on the stack; returns NULL with nil, err pushed when a value is not finite. */
static double *check_series(lua_State *L, int idx, int *n) {
  dc_tensor *t = dc_tensor_test(L, idx);
  if (t) luaL_argcheck(L, t->ndim == 1, idx, "expected a 1-D tensor");
  else luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer len = t ? t->shape[0] : (lua_Integer)lua_rawlen(L, idx);
  luaL_argcheck(L, len < (1 << 26), idx, "series too long");
  double *y = lua_newuserdatauv(L, (size_t)len * sizeof(double) + 1, 0);
  for (lua_Integer i = 0; i < len; i++) {
    if (t) y[i] = t->data[i * t->stride[0]];
    else {
      lua_rawgeti(L, idx, i + 1);
      int isnum;
      y[i] = lua_tonumberx(L, -1, &isnum);
      if (!isnum || lua_type(L, -1) != LUA_TNUMBER) luaL_argerror(L, idx, "expected a list of numbers");
      lua_pop(L, 1);
    }
    if (!isfinite(y[i])) {
      lua_pushnil(L);
      lua_pushfstring(L, "the series has a non-finite value at %I", i + 1);
      return NULL;
    }
  }
  *n = (int)len;
  return y;
}

static const char *const PARAM_KEYS[] = {"alpha", "beta", "lags", "lambda", NULL};

static double opt_unit(lua_State *L, int idx, const char *key) {
  lua_Number v = -1;
  if (dc_opt_number(L, idx, "forecaster", key, -HUGE_VAL, HUGE_VAL, &v) && !(v > 0 && v <= 1))
    luaL_error(L, "forecaster: %s must be in (0, 1]", key);
  return v;
}

/* Reads kind (at idx, a string) and options (table at idx + 1, may be nil) into f. */
static void read_params(lua_State *L, int idx, fc *f) {
  memset(f, 0, sizeof *f);
  f->kind = (fc_kind)luaL_checkoption(L, idx, NULL, KINDS);
  f->alpha = f->beta = -1;
  f->lags = 3;
  f->lambda = 1.0;
  if (lua_isnoneornil(L, idx + 1)) return;
  luaL_checktype(L, idx + 1, LUA_TTABLE);
  dc_opts_check(L, idx + 1, "forecaster", PARAM_KEYS);
  f->alpha = opt_unit(L, idx + 1, "alpha");
  f->beta = opt_unit(L, idx + 1, "beta");
  lua_Integer lags;
  if (dc_opt_integer(L, idx + 1, "forecaster", "lags", 1, MAX_LAGS, &lags)) f->lags = (int)lags;
  dc_opt_number(L, idx + 1, "forecaster", "lambda", 0, HUGE_VAL, &f->lambda);
}

/* nn.forecaster(kind [, opts]) -> forecaster (unfitted) */
static int fc_new(lua_State *L) {
  fc params;
  read_params(L, 1, &params);
  fc *f = lua_newuserdatauv(L, sizeof *f, 0);
  *f = params;
  luaL_setmetatable(L, FC_MT);
  return 1;
}

/* f:fit(series) -> f | nil, err */
static int m_fit(lua_State *L) {
  fc *f = luaL_checkudata(L, 1, FC_MT);
  int n;
  if (!check_series(L, 2, &n)) return 2;
  char err[256];
  if (fc_fit(f, lua_touserdata(L, -1), n, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_settop(L, 1);
  return 1;
}

static fc *check_fitted(lua_State *L) {
  fc *f = luaL_checkudata(L, 1, FC_MT);
  luaL_argcheck(L, f->fitted, 1, "forecaster is not fitted (call :fit(series) first)");
  return f;
}

/* f:predict([h]) -> the value h steps (default 1) after the series it was fitted on */
static int m_predict(lua_State *L) {
  fc *f = check_fitted(L);
  lua_Integer h = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, h >= 1 && h <= 1000000, 2, "horizon must be >= 1");
  lua_pushnumber(L, fc_predict(f, (int)h));
  return 1;
}

/* f:forecast(h) -> {value 1 step ahead, ..., h steps ahead} */
static int m_forecast(lua_State *L) {
  fc *f = check_fitted(L);
  lua_Integer h = luaL_checkinteger(L, 2);
  luaL_argcheck(L, h >= 1 && h <= 100000, 2, "horizon must be 1 to 100000");
  lua_createtable(L, (int)h, 0);
  for (lua_Integer i = 1; i <= h; i++) {
    lua_pushnumber(L, fc_predict(f, (int)i));
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int m_params(lua_State *L) {
  fc *f = luaL_checkudata(L, 1, FC_MT);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, KINDS[f->kind]);
  lua_setfield(L, -2, "kind");
  if (f->kind == FC_EWMA || f->kind == FC_HOLT) {
    double a = f->fitted ? f->fit_alpha : f->alpha;
    if (a > 0) lua_pushnumber(L, a), lua_setfield(L, -2, "alpha");
  }
  if (f->kind == FC_HOLT) {
    double b = f->fitted ? f->fit_beta : f->beta;
    if (b > 0) lua_pushnumber(L, b), lua_setfield(L, -2, "beta");
  }
  if (f->kind == FC_RIDGE) {
    lua_pushinteger(L, f->lags);
    lua_setfield(L, -2, "lags");
    lua_pushnumber(L, f->lambda);
    lua_setfield(L, -2, "lambda");
    if (f->fitted) {
      lua_createtable(L, f->lags, 0);
      for (int k = 0; k < f->lags; k++) lua_pushnumber(L, f->coef[k]), lua_rawseti(L, -2, k + 1);
      lua_setfield(L, -2, "weights");
      lua_pushnumber(L, f->intercept);
      lua_setfield(L, -2, "intercept");
    }
  }
  return 1;
}

static int m_tostring(lua_State *L) {
  fc *f = luaL_checkudata(L, 1, FC_MT);
  lua_pushfstring(L, "forecaster (%s%s)", KINDS[f->kind], f->fitted ? ", fitted" : "");
  return 1;
}

/* nn.backtest(kind, opts, series, {initial=, horizon=, step=, window=, last=})
 *   -> {mae=, rmse=, n=, forecast=} | nil, err     forecast: `horizon` steps after the series
 * Rolling origin: for each origin o (training values y[1..o], or the last `window` of them),
 * fit, forecast `horizon` steps, compare with y[o + horizon]. On the whole history (no window)
 * the fits are incremental (rolling, above): one pass over the series. Origins run from `initial` (default
 * enough values to fit, at least 3) to #y - horizon by `step`; `last` keeps only the final ones. */
static int fc_backtest(lua_State *L) {
  fc f;
  read_params(L, 1, &f);
  int n;
  double *y = check_series(L, 3, &n);
  if (!y) return 2;
  lua_Integer initial = min_points(&f) > 3 ? min_points(&f) : 3, horizon = 1, step = 1, window = 0, last = 0;
  if (!lua_isnoneornil(L, 4)) {
    static const char *const keys[] = {"initial", "horizon", "step", "window", "last", NULL};
    lua_Integer *vals[] = {&initial, &horizon, &step, &window, &last};
    luaL_checktype(L, 4, LUA_TTABLE);
    dc_opts_check(L, 4, "backtest", keys);
    for (int i = 0; i < 5; i++) dc_opt_integer(L, 4, "backtest", keys[i], i >= 3 ? 0 : 1, LUA_MAXINTEGER, vals[i]);
  }
  lua_Integer need = min_points(&f);
  if (initial < need || (window && window < need)) {
    lua_pushnil(L);
    lua_pushfstring(L, "backtest: %s needs at least %d training values", KINDS[f.kind], (int)need);
    return 2;
  }
  lua_Integer first = initial;
  if (last > 0) {
    lua_Integer final = n - horizon, span = (last - 1) * step;
    if (final - span > first) first = final - span;
  }
  double abs_sum = 0, sq_sum = 0;
  lua_Integer count = 0;
  char err[256];
  /* expanding window: one pass (see rolling); a sliding window refits on its `window` values */
  rolling r;
  smooth *states = NULL;
  if (!window) {
    states = lua_newuserdatauv(L, sizeof(smooth) * HOLT_GRID * HOLT_GRID, 0);
    memset(states, 0, sizeof(smooth) * HOLT_GRID * HOLT_GRID);
    rolling_init(&r, &f, states);
  }
  lua_Integer added = 0;
  for (lua_Integer o = first; o + horizon <= n; o += step) {
    lua_Integer from = window && o > window ? o - window : 0;
    int fitted;
    if (window) fitted = fc_fit(&f, y + from, (int)(o - from), err, sizeof err);
    else {
      for (; added < o; added++) rolling_add(&r, y, (int)added);
      fitted = rolling_fit(&r, y, (int)o, err, sizeof err);
    }
    if (fitted != 0) {
      lua_pushnil(L);
      lua_pushfstring(L, "backtest: at origin %I: %s", o, err);
      return 2;
    }
    double e = y[o + horizon - 1] - fc_predict(&f, (int)horizon);
    abs_sum += fabs(e);
    sq_sum += e * e;
    count++;
  }
  if (count == 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "backtest: the series (%d values) is too short for initial = %I and horizon = %I", n, initial,
                    horizon);
    return 2;
  }
  /* the forecast from the whole series: what the contender predicts now */
  int final_fit;
  if (window) {
    lua_Integer from = n > window ? n - window : 0;
    final_fit = fc_fit(&f, y + from, (int)(n - from), err, sizeof err);
  } else {
    for (; added < n; added++) rolling_add(&r, y, (int)added);
    final_fit = rolling_fit(&r, y, n, err, sizeof err);
  }
  lua_createtable(L, 0, 4);
  if (final_fit == 0) {
    lua_pushnumber(L, fc_predict(&f, (int)horizon));
    lua_setfield(L, -2, "forecast");
  }
  lua_pushnumber(L, abs_sum / (double)count);
  lua_setfield(L, -2, "mae");
  lua_pushnumber(L, sqrt(sq_sum / (double)count));
  lua_setfield(L, -2, "rmse");
  lua_pushinteger(L, count);
  lua_setfield(L, -2, "n");
  return 1;
}

static const luaL_Reg functions[] = {{"forecaster", fc_new}, {"backtest", fc_backtest}, {NULL, NULL}};

static const luaL_Reg methods[] = {
    {"fit", m_fit}, {"predict", m_predict}, {"forecast", m_forecast}, {"params", m_params}, {NULL, NULL},
};

static const luaL_Reg metamethods[] = {{"__tostring", m_tostring}, {"__index", NULL}, {NULL, NULL}};

void dc_forecast_open(lua_State *L) {
  luaL_setfuncs(L, functions, 0);
  luaL_newmetatable(L, FC_MT);
  luaL_setfuncs(L, metamethods, 0);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
