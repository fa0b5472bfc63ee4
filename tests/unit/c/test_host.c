/* test_host.c - unit tests for runtime/host.c alone (cmocka): tasks, the waiting protocol,
 * kills, budgets, the memory cap, module records and a clean loop at the end. Links host.c and
 * clock.c only: the natives that wait are fakes defined here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "clock.h"
#include "host.h"
#include "luaopts.h"

/* ------------------------------------------------------------------------------------------ */
/* The fixture: a loop, a host with one test module, and what the callbacks saw               */
/* ------------------------------------------------------------------------------------------ */

/* One operation of the fake natives. */
typedef struct fake_op {
  dc_task *task;
  bool cancelled;
  uv_timer_t timer; /* test.wait_timer only */
  int value;        /* what the delivery pushes */
} fake_op;

typedef struct fixture {
  uv_loop_t loop;
  dc_host *H;
  /* the task's end */
  int done_calls, status;
  char err[2048];
  char results[256]; /* the task's results, tostring'ed and joined with "," */
  /* the fake natives */
  fake_op *pending;  /* the last test.wait() operation */
  int cancels;       /* cancel functions called */
  int module_closes; /* the test module's close called */
} fixture;

static fixture *F; /* the fixture of the test running: the natives reach it through this */

static void on_done(dc_task *t, int status, const char *err, void *ud) {
  fixture *f = ud;
  f->done_calls++;
  f->status = status;
  snprintf(f->err, sizeof f->err, "%s", err ? err : "");
  f->results[0] = '\0';
  if (status != LUA_OK) return;
  lua_State *co = dc_task_thread(t);
  for (int i = 1; i <= lua_gettop(co); i++) {
    size_t used = strlen(f->results);
    const char *text = lua_type(co, i) == LUA_TNIL       ? "nil"
                       : lua_type(co, i) == LUA_TBOOLEAN ? (lua_toboolean(co, i) ? "true" : "false")
                                                         : lua_tostring(co, i);
    snprintf(f->results + used, sizeof f->results - used, "%s%s", i > 1 ? "," : "", text ? text : "?");
  }
}

/* Runs `code` as a task named "test"; returns it (NULL if it already ended). */
static dc_task *spawn(fixture *f, const char *code, long long budget) {
  lua_State *L = dc_host_state(f->H);
  if (luaL_loadstring(L, code) != LUA_OK) fail_msg("cannot load: %s", lua_tostring(L, -1));
  int before = f->done_calls;
  dc_task *t = dc_task_spawn(L, 0, "test", budget, on_done, f);
  assert_non_null(t);
  return f->done_calls > before ? NULL : t;
}

static void run_loop(fixture *f) { uv_run(&f->loop, UV_RUN_DEFAULT); }

/* ---- the fake natives: module "test" ---- */

static int push_value(lua_State *L, void *ud) {
  const fake_op *op = ud;
  lua_pushliteral(L, "done");
  lua_pushinteger(L, op->value);
  return 2;
}

static int push_raises(lua_State *L, void *ud) {
  (void)ud;
  return luaL_error(L, "the push failed");
}

/* More than the heap cap of the memory tests allows. */
static int push_huge(lua_State *L, void *ud) {
  (void)ud;
  lua_newuserdatauv(L, (size_t)32 << 20, 0);
  return 1;
}

static void fake_cancel(void *ud) {
  fake_op *op = ud;
  op->cancelled = true;
  F->cancels++;
}

static fake_op *new_op(lua_State *L, dc_task *t) {
  fake_op *op = calloc(1, sizeof *op);
  if (!op) luaL_error(L, "test: out of memory");
  op->task = t;
  op->value = 42;
  return op;
}

/* test.wait(): waits until the test delivers (F->pending) or kills it. */
static int test_wait(lua_State *L) {
  dc_task *t = dc_wait_check(L, "test.wait");
  fake_op *op = new_op(L, t);
  F->pending = op;
  return dc_wait(L, t, DC_WAIT_IO, fake_cancel, op);
}

static void free_timer_op(uv_handle_t *h) { free(h->data); }

static void on_fake_timer(uv_timer_t *timer) {
  fake_op *op = timer->data;
  dc_task_deliver(op->task, push_value, op);
  uv_close((uv_handle_t *)&op->timer, free_timer_op);
}

static void cancel_timer(void *ud) {
  fake_op *op = ud;
  F->cancels++;
  uv_close((uv_handle_t *)&op->timer, free_timer_op);
}

/* test.wait_timer(ms) -> "done", 42 from a libuv timer */
static int test_wait_timer(lua_State *L) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  dc_task *t = dc_wait_check(L, "test.wait_timer");
  fake_op *op = new_op(L, t);
  uv_timer_init(dc_host_loop(dc_host_of(L)), &op->timer);
  op->timer.data = op;
  uv_timer_start(&op->timer, on_fake_timer, (uint64_t)ms, 0);
  return dc_wait(L, t, DC_WAIT_IO, cancel_timer, op);
}

/* test.early(how): the operation completes before dc_wait. how: "value", "raise", "huge". */
static int test_early(lua_State *L) {
  static const char *const hows[] = {"value", "raise", "huge", NULL};
  int how = luaL_checkoption(L, 1, "value", hows);
  dc_task *t = dc_wait_check(L, "test.early");
  fake_op op = {.task = t, .value = 7};
  dc_deliver_fn push = how == 0 ? push_value : how == 1 ? push_raises : push_huge;
  dc_task_deliver(t, push, &op);
  return dc_wait(L, t, DC_WAIT_IO, fake_cancel, &op); /* returns at once: nothing to cancel */
}

/* test.opts{s=, b=, i=, n=, f=} -> s, b, i, n, type(f): the option readers of luaopts.h */
static int test_opts(lua_State *L) {
  static const char *const keys[] = {"s", "b", "i", "n", "f", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  dc_opts_check(L, 1, "opts", keys);
  const char *str = "none";
  bool b = false;
  lua_Integer i = -1;
  lua_Number n = -1;
  dc_opt_string(L, 1, "opts", "s", &str, NULL);
  dc_opt_boolean(L, 1, "opts", "b", &b);
  dc_opt_integer(L, 1, "opts", "i", 1, 10, &i);
  dc_opt_number(L, 1, "opts", "n", 0, HUGE_VAL, &n);
  bool f = dc_opt_push(L, 1, "opts", "f", LUA_TFUNCTION);
  lua_pushstring(L, str);
  lua_pushboolean(L, b);
  lua_pushinteger(L, i);
  lua_pushnumber(L, n);
  lua_pushstring(L, f ? "function" : "none");
  return 5;
}

static const luaL_Reg test_functions[] = {
    {"opts", test_opts}, {"wait", test_wait}, {"wait_timer", test_wait_timer}, {"early", test_early}, {NULL, NULL},
};

static int luaopen_test(lua_State *L) {
  luaL_newlib(L, test_functions);
  return 1;
}

static void close_test(dc_host *H) {
  (void)H;
  F->module_closes++;
}

static const dc_module test_modules[] = {
    {"test", luaopen_test, close_test},
    {"test.noclose", luaopen_test, NULL},
    {NULL, NULL, NULL},
};

/* ---- set-up and tear-down ---- */

static int start(void **state, size_t memory_limit, long long max_instructions) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  F = f;
  uv_loop_init(&f->loop);
  dc_host_options opts = {.memory_limit = memory_limit, .max_instructions = max_instructions, .modules = test_modules};
  f->H = dc_host_new(&f->loop, &opts);
  if (!f->H) return -1;
  /* the fake natives as a global, the way policies reach modules */
  lua_State *L = dc_host_state(f->H);
  luaL_requiref(L, "test", luaopen_test, 1);
  lua_pop(L, 1);
  *state = f;
  return 0;
}

static int setup(void **state) { return start(state, DC_DEFAULT_MEMORY_LIMIT, DC_DEFAULT_MAX_INSTRUCTIONS); }
static int setup_small(void **state) { return start(state, (size_t)8 << 20, 1000000); }

/* Frees the host and requires the loop to close with no handle left behind. */
static int teardown(void **state) {
  fixture *f = *state;
  int closes_before = f->module_closes;
  dc_host_free(f->H);
  assert_int_equal(f->module_closes, closes_before + 1);
  run_loop(f); /* the close callbacks */
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  F = NULL;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Tests                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void task_that_returns(void **state) {
  fixture *f = *state;
  assert_null(spawn(f, "return 1, 'two', nil", 0)); /* ended before dc_task_spawn returned */
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "1,two,nil");
  assert_int_equal(dc_host_task_count(f->H), 0);
  assert_int_equal(lua_gettop(dc_host_state(f->H)), 0);
}

static void task_that_fails(void **state) {
  fixture *f = *state;
  spawn(f, "error('boom')", 0);
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_ERRRUN);
  assert_non_null(strstr(f->err, "boom"));
  assert_non_null(strstr(f->err, "stack traceback"));
  assert_int_equal(lua_gettop(dc_host_state(f->H)), 0);
}

static void modules_are_preloaded(void **state) {
  fixture *f = *state;
  spawn(f, "return type(require('test.noclose').wait), package.preload.test ~= nil", 0);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "function,true");
}

static void wait_then_deliver_directly(void **state) {
  fixture *f = *state;
  dc_task *t = spawn(f, "local s, n = test.wait(); return s, n + 1", 0);
  assert_non_null(t);
  assert_int_equal(f->done_calls, 0);
  assert_int_equal(dc_host_io_pending(f->H), 1);
  assert_int_equal(dc_host_task_count(f->H), 1);
  fake_op *op = f->pending;
  dc_task_deliver(op->task, push_value, op);
  free(op);
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "done,43");
  assert_int_equal(f->cancels, 0);
  assert_int_equal(dc_host_io_pending(f->H), 0);
  assert_int_equal(dc_host_task_count(f->H), 0);
}

static void wait_then_deliver_from_the_loop(void **state) {
  fixture *f = *state;
  spawn(f,
        "local a = {test.wait_timer(5)}; local b = {test.wait_timer(1)}\n"
        "return a[1], a[2], b[1], b[2]",
        0);
  assert_int_equal(f->done_calls, 0);
  run_loop(f);
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "done,42,done,42");
  assert_int_equal(dc_host_io_pending(f->H), 0);
}

static void no_results(void **state) {
  fixture *f = *state;
  spawn(f, "return select('#', test.wait())", 0);
  fake_op *op = f->pending;
  dc_task_deliver(op->task, NULL, NULL);
  free(op);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "0");
}

static void failed_delivery_raises_in_the_task(void **state) {
  fixture *f = *state;
  spawn(f, "local ok, err = pcall(test.wait); return ok, err", 0);
  fake_op *op = f->pending;
  dc_task_deliver(op->task, push_raises, op);
  free(op);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "false,the push failed");
  /* uncaught, it ends the task with that error */
  spawn(f, "test.wait()", 0);
  op = f->pending;
  dc_task_deliver(op->task, push_raises, op);
  free(op);
  assert_int_equal(f->status, LUA_ERRRUN);
  assert_non_null(strstr(f->err, "the push failed"));
}

static void early_completion(void **state) {
  fixture *f = *state;
  spawn(f, "local s, n = test.early('value'); return s, n", 0);
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "done,7");
  assert_int_equal(f->cancels, 0);
  assert_int_equal(dc_host_io_pending(f->H), 0);
  /* and the next wait of the same task waits as usual */
  spawn(f, "test.early('value'); return test.wait()", 0);
  assert_int_equal(f->done_calls, 1);
  fake_op *op = f->pending;
  dc_task_deliver(op->task, push_value, op);
  free(op);
  assert_int_equal(f->done_calls, 2);
  assert_string_equal(f->results, "done,42");
}

static void early_completion_that_fails(void **state) {
  fixture *f = *state;
  spawn(f, "return pcall(test.early, 'raise')", 0);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "false,the push failed");
}

static void kill_cancels_and_reports(void **state) {
  fixture *f = *state;
  dc_task *t = spawn(f, "test.wait(); return 'not reached'", 0);
  fake_op *op = f->pending;
  dc_task_kill(t, "killed by the test");
  assert_int_equal(f->cancels, 1);
  assert_true(op->cancelled);
  free(op);
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_ERRRUN);
  assert_string_equal(f->err, "killed by the test");
  assert_int_equal(dc_host_io_pending(f->H), 0);
  assert_int_equal(dc_host_task_count(f->H), 0);
}

static void kill_all_at_free(void **state) {
  fixture *f = *state;
  spawn(f, "test.wait_timer(60000)", 0);
  spawn(f, "test.wait_timer(60000)", 0);
  assert_int_equal(dc_host_task_count(f->H), 2);
  dc_host_kill_all(f->H, "shutting down");
  assert_int_equal(f->cancels, 2);
  assert_int_equal(f->done_calls, 2);
  assert_string_equal(f->err, "shutting down");
  assert_int_equal(dc_host_task_count(f->H), 0);
}

static void budget_stops_a_loop(void **state) {
  fixture *f = *state;
  spawn(f, "while true do end", 0);
  run_loop(f); /* on a busy machine the run may be preempted (a time slice) before its budget ends */
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_ERRRUN);
  assert_non_null(strstr(f->err, "instruction budget exceeded"));
}

static void budget_cannot_be_swallowed(void **state) {
  fixture *f = *state;
  spawn(f,
        "for _ = 1, 100 do pcall(function() while true do end end) end\n"
        "local ok = pcall(error, 'x'); return 'swallowed'",
        0);
  run_loop(f); /* a run longer than a time slice is preempted and resumed by the loop */
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_ERRRUN);
  assert_non_null(strstr(f->err, "instruction budget exceeded"));
  /* the budget is per task: the next one starts afresh; -1 is unlimited */
  spawn(f, "local n = 0; for i = 1, 2000000 do n = n + i end; return n", -1);
  run_loop(f);
  assert_int_equal(f->status, LUA_OK);
  spawn(f, "return 'fresh'", 0);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "fresh");
}

static void memory_limit(void **state) {
  fixture *f = *state;
  spawn(f, "local t = {}; for i = 1, 1e9 do t[i] = ('x'):rep(100) .. i end", -1);
  run_loop(f);
  assert_int_equal(f->done_calls, 1);
  assert_int_equal(f->status, LUA_ERRMEM);
  assert_non_null(strstr(f->err, "out of memory: the Lua heap reached its cap of 8 MiB"));
  /* the memory came back: the host goes on */
  spawn(f, "return #('y'):rep(1000)", 0);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "1000");
  /* results that do not fit are an error where the task waited, not a panic */
  spawn(f, "return pcall(test.early, 'huge')", 0);
  assert_int_equal(f->status, LUA_OK);
  assert_string_equal(f->results, "false,not enough memory");
}

static void on_tick(uv_timer_t *t) { (*(int *)t->data)++; }

/* A task that spins yields to the loop after its time slice: a timer due meanwhile fires while
 * the task is still unfinished; the run-time budget then stops it. */
static void preemption(void **state) {
  fixture *f = *state;
  dc_host_options o = *dc_host_options_of(f->H);
  o.max_run_time = 0.3;
  dc_host_set_options(f->H, &o);
  uv_timer_t timer;
  int ticks = 0;
  uv_timer_init(&f->loop, &timer);
  timer.data = &ticks;
  uv_timer_start(&timer, on_tick, 0, 50);
  assert_non_null(spawn(f, "while true do end", 0));
  assert_int_equal(f->done_calls, 0);
  while (f->done_calls == 0) uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(ticks >= 3);
  assert_non_null(strstr(f->err, "run time budget exceeded"));
  uv_close((uv_handle_t *)&timer, NULL);
  run_loop(f);
}

static void os_time_reads_the_host_clock(void **state) {
  fixture *f = *state;
  dc_clock_simulate(dc_host_clock(f->H), 1000000.5);
  spawn(f, "return os.time(), os.date('!%Y-%m-%d %H:%M:%S'), os.time{year=2000, month=1, day=1, hour=0}", 0);
  assert_int_equal(f->status, LUA_OK);
  assert_int_equal(strncmp(f->results, "1000000,1970-01-12 13:46:40,", 28), 0);
}

static void option_tables(void **state) {
  fixture *f = *state;
  static const struct {
    const char *code, *results;
  } cases[] = {
      {"return test.opts{}", "none,false,-1,-1.0,none"},
      {"return test.opts{s = 'x', b = true, i = 3.0, n = 2.5, f = print}", "x,true,3,2.5,function"},
      {"return pcall(test.opts, {s = 'x', z = 1})", "false,opts: unknown field 'z' (known: s, b, i, n, f)"},
      {"return pcall(test.opts, {[1] = 1})", "false,opts: unknown field '1' (known: s, b, i, n, f)"},
      {"return pcall(test.opts, {s = 5})", "false,opts: 's' must be a string, got number"},
      {"return pcall(test.opts, {b = 1})", "false,opts: 'b' must be true or false, got number"},
      {"return pcall(test.opts, {i = 11})", "false,opts: 'i' must be an integer from 1 to 10, got 11"},
      {"return pcall(test.opts, {i = 1.5})", "false,opts: 'i' must be an integer from 1 to 10, got 1.5"},
      {"return pcall(test.opts, {i = '3'})", "false,opts: 'i' must be an integer from 1 to 10, got string"},
      {"return pcall(test.opts, {n = -1})", "false,opts: 'n' must be a number >= 0, got -1"},
      {"return pcall(test.opts, {n = 1/0})", "false,opts: 'n' must be a number >= 0, got inf"},
      {"return pcall(test.opts, {b = 'yes'})", "false,opts: 'b' must be true or false, got string"},
      {"return pcall(test.opts, {f = {}})", "false,opts: 'f' must be a function, got table"},
      /* raw: an __index does not supply options */
      {"return test.opts(setmetatable({}, {__index = {s = 'meta'}}))", "none,false,-1,-1.0,none"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    spawn(f, cases[i].code, 0);
    assert_int_equal(f->status, LUA_OK);
    assert_string_equal(f->results, cases[i].results);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(task_that_returns, setup, teardown),
      cmocka_unit_test_setup_teardown(task_that_fails, setup, teardown),
      cmocka_unit_test_setup_teardown(modules_are_preloaded, setup, teardown),
      cmocka_unit_test_setup_teardown(wait_then_deliver_directly, setup, teardown),
      cmocka_unit_test_setup_teardown(wait_then_deliver_from_the_loop, setup, teardown),
      cmocka_unit_test_setup_teardown(no_results, setup, teardown),
      cmocka_unit_test_setup_teardown(failed_delivery_raises_in_the_task, setup, teardown),
      cmocka_unit_test_setup_teardown(early_completion, setup, teardown),
      cmocka_unit_test_setup_teardown(early_completion_that_fails, setup, teardown),
      cmocka_unit_test_setup_teardown(kill_cancels_and_reports, setup, teardown),
      cmocka_unit_test_setup_teardown(kill_all_at_free, setup, teardown),
      cmocka_unit_test_setup_teardown(budget_stops_a_loop, setup_small, teardown),
      cmocka_unit_test_setup_teardown(budget_cannot_be_swallowed, setup_small, teardown),
      cmocka_unit_test_setup_teardown(memory_limit, setup_small, teardown),
      cmocka_unit_test_setup_teardown(preemption, setup, teardown),
      cmocka_unit_test_setup_teardown(os_time_reads_the_host_clock, setup, teardown),
      cmocka_unit_test_setup_teardown(option_tables, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
