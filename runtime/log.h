/*
 * Logging. Text format is the original agent's (Python logging with
 * "%(asctime)s - %(levelname)5s - %(message)s" and datefmt "%d-%b-%y %H:%M:%S"):
 *     12-Apr-24 10:44:31 -  INFO - Running job "..."
 * JSON format: one object a line: {"time":"2024-04-12T10:44:31.706Z","level":"info","msg":"..."}
 * plus any extra fields. Timestamps come from the host clock, so replays log replayed time.
 */
#ifndef DCONN_LOG_H
#define DCONN_LOG_H

/* The longest message (and field) a log line carries: longer ones are cut to this many bytes
 * and end in "... [N bytes cut]". */
#define DC_LOG_MAX_TEXT 16384

#include <stdbool.h>

#include "host.h"

typedef enum {
  DC_LOG_DEBUG = 10,
  DC_LOG_INFO = 20,
  DC_LOG_WARNING = 30,
  DC_LOG_ERROR = 40,
  DC_LOG_CRITICAL = 50,
} dc_log_level;

typedef enum { DC_LOG_TEXT, DC_LOG_JSON } dc_log_format;

typedef struct dc_log_field {
  const char *key, *value;
} dc_log_field;

/* Returns -1 for an unknown name. Names: debug info warning (warn) error critical. */
int dc_log_parse_level(const char *name);
int dc_log_parse_format(const char *name);
const char *dc_log_level_name(int level);

void dc_log_set_level(int level);
int dc_log_get_level(void);
void dc_log_set_format(dc_log_format format);
dc_log_format dc_log_get_format(void);
/* Timestamps in UTC (default) or local time. */
void dc_log_set_utc(bool utc);
bool dc_log_is_utc(void);

bool dc_log_enabled(int level);
void dc_log(dc_host *H, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The message plus extra fields (JSON keys; in text mode, "detail" fields follow on new lines). */
void dc_log_fields(dc_host *H, int level, const char *msg, const dc_log_field *fields, int n);

#endif
