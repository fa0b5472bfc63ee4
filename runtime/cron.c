/* cron.c - 5-field crontab parsing and next-fire computation (Vixie cron semantics). */
#include "cron.h"

#include "timefmt.h"

#include <math.h> /* isfinite only: a macro, so no -lm needed */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------------------------ */
/* Parsing                                                                                     */
/* ------------------------------------------------------------------------------------------ */

#define FIELD_COUNT 5
#define MAX_NUMBER_DIGITS 9 /* anything longer is out of range for every field; avoids overflow */

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const weekday_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

typedef struct field_spec {
  const char *name;
  int min;
  int max;                 /* largest value kept in the bit set */
  int max_input;           /* largest value accepted in text (7 for day-of-week) */
  const char *const *names; /* NULL-terminated, names[0] means `min` */
  bool allows_question;    /* '?' is a synonym of '*' (day fields only) */
} field_spec;

static const field_spec field_specs[FIELD_COUNT] = {
    {"minute", 0, 59, 59, NULL, false},
    {"hour", 0, 23, 23, NULL, false},
    {"day-of-month", 1, 31, 31, NULL, true},
    {"month", 1, 12, 12, month_names, false},
    {"day-of-week", 0, 6, 7, weekday_names, true},
};

/* Everything an error message needs: which field, its full text, where to write. */
typedef struct parse_ctx {
  const field_spec *spec;
  const char *field;
  size_t field_len;
  char *err;
  size_t errlen;
} parse_ctx;

static bool is_separator(char ch) {
  /* Spaces and tabs separate fields; CR/LF tolerated so lines read from files parse as-is. */
  return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static char to_lower(char ch) { return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch; }

static bool is_alpha(char ch) {
  char lower = to_lower(ch);
  return lower >= 'a' && lower <= 'z';
}

/* Case-insensitive compare of a counted token with a NUL-terminated word. */
static bool token_equals(const char *token, size_t len, const char *word) {
  size_t i;
  for (i = 0; i < len; i++) {
    if (word[i] == '\0' || to_lower(token[i]) != word[i]) return false;
  }
  return word[len] == '\0';
}

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || errlen == 0) return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Writes "cron: <field> field: <detail> in \"<field text>\"" and returns -1. */
static int field_error(const parse_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int field_error(const parse_ctx *ctx, const char *fmt, ...) {
  char detail[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  set_error(ctx->err, ctx->errlen, "cron: %s field: %s in \"%.*s\"", ctx->spec->name, detail,
            (int)(ctx->field_len > 200 ? 200 : ctx->field_len), ctx->field);
  return -1;
}

/* Length of the run of characters up to the end of the current item, for quoting junk. */
static int item_rest_length(const char *p, const char *end) {
  const char *q = p;
  while (q < end && *q != ',') q++;
  return (int)(q - p > 40 ? 40 : q - p);
}

static int parse_number(const parse_ctx *ctx, const char **pp, const char *end, long *value) {
  const char *p = *pp;
  long n = 0;
  int digits = 0;
  while (p < end && is_digit(*p)) {
    if (digits == MAX_NUMBER_DIGITS) {
      return field_error(ctx, "number \"%.*s\" too large", item_rest_length(*pp, end), *pp);
    }
    n = n * 10 + (*p - '0');
    digits++;
    p++;
  }
  *value = n;
  *pp = p;
  return 0;
}

static int parse_name(const parse_ctx *ctx, const char **pp, const char *end, long *value) {
  const char *start = *pp;
  const char *p = start;
  int i;
  while (p < end && is_alpha(*p)) p++;
  if (ctx->spec->names == NULL) {
    return field_error(ctx, "unexpected \"%.*s\" (names are not allowed here)", (int)(p - start > 40 ? 40 : p - start),
                       start);
  }
  for (i = 0; ctx->spec->names[i] != NULL; i++) {
    if (token_equals(start, (size_t)(p - start), ctx->spec->names[i])) {
      *value = ctx->spec->min + i;
      *pp = p;
      return 0;
    }
  }
  return field_error(ctx, "unknown name \"%.*s\"", (int)(p - start > 40 ? 40 : p - start), start);
}

/* One value of a range: a number or a name, checked against the field's input range. */
static int parse_value(const parse_ctx *ctx, const char **pp, const char *end, const char *after_what, long *value) {
  const char *p = *pp;
  if (p >= end || *p == ',') {
    if (after_what != NULL) return field_error(ctx, "missing value after \"%s\"", after_what);
    return field_error(ctx, "empty item");
  }
  if (is_alpha(*p)) return parse_name(ctx, pp, end, value);
  if (!is_digit(*p)) return field_error(ctx, "unexpected \"%.*s\"", item_rest_length(p, end), p);
  if (parse_number(ctx, pp, end, value) < 0) return -1;
  if (*value < ctx->spec->min || *value > ctx->spec->max_input) {
    return field_error(ctx, "value %ld out of range %d-%d", *value, ctx->spec->min, ctx->spec->max_input);
  }
  return 0;
}

static int parse_step(const parse_ctx *ctx, const char **pp, const char *end, long *step) {
  long span = ctx->spec->max - ctx->spec->min + 1;
  if (*pp >= end || !is_digit(**pp)) {
    if (*pp < end && **pp != ',') {
      return field_error(ctx, "step must be a number, got \"%.*s\"", item_rest_length(*pp, end), *pp);
    }
    return field_error(ctx, "missing step after \"/\"");
  }
  if (parse_number(ctx, pp, end, step) < 0) return -1;
  if (*step < 1 || *step > span) return field_error(ctx, "step %ld out of range 1-%ld", *step, span);
  return 0;
}

/* Folds input values beyond the stored range back in (day-of-week 7 = Sunday = 0). */
static int stored_bit(const field_spec *spec, long value) {
  return (int)(value > spec->max ? value - (spec->max + 1) + spec->min : value);
}

/* item = ('*' | '?' | value ['-' value]) ['/' step] */
static int parse_item(const parse_ctx *ctx, const char **pp, const char *end, uint64_t *bits) {
  const field_spec *spec = ctx->spec;
  const char *p = *pp;
  long low, high, step = 1, v;
  bool is_range = false;

  if (p < end && (*p == '*' || (*p == '?' && spec->allows_question))) {
    low = spec->min;
    high = spec->max_input;
    is_range = true;
    p++;
  } else {
    if (parse_value(ctx, &p, end, NULL, &low) < 0) return -1;
    high = low;
    if (p < end && *p == '-') {
      p++;
      if (parse_value(ctx, &p, end, "-", &high) < 0) return -1;
      if (high < low) return field_error(ctx, "reversed range %ld-%ld", low, high);
      is_range = true;
    }
  }
  if (p < end && *p == '/') {
    p++;
    if (parse_step(ctx, &p, end, &step) < 0) return -1;
    if (!is_range) high = spec->max_input; /* "5/15" means 5-max/15, as in Vixie cron */
  }
  if (p < end && *p != ',') return field_error(ctx, "unexpected \"%.*s\"", item_rest_length(p, end), p);
  for (v = low; v <= high; v += step) *bits |= (uint64_t)1 << stored_bit(spec, v);
  *pp = p;
  return 0;
}

/* field = item {',' item} */
static int parse_field(const parse_ctx *ctx, uint64_t *bits) {
  const char *p = ctx->field;
  const char *end = ctx->field + ctx->field_len;
  *bits = 0;
  for (;;) {
    if (parse_item(ctx, &p, end, bits) < 0) return -1;
    if (p >= end) return 0;
    p++; /* the ',' */
    if (p >= end) return field_error(ctx, "empty item");
  }
}

typedef struct macro {
  const char *name;
  const char *expansion;
} macro;

static const macro macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},  {"@midnight", "0 0 * * *"}, {"@hourly", "0 * * * *"},
};

static int parse_macro(const char *text, dc_cron *out, char *err, size_t errlen) {
  const char *end = text;
  const char *rest;
  size_t i;
  while (*end != '\0' && !is_separator(*end)) end++;
  for (rest = end; *rest != '\0'; rest++) {
    if (!is_separator(*rest)) {
      set_error(err, errlen, "cron: unexpected text after %.*s: \"%.40s\"", (int)(end - text > 40 ? 40 : end - text),
                text, rest);
      return -1;
    }
  }
  for (i = 0; i < sizeof macros / sizeof macros[0]; i++) {
    if (token_equals(text, (size_t)(end - text), macros[i].name)) {
      return dc_cron_parse(macros[i].expansion, out, err, errlen);
    }
  }
  set_error(err, errlen,
            "cron: unknown macro \"%.*s\" (expected @yearly, @annually, @monthly, @weekly, @daily, "
            "@midnight or @hourly)",
            (int)(end - text > 40 ? 40 : end - text), text);
  return -1;
}

/* Splits on separators; records up to FIELD_COUNT fields and returns how many there are. */
static int split_fields(const char *expr, const char *starts[], size_t lens[]) {
  int count = 0;
  const char *p = expr;
  for (;;) {
    const char *start;
    while (*p != '\0' && is_separator(*p)) p++;
    if (*p == '\0') return count;
    start = p;
    while (*p != '\0' && !is_separator(*p)) p++;
    if (count < FIELD_COUNT) {
      starts[count] = start;
      lens[count] = (size_t)(p - start);
    }
    if (count < 1000000) count++; /* cap keeps the counter from overflowing on absurd input */
  }
}

static bool starts_with_star(const char *field) { return field[0] == '*' || field[0] == '?'; }

int dc_cron_parse(const char *expr, dc_cron *out, char *err, size_t errlen) {
  const char *starts[FIELD_COUNT];
  size_t lens[FIELD_COUNT];
  uint64_t bits[FIELD_COUNT];
  int count, i;
  const char *p = expr;

  if (err != NULL && errlen > 0) err[0] = '\0';
  if (expr == NULL || out == NULL) {
    set_error(err, errlen, "cron: no expression given");
    return -1;
  }
  while (*p != '\0' && is_separator(*p)) p++;
  if (*p == '@') return parse_macro(p, out, err, errlen);

  count = split_fields(expr, starts, lens);
  if (count != FIELD_COUNT) {
    set_error(err, errlen, "cron: expected 5 fields (minute hour day-of-month month day-of-week), got %d%s", count,
              count >= 1000000 ? " or more" : "");
    return -1;
  }
  for (i = 0; i < FIELD_COUNT; i++) {
    parse_ctx ctx = {&field_specs[i], starts[i], lens[i], err, errlen};
    if (parse_field(&ctx, &bits[i]) < 0) return -1;
  }
  out->minute = bits[0];
  out->hour = (uint32_t)bits[1];
  out->dom = (uint32_t)bits[2];
  out->month = (uint16_t)bits[3];
  out->dow = (uint8_t)bits[4];
  /* Vixie cron decides "restricted" by the first character only, so a stepped star counts as
     unrestricted too (day-of-month every 2 days AND Mondays, not OR). */
  out->dom_restricted = !starts_with_star(starts[2]);
  out->dow_restricted = !starts_with_star(starts[4]);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Next fire time                                                                              */
/* ------------------------------------------------------------------------------------------ */

#define SEARCH_YEARS 8             /* Feb 29 can be 8 years away (2096 -> 2104) */
#define MIN_AFTER (-2208988800.0)  /* 1900-01-01T00:00:00Z */
#define MAX_AFTER 32503680000.0    /* 3000-01-01T00:00:00Z */
#define TRANSITION_WINDOW 10800    /* seconds to look ahead for a clock set back (none is bigger) */
#define ALL_HOURS 0xFFFFFFu

/* A wall-clock time (UTC or local), fields in human ranges: month 1..12, day 1..31. */
typedef struct wall {
  int year, month, day, hour, minute;
} wall;

/* Largest whole second <= t (t already range-checked); avoids needing libm's floor. */
static time_t floor_seconds(double t) {
  time_t whole = (time_t)t;
  return (double)whole > t ? whole - 1 : whole;
}


/* Days since 1970-01-01 of a civil date (H. Hinnant's algorithm): avoids libc for weekdays. */
static long days_from_civil(int year, int month, int day) {
  long y = (long)year - (month <= 2);
  long era = (y >= 0 ? y : y - 399) / 400;
  long yoe = y - era * 400;
  long doy = (153L * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
  long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int weekday(const wall *w) {
  long days = days_from_civil(w->year, w->month, w->day);
  return (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
}

static bool bit_set(uint64_t mask, int i) { return (mask >> i) & 1u; }

/* First set bit at index >= from and <= last, or -1. */
static int next_bit(uint64_t mask, int from, int last) {
  int i;
  for (i = from; i <= last; i++) {
    if (bit_set(mask, i)) return i;
  }
  return -1;
}

static bool day_matches(const dc_cron *c, const wall *w) {
  bool dom_ok = bit_set(c->dom, w->day);
  bool dow_ok = bit_set(c->dow, weekday(w));
  if (c->dom_restricted && c->dow_restricted) return dom_ok || dow_ok; /* Vixie OR rule */
  return dom_ok && dow_ok;
}

static void wall_next_month(wall *w) {
  w->day = 1;
  w->hour = 0;
  w->minute = 0;
  if (++w->month > 12) {
    w->month = 1;
    w->year++;
  }
}

static void wall_next_day(wall *w) {
  w->hour = 0;
  w->minute = 0;
  if (++w->day > dc_days_in_month(w->year, w->month)) wall_next_month(w);
}

static void wall_next_hour(wall *w) {
  w->minute = 0;
  if (++w->hour > 23) wall_next_day(w);
}

static void wall_next_minute(wall *w) {
  if (++w->minute > 59) wall_next_hour(w);
}

/* Moves w forward to the first wall time >= w matching every field, skipping whole months,
   days and hours that cannot match. Returns false once past last_year. */
static bool advance_to_match(const dc_cron *c, wall *w, int last_year) {
  while (w->year <= last_year) {
    int next;
    if (!bit_set(c->month, w->month)) {
      wall_next_month(w);
    } else if (!day_matches(c, w)) {
      wall_next_day(w);
    } else if ((next = next_bit(c->hour, w->hour, 23)) != w->hour) {
      if (next < 0) {
        wall_next_day(w);
      } else {
        w->hour = next;
        w->minute = 0;
      }
    } else if ((next = next_bit(c->minute, w->minute, 59)) != w->minute) {
      if (next < 0) {
        wall_next_hour(w);
      } else {
        w->minute = next;
      }
    } else {
      return true;
    }
  }
  return false;
}

static struct tm wall_to_tm(const wall *w) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = w->year - 1900;
  tm.tm_mon = w->month - 1;
  tm.tm_mday = w->day;
  tm.tm_hour = w->hour;
  tm.tm_min = w->minute;
  tm.tm_isdst = -1;
  return tm;
}

static wall tm_to_wall(const struct tm *tm) {
  wall w = {tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday, tm->tm_hour, tm->tm_min};
  return w;
}

/* Wall time as seconds on a zone-less calendar: lets us do wall arithmetic with timegm. */
static time_t wall_seconds(const wall *w) {
  struct tm tm = wall_to_tm(w);
  return timegm(&tm);
}

static bool wall_from_seconds(time_t seconds, wall *w) {
  struct tm tm;
  if (gmtime_r(&seconds, &tm) == NULL) return false;
  *w = tm_to_wall(&tm);
  return true;
}

/* True when local time at instant t reads exactly wall w (round trip through mktime). */
static bool local_reads(time_t t, const wall *w) {
  struct tm tm;
  if (localtime_r(&t, &tm) == NULL) return false;
  return tm.tm_sec == 0 && tm.tm_min == w->minute && tm.tm_hour == w->hour && tm.tm_mday == w->day &&
         tm.tm_mon == w->month - 1 && tm.tm_year == w->year - 1900;
}

/* All instants (0, 1 or 2, ascending) at which the local clock reads w. */
static int local_instants(const wall *w, time_t instants[2]) {
  static const int dst_guesses[3] = {-1, 0, 1};
  int count = 0, i;
  for (i = 0; i < 3; i++) {
    struct tm tm = wall_to_tm(w);
    time_t t;
    tm.tm_isdst = dst_guesses[i];
    t = mktime(&tm);
    if (!local_reads(t, w)) continue;
    if (count == 1 && instants[0] == t) continue;
    if (count == 2) continue;
    instants[count++] = t;
  }
  if (count == 2 && instants[1] < instants[0]) {
    time_t tmp = instants[0];
    instants[0] = instants[1];
    instants[1] = tmp;
  }
  return count;
}

/* Instant at which wall time w fires, or false if it does not (nonexistent, or only <= after).
   A repeated wall time fires at its first occurrence only, except for jobs that run every hour,
   which also fire in the repeated hour so their rhythm does not stall for an hour. */
static bool resolve_local(const wall *w, bool every_hour, double after, time_t *out) {
  time_t instants[2];
  int count = local_instants(w, instants), i;
  if (count == 0) return false; /* spring-forward gap */
  if (!every_hour) count = 1;
  for (i = 0; i < count; i++) {
    if ((double)instants[i] > after) {
      *out = instants[i];
      return true;
    }
  }
  return false;
}

static bool resolve_utc(const wall *w, double after, time_t *out) {
  time_t t = wall_seconds(w);
  if ((double)t <= after) return false;
  *out = t;
  return true;
}

static double next_utc(const dc_cron *c, double after) {
  time_t base = floor_seconds(after);
  wall w;
  int last_year;
  if (!wall_from_seconds(base, &w)) return -1;
  last_year = w.year + SEARCH_YEARS;
  wall_next_minute(&w);
  while (advance_to_match(c, &w, last_year)) {
    time_t t;
    if (resolve_utc(&w, after, &t)) return (double)t;
    wall_next_minute(&w);
  }
  return -1;
}

static long utc_offset_at(time_t t) {
  struct tm tm;
  if (localtime_r(&t, &tm) == NULL) return 0;
  return tm.tm_gmtoff;
}

/* Local search. Normally wall order equals instant order, so the first fire found wins. Within a
   few hours before a fall-back transition it does not: the clock will go back by `setback`
   seconds, so start that much wall time earlier and keep the smallest instant among candidates
   until the wall clock is `setback` past the best one (later walls cannot fire earlier). */
static double next_local(const dc_cron *c, double after) {
  time_t base = floor_seconds(after), best = 0;
  struct tm tm;
  wall w, best_wall = {0, 0, 0, 0, 0};
  bool every_hour = (c->hour & ALL_HOURS) == ALL_HOURS, have_best = false;
  long setback = utc_offset_at(base) - utc_offset_at(base + TRANSITION_WINDOW);
  int last_year;

  if (localtime_r(&base, &tm) == NULL) return -1;
  w = tm_to_wall(&tm);
  last_year = w.year + SEARCH_YEARS;
  if (setback < 0) setback = 0; /* clock goes forward or stays: no wall time repeats */
  if (setback > 0 && !wall_from_seconds(wall_seconds(&w) - setback, &w)) return -1;
  wall_next_minute(&w);
  while (advance_to_match(c, &w, last_year)) {
    time_t t;
    if (have_best && wall_seconds(&w) > wall_seconds(&best_wall) + setback) break;
    if (resolve_local(&w, every_hour, after, &t) && (!have_best || t < best)) {
      best = t;
      best_wall = w;
      have_best = true;
      if (setback == 0) break;
    }
    wall_next_minute(&w);
  }
  return have_best ? (double)best : -1;
}

double dc_cron_next(const dc_cron *c, double after, bool utc) {
  if (c == NULL || !isfinite(after) || after < MIN_AFTER || after > MAX_AFTER) return -1;
  return utc ? next_utc(c, after) : next_local(c, after);
}
