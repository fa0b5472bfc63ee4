/*
 * The Lua host: one lua_State on one libuv loop.
 *
 * Every entry from C into Lua goes through dc_pcall (synchronous calls) or a task (a coroutine
 * that may wait). Natives that wait use the same three steps everywhere:
 *
 *     dc_task *t = dc_wait_check(L, "dconn.timer.sleep");  -- raises if L cannot wait here
 *     start the libuv/curl operation, remember t
 *     return dc_wait(L, t, DC_WAIT_IO, cancel_fn, op);      -- yields the coroutine
 *
 * and, when the operation completes, one call: dc_task_deliver(t, push_fn, ud), which pushes the
 * results (push_fn, run protected) and resumes the task with them; the native returns them. If
 * the task is abandoned first (shutdown, job removed), the host calls cancel_fn(op) instead and
 * never resumes it.
 *
 * The host knows no module: the program passes the native modules it links in
 * dc_host_options.modules (runtime/modules.c for dconn).
 */
#ifndef DCONN_HOST_H
#define DCONN_HOST_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>
#include <uv.h>

typedef struct dc_host dc_host;
typedef struct dc_task dc_task;
typedef struct dc_clock dc_clock;

/* A native module: require(name) calls open. close (NULL for none) releases what the module
 * holds outside Lua (handles, connections, C lists); dc_host_free calls it, required or not,
 * after the tasks were killed and before the state closes. */
typedef struct dc_module {
  const char *name;
  lua_CFunction open;
  void (*close)(dc_host *H);
} dc_module;

typedef struct dc_host_options {
  size_t memory_limit;        /* bytes the Lua heap may hold; 0 = unlimited */
  long long max_instructions; /* per task run; 0 = unlimited */
  double max_run_time;        /* seconds a task run may spend running (not waiting); 0 = unlimited */
  bool unsafe;                /* policies get the full standard library */
  bool check_only;            /* dconn check: natives refuse to wait (no I/O) */
  /* The native modules, ended by a {NULL} record (NULL: none): preloaded in package.preload,
   * closed in this order by dc_host_free. Must outlive the host. */
  const dc_module *modules;
} dc_host_options;

#define DC_DEFAULT_MEMORY_LIMIT ((size_t)1 << 30)    /* 1 GiB */
#define DC_DEFAULT_MAX_INSTRUCTIONS 1000000000LL     /* about a second or two of pure Lua */
#define DC_DEFAULT_MAX_RUN_TIME 10.0                 /* seconds */

dc_host *dc_host_new(uv_loop_t *loop, const dc_host_options *opts);
void dc_host_free(dc_host *H);
lua_State *dc_host_state(dc_host *H);
uv_loop_t *dc_host_loop(dc_host *H);
dc_clock *dc_host_clock(dc_host *H);
const dc_host_options *dc_host_options_of(dc_host *H);
/* Replaces the options: the command line is parsed in the host's own state, then applied. */
void dc_host_set_options(dc_host *H, const dc_host_options *opts);
/* The host that owns L (any thread of the state). */
dc_host *dc_host_of(lua_State *L);

/* Protected call with traceback: like lua_pcall; on error the message (with traceback) is on
 * the stack as a string. Never yields. */
int dc_pcall(lua_State *L, int nargs, int nresults);

/* dc_pcall for policy code called synchronously (an observer): it runs under the heap cap and
 * the run-time budget (--max-run-time), counted from the outermost such call. */
int dc_pcall_policy(lua_State *L, int nargs, int nresults);

/* ---- tasks: coroutines driven by the loop ---- */
/*
 * Budgets and preemption: every task has a count hook. A run (a task tree from its first resume
 * to its end) stops with an error past its instruction budget or past --max-run-time seconds of
 * running; budget < 0 lifts both. A task that has run for a time slice (20 ms) yields to the
 * loop and is resumed, where it was, once due timers, I/O and signals have been served (a
 * simulated clock stands still meanwhile). Where it cannot yield (inside a C call), the budgets
 * still hold.
 */

/* From a signal handler (async-signal-safe): a signal waits for the loop, so a running task
 * yields at its next hook; SIGINT and SIGTERM stop a task that cannot yield. 0 clears it. */
void dc_host_interrupt(dc_host *H, int signum);
/* The agent is stopping: from now on a task that needs more than its current time slice is
 * stopped with an error (tasks waiting for I/O are left to finish). */
void dc_host_stop_runs(dc_host *H);

/* Called once when a task ends. status is LUA_OK or an error status; on error, err is the
 * message with traceback. On success the function's results are on dc_task_thread(t). The task
 * is freed after this returns. */
typedef void (*dc_task_done_fn)(dc_task *t, int status, const char *err, void *ud);

/* DC_WAIT_IO holds a simulated clock still until it completes; DC_WAIT_TIME does not. */
typedef enum { DC_WAIT_TIME, DC_WAIT_IO } dc_wait_kind;
typedef void (*dc_cancel_fn)(void *op);

/* Pops a function and nargs arguments from the main state's stack, runs it as a new task until
 * it first waits or ends (done may be called before this returns). budget: instruction limit
 * for the whole run (0 = host default, <0 = unlimited). Returns NULL (arguments popped) when
 * out of memory or when too many tasks are alive. */
dc_task *dc_task_spawn(lua_State *L, int nargs, const char *name, long long budget, dc_task_done_fn done, void *ud);
/* A run's limits. instructions: 0 = the host's --max-instructions, < 0 = neither limit applies;
 * seconds: of running (not waiting), 0 = the host's --max-run-time. */
typedef struct {
  long long instructions;
  double seconds;
} dc_budget;
/* dc_task_spawn with both limits given (a job's own budget). */
dc_task *dc_task_spawn_budget(lua_State *L, int nargs, const char *name, dc_budget budget, dc_task_done_fn done,
                              void *ud);

/* Pushes the results of a waiting task's operation on L and returns how many it pushed. */
typedef int (*dc_deliver_fn)(lua_State *L, void *ud);
/* Completes the operation a task waits for: runs push(L, ud) protected on the main state, moves
 * its results to the task and resumes it; the native's dc_wait returns them. If push raises
 * (out of memory under the heap cap, say), the task gets that error, raised where it waited.
 * push may be NULL: no results. The cancel function given to dc_wait is not called any more.
 * An operation that completes before its native called dc_wait may call this too: dc_wait then
 * returns the results (or raises the error) at once instead of yielding. */
void dc_task_deliver(dc_task *t, dc_deliver_fn push, void *ud);
/* The low level under dc_task_deliver: resumes with nresults values the caller already pushed
 * on dc_task_thread(t). Pushing on a waiting thread is unprotected (a memory error there is a
 * panic), so natives use dc_task_deliver. */
void dc_task_resume(dc_task *t, int nresults);
/* Ends a task now: its pending operation is cancelled and done gets an error status. */
void dc_task_kill(dc_task *t, const char *why);
lua_State *dc_task_thread(dc_task *t);
/* The thread of the task running right now, or NULL (read from a signal handler to interrupt it). */
lua_State *dc_host_running_thread(dc_host *H);
const char *dc_task_name(dc_task *t);
/* One slot per host for the scheduler's state (owned by sched.c). */
void **dc_host_sched_slot(dc_host *H);
/* Tasks alive (running or waiting). */
int dc_host_task_count(dc_host *H);
/* Kills every task (used at shutdown after the grace period). */
void dc_host_kill_all(dc_host *H, const char *why);

/* Raises a clear error unless the running code can wait (inside a task's own coroutine and
 * not across a C boundary); returns the task. */
dc_task *dc_wait_check(lua_State *L, const char *what);
/* Records the pending operation and yields; use as `return dc_wait(...)`. */
int dc_wait(lua_State *L, dc_task *t, dc_wait_kind kind, dc_cancel_fn cancel, void *op);
/* Operations other than clock waits in flight (a simulated clock only advances at zero). */
int dc_host_io_pending(dc_host *H);

/* ---- child tasks (dconn.task) ---- */

/* Live tasks below one task (a job's run and everything it spawned), and how deep they nest. */
#define DC_TASK_MAX_CHILDREN 1000
#define DC_TASK_MAX_DEPTH 32

/* Like dc_task_spawn, but the new task belongs to `parent`, the running task: it is killed when
 * the parent ends (its own children first), its instructions count against the budget of the
 * tree's root, and it counts against the root's DC_TASK_MAX_CHILDREN. Returns NULL (arguments
 * popped) with *why set: "too many tasks", "tasks nested too deeply" or "out of memory". Like
 * dc_task_spawn, the task runs until it first waits; if it ended by then, the pointer returned
 * is already freed (its done has run). */
dc_task *dc_task_spawn_child(dc_task *parent, lua_State *L, int nargs, const char *name, dc_task_done_fn done, void *ud,
                             const char **why);
/* Whether the task's coroutine is resumed now (it may be below a nested one). */
bool dc_task_is_running(dc_task *t);
/* In a done callback: whether the task ended by dc_task_kill (its parent's end included). */
bool dc_task_was_killed(dc_task *t);

#endif
