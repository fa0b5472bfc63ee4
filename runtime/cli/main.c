/* dconn: the command line. Parses options, builds the host, hands over to agent.c or repl.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <uv.h>

#include "agent.h"
#include "commands.h"
#include "host.h"
#include "log.h"
#include "modules.h"
#include "repl.h"
#include "timefmt.h"
#include "version.h"

static const char *const MAIN_HELP =
    "dconn " DCONN_VERSION ": QoS-driven placement agent for Kubernetes, scripted in Lua.\n"
    "\n"
    "Usage:\n"
    "  dconn [options] FILE.lua [args...]  run a Lua script with the runtime modules\n"
    "  dconn run [options] POLICY.lua      run a placement policy as a long-lived agent\n"
    "  dconn check [options] POLICY.lua    load and validate a policy without doing I/O\n"
    "  dconn repl [options] [POLICY.lua]   interactive Lua with every runtime module\n"
    "  dconn predict --spec S --weights W --input IN --output OUT   batch inference with a model\n"
    "  dconn place --deployment D --node N [-n NS]   pin a Kubernetes Deployment to a node\n"
    "  dconn runs [--tracker URI] --experiment NAME   recent MLflow runs with metrics and params\n"
    "  dconn policy                        the policy settings reference (dconn help policy)\n"
    "  dconn --version                     versions of dconn and its libraries\n"
    "  dconn help COMMAND                  help on one command (or COMMAND --help)\n"
    "\n"
    "Options for every command:\n"
    "  --log-format text|json   text is the original agent's format (default); json: one object a line\n"
    "  --log-level LEVEL        debug, info (default), warning, error, critical\n"
    "  --timezone utc|local     for log times, cron and dates (default utc)\n"
    "  --memory-limit SIZE      cap on the Lua heap, e.g. 512M, 2G (default 1G; 0 = none)\n"
    "  --max-instructions N     per job run, stops runaway loops (default 1000000000; 0 = none)\n"
    "  --unsafe                 give policies the full standard library (os.execute, io.popen, ...)\n"
    "\n"
    "Exit status: 0 ok, 1 runtime failure, 2 usage or configuration error.\n";

#define DEFAULT_LISTEN "127.0.0.1:8080"

static const char *const RUN_HELP =
    "Usage: dconn run [options] POLICY.lua\n"
    "\n"
    "Runs a placement policy as an agent: loads the file (a Lua file returning a table: see\n"
    "`dconn help policy`), schedules its jobs and keeps running until SIGINT or SIGTERM. Running\n"
    "jobs then get a grace period to finish. The policy is reloaded when its file changes on\n"
    "disk and on SIGHUP; if the new file fails to load, the old one keeps running and the error\n"
    "is logged. A failing job is logged with its traceback and runs again next tick.\n"
    "\n"
    "Options:\n"
    "  --once                   run every job one time, in order, and exit (1 if any failed)\n"
    "  --every DURATION         run the policy's pipeline and recommender this often instead of\n"
    "                           on their schedule, e.g. 5s for a demo\n"
    "  --no-watch               reload only on SIGHUP, not when the file changes\n"
    "  --grace DURATION         time running jobs get to finish when stopping (default 10s)\n"
    "  --stop-after DURATION    stop gracefully after this long, e.g. 30s, 5m\n"
    "  --listen HOST:PORT       serve the agent's HTTP API (health, readiness, metrics, jobs,\n"
    "                           decisions, /openapi.json) there; default " DEFAULT_LISTEN ";\n"
    "                           port 0 takes any free port (logged); `off` disables the API\n"
    "  --api-token-file FILE    the API then requires `Authorization: Bearer TOKEN`, TOKEN being\n"
    "                           the file's first line (/healthz and /readyz stay open)\n"
    "  plus the options of every command (dconn --help)\n";

static const char *const CHECK_HELP =
    "Usage: dconn check [options] POLICY.lua\n"
    "\n"
    "Loads the policy in its restricted environment with the scheduler held, validates its\n"
    "settings (unknown keys, types, values), model, rule and jobs (triggers, cron strings,\n"
    "dates) and exits: 0 and a summary when it is valid, 2 and one message naming the file,\n"
    "line and problem when it is not. Nothing waits and no I/O is done: natives that would\n"
    "wait fail.\n"
    "\n"
    "Options:\n"
    "  --every DURATION         check with the schedule override `dconn run --every` would use\n";

static const char *const REPL_HELP =
    "Usage: dconn repl [options] [POLICY.lua]\n"
    "\n"
    "Interactive Lua with every runtime module loaded (global `dconn`: dconn.timer, dconn.log,\n"
    "dconn.json, ...). Expressions print their value, tables are pretty-printed, incomplete\n"
    "chunks continue on the next line, Tab completes globals and fields, history is kept in\n"
    "~/.dconn_history. Waiting calls such as dconn.timer.sleep(1) work at the prompt and jobs\n"
    "keep ticking while you type. With a policy, it is loaded as `policy` and its jobs are\n"
    "registered but held: start them with dconn.timer.hold(false) or run one with\n"
    "dconn.timer.run_now(name). A placement policy is also `agent`: agent:run(\"pipeline\"),\n"
    "agent.last.predictions, agent:place(1, NODE, {dry_run = true}), agent.rule = function ...\n"
    "Ctrl-C interrupts a running chunk; Ctrl-D exits. Reads from a pipe as well as from a\n"
    "terminal.\n"
    "\n"
    "Options:\n"
    "  --every DURATION         the placement jobs' interval, as for dconn run\n";

static const char *const SCRIPT_HELP =
    "Usage: dconn [options] FILE.lua [args...]\n"
    "\n"
    "Runs a Lua script like `lua` would (full standard library, `arg` and `...` set), inside a\n"
    "task so waiting calls work at top level. The process lives while the loop has work: timers,\n"
    "jobs, requests. `-` reads the script from standard input.\n";

typedef struct cli {
  const char *command; /* "script", "run", "check", "repl" */
  const char *file;
  int script_argc;
  char **script_argv;
  dc_host_options host;
  dc_agent_options agent;
  bool once;
  const char *listen;         /* run: the API's HOST:PORT or "off" */
  const char *api_token_file; /* run: bearer token for the API */
  const char *every;          /* run, check, repl: the policy's jobs' interval override */
  bool no_watch;              /* run: no reload when the policy file changes */
} cli;

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "dconn: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see dconn --help)\n");
  return DC_EXIT_USAGE;
}

static void print_version(void) {
  const curl_version_info_data *curl = curl_version_info(CURLVERSION_NOW);
  lua_State *L = luaL_newstate();
  const char *cjson = "unknown";
  if (L) {
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_getfield(L, -1, "_VERSION");
    if (lua_isstring(L, -1)) cjson = lua_tostring(L, -1);
  }
  printf("dconn %s\n", DCONN_VERSION);
  printf("%s\n", LUA_RELEASE);
  printf("libuv %s\n", uv_version_string());
  printf("libcurl %s\n", curl->version);
  printf("lua-cjson %s\n", cjson);
  if (L) lua_close(L);
}

static const char *help_for(const char *command) {
  if (!command) return MAIN_HELP;
  if (strcmp(command, "run") == 0) return RUN_HELP;
  if (strcmp(command, "check") == 0) return CHECK_HELP;
  if (strcmp(command, "repl") == 0) return REPL_HELP;
  if (strcmp(command, "script") == 0) return SCRIPT_HELP;
  const dc_command *lua_command = dc_command_find(command);
  return lua_command ? lua_command->help : NULL;
}

/* "512M" -> bytes */
static int parse_size(const char *text, size_t *out) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || end == text || v < 0) return -1;
  double scale = 1;
  if (*end == 'K' || *end == 'k') scale = 1024.0, end++;
  else if (*end == 'M' || *end == 'm') scale = 1024.0 * 1024, end++;
  else if (*end == 'G' || *end == 'g') scale = 1024.0 * 1024 * 1024, end++;
  if (*end == 'B' || *end == 'b') end++;
  if (*end || v * scale > 1e15) return -1;
  *out = (size_t)(v * scale);
  return 0;
}

/* "HOST:PORT" (IPv6 in brackets) with PORT 0..65535, or "off". */
static bool valid_listen(const char *v) {
  if (strcmp(v, "off") == 0) return true;
  const char *colon = strrchr(v, ':');
  if (!colon || colon == v || strlen(colon + 1) < 1 || strlen(colon + 1) > 5) return false;
  if (strchr(v, ':') != colon && (v[0] != '[' || colon[-1] != ']')) return false;
  for (const char *p = colon + 1; *p; p++)
    if (*p < '0' || *p > '9') return false;
  return atoi(colon + 1) <= 65535;
}

/* Option value: "--opt=value" or "--opt value". */
static const char *option_value(const char *name, int argc, char **argv, int *i, bool *missing) {
  const char *arg = argv[*i];
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0) return NULL;
  if (arg[n] == '=') return arg + n + 1;
  if (arg[n] != '\0') return NULL;
  if (*i + 1 >= argc) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

/* One option; returns 1 when consumed, 0 when not an option of this command, or an exit code
 * (> 1) on error. */
static int parse_option(cli *c, int argc, char **argv, int *i) {
  const char *arg = argv[*i], *v;
  bool missing = false;
  if (strcmp(arg, "--unsafe") == 0) return c->host.unsafe = true, 1;
  if (strcmp(arg, "--once") == 0 && strcmp(c->command, "run") == 0) return c->once = true, 1;
  if ((v = option_value("--log-format", argc, argv, i, &missing))) {
    int f = dc_log_parse_format(v);
    if (f < 0) return usage_error("--log-format: expected text or json, got '%s'", v);
    dc_log_set_format(f);
    return 1;
  }
  if ((v = option_value("--log-level", argc, argv, i, &missing))) {
    int level = dc_log_parse_level(v);
    if (level < 0)
      return usage_error("--log-level: expected debug, info, warning, error or critical, got '%s'", v);
    dc_log_set_level(level);
    return 1;
  }
  if ((v = option_value("--timezone", argc, argv, i, &missing))) {
    if (strcmp(v, "utc") != 0 && strcmp(v, "UTC") != 0 && strcmp(v, "local") != 0)
      return usage_error("--timezone: expected utc or local, got '%s'", v);
    dc_log_set_utc(strcmp(v, "local") != 0);
    return 1;
  }
  if ((v = option_value("--memory-limit", argc, argv, i, &missing))) {
    if (parse_size(v, &c->host.memory_limit) != 0 ||
        (c->host.memory_limit > 0 && c->host.memory_limit < (size_t)1 << 20))
      return usage_error("--memory-limit: expected a size of at least 1M such as 512M or 2G, or 0, got '%s'", v);
    return 1;
  }
  if ((v = option_value("--max-instructions", argc, argv, i, &missing))) {
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || end == v || n < 0)
      return usage_error("--max-instructions: expected a whole number >= 0, got '%s'", v);
    c->host.max_instructions = n;
    return 1;
  }
  bool policy_command = strcmp(c->command, "run") == 0 || strcmp(c->command, "check") == 0 ||
                        strcmp(c->command, "repl") == 0;
  if (policy_command && (v = option_value("--every", argc, argv, i, &missing))) {
    double every;
    char err[256];
    if (dc_duration_parse(v, &every, err, sizeof err) != 0 || every <= 0)
      return usage_error("--every: expected a positive duration such as 5s, got '%s'", v);
    c->every = v;
    return 1;
  }
  if (strcmp(c->command, "run") == 0) {
    char err[256];
    if (strcmp(arg, "--no-watch") == 0) return c->no_watch = true, 1;
    if ((v = option_value("--grace", argc, argv, i, &missing))) {
      if (dc_duration_parse(v, &c->agent.grace, err, sizeof err) != 0)
        return usage_error("--grace: %s", err);
      return 1;
    }
    if ((v = option_value("--stop-after", argc, argv, i, &missing))) {
      if (dc_duration_parse(v, &c->agent.stop_after, err, sizeof err) != 0 || c->agent.stop_after <= 0)
        return usage_error("--stop-after: expected a positive duration such as 30s, got '%s'", v);
      return 1;
    }
    if ((v = option_value("--listen", argc, argv, i, &missing))) {
      if (!valid_listen(v)) return usage_error("--listen: expected HOST:PORT or off, got '%s'", v);
      c->listen = v;
      return 1;
    }
    if ((v = option_value("--api-token-file", argc, argv, i, &missing))) {
      c->api_token_file = v;
      return 1;
    }
  }
  if (missing) return usage_error("option '%s' needs a value", arg);
  return 0;
}

static int parse_cli(cli *c, int argc, char **argv) {
  int i = 1;
  c->command = "script";
  if (i < argc) {
    const char *first = argv[i];
    if (strcmp(first, "run") == 0 || strcmp(first, "check") == 0 || strcmp(first, "repl") == 0) {
      c->command = first;
      i++;
    } else if (strcmp(first, "help") == 0) {
      if (i + 1 < argc && strcmp(argv[i + 1], "policy") == 0) return DC_EXIT_USAGE + 1;
      const char *text = help_for(i + 1 < argc ? argv[i + 1] : NULL);
      if (!text) return usage_error("help: unknown command '%s'", argv[i + 1]);
      fputs(text, stdout);
      return -1;
    }
  }
  for (; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(strcmp(c->command, "script") == 0 ? MAIN_HELP : help_for(c->command), stdout);
      return -1;
    }
    if (strcmp(arg, "--version") == 0 || strcmp(arg, "-v") == 0) {
      print_version();
      return -1;
    }
    if (arg[0] == '-' && arg[1] != '\0') {
      int r = parse_option(c, argc, argv, &i);
      if (r > 1) return r;
      if (r == 0) return usage_error("unknown option '%s'", arg);
      continue;
    }
    if (c->file) return usage_error("unexpected argument '%s'", arg);
    c->file = arg;
    if (strcmp(c->command, "script") == 0) { /* the rest belongs to the script */
      c->script_argc = argc - i - 1;
      c->script_argv = argv + i + 1;
      break;
    }
  }
  if (!c->file && strcmp(c->command, "repl") != 0) {
    if (strcmp(c->command, "script") == 0) {
      fputs(MAIN_HELP, stderr);
      return DC_EXIT_USAGE;
    }
    return usage_error("%s: missing the policy file", c->command);
  }
  return 0;
}

int main(int argc, char **argv) {
  cli c = {
      .host = {.memory_limit = DC_DEFAULT_MEMORY_LIMIT,
               .max_instructions = DC_DEFAULT_MAX_INSTRUCTIONS,
               .modules = dc_modules},
      .agent = {.grace = 10},
  };
  const dc_command *lua_command = argc > 1 ? dc_command_find(argv[1]) : NULL;
  if (lua_command) return dc_command_main(lua_command, argc - 1, argv + 1);
  int r = parse_cli(&c, argc, argv);
  if (r == DC_EXIT_USAGE + 1) { /* dconn help policy: the reference comes from the Lua schema */
    char *args[] = {"policy", NULL};
    return dc_command_main(dc_command_find("policy"), 1, args);
  }
  if (r != 0) return r < 0 ? DC_EXIT_OK : r;

  uv_loop_t loop;
  uv_loop_init(&loop);
  bool checking = strcmp(c.command, "check") == 0;
  c.host.check_only = checking;
  dc_host *H = dc_host_new(&loop, &c.host);
  if (!H) {
    uv_loop_close(&loop);
    return DC_EXIT_FAILURE;
  }
  if (c.every && dc_runtime_set_option(H, "every", c.every) != 0) {
    dc_host_free(H);
    uv_loop_close(&loop);
    return DC_EXIT_FAILURE;
  }
  int code;
  if (strcmp(c.command, "repl") == 0) {
    code = dc_repl_main(H, c.file);
  } else if (checking) {
    const char *args[] = {c.file};
    code = dc_agent_main(H, &c.agent, "check", 1, args);
  } else if (strcmp(c.command, "run") == 0) {
    c.agent.keep_alive = true;
    c.agent.reloadable = !c.once;
    if (c.agent.reloadable && !c.no_watch) c.agent.watch_path = c.file;
    if (dc_runtime_set_option(H, "listen", c.listen ? c.listen : DEFAULT_LISTEN) != 0 ||
        (c.api_token_file && dc_runtime_set_option(H, "api_token_file", c.api_token_file) != 0)) {
      dc_host_free(H);
      uv_loop_close(&loop);
      return DC_EXIT_FAILURE;
    }
    const char *args[] = {c.file, c.once ? "once" : "run"};
    code = dc_agent_main(H, &c.agent, "run", 2, args);
  } else {
    const char **args = calloc((size_t)c.script_argc + 2, sizeof *args);
    if (!args) return DC_EXIT_FAILURE;
    args[0] = c.file;
    args[1] = argv[0];
    for (int i = 0; i < c.script_argc; i++) args[i + 2] = c.script_argv[i];
    code = dc_agent_main(H, &c.agent, "script", c.script_argc + 2, args);
    free(args);
  }
  uv_loop_close(&loop);
  return code;
}
