/*
 * The REPL. Input is read through the loop so jobs keep ticking while the user types; each
 * complete chunk runs as a task, so waiting calls work at the prompt. Compiling, printing and
 * completion are in lua/dconn/agent/repl.lua; this file does the terminal and the plumbing.
 */
#include "repl.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <lauxlib.h>

#include "agent.h"
#include "log.h"
#include "version.h"

#define PROMPT "> "
#define PROMPT2 ">> "
#define HISTORY_FILE ".dconn_history"
#define HISTORY_SIZE 1000
#define READ_CHUNK 4096

typedef struct repl {
  dc_host *H;
  lua_State *L;
  int module_ref; /* require "dconn.agent.repl" */
  bool tty, pipe_input, busy, eof, quit, started;
  uv_poll_t poll;
  uv_idle_t pump;
  uv_async_t interrupt;
  char *input; /* pipe/file bytes not yet consumed */
  size_t input_len;
  char *chunk; /* lines of an incomplete chunk */
  size_t chunk_len;
  dc_task *running;
  volatile sig_atomic_t hooked; /* Ctrl-C landed in running Lua code: the hook handles it */
  int completion_ref;
  char history_path[PATH_MAX];
} repl;

static repl *the_repl; /* for libedit's and the signal handler's callbacks */

/* ---- calling lua/dconn/agent/repl.lua ---- */

/* Pushes module[fn]. */
static void push_helper(repl *R, const char *fn) {
  lua_rawgeti(R->L, LUA_REGISTRYINDEX, R->module_ref);
  lua_getfield(R->L, -1, fn);
  lua_remove(R->L, -2);
}

static void start_input(repl *R);
static void pause_input(repl *R);
static void catch_sigint(void);

static void on_chunk_done(dc_task *t, int status, const char *err, void *ud) {
  repl *R = ud;
  lua_State *L = R->L;
  R->running = NULL;
  R->busy = false;
  if (status != LUA_OK) {
    fprintf(stderr, "%s\n", err);
  } else {
    lua_State *co = dc_task_thread(t);
    int n = lua_gettop(co);
    push_helper(R, "format");
    lua_xmove(co, L, n);
    if (dc_pcall(L, n, 1) != LUA_OK) fprintf(stderr, "%s\n", lua_tostring(L, -1));
    else if (lua_isstring(L, -1)) printf("%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  fflush(stdout);
  if (R->started) start_input(R);
}

static void append_chunk(repl *R, const char *line) {
  size_t n = strlen(line);
  char *grown = realloc(R->chunk, R->chunk_len + n + 2);
  if (!grown) return;
  R->chunk = grown;
  if (R->chunk_len) R->chunk[R->chunk_len++] = '\n';
  memcpy(R->chunk + R->chunk_len, line, n + 1);
  R->chunk_len += n;
}

static void reset_chunk(repl *R) {
  free(R->chunk);
  R->chunk = NULL;
  R->chunk_len = 0;
}

/* One line of input: compile what we have; run it, wait for more, or report the error. */
static void handle_line(repl *R, const char *line) {
  lua_State *L = R->L;
  append_chunk(R, line);
  push_helper(R, "compile");
  lua_pushstring(L, R->chunk ? R->chunk : "");
  if (dc_pcall(L, 1, 2) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    reset_chunk(R);
    return;
  }
  if (lua_isfunction(L, -2)) {
    lua_pop(L, 1); /* stack: fn */
    reset_chunk(R);
    R->busy = true;
    pause_input(R);
    dc_task *t = dc_task_spawn(L, 0, "repl", 0, on_chunk_done, R);
    if (!t) {
      fprintf(stderr, "cannot run the chunk: out of memory or too many tasks\n");
      R->busy = false;
      start_input(R);
    } else if (R->busy) {
      R->running = t; /* still waiting: remember it for Ctrl-C */
    }
    return;
  }
  const char *why = lua_tostring(L, -1);
  if (why && strcmp(why, "incomplete") != 0) {
    fprintf(stderr, "%s\n", why);
    reset_chunk(R);
  }
  lua_pop(L, 2);
}

/* ---- terminal input (libedit in callback mode) ---- */

static void on_tty_line(char *line) {
  repl *R = the_repl;
  if (!line) {
    R->quit = true;
    printf("\n");
    rl_callback_handler_remove();
    pause_input(R);
    return;
  }
  if (*line) add_history(line);
  handle_line(R, line);
  free(line);
  /* the next prompt: ">> " inside an unfinished chunk; a running chunk shows it when done */
  if (!R->busy && !R->quit) {
    rl_callback_handler_install(R->chunk_len ? PROMPT2 : PROMPT, on_tty_line);
    catch_sigint();
  }
}

static char *complete_next(const char *text, int state) {
  repl *R = the_repl;
  lua_State *L = R->L;
  if (state == 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, R->completion_ref);
    push_helper(R, "complete");
    lua_pushstring(L, text);
    if (dc_pcall(L, 1, 1) != LUA_OK || !lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_newtable(L);
    }
    R->completion_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, R->completion_ref);
  lua_rawgeti(L, -1, state + 1);
  char *match = lua_isstring(L, -1) ? strdup(lua_tostring(L, -1)) : NULL;
  lua_pop(L, 2);
  return match;
}

static char **complete(const char *text, int start, int end) {
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1; /* no file-name completion */
  return rl_completion_matches(text, complete_next);
}

/* ---- pipe and file input ---- */

static bool next_line(repl *R, char **line) {
  char *nl = R->input_len ? memchr(R->input, '\n', R->input_len) : NULL;
  if (!nl && !(R->eof && R->input_len)) return false;
  size_t n = nl ? (size_t)(nl - R->input) : R->input_len;
  *line = strndup(R->input, n);
  size_t used = nl ? n + 1 : n;
  memmove(R->input, R->input + used, R->input_len - used);
  R->input_len -= used;
  return *line != NULL;
}

static void read_some(repl *R) {
  char *grown = realloc(R->input, R->input_len + READ_CHUNK);
  if (!grown) {
    R->eof = true;
    return;
  }
  R->input = grown;
  ssize_t n = read(STDIN_FILENO, R->input + R->input_len, READ_CHUNK);
  if (n > 0) R->input_len += (size_t)n;
  else if (n == 0 || (errno != EAGAIN && errno != EINTR)) R->eof = true;
}

/* Feeds buffered lines while no chunk is running. */
static void pump(repl *R) {
  while (!R->busy && !R->quit) {
    char *line;
    if (next_line(R, &line)) {
      handle_line(R, line);
      free(line);
      continue;
    }
    if (R->eof) {
      if (R->chunk_len) fprintf(stderr, "stdin: unexpected end of input in an unfinished chunk\n");
      R->quit = true;
      pause_input(R);
      return;
    }
    if (R->pipe_input) return; /* the poll callback brings more */
    read_some(R);
  }
}

static void on_pump(uv_idle_t *idle) {
  uv_idle_stop(idle);
  pump(idle->data);
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)events;
  repl *R = poll->data;
  if (R->tty) {
    rl_callback_read_char();
    return;
  }
  if (status < 0) R->eof = true;
  else read_some(R);
  pump(R);
}

static void on_sigint(int sig);

/* libedit installs and restores signal handlers of its own as lines start and end: take SIGINT
 * back each time so Ctrl-C always reaches on_sigint. */
static void catch_sigint(void) {
  struct sigaction sa = {.sa_handler = on_sigint};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

static void start_input(repl *R) {
  if (R->quit) return;
  if (R->tty) {
    rl_callback_handler_install(R->chunk_len ? PROMPT2 : PROMPT, on_tty_line);
    catch_sigint();
    uv_poll_start(&R->poll, UV_READABLE, on_readable);
  } else {
    if (R->pipe_input) uv_poll_start(&R->poll, UV_READABLE, on_readable);
    uv_idle_start(&R->pump, on_pump); /* not from here: no recursion through done callbacks */
  }
}

static void pause_input(repl *R) {
  if (R->tty && !R->quit) {
    rl_callback_handler_remove();
    catch_sigint();
  }
  if (R->tty || R->pipe_input) uv_poll_stop(&R->poll);
}

/* ---- Ctrl-C ---- */

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* Signal context: only set a hook (lua.c's approach) and wake the loop. */
static void on_sigint(int sig) {
  (void)sig;
  repl *R = the_repl;
  lua_State *co = dc_host_running_thread(R->H);
  if (co) {
    R->hooked = 1;
    lua_sethook(co, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  }
  uv_async_send(&R->interrupt);
}

static void on_interrupt(uv_async_t *async) {
  repl *R = async->data;
  if (R->hooked) {
    R->hooked = 0;
    return;
  }
  if (R->running) {
    dc_task_kill(R->running, "interrupted!"); /* a waiting chunk; a running one hit the hook */
    return;
  }
  reset_chunk(R);
  printf("\n");
  fflush(stdout);
  rl_callback_handler_remove();
  start_input(R);
}

/* ---- set-up ---- */

static void on_setup_done(dc_task *t, int status, const char *err, void *ud) {
  repl *R = ud;
  lua_State *co = dc_task_thread(t);
  if (status != LUA_OK) {
    fprintf(stderr, "dconn: %s\n", err);
  } else if (lua_gettop(co) >= 2 && lua_isnil(co, 1)) {
    fprintf(stderr, "dconn: %s\n", lua_tostring(co, 2));
  }
  R->started = true;
  start_input(R);
}

static void load_history(repl *R) {
  const char *home = getenv("HOME");
  if (!home) return;
  snprintf(R->history_path, sizeof R->history_path, "%s/%s", home, HISTORY_FILE);
  using_history();
  stifle_history(HISTORY_SIZE);
  read_history(R->history_path);
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int dc_repl_main(dc_host *H, const char *policy) {
  uv_loop_t *loop = dc_host_loop(H);
  repl R = {.H = H, .L = dc_host_state(H), .completion_ref = LUA_NOREF};
  the_repl = &R;
  lua_State *L = R.L;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "dconn.agent.repl");
  if (dc_pcall(L, 1, 1) != LUA_OK) {
    fprintf(stderr, "dconn: cannot load the REPL library: %s\n", lua_tostring(L, -1));
    dc_host_free(H);
    return DC_EXIT_FAILURE;
  }
  R.module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  R.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  uv_handle_type kind = uv_guess_handle(STDIN_FILENO);
  R.pipe_input = !R.tty && kind != UV_FILE && kind != UV_UNKNOWN_HANDLE;
  uv_idle_init(loop, &R.pump);
  R.pump.data = &R;
  uv_async_init(loop, &R.interrupt, on_interrupt);
  R.interrupt.data = &R;
  uv_unref((uv_handle_t *)&R.interrupt);
  if ((R.tty || R.pipe_input) && uv_poll_init(loop, &R.poll, STDIN_FILENO) != 0) {
    R.pipe_input = false; /* not pollable: read it like a file */
    R.tty = false;
  }
  R.poll.data = &R;
  if (R.tty) {
    load_history(&R);
    rl_attempted_completion_function = complete;
    rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#[]";
    rl_completion_append_character = '\0';
    printf("dconn %s (%s) - Ctrl-D exits, Tab completes\n", DCONN_VERSION, LUA_RELEASE);
    fflush(stdout);
  }
  lua_getglobal(L, "require");
  lua_pushliteral(L, "dconn.agent");
  if (dc_pcall(L, 1, 1) == LUA_OK) {
    lua_getfield(L, -1, "repl_setup");
    lua_remove(L, -2);
    if (policy) lua_pushstring(L, policy);
    else lua_pushnil(L);
    dc_task_spawn(L, 1, "repl-setup", 0, on_setup_done, &R);
  } else {
    fprintf(stderr, "dconn: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    R.started = true;
    start_input(&R);
  }
  while (!R.quit && uv_run(loop, UV_RUN_ONCE)) {
  }
  if (R.tty) {
    if (R.history_path[0]) write_history(R.history_path);
    signal(SIGINT, SIG_DFL);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, R.completion_ref);
  reset_chunk(&R);
  free(R.input);
  dc_host_free(H);
  uv_walk(loop, close_handle, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  the_repl = NULL;
  return DC_EXIT_OK;
}
