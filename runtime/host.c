/*
 * The Lua host: state creation, the memory cap, the one protected gateway, instruction budgets,
 * and tasks (coroutines driven by the loop). See host.h for the waiting protocol.
 */
#include "host.h"

#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "clock.h"

/* Instructions between two budget checks: small enough to stop a loop promptly, large enough
 * that the hook costs nothing measurable. */
#define BUDGET_STEP 10000
/* Run time after which a task yields to the loop (preemption): short enough that timers, I/O,
 * API requests and signals wait at most this long behind a busy job. */
#define SLICE_NS 20000000ULL
/* Run time a task's __close handlers get once it has ended (killed, failed or over budget). */
#define CLOSE_NS 100000000ULL
/* The collector's pace (see open_state): a new cycle once the heap is 120% of what the last
 * one left alive, four times the default step. */
#define GC_PAUSE 120
#define GC_STEPMUL 400

/* Why a run is being stopped; the hook raises the matching message until the run is over. */
enum { BLOWN_NONE, BLOWN_INSTRUCTIONS, BLOWN_TIME, BLOWN_STOP, BLOWN_CLOSE };

struct dc_task {
  dc_host *H;
  lua_State *co;
  lua_State *from; /* for C-stack accounting of the first resume */
  int ref;         /* anchors the thread in the registry */
  char *name;
  long long budget, used;
  double max_run_time;      /* seconds of running a run may take; 0 = unlimited */
  double run_time;          /* seconds spent running (the root's counts the whole tree) */
  uint64_t resumed_at;      /* uv_hrtime() when the current slice began */
  uint64_t nested_ns;       /* time of tasks resumed from inside this slice (not this task's) */
  int blown;                /* BLOWN_*: the run is being stopped */
  bool running, limited;    /* limited: the budgets apply (budget >= 0) */
  bool preempted, closing;  /* runnable after its slice; running its __close handlers */
  dc_task *run_next;        /* the runnable queue */
  int early_results; /* resumed before it could yield: results wait on the stack; -1 = none */
  int resumed_with;  /* values the last resume passed to dc_wait's continuation */
  /* the delivery failed: DELIVER_ERROR, the error value is the one result; DELIVER_NO_STACK,
   * the task's stack could not hold the results */
  enum { DELIVER_OK, DELIVER_ERROR, DELIVER_NO_STACK } delivery;
  dc_task_done_fn done;
  void *ud;
  /* the pending operation while waiting */
  bool waiting;
  dc_wait_kind wait_kind;
  dc_cancel_fn cancel;
  void *op;
  dc_task *prev, *next;
  /* dconn.task: the task that spawned this one (dc_task_spawn_child) and the ones it spawned */
  dc_task *parent, *children, *sib_prev, *sib_next;
  int descendants; /* live tasks below this one */
  bool killed;     /* ended by dc_task_kill */
  bool orphaned;   /* its parent ended while it ran: it may not wait again */
};

/* More live tasks than this is a runaway policy, not a workload. */
#define MAX_TASKS 10000

struct dc_host {
  lua_State *L;
  uv_loop_t *loop;
  dc_clock *clock;
  dc_host_options opts;
  size_t mem_used;
  dc_task *tasks; /* live tasks, newest first */
  int task_count;
  dc_task *volatile current; /* read by signal handlers */
  int io_pending;
  void *sched;
  dc_task *spawn_parent; /* set by dc_task_spawn_child for the dc_task_spawn it calls */
  /* preempted tasks, resumed in turn by `idle` after the loop has served everything else */
  dc_task *run_head, *run_tail;
  uv_idle_t *idle;
  volatile sig_atomic_t interrupt; /* a signal arrived and waits for the loop (dc_host_interrupt) */
  bool stopping;                   /* dc_host_stop_runs: no task gets a new slice */
  uint64_t sync_since;             /* dc_pcall_policy: when the outermost call began; 0 none */
  char lua_dir[PATH_MAX];
};

/* ---- memory ---- */

/* Refuses only growth past the cap, so a failing policy can always free memory, and only while
 * a task runs: the cap limits what policies hold, while the host's own bookkeeping between runs
 * (logging a failure, starting the next job) must not fail for want of the memory a failed job
 * has not yet given back. */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  dc_host *H = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    H->mem_used -= old;
    return NULL;
  }
  if (nsize > old && H->opts.memory_limit && (H->current || H->sync_since) &&
      H->mem_used - old + nsize > H->opts.memory_limit)
    return NULL;
  void *p = realloc(ptr, nsize);
  if (p) H->mem_used = H->mem_used - old + nsize;
  return p;
}

/* ---- the gateway ---- */

dc_host *dc_host_of(lua_State *L) { return *(dc_host **)lua_getextraspace(L); }

/* Message handler: turns any error value into a string with a traceback (lua.c's msghandler). */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int dc_pcall(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  int status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status;
}

/* ---- budgets and preemption ---- */

static dc_task *task_root(dc_task *t) {
  while (t->parent) t = t->parent;
  return t;
}

static double seconds(uint64_t ns) { return (double)ns / 1e9; }

/* Raises the error of a run being stopped, and re-arms the hook on every instruction so that a
 * pcall in the policy cannot swallow it. */
static void raise_blown(lua_State *L, int blown, const char *name, long long budget, double seconds) {
  lua_sethook(L, lua_gethook(L), LUA_MASKCOUNT, 1);
  switch (blown) {
  case BLOWN_INSTRUCTIONS:
    luaL_error(L,
               "instruction budget exceeded: more than %I instructions in one run of '%s' "
               "(raise it with --max-instructions or the job's budget option)",
               (lua_Integer)budget, name);
    break;
  case BLOWN_TIME:
    luaL_error(L,
               "run time budget exceeded: more than %fs running in one run of '%s' "
               "(raise it with --max-run-time or the job's budget option)",
               seconds, name);
    break;
  case BLOWN_CLOSE: luaL_error(L, "__close handlers of '%s' ran past %dms", name, (int)(CLOSE_NS / 1000000)); break;
  default:
    luaL_error(L,
               "cancelled: the agent is stopping (a run may not compute past its %dms time "
               "slice once a stop was asked)",
               (int)(SLICE_NS / 1000000));
  }
}

/* Code called synchronously (dc_pcall_policy): it cannot yield, so it only has the budgets. */
static void sync_hook(lua_State *L, dc_host *H) {
  if (!H->sync_since || H->opts.max_run_time <= 0) return;
  if (seconds(uv_hrtime() - H->sync_since) > H->opts.max_run_time)
    raise_blown(L, BLOWN_TIME, "a callback", 0, H->opts.max_run_time);
}

/* The count hook of every task: the instruction and run-time budgets, preemption after a time
 * slice (Lua 5.4 lets a count hook yield a coroutine; lua_resume then continues where it left
 * off), and the stop: a pending signal makes the task yield at once so the loop serves it, and
 * once the agent stops, a task that would need another slice is stopped. Where the task cannot
 * yield (inside a C call such as table.sort's comparator), the budgets and a pending stop
 * signal raise instead. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  dc_host *H = dc_host_of(L);
  dc_task *t = H->current;
  if (!t) {
    sync_hook(L, H);
    return;
  }
  dc_task *acct = task_root(t); /* a child task's run counts against the task tree's root */
  if (t->blown) raise_blown(L, t->blown, acct->name, acct->budget, acct->max_run_time);
  uint64_t slice = uv_hrtime() - t->resumed_at - t->nested_ns;
  if (t->closing) {
    if (slice > CLOSE_NS) raise_blown(L, t->blown = BLOWN_CLOSE, acct->name, 0, 0);
    return;
  }
  if (acct->budget > 0) {
    acct->used += BUDGET_STEP;
    if (acct->used > acct->budget) raise_blown(L, t->blown = BLOWN_INSTRUCTIONS, acct->name, acct->budget, 0);
  }
  if (acct->limited && acct->max_run_time > 0 && acct->run_time + seconds(slice) > acct->max_run_time)
    raise_blown(L, t->blown = BLOWN_TIME, acct->name, 0, acct->max_run_time);
  int sig = H->interrupt;
  if (slice < SLICE_NS && !sig) return;
  if (H->stopping && slice >= SLICE_NS) raise_blown(L, t->blown = BLOWN_STOP, acct->name, 0, 0);
  if (L == t->co && lua_isyieldable(L)) {
    t->preempted = true;
    lua_yield(L, 0); /* a hook may yield only as its last act */
    return;
  }
  if (sig == SIGINT || sig == SIGTERM) raise_blown(L, t->blown = BLOWN_STOP, acct->name, 0, 0);
}

static void resume_runnable(uv_idle_t *idle);

static void runq_push(dc_task *t) {
  dc_host *H = t->H;
  t->run_next = NULL;
  if (H->run_tail) H->run_tail->run_next = t;
  else H->run_head = t;
  H->run_tail = t;
  if (H->idle && !uv_is_active((uv_handle_t *)H->idle)) uv_idle_start(H->idle, resume_runnable);
}

static void runq_remove(dc_task *t) {
  dc_host *H = t->H;
  dc_task **p = &H->run_head, *prev = NULL;
  while (*p && *p != t) {
    prev = *p;
    p = &(*p)->run_next;
  }
  if (!*p) return;
  *p = t->run_next;
  if (H->run_tail == t) H->run_tail = prev;
  t->run_next = NULL;
}

void dc_host_interrupt(dc_host *H, int signum) { H->interrupt = signum; }

void dc_host_stop_runs(dc_host *H) { H->stopping = true; }

int dc_pcall_policy(lua_State *L, int nargs, int nresults) {
  dc_host *H = dc_host_of(L);
  bool outer = H->current == NULL && H->sync_since == 0;
  if (outer) H->sync_since = uv_hrtime();
  int status = dc_pcall(L, nargs, nresults);
  if (outer) H->sync_since = 0;
  return status;
}

/* ---- tasks ---- */

lua_State *dc_task_thread(dc_task *t) { return t->co; }
lua_State *dc_host_running_thread(dc_host *H) { return H->current ? H->current->co : NULL; }
const char *dc_task_name(dc_task *t) { return t->name; }
int dc_host_task_count(dc_host *H) { return H->task_count; }
int dc_host_io_pending(dc_host *H) { return H->io_pending; }

/* stack: thread, status -> "message\nstack traceback:..." for the thread's error value. Runs
 * under pcall: it allocates, and memory may be what ran out. */
static int describe_task_error(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  if (lua_tointeger(L, 2) == LUA_ERRMEM) {
    dc_host *H = dc_host_of(L);
    lua_pushfstring(L,
                    "out of memory: the Lua heap reached its cap of %I MiB "
                    "(raise it with --memory-limit)",
                    (lua_Integer)(H->opts.memory_limit >> 20));
    return 1;
  }
  const char *msg = lua_tostring(co, -1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(co, -1));
  luaL_traceback(L, co, msg, 0);
  return 1;
}

/* The error of a failed task, with traceback, pushed on the main stack. If even that cannot be
 * built, Lua's preallocated "not enough memory" message stands in. */
static void push_task_error(dc_task *t, int status) {
  lua_State *L = t->H->L;
  lua_pushcfunction(L, describe_task_error);
  lua_pushthread(t->co);
  lua_xmove(t->co, L, 1);
  lua_pushinteger(L, status);
  lua_pcall(L, 2, 1, 0);
}

/* Closes the task's pending to-be-closed variables: their __close handlers are policy code, run
 * as the task (heap cap) with CLOSE_NS of run time, whatever stopped the task. */
static void task_close(dc_task *t) {
  dc_host *H = t->H;
  dc_task *outer = H->current;
  H->current = t;
  t->closing = true;
  t->blown = BLOWN_NONE;
  t->resumed_at = uv_hrtime();
  t->nested_ns = 0;
  lua_sethook(t->co, budget_hook, LUA_MASKCOUNT, BUDGET_STEP);
  lua_resetthread(t->co);
  H->current = outer;
}

static void task_unlink(dc_task *t) {
  dc_host *H = t->H;
  if (t->prev) t->prev->next = t->next;
  else H->tasks = t->next;
  if (t->next) t->next->prev = t->prev;
  H->task_count--;
}

static void task_end_family(dc_task *t);
static void task_adopt(dc_task *t);

/* Calls done, then releases everything. The error string (if any) is on the main stack. */
static void task_finish(dc_task *t, int status, const char *err) {
  dc_host *H = t->H;
  task_end_family(t);
  task_unlink(t);
  if (t->preempted) runq_remove(t);
  if (status != LUA_OK) task_close(t); /* release a failed run's memory at once */
  if (t->done) t->done(t, status, err, t->ud);
  task_close(t); /* closes pending to-be-closed variables */
  luaL_unref(H->L, LUA_REGISTRYINDEX, t->ref);
  free(t->name);
  free(t);
}

static void task_run(dc_task *t, int nargs) {
  dc_host *H = t->H;
  dc_task *outer = H->current;
  int nres = 0;
  H->current = t;
  t->running = true;
  t->preempted = false;
  t->resumed_at = uv_hrtime();
  t->nested_ns = 0;
  int status = lua_resume(t->co, t->from, nargs, &nres);
  uint64_t took = uv_hrtime() - t->resumed_at;
  task_root(t)->run_time += seconds(took - t->nested_ns);
  if (outer) outer->nested_ns += took;
  t->running = false;
  t->from = NULL;
  H->current = outer;
  if (status == LUA_YIELD && t->waiting) return;
  if (status == LUA_YIELD && t->preempted) {
    runq_push(t);
    return;
  }
  if (status == LUA_YIELD) {
    lua_pop(t->co, nres);
    lua_pushliteral(t->co, "coroutine.yield() at the top of a job: the scheduler has nothing "
                           "to resume it with (use dconn.timer.sleep to wait)");
    status = LUA_ERRRUN;
  } else if (status == LUA_OK) {
    task_finish(t, LUA_OK, NULL); /* results stay on the thread for done to read */
    return;
  }
  push_task_error(t, status);
  const char *err = lua_tostring(H->L, -1);
  int top = lua_gettop(H->L);
  task_finish(t, status, err);
  lua_settop(H->L, top - 1);
}

dc_task *dc_task_spawn(lua_State *L, int nargs, const char *name, long long budget, dc_task_done_fn done, void *ud) {
  return dc_task_spawn_budget(L, nargs, name, (dc_budget){budget, 0}, done, ud);
}

dc_task *dc_task_spawn_budget(lua_State *L, int nargs, const char *name, dc_budget budget, dc_task_done_fn done,
                              void *ud) {
  dc_host *H = dc_host_of(L);
  if (H->task_count >= MAX_TASKS) {
    lua_pop(L, nargs + 1);
    return NULL;
  }
  dc_task *t = calloc(1, sizeof *t);
  char *dup = strdup(name ? name : "task");
  if (!t || !dup) {
    free(t);
    free(dup);
    lua_pop(L, nargs + 1);
    return NULL;
  }
  t->H = H;
  t->name = dup;
  t->budget = budget.instructions == 0 ? H->opts.max_instructions : budget.instructions;
  t->max_run_time = budget.seconds > 0 ? budget.seconds : H->opts.max_run_time;
  t->limited = budget.instructions >= 0;
  t->done = done;
  t->ud = ud;
  t->from = L;
  t->early_results = -1;
  t->parent = H->spawn_parent;
  H->spawn_parent = NULL;
  t->co = lua_newthread(L);               /* stack: fn args... co */
  lua_insert(L, -(nargs + 2));            /* stack: co fn args... */
  lua_xmove(L, t->co, nargs + 1);         /* stack: co */
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX); /* stack: (empty) */
  lua_sethook(t->co, budget_hook, LUA_MASKCOUNT, BUDGET_STEP); /* preemption, budgets */
  t->next = H->tasks;
  if (H->tasks) H->tasks->prev = t;
  H->tasks = t;
  H->task_count++;
  if (t->parent) task_adopt(t);
  task_run(t, nargs);
  return t;
}

void dc_task_resume(dc_task *t, int nresults) {
  dc_host *H = t->H;
  if (t->running && !t->waiting) { /* completed before the native yielded: dc_wait returns */
    t->early_results = nresults;
    return;
  }
  if (t->waiting && t->wait_kind == DC_WAIT_IO) H->io_pending--;
  t->waiting = false;
  t->cancel = NULL;
  t->op = NULL;
  t->resumed_with = nresults;
  task_run(t, nresults);
  if (H->io_pending == 0 && H->clock) dc_clock_kick(H->clock);
}

/* The idle handle: runs after the loop has served due timers and ready I/O (signals, API
 * requests), and makes the next poll not block. Each preempted task queued now gets one slice;
 * those preempted again queue behind. */
static void resume_runnable(uv_idle_t *idle) {
  dc_host *H = idle->data;
  H->interrupt = 0; /* the loop has just served whatever the signal asked */
  dc_task *last = H->run_tail;
  while (H->run_head) {
    dc_task *t = H->run_head;
    H->run_head = t->run_next;
    if (!H->run_head) H->run_tail = NULL;
    t->run_next = NULL;
    t->from = NULL;
    task_run(t, 0);
    if (t == last) break;
  }
  if (!H->run_head) {
    uv_idle_stop(idle);
    if (H->clock) dc_clock_kick(H->clock); /* a simulated clock may move again */
  }
}

typedef struct deliver_call {
  dc_deliver_fn push;
  void *ud;
} deliver_call;

/* stack: deliver_call (light userdata) -> whatever push pushes */
static int run_push(lua_State *L) {
  const deliver_call *d = lua_touserdata(L, 1);
  lua_settop(L, 0);
  int n = d->push(L, d->ud);
  if (n < 0 || n > lua_gettop(L)) return luaL_error(L, "dconn: a native delivered %d results", n);
  return n;
}

/* The results are built on the main state, never on the task's thread: a waiting coroutine
 * cannot run a protected call, and an error while pushing on it directly would be a panic. */
void dc_task_deliver(dc_task *t, dc_deliver_fn push, void *ud) {
  lua_State *L = t->H->L, *co = t->co;
  t->cancel = NULL; /* the operation is over: a kill from here on has nothing to cancel */
  t->op = NULL;
  t->delivery = DELIVER_OK;
  int n = 0;
  if (push) {
    int base = lua_gettop(L);
    if (!lua_checkstack(L, 2)) {
      t->delivery = DELIVER_NO_STACK;
    } else {
      deliver_call d = {push, ud};
      lua_pushcfunction(L, run_push);
      lua_pushlightuserdata(L, &d);
      if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) t->delivery = DELIVER_ERROR;
      n = lua_gettop(L) - base; /* the results, or the error value */
    }
  }
  if (n > 0 && !lua_checkstack(co, n)) {
    lua_pop(L, n);
    n = 0;
    t->delivery = DELIVER_NO_STACK;
  }
  lua_xmove(L, co, n);
  dc_task_resume(t, n);
}

void dc_task_kill(dc_task *t, const char *why) {
  dc_host *H = t->H;
  if (t->running) return; /* only waiting tasks can be killed from outside */
  t->killed = true;
  if (t->waiting) {
    if (t->wait_kind == DC_WAIT_IO) H->io_pending--;
    if (t->cancel) t->cancel(t->op);
  }
  lua_pushstring(H->L, why);
  int top = lua_gettop(H->L);
  task_finish(t, LUA_ERRRUN, lua_tostring(H->L, -1));
  lua_settop(H->L, top - 1);
}

void dc_host_kill_all(dc_host *H, const char *why) {
  /* A kill can end other tasks too (a waiter resumed by the killed task's done callback), so
   * the scan starts again from the head after each one. */
  for (bool killed = true; killed;) {
    killed = false;
    for (dc_task *t = H->tasks; t; t = t->next) {
      if (!t->running) {
        dc_task_kill(t, why);
        killed = true;
        break;
      }
    }
  }
}

dc_task *dc_wait_check(lua_State *L, const char *what) {
  dc_host *H = dc_host_of(L);
  dc_task *t = H->current;
  if (H->opts.check_only) luaL_error(L, "%s: not allowed while checking a policy (no I/O)", what);
  if (!t || t->co != L) {
    luaL_error(L,
               "%s: cannot wait inside a coroutine the code created itself; call it from "
               "the job or script body (coroutine.wrap/create cannot be resumed by the loop; "
               "dconn.task.spawn runs code alongside that may wait)",
               what);
  }
  if (t->orphaned) luaL_error(L, "%s: cancelled: the task that spawned this one has ended", what);
  if (!lua_isyieldable(L)) {
    luaL_error(L,
               "%s: cannot wait here: attempt to yield across a C-call boundary (inside a "
               "metamethod, an iterator or a callback such as table.sort's comparator)",
               what);
  }
  return t;
}

/* The end of a wait, on the task's thread: its results are the top n values, or it raises the
 * error its delivery met. */
static int wait_results(lua_State *L, dc_task *t, int n) {
  int delivery = t->delivery;
  t->delivery = DELIVER_OK;
  if (delivery == DELIVER_ERROR) return lua_error(L);
  if (delivery == DELIVER_NO_STACK)
    return luaL_error(L, "out of memory: the results of the operation did not fit on the stack");
  return n;
}

static int wait_resumed(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  dc_task *t = (dc_task *)ctx;
  return wait_results(L, t, t->resumed_with);
}

int dc_wait(lua_State *L, dc_task *t, dc_wait_kind kind, dc_cancel_fn cancel, void *op) {
  if (t->early_results >= 0) {
    int n = t->early_results;
    t->early_results = -1;
    return wait_results(L, t, n);
  }
  t->waiting = true;
  t->wait_kind = kind;
  t->cancel = cancel;
  t->op = op;
  if (kind == DC_WAIT_IO) t->H->io_pending++;
  return lua_yieldk(L, 0, (lua_KContext)t, wait_resumed);
}

/* ---- state set-up ---- */

lua_State *dc_host_state(dc_host *H) { return H->L; }
uv_loop_t *dc_host_loop(dc_host *H) { return H->loop; }
dc_clock *dc_host_clock(dc_host *H) { return H->clock; }
const dc_host_options *dc_host_options_of(dc_host *H) { return &H->opts; }
void dc_host_set_options(dc_host *H, const dc_host_options *opts) { H->opts = *opts; }
void **dc_host_sched_slot(dc_host *H) { return &H->sched; }

/* A simulated clock stands still while I/O is in flight or a preempted task waits its turn. */
static bool clock_busy(void *ud) {
  dc_host *H = ud;
  return H->io_pending > 0 || H->run_head != NULL;
}

static void free_handle(uv_handle_t *h) { free(h); }

static bool dir_has_library(const char *dir) {
  char probe[PATH_MAX];
  if (snprintf(probe, sizeof probe, "%s/dconn/init.lua", dir) >= (int)sizeof probe) return false;
  return access(probe, R_OK) == 0;
}

/* The shipped Lua library: $DCONN_LUA_DIR, else next to the binary (build/, build/sanitize/ or
 * an install prefix). */
static void find_lua_dir(dc_host *H) {
  const char *given = getenv("DCONN_LUA_DIR");
  if (given) {
    snprintf(H->lua_dir, sizeof H->lua_dir, "%s", given);
    return;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash) *slash = '\0';
  static const char *const candidates[] = {"/../lua", "/../../lua", "/../share/dconn/lua"};
  for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
    char dir[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s%s", exe, candidates[i]);
    if (dir_has_library(dir)) {
      if (realpath(dir, H->lua_dir)) return;
      H->lua_dir[0] = '\0';
    }
  }
}

/* ---- os.time / os.date on the host clock ---- */

static double clock_now(lua_State *L) { return dc_clock_now(dc_host_clock(dc_host_of(L))); }

static int os_time_clocked(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)floor(clock_now(L)));
  return 1;
}

static int os_date_clocked(lua_State *L) {
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) lua_pushinteger(L, (lua_Integer)floor(clock_now(L)));
  else if (lua_type(L, 2) == LUA_TNUMBER && !lua_isinteger(L, 2))
    lua_pushinteger(L, (lua_Integer)floor(lua_tonumber(L, 2))); /* timer.now() has a fraction */
  else lua_pushvalue(L, 2);
  lua_replace(L, 2);
  if (lua_isnil(L, 1)) {
    lua_pushliteral(L, "%c");
    lua_replace(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

/* os.time() and os.date() read the host clock, so a replay sees replayed time. */
static void install_clocked_os(lua_State *L) {
  lua_getglobal(L, "os");
  lua_getfield(L, -1, "time");
  lua_pushcclosure(L, os_time_clocked, 1);
  lua_setfield(L, -2, "time");
  lua_getfield(L, -1, "date");
  lua_pushcclosure(L, os_date_clocked, 1);
  lua_setfield(L, -2, "date");
  lua_pop(L, 1);
}

/* math.random seeded from the system's random source: Lua's own seed mixes the time in
 * seconds with addresses, which repeat across processes started in the same second where
 * addresses are not randomized (sanitizer builds), so two agents would draw the same numbers. */
static void seed_random(lua_State *L) {
  lua_Integer seed[2];
  if (uv_random(NULL, NULL, seed, sizeof seed, 0, NULL) != 0) return; /* keep Lua's own seed */
  lua_getglobal(L, "math");
  lua_getfield(L, -1, "randomseed");
  lua_pushinteger(L, seed[0]);
  lua_pushinteger(L, seed[1]);
  lua_call(L, 2, 0);
  lua_pop(L, 1);
}

/* Runs under pcall: opens the libraries, registers the native modules, sets package.path. */
static int open_state(lua_State *L) {
  dc_host *H = dc_host_of(L);
  luaL_openlibs(L);
  seed_random(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const dc_module *m = H->opts.modules; m && m->name; m++) {
    lua_pushcfunction(L, m->open);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);
  if (H->lua_dir[0]) {
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", H->lua_dir, H->lua_dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
  }
  install_clocked_os(L);
  /* An agent lives for weeks and makes a burst of short-lived tables each tick: Lua's default
   * (the next cycle once the heap has doubled, at a slow step) lets a tick's garbage pile up to
   * twice what is alive. A cycle once it has grown a fifth, in larger steps, keeps the peak near
   * the live heap for about a tenth more time in the collector (tests/bench/policy.sh). */
  lua_gc(L, LUA_GCINC, GC_PAUSE, GC_STEPMUL, 0);
  /* make gcstress: collect continuously, so a value C code forgot to anchor is freed at once */
  if (getenv("DCONN_GC_STRESS")) lua_gc(L, LUA_GCINC, 0, 1000, 0);
  return 0;
}

dc_host *dc_host_new(uv_loop_t *loop, const dc_host_options *opts) {
  dc_host *H = calloc(1, sizeof *H);
  if (!H) return NULL;
  H->loop = loop;
  H->opts = *opts;
  find_lua_dir(H);
  H->clock = dc_clock_new(loop, clock_busy, H);
  if (!H->clock) goto fail;
  H->idle = malloc(sizeof *H->idle);
  if (!H->idle) goto fail;
  uv_idle_init(loop, H->idle);
  H->idle->data = H;
  H->L = lua_newstate(capped_alloc, H);
  if (!H->L) goto fail;
  *(dc_host **)lua_getextraspace(H->L) = H; /* copied into every new thread */
  lua_sethook(H->L, budget_hook, LUA_MASKCOUNT, BUDGET_STEP); /* dc_pcall_policy's budget */
  lua_pushcfunction(H->L, open_state);
  if (dc_pcall(H->L, 0, 0) != LUA_OK) {
    fprintf(stderr, "dconn: cannot start Lua: %s\n", lua_tostring(H->L, -1));
    goto fail;
  }
  return H;
fail:
  if (H->L) lua_close(H->L);
  if (H->idle) uv_close((uv_handle_t *)H->idle, free_handle);
  dc_clock_free(H->clock);
  free(H);
  return NULL;
}

void dc_host_free(dc_host *H) {
  if (!H) return;
  dc_host_kill_all(H, "host shutting down");
  for (const dc_module *m = H->opts.modules; m && m->name; m++)
    if (m->close) m->close(H);
  lua_close(H->L);
  uv_close((uv_handle_t *)H->idle, free_handle);
  dc_clock_free(H->clock);
  free(H);
}

/* ---- child tasks (dconn.task) ---- */

/* Links a task just spawned by dc_task_spawn_child into its parent's family. */
static void task_adopt(dc_task *t) {
  dc_task *p = t->parent;
  t->sib_next = p->children;
  if (p->children) p->children->sib_prev = t;
  p->children = t;
  for (dc_task *a = p; a; a = a->parent) a->descendants++;
}

/* Takes t, with the tasks below it, out of its parent's family. */
static void task_leave_parent(dc_task *t) {
  dc_task *p = t->parent;
  if (!p) return;
  for (dc_task *a = p; a; a = a->parent) a->descendants -= t->descendants + 1;
  if (t->sib_prev) t->sib_prev->sib_next = t->sib_next;
  else p->children = t->sib_next;
  if (t->sib_next) t->sib_next->sib_prev = t->sib_prev;
  t->sib_prev = t->sib_next = NULL;
  t->parent = NULL;
}

/* When t ends, before its done callback: its unfinished children are killed (each one's own
 * children first), then t leaves its parent. A child cannot be running below an ending parent
 * except when code of that child killed an ancestor: it cannot be ended from here, so it is
 * detached with the budget its tree had left, and it may not wait again (dc_wait_check). */
static void task_end_family(dc_task *t) {
  while (t->children) {
    dc_task *c = t->children;
    if (c->running) {
      dc_task *root = c;
      while (root->parent) root = root->parent;
      c->used = root->used;
      c->run_time = root->run_time;
      c->max_run_time = root->max_run_time;
      c->limited = root->limited;
      task_leave_parent(c);
      c->orphaned = true;
    } else {
      dc_task_kill(c, "cancelled: the task that spawned it ended");
    }
  }
  task_leave_parent(t);
}

dc_task *dc_task_spawn_child(dc_task *parent, lua_State *L, int nargs, const char *name, dc_task_done_fn done, void *ud,
                             const char **why) {
  dc_host *H = parent->H;
  dc_task *root = parent;
  int depth = 1;
  for (; root->parent; root = root->parent) depth++;
  *why = NULL;
  if (root->descendants >= DC_TASK_MAX_CHILDREN || H->task_count >= MAX_TASKS) *why = "too many tasks";
  else if (depth > DC_TASK_MAX_DEPTH) *why = "tasks nested too deeply";
  if (*why) {
    lua_pop(L, nargs + 1);
    return NULL;
  }
  H->spawn_parent = parent; /* taken by dc_task_spawn before anything can raise */
  dc_task *t = dc_task_spawn(L, nargs, name, root->budget > 0 ? root->budget : -1, done, ud);
  H->spawn_parent = NULL;
  if (!t) *why = "out of memory";
  return t;
}

bool dc_task_is_running(dc_task *t) { return t->running; }
bool dc_task_was_killed(dc_task *t) { return t->killed; }
