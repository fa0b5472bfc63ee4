/* Logging: levels, the original text format, JSON lines. Output goes to stderr. The Lua face,
 * dconn.log, is log_lua.c. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
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
    {"debug", DC_LOG_DEBUG},  {"info", DC_LOG_INFO},   {"warning", DC_LOG_WARNING},
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

/* A message or field longer than DC_LOG_MAX_TEXT is cut (at a UTF-8 boundary) and says so:
 * one line a policy logs cannot fill the disk or the collector's buffer. */
static const char *clip(const char *s, char *buf, size_t buflen) {
  size_t len = strlen(s);
  if (len <= DC_LOG_MAX_TEXT) return s;
  size_t keep = DC_LOG_MAX_TEXT;
  while (keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80) keep--;
  snprintf(buf, buflen, "%.*s... [%zu bytes cut]", (int)keep, s, len - keep);
  return buf;
}

void dc_log_fields(dc_host *H, int level, const char *msg, const dc_log_field *fields, int n) {
  if (!dc_log_enabled(level)) return;
  static char clipped[DC_LOG_MAX_TEXT + 64], clipped_field[DC_LOG_MAX_TEXT + 64];
  msg = clip(msg, clipped, sizeof clipped);
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
      put_json_string(out, clip(fields[f].value, clipped_field, sizeof clipped_field));
    }
    fputs("}\n", out);
  } else {
    dc_time_format_log(now, config.utc, stamp, sizeof stamp);
    fprintf(out, "%s - %5s - %s\n", stamp, dc_log_level_name(level), msg);
    for (int f = 0; f < n; f++)
      if (strcmp(fields[f].key, "traceback") == 0)
        fprintf(out, "%s\n", clip(fields[f].value, clipped_field, sizeof clipped_field));
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
