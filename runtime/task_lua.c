/*
 * dconn._task: tasks that a task spawns, so that one job does several things at once. The public
 * face is lua/dconn/task.lua (task.all and task.race are written there on top of this).
 *
 *   spawn(fn, ...) -> handle | nil, "too many tasks"    a child task of the running one
 *   wait(handle [, timeout]) -> true, results... | false, err | nil, "timeout"
 *   wait_any(list [, timeout]) -> index, <what wait returns> | nil, "timeout"
 *   cancel(handle [, why]) -> true | false (already ended)
 *   status(handle) -> "running" | "waiting" | "done" | "failed" | "cancelled"
 *   refuse_spawn(message | nil)   the driver, while a policy file loads in this coroutine
 *
 * A handle is a userdata anchored in the registry while its task lives; the task's body runs
 * under a protected call, so its outcome is always a table {ok, values..., n =} kept as the
 * handle's user value: what wait returns, like pcall. Waiting is the host's protocol
 * (dc_wait_check, dc_wait, dc_task_deliver): a waiter records one node per handle it waits on,
 * and the first handle to end (or the timeout) resumes it. Killing a task (task.cancel, its
 * parent's end, shutdown) cancels what it waits on, an HTTP transfer included.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "clock.h"
#include "log.h"
#include "modules.h"

#define HANDLE_MT "dconn.task"

typedef enum { ST_LIVE, ST_DONE, ST_FAILED, ST_CANCELLED } task_state;

static const char *const STATE_NAMES[] = {"live", "done", "failed", "cancelled"};

typedef struct waiter waiter;
typedef struct handle handle;

/* One handle a waiter waits on. */
typedef struct wait_node {
  waiter *w;
  handle *h;
  int index; /* the handle's place in wait_any's list; 0 for wait */
  struct wait_node *prev, *next;
} wait_node;

struct handle {
  dc_host *H;
  dc_task *task; /* NULL while spawning and once ended */
  task_state state;
  int ref; /* anchors the userdata while the task lives */
  unsigned id;
  wait_node *waiters;
};

struct waiter {
  dc_task *task;
  dc_clock *clock;
  dc_clock_timer *timer;
  bool detached;
  int count;
  wait_node nodes[];
};

/* Registry table: coroutine (light userdata) -> why spawning is refused there. */
static const char REFUSALS_KEY = 'R';

/* ---- outcomes ---- */

/* Pushes what wait returns for an ended handle at hidx, preceded by index when index > 0. */
static int push_outcome(lua_State *L, int hidx, int index) {
  hidx = lua_absindex(L, hidx);
  if (index > 0) lua_pushinteger(L, index);
  int base = index > 0 ? 1 : 0;
  if (lua_getiuservalue(L, hidx, 1) != LUA_TTABLE) { /* no memory was left to record it */
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "out of memory: the task's outcome could not be kept");
    return base + 2;
  }
  lua_getfield(L, -1, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n + 1, "too many results");
  int t = lua_gettop(L);
  for (int i = 1; i <= n; i++) lua_rawgeti(L, t, i);
  lua_remove(L, t);
  return base + n;
}

/* stack: handle or nil (a timeout), index -> the values; run under pcall on the main state. */
static int outcome_values(lua_State *L) {
  if (lua_isnil(L, 1)) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  return push_outcome(L, 1, (int)lua_tointeger(L, 2));
}

/* ---- waiters ---- */

/* Takes the waiter off every handle and stops its timer; it is freed by the caller. */
static void waiter_detach(waiter *w) {
  if (w->detached) return;
  w->detached = true;
  for (int i = 0; i < w->count; i++) {
    wait_node *n = &w->nodes[i];
    if (n->prev) n->prev->next = n->next;
    else n->h->waiters = n->next;
    if (n->next) n->next->prev = n->prev;
  }
  if (w->timer) dc_clock_cancel(w->clock, w->timer);
  w->timer = NULL;
}

/* The waiting task was killed (cancel_fn of dc_wait). */
static void waiter_cancel(void *op) {
  waiter *w = op;
  waiter_detach(w);
  free(w);
}

typedef struct wake {
  handle *h; /* NULL: the wait timed out */
  int index;
} wake;

/* dc_deliver_fn: h's outcome as the waiter's results (outcome_values), built protected. */
static int deliver_outcome(lua_State *L, void *ud) {
  const wake *k = ud;
  int base = lua_gettop(L);
  lua_pushcfunction(L, outcome_values);
  if (k->h) lua_rawgeti(L, LUA_REGISTRYINDEX, k->h->ref);
  else lua_pushnil(L);
  lua_pushinteger(L, k->index);
  lua_call(L, 2, LUA_MULTRET);
  return lua_gettop(L) - base;
}

/* Resumes the waiter with h's outcome (or a timeout when h is NULL). */
static void waiter_wake(waiter *w, handle *h, int index) {
  dc_task *task = w->task;
  waiter_detach(w);
  free(w);
  wake k = {h, index};
  dc_task_deliver(task, deliver_outcome, &k);
}

static void waiter_timeout(void *ud) {
  waiter *w = ud;
  w->timer = NULL; /* fired: already gone */
  waiter_wake(w, NULL, 0);
}

/* A waiter on `count` handles (nodes filled by the caller), with an optional timeout; NULL when
 * out of memory. */
static waiter *waiter_new(lua_State *L, dc_task *task, int count, double timeout) {
  waiter *w = calloc(1, sizeof *w + (size_t)count * sizeof(wait_node));
  if (!w) return NULL;
  w->task = task;
  w->clock = dc_host_clock(dc_host_of(L));
  w->count = count;
  if (timeout > 0) {
    w->timer = dc_clock_at(w->clock, dc_clock_now(w->clock) + timeout, waiter_timeout, w);
    if (!w->timer) {
      free(w);
      return NULL;
    }
  }
  return w;
}

static void waiter_add(waiter *w, int i, handle *h, int index) {
  wait_node *n = &w->nodes[i];
  n->w = w;
  n->h = h;
  n->index = index;
  n->prev = NULL;
  n->next = h->waiters;
  if (h->waiters) h->waiters->prev = n;
  h->waiters = n;
}

/* ---- the child's body ---- */

/* Message handler: keeps the error value as it is (wait returns it, like pcall) and the
 * traceback in its upvalue, for the debug line about a failure nobody waited for. */
static int child_msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  lua_replace(L, lua_upvalueindex(1));
  lua_settop(L, 1);
  return 1;
}

/* stack: msgh, results... or msgh, error -> the outcome table {ok, values..., n =}. */
static int child_finish(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  bool ok = status == LUA_OK || status == LUA_YIELD;
  int n = lua_gettop(L) - 1;
  lua_createtable(L, n + 1, 2);
  lua_pushboolean(L, ok);
  lua_rawseti(L, -2, 1);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, i + 1);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, n + 1);
  lua_setfield(L, -2, "n");
  if (!ok) {
    lua_getupvalue(L, 1, 1);
    lua_setfield(L, -2, "traceback");
  }
  return 1;
}

/* The task's function: fn(...) under a protected call that may yield. */
static int child_body(lua_State *L) {
  int nargs = lua_gettop(L) - 1;
  lua_pushnil(L);
  lua_pushcclosure(L, child_msgh, 1);
  lua_insert(L, 1);
  return child_finish(L, lua_pcallk(L, nargs, LUA_MULTRET, 1, 0, child_finish), 0);
}

/* stack: handle, message (light userdata) -> sets the outcome {false, message, n = 2}. */
static int set_failure(lua_State *L) {
  lua_createtable(L, 2, 1);
  lua_pushboolean(L, 0);
  lua_rawseti(L, -2, 1);
  lua_pushstring(L, lua_touserdata(L, 2));
  lua_rawseti(L, -2, 2);
  lua_pushinteger(L, 2);
  lua_setfield(L, -2, "n");
  lua_setiuservalue(L, 1, 1);
  return 0;
}

/* stack: handle -> "error\ntraceback" for the debug line. */
static int describe_failure(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  lua_rawgeti(L, -1, 2);
  luaL_tolstring(L, -1, NULL);
  if (lua_getfield(L, -3, "traceback") == LUA_TSTRING) {
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
  }
  return 1;
}

static void on_done(dc_task *t, int status, const char *err, void *ud) {
  handle *h = ud;
  dc_host *H = h->H;
  lua_State *L = dc_host_state(H);
  int top = lua_gettop(L);
  h->task = NULL;
  if (lua_checkstack(L, 4)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref);
    if (status == LUA_OK) { /* the body's outcome table is on the thread */
      lua_xmove(dc_task_thread(t), L, 1);
      lua_rawgeti(L, -1, 1);
      h->state = lua_toboolean(L, -1) ? ST_DONE : ST_FAILED;
      lua_pop(L, 1);
      lua_setiuservalue(L, -2, 1);
    } else {
      h->state = dc_task_was_killed(t) ? ST_CANCELLED : ST_FAILED;
      lua_pushcfunction(L, set_failure);
      lua_pushvalue(L, -2);
      lua_pushlightuserdata(L, (void *)(err ? err : "the task failed"));
      lua_pcall(L, 2, 0, 0); /* on failure the outcome stays nil: "out of memory" */
    }
    if (h->state == ST_FAILED && !h->waiters && dc_log_enabled(DC_LOG_DEBUG)) {
      lua_settop(L, top + 1);
      lua_pushcfunction(L, describe_failure);
      lua_pushvalue(L, -2);
      if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        dc_log(H, DC_LOG_DEBUG,
               "Task \"%s\" failed, nobody waiting for it yet (task.wait returns "
               "the error): %s",
               dc_task_name(t), lua_tostring(L, -1));
      }
    }
  } else {
    h->state = status == LUA_OK ? ST_FAILED : dc_task_was_killed(t) ? ST_CANCELLED : ST_FAILED;
  }
  lua_settop(L, top);
  /* Each wake may run the waiter, which may wait on this handle again (it has ended: no node)
   * or end other tasks, so the list is read again from its head. */
  while (h->waiters) waiter_wake(h->waiters->w, h, h->waiters->index);
  luaL_unref(L, LUA_REGISTRYINDEX, h->ref); /* h may be collected from here on */
  h->ref = LUA_NOREF;
}

/* ---- the module ---- */

static handle *check_handle(lua_State *L, int idx) { return luaL_checkudata(L, idx, HANDLE_MT); }

/* timeout argument: < 0 when absent. */
static double opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return -1;
  lua_Number t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0 && !isnan(t), idx, "expected a timeout in seconds >= 0");
  return t;
}

static int task_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  dc_host *H = dc_host_of(L);
  if (!dc_host_options_of(H)->check_only && dc_host_running_thread(H) != L)
    return luaL_error(L, "dconn.task.spawn: must be called from a task (a job's run function, a "
                         "script's body, an API handler or another spawned task), not from a "
                         "coroutine the code created itself or a callback");
  dc_task *parent = dc_wait_check(L, "dconn.task.spawn");
  int nargs = lua_gettop(L) - 1;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &REFUSALS_KEY) == LUA_TTABLE && lua_rawgetp(L, -1, L) == LUA_TSTRING)
    return luaL_error(L, "dconn.task.spawn: %s", lua_tostring(L, -1));
  lua_settop(L, nargs + 1);
  static unsigned counter;
  handle *h = lua_newuserdatauv(L, sizeof *h, 1);
  memset(h, 0, sizeof *h);
  h->H = H;
  h->state = ST_LIVE;
  h->ref = LUA_NOREF;
  h->id = ++counter;
  luaL_setmetatable(L, HANDLE_MT);
  lua_pushvalue(L, -1);
  h->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_insert(L, 1);                     /* stack: handle fn args... */
  lua_pushcfunction(L, child_body);
  lua_insert(L, 2);                     /* stack: handle body fn args... */
  char name[256];
  snprintf(name, sizeof name, "%s/task-%u", dc_task_name(parent), h->id);
  const char *why;
  dc_task *t = dc_task_spawn_child(parent, L, nargs + 1, name, on_done, h, &why);
  if (!t) { /* it never started: no done call */
    luaL_unref(L, LUA_REGISTRYINDEX, h->ref);
    h->ref = LUA_NOREF;
    h->state = ST_CANCELLED;
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  if (h->state == ST_LIVE) h->task = t; /* else it ended already and t is freed */
  return 1;
}

static int task_wait(lua_State *L) {
  handle *h = check_handle(L, 1);
  double timeout = opt_timeout(L, 2);
  if (h->state != ST_LIVE) return push_outcome(L, 1, 0);
  if (timeout == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  dc_task *self = dc_wait_check(L, "dconn.task.wait");
  if (h->task == self) return luaL_error(L, "dconn.task.wait: a task cannot wait for itself");
  waiter *w = waiter_new(L, self, 1, timeout);
  if (!w) return luaL_error(L, "dconn.task.wait: out of memory");
  waiter_add(w, 0, h, 0);
  return dc_wait(L, self, DC_WAIT_TIME, waiter_cancel, w);
}

/* wait_any(list [, timeout]) -> index, ok, values... of the first to end (the lowest index
 * among those already ended), or nil, "timeout". */
static int task_wait_any(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  double timeout = opt_timeout(L, 2);
  lua_settop(L, 1);
  int count = (int)luaL_len(L, 1);
  luaL_argcheck(L, count > 0, 1, "the list of tasks is empty");
  luaL_checkstack(L, count, "too many tasks");
  for (int i = 1; i <= count; i++) {
    lua_rawgeti(L, 1, i);
    handle *h = luaL_testudata(L, -1, HANDLE_MT);
    if (!h) return luaL_error(L, "bad argument #1 (item %d is a %s, not a task)", i, luaL_typename(L, -1));
    if (h->state != ST_LIVE) return push_outcome(L, -1, i);
  }
  if (timeout == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  dc_task *self = dc_wait_check(L, "dconn.task.race");
  for (int i = 1; i <= count; i++)
    if (((handle *)lua_touserdata(L, i + 1))->task == self)
      return luaL_error(L, "dconn.task.race: a task cannot wait for itself");
  waiter *w = waiter_new(L, self, count, timeout);
  if (!w) return luaL_error(L, "dconn.task.race: out of memory");
  for (int i = count; i >= 1; i--) waiter_add(w, i - 1, lua_touserdata(L, i + 1), i);
  return dc_wait(L, self, DC_WAIT_TIME, waiter_cancel, w);
}

static int task_cancel(lua_State *L) {
  handle *h = check_handle(L, 1);
  const char *why = luaL_optstring(L, 2, NULL);
  if (h->state != ST_LIVE || !h->task) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (dc_task_is_running(h->task))
    return luaL_error(L, "dconn.task.cancel: the task is running (a task cannot cancel itself or "
                         "a task whose code is running it); return or raise instead");
  const char *msg = why ? lua_pushfstring(L, "cancelled: %s", why) : "cancelled";
  dc_task_kill(h->task, msg);
  lua_pushboolean(L, 1);
  return 1;
}

static const char *status_of(handle *h) {
  if (h->state != ST_LIVE) return STATE_NAMES[h->state];
  return h->task && dc_task_is_running(h->task) ? "running" : "waiting";
}

static int task_status(lua_State *L) {
  lua_pushstring(L, status_of(check_handle(L, 1)));
  return 1;
}

static int task_tostring(lua_State *L) {
  handle *h = check_handle(L, 1);
  lua_pushfstring(L, "task %d (%s)", (int)h->id, status_of(h));
  return 1;
}

/* refuse_spawn(message | nil): spawning from this coroutine raises message (the driver, while
 * a policy file's top level runs: its tasks would belong to the loader, not to a job). */
static int task_refuse_spawn(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TSTRING);
  lua_settop(L, 1);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &REFUSALS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &REFUSALS_KEY);
  }
  lua_pushvalue(L, 1);
  lua_rawsetp(L, -2, L);
  return 0;
}

static const luaL_Reg handle_methods[] = {
    {"wait", task_wait},
    {"cancel", task_cancel},
    {"status", task_status},
    {NULL, NULL},
};

static const luaL_Reg task_functions[] = {
    {"spawn", task_spawn},
    {"wait", task_wait},
    {"wait_any", task_wait_any},
    {"cancel", task_cancel},
    {"status", task_status},
    {"refuse_spawn", task_refuse_spawn},
    {NULL, NULL},
};

int luaopen_dconn_task(lua_State *L) {
  if (luaL_newmetatable(L, HANDLE_MT)) {
    luaL_newlib(L, handle_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, task_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  luaL_newlib(L, task_functions);
  lua_pushinteger(L, DC_TASK_MAX_CHILDREN);
  lua_setfield(L, -2, "max_children");
  lua_pushinteger(L, DC_TASK_MAX_DEPTH);
  lua_setfield(L, -2, "max_depth");
  return 1;
}
