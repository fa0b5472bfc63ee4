/* The job scheduler (see sched.h). Log lines follow APScheduler's, which users of the original
 * agent grep for. */
#include "scheduler.h"

#include <math.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "clock.h"
#include "log.h"
#include "timefmt.h"

/* How late a run may start before the delay is reported as missed runs. */
#define MISFIRE_GRACE 1.0

typedef struct run_waiter {
  dc_run_done_fn done;
  void *ud;
  struct run_waiter *next;
} run_waiter;

struct dc_job {
  dc_sched *s;
  char *name;
  dc_trigger trig;
  int fnref;
  dc_budget budget;
  double anchor;    /* interval runs fall on anchor + k * interval */
  double next_base; /* next run time before jitter; < 0: none */
  double next_run;  /* with jitter */
  dc_clock_timer *timer;
  bool running, paused, finished, removed;
  bool notifying; /* waiters may remove the job from inside their callback */
  double run_started, last_run, last_duration;
  char *last_error;
  long long runs, failures, skipped;
  run_waiter *waiters;
  dc_job *prev, *next;
};

struct dc_sched {
  dc_host *H;
  dc_job *first, *last;
  int count, running;
  bool held, stopped;
  unsigned long long rng;
  int observer_ref; /* Lua function told about every finished run, or LUA_NOREF */
};

dc_sched *dc_sched_of(dc_host *H) {
  void **slot = dc_host_sched_slot(H);
  if (!*slot) {
    dc_sched *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->H = H;
    s->rng = uv_hrtime() | 1;
    s->observer_ref = LUA_NOREF;
    *slot = s;
  }
  return *slot;
}

static double now_of(dc_sched *s) { return dc_clock_now(dc_host_clock(s->H)); }

static double random_unit(dc_sched *s) {
  s->rng ^= s->rng << 13; /* xorshift64 */
  s->rng ^= s->rng >> 7;
  s->rng ^= s->rng << 17;
  return (double)(s->rng >> 11) / 9007199254740992.0;
}

/* ---- trigger math ---- */

#define DC_MIN_INTERVAL 0.001
#define DC_MAX_TIME 253402300799.0 /* 9999-12-31T23:59:59Z */

int dc_trigger_validate(dc_trigger *t, char *err, size_t errlen) {
  if (t->kind == DC_TRIGGER_INTERVAL && !(t->interval > 0 && isfinite(t->interval))) {
    snprintf(err, errlen, "interval must be a positive number of seconds");
    return -1;
  }
  /* absurd schedules refused at load: a busy loop, a date no clock reaches, a cron that never fires */
  if (t->kind == DC_TRIGGER_INTERVAL && t->interval < DC_MIN_INTERVAL) {
    snprintf(err, errlen, "interval must be at least 1ms, got %g s", t->interval);
    return -1;
  }
  if (t->kind == DC_TRIGGER_DATE && !(isfinite(t->at) && t->at >= 0 && t->at <= DC_MAX_TIME)) {
    snprintf(err, errlen, "date out of range (from 1970 to 9999)");
    return -1;
  }
  if (t->kind == DC_TRIGGER_CRON && dc_cron_next(&t->cron, (double)time(NULL), t->utc) < 0) {
    snprintf(err, errlen, "the cron expression never fires");
    return -1;
  }
  if (t->jitter < 0 || !isfinite(t->jitter)) {
    snprintf(err, errlen, "jitter must be zero or a positive number of seconds");
    return -1;
  }
  if (t->start > 0 && t->end > 0 && t->end < t->start) {
    snprintf(err, errlen, "end time is before start time");
    return -1;
  }
  return 0;
}

/* First run time strictly after `after`, before jitter; < 0 when there is none. */
static double next_after(const dc_job *job, double after) {
  const dc_trigger *t = &job->trig;
  double base = -1;
  switch (t->kind) {
  case DC_TRIGGER_INTERVAL:
    if (after < job->anchor) base = job->anchor;
    else base = job->anchor + (floor((after - job->anchor) / t->interval) + 1) * t->interval;
    break;
  case DC_TRIGGER_CRON: base = dc_cron_next(&t->cron, t->start > after ? t->start - 1e-6 : after, t->utc); break;
  case DC_TRIGGER_DATE: base = t->at > after ? t->at : -1; break;
  }
  if (base >= 0 && t->end > 0 && base > t->end) return -1;
  return base;
}

/* Runs that should have happened in (scheduled, now]: the ones a stall swallowed. */
static long long missed_runs(const dc_job *job, double scheduled, double now) {
  long long n = 0;
  for (double at = next_after(job, scheduled); at >= 0 && at <= now && n < 100000; at = next_after(job, at)) n++;
  return n;
}

static void describe_trigger(const dc_trigger *t, char *buf, size_t n) {
  char text[96];
  switch (t->kind) {
  case DC_TRIGGER_INTERVAL:
    dc_interval_format(t->interval, text, sizeof text);
    snprintf(buf, n, "interval[%s]", text);
    break;
  case DC_TRIGGER_CRON: snprintf(buf, n, "cron[%s]", t->cron_text); break;
  case DC_TRIGGER_DATE:
    dc_time_format_next(t->at, t->utc, text, sizeof text);
    snprintf(buf, n, "date[%s]", text);
    break;
  }
}

/* APScheduler's str(job): 'name (trigger: interval[0:05:00], next run at: 2024-... UTC)' */
static void describe_job(const dc_job *job, char *buf, size_t n) {
  char trig[160], when[64];
  describe_trigger(&job->trig, trig, sizeof trig);
  if (job->paused) snprintf(when, sizeof when, "paused");
  else if (job->next_run < 0) snprintf(when, sizeof when, "no further runs");
  else {
    char at[48];
    dc_time_format_next(job->next_run, dc_log_is_utc(), at, sizeof at);
    snprintf(when, sizeof when, "next run at: %s", at);
  }
  snprintf(buf, n, "%s (trigger: %s, %s)", job->name, trig, when);
}

/* ---- runs ---- */

static void job_free(dc_job *job) {
  lua_State *L = dc_host_state(job->s->H);
  luaL_unref(L, LUA_REGISTRYINDEX, job->fnref);
  free(job->name);
  free(job->last_error);
  free(job);
}

static void notify_waiters(dc_job *job, bool ok, const char *err) {
  run_waiter *w = job->waiters;
  job->waiters = NULL;
  while (w) {
    run_waiter *next = w->next;
    w->done(job, ok, err, w->ud);
    free(w);
    w = next;
  }
}

/* stack: job (light userdata), ok -> calls the observer; run under pcall (it allocates). */
static int call_observer(lua_State *L) {
  dc_job *job = lua_touserdata(L, 1);
  bool ok = lua_toboolean(L, 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, job->s->observer_ref);
  lua_pushstring(L, job->name);
  lua_pushboolean(L, ok);
  lua_pushnumber(L, job->last_duration);
  if (job->last_error) lua_pushstring(L, job->last_error);
  else lua_pushnil(L);
  lua_call(L, 4, 0);
  return 0;
}

/* observer(name, ok, duration, err): for metrics. It must not wait; its errors are logged. */
static void observe(dc_job *job, bool ok) {
  dc_sched *s = job->s;
  if (s->observer_ref == LUA_NOREF) return;
  lua_State *L = dc_host_state(s->H);
  lua_pushcfunction(L, call_observer);
  lua_pushlightuserdata(L, job);
  lua_pushboolean(L, ok);
  if (dc_pcall_policy(L, 2, 0) != LUA_OK) {
    dc_log(s->H, DC_LOG_ERROR, "job observer failed: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

void dc_sched_set_observer(dc_sched *s, lua_State *L) {
  luaL_unref(L, LUA_REGISTRYINDEX, s->observer_ref);
  s->observer_ref = lua_isnil(L, -1) ? (lua_pop(L, 1), LUA_NOREF) : luaL_ref(L, LUA_REGISTRYINDEX);
}

static void run_done(dc_task *task, int status, const char *err, void *ud) {
  (void)task;
  dc_job *job = ud;
  dc_sched *s = job->s;
  char desc[512];
  job->running = false;
  s->running--;
  job->last_run = job->run_started;
  job->last_duration = now_of(s) - job->run_started;
  free(job->last_error);
  job->last_error = NULL;
  describe_job(job, desc, sizeof desc);
  if (status == LUA_OK) {
    dc_log(s->H, job->trig.quiet ? DC_LOG_DEBUG : DC_LOG_INFO, "Job \"%s\" executed successfully", desc);
  } else {
    job->failures++;
    job->last_error = strdup(err ? err : "unknown error");
    char msg[640];
    snprintf(msg, sizeof msg, "Job \"%s\" raised an exception", desc);
    dc_log_field field = {"traceback", job->last_error ? job->last_error : "out of memory"};
    dc_log_fields(s->H, DC_LOG_ERROR, msg, &field, 1);
  }
  observe(job, status == LUA_OK);
  job->notifying = true;
  notify_waiters(job, status == LUA_OK, job->last_error);
  job->notifying = false;
  if (job->removed && !job->running) job_free(job);
}

static void start_run(dc_job *job, double scheduled) {
  dc_sched *s = job->s;
  lua_State *L = dc_host_state(s->H);
  char desc[512], when[64];
  describe_job(job, desc, sizeof desc);
  dc_time_format_precise(scheduled, dc_log_is_utc(), when, sizeof when);
  dc_log(s->H, job->trig.quiet ? DC_LOG_DEBUG : DC_LOG_INFO, "Running job \"%s\" (scheduled at %s)", desc, when);
  job->running = true;
  job->runs++;
  job->run_started = now_of(s);
  s->running++;
  lua_rawgeti(L, LUA_REGISTRYINDEX, job->fnref);
  if (!dc_task_spawn_budget(L, 0, job->name, job->budget, run_done, job)) {
    lua_pushliteral(L, "cannot start the job: out of memory");
    run_done(NULL, LUA_ERRMEM, lua_tostring(L, -1), job);
    lua_pop(L, 1);
  }
}

static void on_timer(void *ud);

/* Sets next_run from next_base and starts the timer unless held, paused or stopped. */
static void arm(dc_job *job) {
  dc_sched *s = job->s;
  job->next_run = job->next_base;
  if (job->next_base >= 0 && job->trig.jitter > 0) job->next_run += random_unit(s) * job->trig.jitter;
  if (job->next_base < 0) job->finished = true;
  if (job->next_run < 0 || job->paused || s->held || s->stopped) return;
  job->timer = dc_clock_at(dc_host_clock(s->H), job->next_run, on_timer, job);
}

static void on_timer(void *ud) {
  dc_job *job = ud;
  dc_sched *s = job->s;
  job->timer = NULL;
  double scheduled = job->next_run, now = now_of(s);
  long long missed = now - scheduled > MISFIRE_GRACE ? missed_runs(job, scheduled, now) : 0;
  job->next_base = next_after(job, now);
  arm(job);
  char desc[512];
  describe_job(job, desc, sizeof desc);
  if (missed > 0) {
    char late[64];
    dc_interval_format(now - scheduled, late, sizeof late);
    dc_log(s->H, DC_LOG_WARNING, "Run time of job \"%s\" was missed by %s: %lld missed run%s coalesced into one", desc,
           late, missed, missed == 1 ? "" : "s");
  }
  if (job->running) {
    job->skipped++;
    dc_log(s->H, DC_LOG_WARNING, "Execution of job \"%s\" skipped: maximum number of running instances reached (1)",
           desc);
    return;
  }
  start_run(job, scheduled);
}

/* ---- jobs ---- */

dc_job *dc_sched_add(dc_sched *s, lua_State *L, const char *name, const dc_trigger *trigger, dc_budget budget,
                     char *err, size_t errlen) {
  dc_trigger trig = *trigger;
  if (dc_trigger_validate(&trig, err, errlen) != 0) goto fail;
  if (dc_sched_find(s, name)) {
    snprintf(err, errlen, "a job named '%s' already exists", name);
    goto fail;
  }
  dc_job *job = calloc(1, sizeof *job);
  char *dup = strdup(name);
  if (!job || !dup) {
    free(job);
    free(dup);
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  double now = now_of(s);
  job->s = s;
  job->name = dup;
  job->trig = trig;
  job->budget = budget;
  job->fnref = luaL_ref(L, LUA_REGISTRYINDEX);
  job->anchor = trig.start > 0 ? trig.start : now;
  job->last_run = job->last_duration = -1;
  if (trig.kind != DC_TRIGGER_DATE && trig.immediate) job->next_base = trig.start > now ? trig.start : now;
  else job->next_base = next_after(job, now);
  if (trig.kind == DC_TRIGGER_DATE && trig.at <= now) job->next_base = now; /* past: run once */
  job->prev = s->last;
  if (s->last) s->last->next = job;
  else s->first = job;
  s->last = job;
  s->count++;
  arm(job);
  return job;
fail:
  lua_pop(L, 1);
  return NULL;
}

dc_job *dc_sched_find(dc_sched *s, const char *name) {
  for (dc_job *job = s->first; job; job = job->next)
    if (strcmp(job->name, name) == 0) return job;
  return NULL;
}

dc_job *dc_sched_first(dc_sched *s) { return s->first; }
dc_job *dc_sched_next(dc_job *job) { return job->next; }
int dc_sched_running(dc_sched *s) { return s->running; }
int dc_sched_count(dc_sched *s) { return s->count; }

void dc_sched_info(dc_job *job, dc_job_info *info) {
  info->name = job->name;
  describe_trigger(&job->trig, info->trigger, sizeof info->trigger);
  info->next_run = job->paused ? -1 : job->next_run;
  info->last_run = job->last_run;
  info->last_duration = job->last_duration;
  info->last_error = job->last_error;
  info->running = job->running;
  info->paused = job->paused;
  info->finished = job->finished;
  info->runs = job->runs;
  info->failures = job->failures;
  info->skipped = job->skipped;
}

static void disarm(dc_job *job) {
  if (job->timer) dc_clock_cancel(dc_host_clock(job->s->H), job->timer);
  job->timer = NULL;
}

void dc_sched_pause(dc_job *job) {
  job->paused = true;
  disarm(job);
}

void dc_sched_resume(dc_job *job) {
  if (!job->paused) return;
  job->paused = false;
  if (job->finished) return;
  job->next_base = next_after(job, now_of(job->s));
  arm(job);
}

bool dc_sched_run_now(dc_job *job, dc_run_done_fn done, void *ud, const char **why) {
  if (job->running) {
    *why = "already running";
    return false;
  }
  if (job->s->stopped) {
    *why = "the agent is stopping";
    return false;
  }
  if (done) {
    run_waiter *w = malloc(sizeof *w);
    if (!w) {
      *why = "out of memory";
      return false;
    }
    w->done = done;
    w->ud = ud;
    w->next = job->waiters;
    job->waiters = w;
  }
  start_run(job, now_of(job->s));
  return true;
}

void dc_sched_remove(dc_job *job) {
  dc_sched *s = job->s;
  disarm(job);
  if (job->prev) job->prev->next = job->next;
  else s->first = job->next;
  if (job->next) job->next->prev = job->prev;
  else s->last = job->prev;
  s->count--;
  job->removed = true;
  if (!job->running && !job->notifying) job_free(job); /* else freed when the run ends */
}

void dc_sched_hold(dc_sched *s, bool held) {
  s->held = held;
  for (dc_job *job = s->first; job; job = job->next) {
    disarm(job);
    if (!held && !job->finished) {
      job->next_base = next_after(job, now_of(s));
      if (job->trig.immediate && job->runs == 0) job->next_base = now_of(s);
      arm(job);
    }
  }
}

void dc_sched_stop(dc_sched *s) {
  s->stopped = true;
  for (dc_job *job = s->first; job; job = job->next) disarm(job);
}

void dc_sched_close(dc_host *H) {
  void **slot = dc_host_sched_slot(H);
  dc_sched *s = *slot;
  if (!s) return;
  while (s->first) dc_sched_remove(s->first);
  luaL_unref(dc_host_state(H), LUA_REGISTRYINDEX, s->observer_ref);
  free(s);
  *slot = NULL;
}
