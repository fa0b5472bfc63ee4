/* dconn.log: levels, the original text format, JSON lines. Output goes to stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "clock.h"
#include "modules.h"
#include "timefmt.h"

static struct {
  int level;
  dc_log_format format;
  bool utc;
} config = {DC_LOG_INFO, DC_LOG_TEXT, true};

static const struct {
  const char *name;
  int level;
} level_names[] = {
    {"debug", DC_LOG_DEBUG}, {"info", DC_LOG_INFO},   {"warning", DC_LOG_WARNING},
    {"warn", DC_LOG_WARNING}, {"error", DC_LOG_ERROR}, {"critical", DC_LOG_CRITICAL},
};

int dc_log_parse_level(const char *name) {
  for (size_t i = 0; i < sizeof level_names / sizeof *level_names; i++)
    if (strcasecmp(name, level_names[i].name) == 0) return level_names[i].level;
  return -1;
}

int dc_log_parse_format(const char *name) {
  if (strcmp(name, "text") == 0) return DC_LOG_TEXT;
  if (strcmp(name, "json") == 0) return DC_LOG_JSON;
  return -1;
}

const char *dc_log_level_name(int level) {
  switch (level) {
  case DC_LOG_DEBUG: return "DEBUG";
  case DC_LOG_INFO: return "INFO";
  case DC_LOG_WARNING: return "WARNING";
  case DC_LOG_ERROR: return "ERROR";
  default: return "CRITICAL";
  }
}

void dc_log_set_level(int level) { config.level = level; }
int dc_log_get_level(void) { return config.level; }
void dc_log_set_format(dc_log_format format) { config.format = format; }
dc_log_format dc_log_get_format(void) { return config.format; }
void dc_log_set_utc(bool utc) { config.utc = utc; }
bool dc_log_is_utc(void) { return config.utc; }
bool dc_log_enabled(int level) { return level >= config.level; }

static void put_json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", out); break;
    case '\\': fputs("\\\\", out); break;
    case '\n': fputs("\\n", out); break;
    case '\r': fputs("\\r", out); break;
    case '\t': fputs("\\t", out); break;
    default:
      if (*p < 0x20) fprintf(out, "\\u%04x", *p);
      else fputc(*p, out);
    }
  }
  fputc('"', out);
}

void dc_log_fields(dc_host *H, int level, const char *msg, const dc_log_field *fields, int n) {
  if (!dc_log_enabled(level)) return;
  double now = H ? dc_clock_now(dc_host_clock(H)) : 0;
  char stamp[64];
  FILE *out = stderr;
  if (config.format == DC_LOG_JSON) {
    dc_time_format_iso(now, stamp, sizeof stamp);
    char lower[16];
    const char *name = dc_log_level_name(level);
    size_t i = 0;
    for (; i < sizeof lower - 1 && name[i]; i++) lower[i] = (char)(name[i] | 0x20);
    lower[i] = '\0';
    fprintf(out, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", stamp, lower);
    put_json_string(out, msg);
    for (int f = 0; f < n; f++) {
      fputc(',', out);
      put_json_string(out, fields[f].key);
      fputc(':', out);
      put_json_string(out, fields[f].value);
    }
    fputs("}\n", out);
  } else {
    dc_time_format_log(now, config.utc, stamp, sizeof stamp);
    fprintf(out, "%s - %5s - %s\n", stamp, dc_log_level_name(level), msg);
    for (int f = 0; f < n; f++)
      if (strcmp(fields[f].key, "traceback") == 0) fprintf(out, "%s\n", fields[f].value);
  }
  fflush(out);
}

void dc_log(dc_host *H, int level, const char *fmt, ...) {
  if (!dc_log_enabled(level)) return;
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  dc_log_fields(H, level, buf, NULL, 0);
}

/* ---- Lua API ---- */

/* log.info(fmt, ...): string.format when there are arguments, tostring otherwise. */
static int log_at(lua_State *L, int level) {
  if (!dc_log_enabled(level)) return 0;
  int n = lua_gettop(L);
  if (n > 1) {
    lua_pushvalue(L, lua_upvalueindex(1)); /* string.format */
    lua_insert(L, 1);
    lua_call(L, n, 1);
  } else {
    luaL_tolstring(L, 1, NULL);
  }
  dc_log_fields(dc_host_of(L), level, lua_tostring(L, -1), NULL, 0);
  return 0;
}

static int log_debug(lua_State *L) { return log_at(L, DC_LOG_DEBUG); }
static int log_info(lua_State *L) { return log_at(L, DC_LOG_INFO); }
static int log_warning(lua_State *L) { return log_at(L, DC_LOG_WARNING); }
static int log_error(lua_State *L) { return log_at(L, DC_LOG_ERROR); }
static int log_critical(lua_State *L) { return log_at(L, DC_LOG_CRITICAL); }

/* log.level([name]) -> previous level name */
static int log_level(lua_State *L) {
  lua_pushstring(L, dc_log_level_name(config.level));
  if (!lua_isnoneornil(L, 1)) {
    int level = dc_log_parse_level(luaL_checkstring(L, 1));
    luaL_argcheck(L, level >= 0, 1, "unknown level (debug, info, warning, error, critical)");
    config.level = level;
  }
  return 1;
}

/* log.format([name]) -> previous format name */
static int log_format(lua_State *L) {
  lua_pushstring(L, config.format == DC_LOG_JSON ? "json" : "text");
  if (!lua_isnoneornil(L, 1)) {
    int format = dc_log_parse_format(luaL_checkstring(L, 1));
    luaL_argcheck(L, format >= 0, 1, "unknown format (text, json)");
    config.format = format;
  }
  return 1;
}

static const luaL_Reg log_functions[] = {
    {"debug", log_debug}, {"info", log_info},         {"warning", log_warning},
    {"warn", log_warning}, {"error", log_error},       {"critical", log_critical},
    {"level", log_level}, {"format", log_format},     {NULL, NULL},
};

int luaopen_dconn_log(lua_State *L) {
  luaL_newlibtable(L, log_functions);
  lua_getglobal(L, "string");
  lua_getfield(L, -1, "format");
  lua_remove(L, -2);
  luaL_setfuncs(L, log_functions, 1);
  return 1;
}
