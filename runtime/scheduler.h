/*
 * The job scheduler: named jobs with interval, cron and date triggers, run as host tasks.
 *
 * - a job never overlaps itself: a tick that comes while the last run is still going is skipped
 *   and logged;
 * - ticks missed after a stall are coalesced into one run;
 * - times come from the host clock only, so a simulated clock replays schedules at full speed.
 */
#ifndef DCONN_SCHEDULER_H
#define DCONN_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>

#include "cron.h"
#include "host.h"

typedef enum { DC_TRIGGER_INTERVAL, DC_TRIGGER_CRON, DC_TRIGGER_DATE } dc_trigger_kind;

typedef struct dc_trigger {
  dc_trigger_kind kind;
  double interval; /* seconds, interval only */
  dc_cron cron;
  char cron_text[128];
  double at;        /* date only */
  double jitter;    /* up to this many seconds added to each run time */
  double start, end; /* 0 = unbounded */
  bool utc;         /* cron and text dates: UTC (default) or local time */
  bool immediate;   /* first run at once (interval and cron) */
  bool quiet;       /* a routine job: its "Running job" and success lines are logged at debug */
} dc_trigger;

typedef struct dc_sched dc_sched;
typedef struct dc_job dc_job;

/* Outcome of one run, for whoever asked for it. */
typedef void (*dc_run_done_fn)(dc_job *job, bool ok, const char *err, void *ud);

typedef struct dc_job_info {
  const char *name;
  char trigger[160]; /* "interval[0:05:00]", "cron[0 * * * *]", "date[2024-04-12 10:44:31 UTC]" */
  double next_run;   /* < 0: none */
  double last_run, last_duration;
  const char *last_error; /* NULL after a success or before any run */
  bool running, paused, finished;
  long long runs, failures, skipped;
} dc_job_info;

dc_sched *dc_sched_of(dc_host *H);
void dc_sched_close(dc_host *H);

/* Takes the function on top of L's stack. Returns NULL with a message in err on a bad trigger or
 * a duplicate name. */
dc_job *dc_sched_add(dc_sched *s, lua_State *L, const char *name, const dc_trigger *trigger, dc_budget budget,
                     char *err, size_t errlen);
/* Fills a trigger's derived fields and checks it (end before start, zero interval...). */
int dc_trigger_validate(dc_trigger *trigger, char *err, size_t errlen);

dc_job *dc_sched_find(dc_sched *s, const char *name);
dc_job *dc_sched_first(dc_sched *s);
dc_job *dc_sched_next(dc_job *job);
void dc_sched_info(dc_job *job, dc_job_info *info);

void dc_sched_pause(dc_job *job);
void dc_sched_resume(dc_job *job);
/* Starts a run now. Returns false (with a reason) if it is already running or stopping. */
bool dc_sched_run_now(dc_job *job, dc_run_done_fn done, void *ud, const char **why);
void dc_sched_remove(dc_job *job);

/* Pops a function (or nil) from L: called as fn(name, ok, duration, err) after every run. */
void dc_sched_set_observer(dc_sched *s, lua_State *L);

/* Held: jobs are registered but no timer starts (dconn check, --once). */
void dc_sched_hold(dc_sched *s, bool held);
/* No new runs from now on; running ones finish. */
void dc_sched_stop(dc_sched *s);
int dc_sched_running(dc_sched *s);
int dc_sched_count(dc_sched *s);

#endif
