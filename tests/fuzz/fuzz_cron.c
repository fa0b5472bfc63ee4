/* libFuzzer target for the cron parser and next-fire computation (runtime/cron.c): any string
 * parses or fails with a message; an expression that parsed gives, from a start time taken from
 * the input, a next fire time that is later, on a whole minute of its calendar and matched by
 * the expression, or -1. The input: 8 bytes of start time (a double, raw), a byte whose low bit picks UTC or
 * local time, then the expression. `make fuzz` runs it (FUZZ_TIME seconds). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether the UTC or local calendar time t is one of c's (a whole minute of that calendar: in
 * local time before 1901 Madrid's offset has seconds, so not a multiple of 60 of unix time). */
static int matches(const dc_cron *c, time_t t, int utc) {
  struct tm tm;
  if (!(utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm))) return 0;
  if (tm.tm_sec != 0) return 0;
  if (!(c->minute >> tm.tm_min & 1) || !(c->hour >> tm.tm_hour & 1) || !(c->month >> (tm.tm_mon + 1) & 1)) return 0;
  int dom = c->dom >> tm.tm_mday & 1, dow = c->dow >> tm.tm_wday & 1;
  /* vixie cron: both restricted = either may match, else both must */
  return (c->dom_restricted && c->dow_restricted) ? (dom || dow) : (dom && dow);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 9) return 0;
  static int zoned;
  if (!zoned++) setenv("TZ", "Europe/Madrid", 1); /* local time: one zone with DST changes */
  double after;
  memcpy(&after, data, sizeof after);
  int utc = data[8] & 1;
  char *expr = malloc(size - 9 + 1); /* a private, terminated copy */
  if (!expr) return 0;
  memcpy(expr, data + 9, size - 9);
  expr[size - 9] = '\0';
  dc_cron c;
  char err[256];
  err[0] = '\0';
  if (dc_cron_parse(expr, &c, err, sizeof err) == 0) {
    if (!isfinite(after) || fabs(after) > 4e10) after = fmod(isfinite(after) ? after : 0, 4e9);
    double next = dc_cron_next(&c, after, utc);
    if (next != -1) {
      if (!(next > after) || next != floor(next)) abort();
      if (!matches(&c, (time_t)next, utc)) abort();
    }
  } else if (err[0] == '\0') {
    abort(); /* every failure explains itself */
  }
  free(expr);
  return 0;
}
