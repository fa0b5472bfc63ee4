/* The process lifecycle: main task, signals, graceful stop, exit status (see agent.h). */
#include "agent.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "clock.h"
#include "log.h"
#include "scheduler.h"

/* How often a stopping agent checks whether its jobs have finished. */
#define STOP_POLL_MS 20
/* How often the policy file is stat()ed: polling, unlike inotify, follows the symlink swap a
 * Kubernetes ConfigMap volume does on update and editors that save by renaming. */
#define WATCH_POLL_MS 1000

typedef struct agent {
  dc_host *H;
  dc_agent_options opts;
  int exit_code;
  bool stopping, done, looping;
  uv_signal_t sigint, sigterm, sighup;
  uv_fs_poll_t watch;
  uv_timer_t stop_poll;
  double stop_deadline;
  dc_clock_timer *stop_after;
} agent;

/* The signals' first handlers: libuv's own only wakes the loop, which a busy task holds for up
 * to a time slice, or for good inside a C call; ours also tells the host (dc_host_interrupt),
 * whose count hook then yields or stops the task, and chains to libuv's. */
static const int SIGNUMS[] = {SIGINT, SIGTERM, SIGHUP};
static struct sigaction uv_handlers[3];
static dc_host *volatile signal_host;

static void on_raw_signal(int signum) {
  for (int i = 0; i < 3; i++) {
    if (SIGNUMS[i] != signum) continue;
    if (signal_host) dc_host_interrupt(signal_host, signum);
    if (!(uv_handlers[i].sa_flags & SA_SIGINFO) && uv_handlers[i].sa_handler != SIG_DFL &&
        uv_handlers[i].sa_handler != SIG_IGN)
      uv_handlers[i].sa_handler(signum);
  }
}

static void wrap_signal_handlers(dc_host *H) {
  signal_host = H;
  for (int i = 0; i < 3; i++) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_raw_signal;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGNUMS[i], &sa, &uv_handlers[i]);
  }
}

/* Gives the signals back to libuv before its handles close. */
static void unwrap_signal_handlers(void) {
  for (int i = 0; i < 3; i++) sigaction(SIGNUMS[i], &uv_handlers[i], NULL);
  signal_host = NULL;
}

static void finish(agent *A, int code) {
  if (A->done) return;
  A->done = true;
  if (code > A->exit_code) A->exit_code = code;
  /* a stop flag left set would make the clean-up run below skip the close callbacks */
  if (A->looping) uv_stop(dc_host_loop(A->H));
}

static void poll_stop(uv_timer_t *t) {
  agent *A = t->data;
  dc_host *H = A->H;
  if (dc_host_task_count(H) == 0) {
    finish(A, A->exit_code);
    return;
  }
  if (uv_hrtime() / 1e9 >= A->stop_deadline) {
    dc_log(H, DC_LOG_WARNING, "Grace period over: cancelling %d unfinished task(s)", dc_host_task_count(H));
    dc_host_kill_all(H, "cancelled: the agent is shutting down");
    finish(A, A->exit_code);
  }
}

static bool push_driver(dc_host *H, const char *fn);

static void on_shutdown_done(dc_task *t, int status, const char *err, void *ud) {
  (void)t;
  if (status != LUA_OK) dc_log(((agent *)ud)->H, DC_LOG_WARNING, "Shutdown hook failed: %s", err);
}

/* No new runs; running jobs get opts.grace seconds (wall time: a shutdown is real) to end. */
static void request_stop(agent *A, const char *why) {
  dc_host *H = A->H;
  if (A->stopping) {
    dc_log(H, DC_LOG_WARNING, "%s again: stopping now", why);
    dc_host_kill_all(H, "cancelled: the agent was stopped");
    finish(A, A->exit_code);
    return;
  }
  A->stopping = true;
  dc_host_stop_runs(H);
  dc_sched *s = dc_sched_of(H);
  if (s) dc_sched_stop(s);
  /* dconn run: the driver's shutdown() (releasing a leader Lease) runs within the grace period */
  if (A->opts.reloadable && push_driver(H, "shutdown"))
    dc_task_spawn(dc_host_state(H), 0, "shutdown", 0, on_shutdown_done, A);
  int tasks = dc_host_task_count(H);
  if (tasks == 0) {
    dc_log(H, DC_LOG_INFO, "%s: shutting down", why);
    finish(A, A->exit_code);
    return;
  }
  dc_log(H, DC_LOG_INFO, "%s: shutting down, waiting up to %gs for %d running task(s)", why, A->opts.grace, tasks);
  A->stop_deadline = uv_hrtime() / 1e9 + A->opts.grace;
  uv_timer_start(&A->stop_poll, poll_stop, STOP_POLL_MS, STOP_POLL_MS);
}

static void on_stop_after(void *ud) {
  agent *A = ud;
  A->stop_after = NULL;
  request_stop(A, "Run time limit reached");
}

/* Pushes require("dconn.agent")[fn]; false (message logged) when the library is missing. */
static bool push_driver(dc_host *H, const char *fn) {
  lua_State *L = dc_host_state(H);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "dconn.agent");
  if (dc_pcall(L, 1, 1) != LUA_OK) {
    dc_log(H, DC_LOG_CRITICAL, "cannot load the dconn Lua library: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return false;
  }
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  return true;
}

static void on_reload_done(dc_task *t, int status, const char *err, void *ud) {
  (void)t;
  if (status != LUA_OK)
    dc_log(((agent *)ud)->H, DC_LOG_ERROR, "Reload failed, the previous policy keeps running: %s", err);
}

static void reload(agent *A, const char *why) {
  if (!A->opts.reloadable || A->stopping) {
    dc_log(A->H, DC_LOG_INFO, "%s: nothing to reload", why);
    return;
  }
  dc_log(A->H, DC_LOG_INFO, "%s: reloading the policy", why);
  if (push_driver(A->H, "reload")) dc_task_spawn(dc_host_state(A->H), 0, "reload", 0, on_reload_done, A);
}

static void on_signal(uv_signal_t *handle, int signum) {
  agent *A = handle->data;
  dc_host_interrupt(A->H, 0);
  if (signum == SIGHUP) {
    reload(A, "SIGHUP");
    return;
  }
  request_stop(A, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* A status change of the policy file (content, size, inode); a deleted file is left alone
 * (the running policy stays) until it is back. */
static void on_policy_change(uv_fs_poll_t *handle, int status, const uv_stat_t *prev, const uv_stat_t *curr) {
  (void)prev;
  agent *A = handle->data;
  if (status < 0 || curr->st_size == 0) return;
  reload(A, "Policy file changed");
}

/* The driver's result: an integer ends the process with that status; nothing keeps it going. */
static void on_main_done(dc_task *t, int status, const char *err, void *ud) {
  agent *A = ud;
  if (status != LUA_OK) {
    dc_log(A->H, DC_LOG_CRITICAL, "%s", err);
    dc_host_kill_all(A->H, "cancelled: the main task failed");
    finish(A, DC_EXIT_FAILURE);
    return;
  }
  lua_State *co = dc_task_thread(t);
  if (lua_gettop(co) > 0 && lua_isinteger(co, -1)) {
    int code = (int)lua_tointeger(co, -1);
    A->exit_code = code;
    if (code != DC_EXIT_OK) {
      dc_host_kill_all(A->H, "cancelled: the agent is exiting");
      finish(A, code);
    } else if (A->opts.keep_alive) {
      request_stop(A, "Done");
    }
  }
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int dc_agent_main(dc_host *H, const dc_agent_options *opts, const char *fn, int argc, const char *const *argv) {
  uv_loop_t *loop = dc_host_loop(H);
  agent A = {.H = H, .opts = *opts};
  uv_signal_t *signals[] = {&A.sigint, &A.sigterm, &A.sighup};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(loop, signals[i]);
    signals[i]->data = &A;
    uv_signal_start(signals[i], on_signal, SIGNUMS[i]);
    if (!opts->keep_alive) uv_unref((uv_handle_t *)signals[i]);
  }
  wrap_signal_handlers(H);
  if (opts->reloadable && opts->watch_path) {
    uv_fs_poll_init(loop, &A.watch);
    A.watch.data = &A;
    uv_fs_poll_start(&A.watch, on_policy_change, opts->watch_path, WATCH_POLL_MS);
  }
  uv_timer_init(loop, &A.stop_poll);
  A.stop_poll.data = &A;
  if (opts->stop_after > 0) {
    dc_clock *clock = dc_host_clock(H);
    A.stop_after = dc_clock_at(clock, dc_clock_now(clock) + opts->stop_after, on_stop_after, &A);
  }
  lua_State *L = dc_host_state(H);
  if (!push_driver(H, fn)) {
    A.exit_code = DC_EXIT_FAILURE;
  } else {
    for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
    /* the driver runs a policy's top-level code: run and check have the budgets, a script not */
    long long budget = strcmp(fn, "script") == 0 ? -1 : 0;
    if (!dc_task_spawn(L, argc, fn, budget, on_main_done, &A)) finish(&A, DC_EXIT_FAILURE);
    A.looping = true;
    if (!A.done) uv_run(loop, UV_RUN_DEFAULT);
    /* cppcheck-suppress redundantAssignment ; callbacks read it during uv_run */
    A.looping = false;
  }
  if (A.stop_after) dc_clock_cancel(dc_host_clock(H), A.stop_after);
  unwrap_signal_handlers();
  int code = A.exit_code;
  dc_host_free(H);
  uv_walk(loop, close_handle, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return code;
}
