/* dconn.timer: sleep, the clock, and the Lua face of the job scheduler. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "clock.h"
#include "log.h"
#include "luaopts.h"
#include "modules.h"
#include "scheduler.h"
#include "timefmt.h"

static dc_sched *sched_of(lua_State *L) {
  dc_sched *s = dc_sched_of(dc_host_of(L));
  if (!s) luaL_error(L, "dconn.timer: out of memory");
  return s;
}

/* ---- sleep ---- */

typedef struct sleep_op {
  dc_clock *clock;
  dc_clock_timer *timer;
  dc_task *task;
} sleep_op;

static void sleep_wake(void *ud) {
  sleep_op *op = ud;
  dc_task *task = op->task;
  free(op);
  dc_task_deliver(task, NULL, NULL);
}

static void sleep_cancel(void *ud) {
  sleep_op *op = ud;
  dc_clock_cancel(op->clock, op->timer);
  free(op);
}

static int timer_sleep(lua_State *L) {
  lua_Number seconds = luaL_checknumber(L, 1);
  luaL_argcheck(L, seconds >= 0 && isfinite(seconds), 1, "expected seconds >= 0");
  dc_task *task = dc_wait_check(L, "dconn.timer.sleep");
  dc_clock *clock = dc_host_clock(dc_host_of(L));
  sleep_op *op = malloc(sizeof *op);
  if (!op) return luaL_error(L, "dconn.timer.sleep: out of memory");
  op->clock = clock;
  op->task = task;
  op->timer = dc_clock_at(clock, dc_clock_now(clock) + seconds, sleep_wake, op);
  if (!op->timer) {
    free(op);
    return luaL_error(L, "dconn.timer.sleep: out of memory");
  }
  return dc_wait(L, task, DC_WAIT_TIME, sleep_cancel, op);
}

static int timer_now(lua_State *L) {
  lua_pushnumber(L, dc_clock_now(dc_host_clock(dc_host_of(L))));
  return 1;
}

/* timer.simulate(start): from now on time is simulated, starting at `start` (number or date). */
static double check_time(lua_State *L, int idx, bool utc, const char *what);

static int timer_simulate(lua_State *L) {
  dc_clock *clock = dc_host_clock(dc_host_of(L));
  double start = lua_isnoneornil(L, 1) ? dc_clock_now(clock) : check_time(L, 1, true, "start");
  dc_clock_simulate(clock, start);
  return 0;
}

/* timer.advance(seconds): simulated clock only; time jumps as if the process had stalled. */
static int timer_advance(lua_State *L) {
  dc_clock *clock = dc_host_clock(dc_host_of(L));
  lua_Number seconds = luaL_checknumber(L, 1);
  luaL_argcheck(L, seconds >= 0 && isfinite(seconds), 1, "expected seconds >= 0");
  if (!dc_clock_is_simulated(clock))
    return luaL_error(L, "timer.advance: the clock is not simulated (call timer.simulate first)");
  dc_clock_advance(clock, seconds);
  return 0;
}

static int timer_simulated(lua_State *L) {
  lua_pushboolean(L, dc_clock_is_simulated(dc_host_clock(dc_host_of(L))));
  return 1;
}

/* ---- job specs ---- */

static double check_time(lua_State *L, int idx, bool utc, const char *what) {
  if (lua_type(L, idx) == LUA_TNUMBER) return lua_tonumber(L, idx);
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "%s: expected a unix time or a date string, got %s", what, luaL_typename(L, idx));
  double t;
  char err[256];
  if (dc_time_parse(lua_tostring(L, idx), utc, &t, err, sizeof err) != 0) luaL_error(L, "%s: %s", what, err);
  return t;
}

static double check_duration(lua_State *L, int idx, const char *what) {
  if (lua_type(L, idx) == LUA_TNUMBER) return lua_tonumber(L, idx);
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "%s: expected seconds or a duration such as \"5m\", got %s", what, luaL_typename(L, idx));
  double d;
  char err[256];
  if (dc_duration_parse(lua_tostring(L, idx), &d, err, sizeof err) != 0) luaL_error(L, "%s: %s", what, err);
  return d;
}

static const char *const SPEC_KEYS[] = {"name", "run",       "every",  "cron",     "at",    "jitter", "start",
                                        "stop", "immediate", "budget", "timezone", "quiet", NULL};

/* Reads the spec table at idx into trig; leaves the function on top of the stack and returns
 * the job name. Raises a clear error naming the bad field. */
static const char *read_spec(lua_State *L, int idx, dc_trigger *trig, dc_budget *budget) {
  luaL_checktype(L, idx, LUA_TTABLE);
  dc_opts_check(L, idx, "job", SPEC_KEYS);
  memset(trig, 0, sizeof *trig);
  trig->utc = dc_log_is_utc();
  trig->immediate = true;
  *budget = (dc_budget){0, 0};
  int kinds = 0;
  const char *tz;
  if (dc_opt_string(L, idx, "job", "timezone", &tz, NULL)) {
    if (strcmp(tz, "utc") == 0 || strcmp(tz, "UTC") == 0) trig->utc = true;
    else if (strcmp(tz, "local") == 0) trig->utc = false;
    else luaL_error(L, "job: timezone must be \"utc\" or \"local\", got \"%s\"", tz);
  }
  /* every, at, jitter, start and stop take a number or a text (duration or date) */
  if (dc_opt_field(L, idx, "every") != LUA_TNIL) {
    trig->kind = DC_TRIGGER_INTERVAL;
    trig->interval = check_duration(L, -1, "every");
    kinds++;
  }
  lua_pop(L, 1);
  const char *cron;
  if (dc_opt_string(L, idx, "job", "cron", &cron, NULL)) {
    char err[256];
    if (dc_cron_parse(cron, &trig->cron, err, sizeof err) != 0) luaL_error(L, "%s", err);
    trig->kind = DC_TRIGGER_CRON;
    snprintf(trig->cron_text, sizeof trig->cron_text, "%s", cron);
    kinds++;
  }
  if (dc_opt_field(L, idx, "at") != LUA_TNIL) {
    trig->kind = DC_TRIGGER_DATE;
    trig->at = check_time(L, -1, trig->utc, "at");
    kinds++;
  }
  lua_pop(L, 1);
  if (kinds != 1) luaL_error(L, "job: give exactly one trigger: every, cron or at");
  if (dc_opt_field(L, idx, "jitter") != LUA_TNIL) trig->jitter = check_duration(L, -1, "jitter");
  if (dc_opt_field(L, idx, "start") != LUA_TNIL) trig->start = check_time(L, -1, trig->utc, "start");
  if (dc_opt_field(L, idx, "stop") != LUA_TNIL) trig->end = check_time(L, -1, trig->utc, "stop");
  lua_pop(L, 3);
  dc_opt_boolean(L, idx, "job", "immediate", &trig->immediate);
  dc_opt_boolean(L, idx, "job", "quiet", &trig->quiet);
  /* budget: a duration text is run time, a number instructions (-1: no limit at all) */
  if (dc_opt_field(L, idx, "budget") == LUA_TSTRING) {
    budget->seconds = check_duration(L, -1, "budget");
    if (!(budget->seconds >= 0.001))
      luaL_error(L, "budget: a run time of at least 1ms (\"200ms\", \"2s\"), or a number of instructions");
  }
  lua_pop(L, 1);
  lua_Integer n;
  if (budget->seconds == 0 && dc_opt_integer(L, idx, "job", "budget", LUA_MININTEGER, LUA_MAXINTEGER, &n))
    budget->instructions = n;
  char err[256];
  if (dc_trigger_validate(trig, err, sizeof err) != 0) luaL_error(L, "job: %s", err);
  const char *name = NULL;
  dc_opt_string(L, idx, "job", "name", &name, NULL);
  if (!dc_opt_push(L, idx, "job", "run", LUA_TFUNCTION)) luaL_error(L, "job: 'run' must be a function");
  if (name) {
    lua_pushstring(L, name);
  } else {
    static unsigned counter;
    lua_pushfstring(L, "job-%d", (int)++counter);
  }
  name = lua_tostring(L, -1);
  lua_insert(L, -2); /* stack: name run */
  return name;
}

/* timer.add{name=, every=|cron=|at=, run=fn, ...} -> name */
static int timer_add(lua_State *L) {
  dc_trigger trig;
  dc_budget budget;
  const char *name = read_spec(L, 1, &trig, &budget);
  char err[256];
  if (!dc_sched_add(sched_of(L), L, name, &trig, budget, err, sizeof err))
    return luaL_error(L, "job '%s': %s", name, err);
  lua_pushstring(L, name);
  return 1;
}

/* timer.validate(spec) -> true | nil, err: checks a spec without adding it. */
static int do_validate(lua_State *L) {
  dc_trigger trig;
  dc_budget budget;
  read_spec(L, 1, &trig, &budget);
  return 0;
}

static int timer_validate(lua_State *L) {
  lua_pushcfunction(L, do_validate);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* timer.duration(v) -> seconds | nil, message: "90s", "5m", "1h30m", "2d" or a number
 * of seconds, as the scheduler reads intervals. */
static int timer_duration(lua_State *L) {
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, 1);
    if (n >= 0 && n < HUGE_VAL) {
      lua_pushnumber(L, n);
      return 1;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "a duration must be a finite number of seconds >= 0");
    return 2;
  }
  if (lua_type(L, 1) != LUA_TSTRING) {
    lua_pushnil(L);
    lua_pushfstring(L, "expected a duration such as \"5m\" or a number of seconds, got %s", luaL_typename(L, 1));
    return 2;
  }
  double v;
  char err[256];
  if (dc_duration_parse(lua_tostring(L, 1), &v, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushnumber(L, v);
  return 1;
}

/* timer.format_time(t [, style]) -> text, t in unix seconds, always UTC. Styles: "iso" (the
 * default) "2024-04-12T10:44:31.706Z", "iso_seconds" "2024-04-12T10:44:31Z", "iso_micro"
 * "2024-04-12T10:44:31.706882Z", "utc" "2024-04-12 10:44:31". A time outside years 1-9999
 * raises. */
static int timer_format_time(lua_State *L) {
  static const char *const STYLES[] = {"iso", "iso_seconds", "iso_micro", "utc", NULL};
  static const int DIGITS[] = {3, 0, 6, 0};
  lua_Number t = luaL_checknumber(L, 1);
  int style = luaL_checkoption(L, 2, "iso", STYLES);
  char buf[64];
  if (dc_time_format_utc(t, DIGITS[style], style != 3, buf, sizeof buf) < 0)
    return luaL_argerror(L, 1, "a time from year 1 to 9999 expected");
  lua_pushstring(L, buf);
  return 1;
}

/* timer.parse_time(text [, zone]) -> unix seconds | nil, message: "2024-04-12",
 * "2024-04-12T10:44:31Z", "2024-04-12 10:44:31.5+02:00", ... (timefmt.h: dc_time_parse); a text
 * without a zone is read in UTC, or in local time when zone is "local". */
static int timer_parse_time(lua_State *L) {
  static const char *const ZONES[] = {"utc", "local", NULL};
  const char *text = luaL_checkstring(L, 1);
  bool utc = luaL_checkoption(L, 2, "utc", ZONES) == 0;
  double t;
  char err[256];
  if (dc_time_parse(text, utc, &t, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushnumber(L, t);
  return 1;
}

/* timer.every(interval, fn [, opts]), timer.cron(expr, fn [, opts]), timer.at(when, fn [, opts]) */
static int add_with(lua_State *L, const char *key) {
  luaL_checkany(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    lua_newtable(L);
  }
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_pushvalue(L, 1);
  lua_setfield(L, 3, key);
  lua_pushvalue(L, 2);
  lua_setfield(L, 3, "run");
  lua_pushcfunction(L, timer_add);
  lua_pushvalue(L, 3);
  lua_call(L, 1, 1);
  return 1;
}

static int timer_every(lua_State *L) { return add_with(L, "every"); }
static int timer_cron(lua_State *L) { return add_with(L, "cron"); }
static int timer_at(lua_State *L) { return add_with(L, "at"); }

/* ---- managing jobs ---- */

static void push_info(lua_State *L, dc_job *job) {
  dc_job_info info;
  dc_sched_info(job, &info);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, info.name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, info.trigger);
  lua_setfield(L, -2, "trigger");
  if (info.next_run >= 0) {
    lua_pushnumber(L, info.next_run);
    lua_setfield(L, -2, "next_run");
  }
  if (info.last_run >= 0) {
    lua_pushnumber(L, info.last_run);
    lua_setfield(L, -2, "last_run");
    lua_pushnumber(L, info.last_duration);
    lua_setfield(L, -2, "last_duration");
    lua_pushstring(L, info.last_error ? "failed" : "ok");
    lua_setfield(L, -2, "last_outcome");
  }
  if (info.last_error) {
    lua_pushstring(L, info.last_error);
    lua_setfield(L, -2, "last_error");
  }
  lua_pushboolean(L, info.running);
  lua_setfield(L, -2, "running");
  lua_pushboolean(L, info.paused);
  lua_setfield(L, -2, "paused");
  lua_pushboolean(L, info.finished);
  lua_setfield(L, -2, "finished");
  lua_pushinteger(L, info.runs);
  lua_setfield(L, -2, "runs");
  lua_pushinteger(L, info.failures);
  lua_setfield(L, -2, "failures");
  lua_pushinteger(L, info.skipped);
  lua_setfield(L, -2, "skipped");
}

static int timer_jobs(lua_State *L) {
  lua_newtable(L);
  int i = 0;
  for (dc_job *job = dc_sched_first(sched_of(L)); job; job = dc_sched_next(job)) {
    push_info(L, job);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* Finds the named job, or returns 2 values (nil, err) to the caller through *nret. */
static dc_job *find_job(lua_State *L, int *nret) {
  const char *name = luaL_checkstring(L, 1);
  dc_job *job = dc_sched_find(sched_of(L), name);
  if (!job) {
    lua_pushnil(L);
    lua_pushfstring(L, "no job named '%s'", name);
    *nret = 2;
  }
  return job;
}

static int timer_job(lua_State *L) {
  int nret;
  dc_job *job = find_job(L, &nret);
  if (!job) return nret;
  push_info(L, job);
  return 1;
}

static int with_job(lua_State *L, void (*action)(dc_job *)) {
  int nret;
  dc_job *job = find_job(L, &nret);
  if (!job) return nret;
  action(job);
  lua_pushboolean(L, 1);
  return 1;
}

static int timer_pause(lua_State *L) { return with_job(L, dc_sched_pause); }
static int timer_resume(lua_State *L) { return with_job(L, dc_sched_resume); }
static int timer_remove(lua_State *L) { return with_job(L, dc_sched_remove); }

/* A Lua caller waiting for a run it asked for. */
typedef struct run_wait {
  dc_task *task;
  bool cancelled;
} run_wait;

/* What a run delivers to its waiter: true | nil, err */
typedef struct run_outcome {
  bool ok;
  const char *err;
} run_outcome;

static int push_outcome(lua_State *L, void *ud) {
  const run_outcome *o = ud;
  if (o->ok) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, o->err ? o->err : "out of memory");
  return 2;
}

static void run_now_done(dc_job *job, bool ok, const char *err, void *ud) {
  (void)job;
  run_wait *w = ud;
  bool cancelled = w->cancelled;
  dc_task *task = w->task;
  free(w);
  if (cancelled) return;
  run_outcome o = {ok, err};
  dc_task_deliver(task, push_outcome, &o);
}

static void run_now_cancel(void *ud) { ((run_wait *)ud)->cancelled = true; }

/* timer.run_now(name) -> true | nil, err: runs the job now and waits for its outcome. */
static int timer_run_now(lua_State *L) {
  int nret;
  dc_job *job = find_job(L, &nret);
  if (!job) return nret;
  dc_task *task = dc_wait_check(L, "dconn.timer.run_now");
  run_wait *w = calloc(1, sizeof *w);
  if (!w) return luaL_error(L, "dconn.timer.run_now: out of memory");
  w->task = task;
  const char *why;
  if (!dc_sched_run_now(job, run_now_done, w, &why)) {
    free(w);
    lua_pushnil(L);
    lua_pushfstring(L, "job '%s': %s", lua_tostring(L, 1), why);
    return 2;
  }
  return dc_wait(L, task, DC_WAIT_TIME, run_now_cancel, w);
}

/* timer.observe(fn | nil): fn(name, ok, duration, err) after every job run (metrics); must not
 * wait. */
static int timer_observe(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_xmove(L, dc_host_state(dc_host_of(L)), 1);
  dc_sched_set_observer(sched_of(L), dc_host_state(dc_host_of(L)));
  return 0;
}

/* timer.hold(bool): registered jobs wait until released (used by dconn check and --once). */
static int timer_hold(lua_State *L) {
  dc_sched_hold(sched_of(L), lua_toboolean(L, 1));
  return 0;
}

/* timer.stop(): no new runs; running ones finish (graceful shutdown). */
static int timer_stop(lua_State *L) {
  dc_sched_stop(sched_of(L));
  return 0;
}

static const luaL_Reg timer_functions[] = {
    {"sleep", timer_sleep},
    {"now", timer_now},
    {"simulate", timer_simulate},
    {"simulated", timer_simulated},
    {"advance", timer_advance},
    {"add", timer_add},
    {"validate", timer_validate},
    {"duration", timer_duration},
    {"format_time", timer_format_time},
    {"parse_time", timer_parse_time},
    {"every", timer_every},
    {"cron", timer_cron},
    {"at", timer_at},
    {"jobs", timer_jobs},
    {"job", timer_job},
    {"pause", timer_pause},
    {"resume", timer_resume},
    {"remove", timer_remove},
    {"run_now", timer_run_now},
    {"hold", timer_hold},
    {"observe", timer_observe},
    {"stop", timer_stop},
    {NULL, NULL},
};

int luaopen_dconn_timer(lua_State *L) {
  luaL_newlib(L, timer_functions);
  return 1;
}
