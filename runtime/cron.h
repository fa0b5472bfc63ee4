/* cron.h - 5-field crontab expressions (Vixie cron syntax) and next-fire computation. */
#ifndef DC_CRON_H
#define DC_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dc_cron {
  uint64_t minute;   /* bit i set = minute i allowed (0..59) */
  uint32_t hour;     /* 0..23 */
  uint32_t dom;      /* 1..31 */
  uint16_t month;    /* 1..12 */
  uint8_t dow;      /* 0..6, Sunday = 0 (7 accepted in input and mapped to 0) */
  bool dom_restricted, dow_restricted; /* field did not start with '*' (or '?'): vixie cron OR rule */
} dc_cron;

/* Parses "m h dom mon dow" or a macro (@yearly @annually @monthly @weekly @daily @midnight @hourly).
   Returns 0 on success; on failure -1 and writes one clear message into err (if err and errlen > 0),
   naming the field and the bad token, e.g.
   "cron: minute field: value 61 out of range 0-59 in \"61\"" or
   "cron: expected 5 fields (minute hour day-of-month month day-of-week), got 4". */
int dc_cron_parse(const char *expr, dc_cron *out, char *err, size_t errlen);

/* Next fire time strictly after `after` (unix seconds, may have a fraction), aligned to a whole
   minute, evaluated in UTC when utc is true, else in the process's local time zone (TZ).
   Local time: nonexistent wall times (spring forward) are skipped; a wall time that occurs twice
   (fall back) fires once, at its first occurrence, unless the hour field allows every hour, in which
   case the repeated hour fires again so jobs such as "0-59/5 * * * *" keep their rhythm.
   Returns -1 when no time matches within 8 years (e.g. "0 0 31 2 *"; 8 years so that Feb 29 is
   found even across 2100), or when `after` is not finite or outside years 1900..3000. */
double dc_cron_next(const dc_cron *c, double after, bool utc);

#endif
