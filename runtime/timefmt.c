/* timefmt.c - time formatting compatible with the original Python agent, and time parsing. */
#include "timefmt.h"

#include <math.h> /* isfinite only: a macro, so no -lm needed */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Python datetime's range (years 1..9999); beyond it Python could not have printed anything. */
#define MIN_TIME (-62135596800.0) /* 0001-01-01T00:00:00Z */
#define MAX_TIME 253402300799.0   /* 9999-12-31T23:59:59Z */
#define MAX_INTERVAL 86399999999999.0 /* timedelta.max in seconds, about 999999999 days */
#define MAX_DURATION 1e12
#define MAX_NUMBER_DIGITS 15 /* integer digits a double holds exactly */

static const char *const month_abbrevs[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* ------------------------------------------------------------------------------------------ */
/* Shared helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static bool is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f';
}

static char to_lower(char ch) { return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch; }

static bool is_alpha(char ch) {
  char lower = to_lower(ch);
  return lower >= 'a' && lower <= 'z';
}

/* Round to nearest, ties to even, like Python's round(); |x| must be well below 2^62. */
static double round_half_even(double x) {
  double whole = (double)(long long)x;
  double diff = x - whole;
  bool odd = ((long long)whole % 2) != 0;
  if (diff > 0.5 || (diff == 0.5 && odd)) return whole + 1;
  if (diff < -0.5 || (diff == -0.5 && odd)) return whole - 1;
  return whole;
}

/* Splits t into whole seconds and microseconds 0..999999 exactly as Python's
   datetime.fromtimestamp does (truncate, round the fraction half-even, carry). */
static void split_microseconds(double t, time_t *seconds, long *micros) {
  double whole = (double)(long long)t;
  double us = round_half_even((t - whole) * 1e6);
  if (us >= 1e6) {
    whole += 1;
    us -= 1e6;
  } else if (us < 0) {
    whole -= 1;
    us += 1e6;
  }
  *seconds = (time_t)whole;
  *micros = (long)us;
}

static bool in_python_range(double t) { return isfinite(t) && t >= MIN_TIME && t <= MAX_TIME; }

/* Broken-down time of t in UTC or local time; false if t cannot be represented. */
static bool break_down(double t, bool utc, struct tm *tm, long *micros) {
  time_t seconds;
  if (!in_python_range(t)) return false;
  split_microseconds(t, &seconds, micros);
  return (utc ? gmtime_r(&seconds, tm) : localtime_r(&seconds, tm)) != NULL;
}

/* snprintf's result turned into this API's: length, or -1 (empty buffer) when it did not fit. */
static int finish(int written, char *buf, size_t n) {
  if (written < 0 || (size_t)written >= n) {
    buf[0] = '\0';
    return -1;
  }
  return written;
}

static bool buffer_usable(const char *buf, size_t n) { return buf != NULL && n > 0; }

/* ------------------------------------------------------------------------------------------ */
/* Formatting                                                                                  */
/* ------------------------------------------------------------------------------------------ */

int dc_time_format_log(double t, bool utc, char *buf, size_t n) {
  struct tm tm;
  long micros;
  if (!buffer_usable(buf, n)) return -1;
  if (!break_down(t, utc, &tm, &micros)) return finish(-1, buf, n);
  return finish(snprintf(buf, n, "%02d-%s-%02d %02d:%02d:%02d", tm.tm_mday, month_abbrevs[tm.tm_mon],
                         (tm.tm_year + 1900) % 100, tm.tm_hour, tm.tm_min, tm.tm_sec),
                buf, n);
}

int dc_time_format_next(double t, bool utc, char *buf, size_t n) {
  struct tm tm;
  long micros;
  const char *zone;
  if (!buffer_usable(buf, n)) return -1;
  if (!break_down(t, utc, &tm, &micros)) return finish(-1, buf, n);
  zone = utc ? "UTC" : (tm.tm_zone != NULL ? tm.tm_zone : "");
  return finish(snprintf(buf, n, "%04d-%02d-%02d %02d:%02d:%02d %s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                         tm.tm_hour, tm.tm_min, tm.tm_sec, zone),
                buf, n);
}

/* Python's utcoffset text: "+HH:MM", with ":SS" only when the offset has seconds. */
static void format_offset(long offset, char *out, size_t n) {
  char sign = offset < 0 ? '-' : '+';
  long magnitude = offset < 0 ? -offset : offset;
  long seconds = magnitude % 60;
  if (seconds != 0) {
    snprintf(out, n, "%c%02ld:%02ld:%02ld", sign, magnitude / 3600, magnitude / 60 % 60, seconds);
  } else {
    snprintf(out, n, "%c%02ld:%02ld", sign, magnitude / 3600, magnitude / 60 % 60);
  }
}

int dc_time_format_precise(double t, bool utc, char *buf, size_t n) {
  struct tm tm;
  long micros;
  char fraction[8] = "";
  char offset[32];
  if (!buffer_usable(buf, n)) return -1;
  if (!break_down(t, utc, &tm, &micros)) return finish(-1, buf, n);
  if (micros != 0) snprintf(fraction, sizeof fraction, ".%06ld", micros);
  format_offset(utc ? 0 : tm.tm_gmtoff, offset, sizeof offset);
  return finish(snprintf(buf, n, "%04d-%02d-%02d %02d:%02d:%02d%s%s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                         tm.tm_hour, tm.tm_min, tm.tm_sec, fraction, offset),
                buf, n);
}

int dc_time_format_iso(double t, char *buf, size_t n) {
  struct tm tm;
  long micros;
  if (!buffer_usable(buf, n)) return -1;
  if (!break_down(t, true, &tm, &micros)) return finish(-1, buf, n);
  return finish(snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                         tm.tm_hour, tm.tm_min, tm.tm_sec, micros / 1000),
                buf, n);
}

int dc_time_format_utc(double t, int digits, bool rfc3339, char *buf, size_t n) {
  struct tm tm;
  long micros;
  char fraction[24] = ""; /* ".706882"; sized for any long, so the compiler can see it fits */
  if (!buffer_usable(buf, n)) return -1;
  if (!break_down(t, true, &tm, &micros) || !(digits == 0 || digits == 3 || digits == 6)) return finish(-1, buf, n);
  if (digits == 3) snprintf(fraction, sizeof fraction, ".%03ld", micros / 1000);
  if (digits == 6) snprintf(fraction, sizeof fraction, ".%06ld", micros);
  return finish(snprintf(buf, n, "%04d-%02d-%02d%c%02d:%02d:%02d%s%s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                         rfc3339 ? 'T' : ' ', tm.tm_hour, tm.tm_min, tm.tm_sec, fraction, rfc3339 ? "Z" : ""),
                buf, n);
}

int dc_interval_format(double seconds, char *buf, size_t n) {
  time_t whole;
  long micros;
  long long days, rest;
  char day_part[40] = "";
  char fraction[8] = "";
  if (!buffer_usable(buf, n)) return -1;
  if (!isfinite(seconds) || seconds < 0 || seconds > MAX_INTERVAL) return finish(-1, buf, n);
  split_microseconds(seconds, &whole, &micros);
  days = (long long)whole / 86400;
  rest = (long long)whole % 86400;
  if (days != 0) snprintf(day_part, sizeof day_part, "%lld day%s, ", days, days == 1 ? "" : "s");
  if (micros != 0) snprintf(fraction, sizeof fraction, ".%06ld", micros);
  return finish(snprintf(buf, n, "%s%lld:%02lld:%02lld%s", day_part, rest / 3600, rest / 60 % 60, rest % 60, fraction),
                buf, n);
}

/* ------------------------------------------------------------------------------------------ */
/* Date/time parsing                                                                           */
/* ------------------------------------------------------------------------------------------ */

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || errlen == 0) return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Cursor over the trimmed text, plus what error messages need. */
typedef struct scanner {
  const char *p;
  const char *end;
  const char *text; /* original text, quoted in messages */
  const char *kind; /* "date" or "duration" */
  char *err;
  size_t errlen;
} scanner;

static int scan_error(const scanner *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int scan_error(const scanner *s, const char *fmt, ...) {
  char detail[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  set_error(s->err, s->errlen, "invalid %s \"%.80s\": %s", s->kind, s->text, detail);
  return -1;
}

static int remaining(const scanner *s) { return (int)(s->end - s->p > 40 ? 40 : s->end - s->p); }

static void scanner_init(scanner *s, const char *text, const char *kind, char *err, size_t errlen) {
  s->text = text;
  s->kind = kind;
  s->err = err;
  s->errlen = errlen;
  s->p = text;
  s->end = text + strlen(text);
  while (s->p < s->end && is_space(*s->p)) s->p++;
  while (s->end > s->p && is_space(s->end[-1])) s->end--;
}

static bool at_end(const scanner *s) { return s->p >= s->end; }

static bool accept_char(scanner *s, char ch) {
  if (at_end(s) || *s->p != ch) return false;
  s->p++;
  return true;
}

/* Exactly `count` digits; false (cursor unchanged) otherwise. */
static bool scan_fixed_digits(scanner *s, int count, int *value) {
  int v = 0, i;
  if (s->end - s->p < count) return false;
  for (i = 0; i < count; i++) {
    if (!is_digit(s->p[i])) return false;
  }
  for (i = 0; i < count; i++) v = v * 10 + (s->p[i] - '0');
  if (s->p + count < s->end && is_digit(s->p[count])) return false; /* too many digits */
  s->p += count;
  *value = v;
  return true;
}

typedef struct civil {
  int year, month, day, hour, minute, second;
} civil;

static bool is_leap(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

int dc_days_in_month(int year, int month) {
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && is_leap(year) ? 29 : days[month - 1];
}

static int check_range(const scanner *s, const char *what, int value, int min, int max) {
  if (value < min || value > max) return scan_error(s, "%s %d out of range %d-%d", what, value, min, max);
  return 0;
}

static int scan_date(scanner *s, civil *c) {
  if (!scan_fixed_digits(s, 4, &c->year) || !accept_char(s, '-') || !scan_fixed_digits(s, 2, &c->month) ||
      !accept_char(s, '-') || !scan_fixed_digits(s, 2, &c->day)) {
    return scan_error(s, "expected YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][Z|UTC|+HH:MM]");
  }
  if (check_range(s, "year", c->year, 1, 9999) < 0 || check_range(s, "month", c->month, 1, 12) < 0) return -1;
  if (c->day < 1 || c->day > dc_days_in_month(c->year, c->month)) {
    return scan_error(s, "day %d out of range 1-%d for %04d-%02d", c->day, dc_days_in_month(c->year, c->month), c->year,
                      c->month);
  }
  return 0;
}

/* ".ffffff": 1-9 digits. */
static int scan_fraction(scanner *s, double *fraction) {
  double scale = 1;
  long digits_value = 0;
  int digits = 0;
  while (!at_end(s) && is_digit(*s->p)) {
    if (digits == 9) return scan_error(s, "more than 9 digits after \".\"");
    digits_value = digits_value * 10 + (*s->p - '0');
    scale *= 10;
    digits++;
    s->p++;
  }
  if (digits == 0) return scan_error(s, "expected digits after \".\"");
  *fraction = (double)digits_value / scale;
  return 0;
}

static int scan_time(scanner *s, civil *c, double *fraction) {
  if (!scan_fixed_digits(s, 2, &c->hour) || !accept_char(s, ':') || !scan_fixed_digits(s, 2, &c->minute)) {
    return scan_error(s, "expected HH:MM after the date, got \"%.*s\"", remaining(s), s->p);
  }
  if (accept_char(s, ':')) {
    if (!scan_fixed_digits(s, 2, &c->second)) return scan_error(s, "expected two-digit seconds after \"HH:MM:\"");
    if (accept_char(s, '.') && scan_fraction(s, fraction) < 0) return -1;
  }
  if (check_range(s, "hour", c->hour, 0, 23) < 0 || check_range(s, "minute", c->minute, 0, 59) < 0 ||
      check_range(s, "second", c->second, 0, 59) < 0) {
    return -1;
  }
  return 0;
}

static bool accept_word(scanner *s, const char *word) {
  size_t len = strlen(word), i;
  if ((size_t)(s->end - s->p) < len) return false;
  for (i = 0; i < len; i++) {
    if (to_lower(s->p[i]) != word[i]) return false;
  }
  if (s->p + len < s->end && is_alpha(s->p[len])) return false;
  s->p += len;
  return true;
}

/* Zone: "Z", "UTC", or [+-]HH[[:]MM]. Sets the offset east of UTC in seconds. */
static int scan_zone(scanner *s, long *offset) {
  int hours, minutes = 0;
  char sign;
  if (accept_char(s, 'Z') || accept_char(s, 'z') || accept_word(s, "utc")) {
    *offset = 0;
    return 0;
  }
  if (at_end(s) || (*s->p != '+' && *s->p != '-')) {
    return scan_error(s, "unknown time zone \"%.*s\" (use Z, UTC or +HH:MM)", remaining(s), s->p);
  }
  sign = *s->p++;
  if (scan_fixed_digits(s, 4, &hours)) { /* +HHMM */
    minutes = hours % 100;
    hours /= 100;
  } else if (scan_fixed_digits(s, 2, &hours)) { /* +HH or +HH:MM */
    if (accept_char(s, ':') && !scan_fixed_digits(s, 2, &minutes)) {
      return scan_error(s, "expected two-digit minutes in the zone offset");
    }
  } else {
    return scan_error(s, "expected +HH:MM, +HHMM or +HH in the zone offset");
  }
  if (check_range(s, "zone offset hour", hours, 0, 23) < 0 ||
      check_range(s, "zone offset minute", minutes, 0, 59) < 0) {
    return -1;
  }
  *offset = (sign == '-' ? -1L : 1L) * (hours * 3600L + minutes * 60L);
  return 0;
}

static struct tm civil_to_tm(const civil *c) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = c->year - 1900;
  tm.tm_mon = c->month - 1;
  tm.tm_mday = c->day;
  tm.tm_hour = c->hour;
  tm.tm_min = c->minute;
  tm.tm_sec = c->second;
  tm.tm_isdst = -1;
  return tm;
}

static bool local_reads(time_t t, const civil *c) {
  struct tm tm;
  if (localtime_r(&t, &tm) == NULL) return false;
  return tm.tm_sec == c->second && tm.tm_min == c->minute && tm.tm_hour == c->hour && tm.tm_mday == c->day &&
         tm.tm_mon == c->month - 1 && tm.tm_year == c->year - 1900;
}

/* Local wall time to instant, like Python's fold=0: the earliest instant that reads c, or for a
   nonexistent time (spring-forward gap) the reading with the offset in force before the change. */
static time_t local_to_instant(const civil *c) {
  static const int dst_guesses[3] = {-1, 0, 1};
  struct tm tm = civil_to_tm(c);
  time_t as_utc = timegm(&tm), best = 0, before;
  bool found = false;
  int i;
  for (i = 0; i < 3; i++) {
    time_t t;
    tm = civil_to_tm(c);
    tm.tm_isdst = dst_guesses[i];
    t = mktime(&tm);
    if (local_reads(t, c) && (!found || t < best)) {
      best = t;
      found = true;
    }
  }
  if (found) return best;
  /* A day earlier is safely before the transition for any real offset (< 24h). */
  before = as_utc - 86400;
  if (localtime_r(&before, &tm) == NULL) return as_utc;
  return as_utc - tm.tm_gmtoff;
}

int dc_time_parse(const char *text, bool utc, double *out, char *err, size_t errlen) {
  scanner s;
  civil c = {0, 0, 0, 0, 0, 0};
  double fraction = 0;
  long offset = 0;
  bool has_zone = false;
  struct tm tm;
  time_t seconds;

  if (err != NULL && errlen > 0) err[0] = '\0';
  if (text == NULL || out == NULL) {
    set_error(err, errlen, "invalid date: no text given");
    return -1;
  }
  scanner_init(&s, text, "date", err, errlen);
  if (at_end(&s)) return scan_error(&s, "empty");
  if (scan_date(&s, &c) < 0) return -1;
  if (!at_end(&s)) {
    if (*s.p != 'T' && *s.p != 't' && *s.p != ' ') {
      return scan_error(&s, "unexpected \"%.*s\" after the date", remaining(&s), s.p);
    }
    s.p++;
    if (scan_time(&s, &c, &fraction) < 0) return -1;
    while (!at_end(&s) && *s.p == ' ') s.p++;
    if (!at_end(&s)) {
      if (scan_zone(&s, &offset) < 0) return -1;
      has_zone = true;
    }
    if (!at_end(&s)) return scan_error(&s, "unexpected \"%.*s\" after the time zone", remaining(&s), s.p);
  }
  tm = civil_to_tm(&c);
  if (has_zone || utc) {
    seconds = timegm(&tm) - offset;
  } else {
    seconds = local_to_instant(&c);
  }
  *out = (double)seconds + fraction;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Duration parsing                                                                            */
/* ------------------------------------------------------------------------------------------ */

typedef struct unit {
  const char *name;
  double seconds;
} unit;

static const unit units[] = {{"ms", 0.001}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}, {"w", 604800}};

/* digits [ '.' digits ], without strtod so the C locale's decimal point cannot interfere. */
static int scan_number(scanner *s, double *value) {
  double whole = 0, scale = 1, fraction = 0;
  int digits = 0;
  if (at_end(s) || !is_digit(*s->p)) return scan_error(s, "expected a number at \"%.*s\"", remaining(s), s->p);
  while (!at_end(s) && is_digit(*s->p)) {
    if (++digits > MAX_NUMBER_DIGITS) return scan_error(s, "number too large");
    whole = whole * 10 + (*s->p++ - '0');
  }
  if (accept_char(s, '.')) {
    if (at_end(s) || !is_digit(*s->p)) return scan_error(s, "expected digits after \".\"");
    while (!at_end(s) && is_digit(*s->p)) {
      if (scale < 1e15) { /* further digits cannot change a double */
        scale *= 10;
        fraction = fraction * 10 + (*s->p - '0');
      }
      s->p++;
    }
  }
  *value = whole + fraction / scale;
  return 0;
}

static int scan_unit(scanner *s, double *factor) {
  const char *start = s->p;
  size_t len, i;
  while (!at_end(s) && is_alpha(*s->p)) s->p++;
  len = (size_t)(s->p - start);
  for (i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strlen(units[i].name) == len && strncmp(units[i].name, start, len) == 0) {
      *factor = units[i].seconds;
      return 0;
    }
  }
  s->p = start;
  /* Quote the letters that were not a unit, or whatever non-letter follows the number. */
  return scan_error(s, "unknown unit \"%.*s\" (use ms, s, m, h, d or w)",
                    len > 0 ? (int)(len > 40 ? 40 : len) : remaining(s), start);
}

int dc_duration_parse(const char *text, double *out, char *err, size_t errlen) {
  scanner s;
  double total = 0;
  int components = 0;

  if (err != NULL && errlen > 0) err[0] = '\0';
  if (text == NULL || out == NULL) {
    set_error(err, errlen, "invalid duration: no text given");
    return -1;
  }
  scanner_init(&s, text, "duration", err, errlen);
  if (at_end(&s)) return scan_error(&s, "empty");
  if (*s.p == '-') return scan_error(&s, "negative durations are not allowed");
  while (!at_end(&s)) {
    double value = 0, factor = 1;
    if (scan_number(&s, &value) < 0) return -1;
    components++;
    if (!at_end(&s) && !is_space(*s.p)) {
      if (scan_unit(&s, &factor) < 0) return -1;
    } else if (components > 1 || !at_end(&s)) {
      return scan_error(&s, "missing unit after a number (use ms, s, m, h, d or w)");
    }
    total += value * factor;
    if (total > MAX_DURATION) return scan_error(&s, "too large (max %.0f seconds)", MAX_DURATION);
    while (!at_end(&s) && is_space(*s.p)) s.p++;
  }
  *out = total;
  return 0;
}
