/* test_cron.c - unit tests for runtime/cron.c (cmocka). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h> /* NAN and INFINITY macros only */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cron.h"

#define MINUTE 60.0
#define HOUR 3600.0
#define DAY 86400.0

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Unix seconds of a UTC calendar time: expected values below are written as calendar dates. */
static double utc(int year, int month, int day, int hour, int minute) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  return (double)timegm(&tm);
}

static void use_tz(const char *zone) {
  setenv("TZ", zone, 1);
  tzset();
}

static dc_cron parse_ok(const char *expr) {
  dc_cron c;
  char err[256];
  if (dc_cron_parse(expr, &c, err, sizeof err) != 0) fail_msg("parse of \"%s\" failed: %s", expr, err);
  return c;
}

/* Asserts a parse error whose message contains every given fragment (NULL-terminated list). */
static void assert_rejected(const char *expr, const char *fragment, const char *fragment2) {
  dc_cron c;
  char err[256] = "untouched";
  if (dc_cron_parse(expr, &c, err, sizeof err) != -1) fail_msg("\"%s\" was accepted", expr);
  if (strstr(err, fragment) == NULL) fail_msg("error for \"%s\" lacks \"%s\": %s", expr, fragment, err);
  if (fragment2 != NULL && strstr(err, fragment2) == NULL) {
    fail_msg("error for \"%s\" lacks \"%s\": %s", expr, fragment2, err);
  }
}

static void format_utc(double t, char *buf, size_t n) {
  time_t s = (time_t)t;
  struct tm tm;
  if (t < 0) {
    snprintf(buf, n, "%.0f", t);
    return;
  }
  gmtime_r(&s, &tm);
  strftime(buf, n, "%Y-%m-%d %H:%M:%S %a UTC", &tm);
}

static void assert_next(const char *expr, double after, bool utc_mode, double expected) {
  dc_cron c = parse_ok(expr);
  double got = dc_cron_next(&c, after, utc_mode);
  if (got != expected) {
    char a[64], e[64], g[64];
    format_utc(after, a, sizeof a);
    format_utc(expected, e, sizeof e);
    format_utc(got, g, sizeof g);
    fail_msg("next(\"%s\", after %s): expected %s, got %s", expr, a, e, g);
  }
}

static void assert_next_utc(const char *expr, double after, double expected) {
  assert_next(expr, after, true, expected);
}

/* Follows a chain of fire times: each expected[i] is next() of the previous one. */
static void assert_chain(const char *expr, double after, bool utc_mode, const double *expected, size_t count) {
  size_t i;
  for (i = 0; i < count; i++) {
    assert_next(expr, after, utc_mode, expected[i]);
    after = expected[i];
  }
}

static double floor_minute(double t) {
  double whole = (double)(long long)t;
  if (whole > t) whole -= 1;
  return whole - (double)((((long long)whole % 60) + 60) % 60);
}

static bool fields_match(const dc_cron *c, const struct tm *tm) {
  bool dom_ok = (c->dom >> tm->tm_mday) & 1u;
  bool dow_ok = (c->dow >> tm->tm_wday) & 1u;
  bool day_ok = (c->dom_restricted && c->dow_restricted) ? (dom_ok || dow_ok) : (dom_ok && dow_ok);
  return ((c->minute >> tm->tm_min) & 1u) && ((c->hour >> tm->tm_hour) & 1u) && ((c->month >> (tm->tm_mon + 1)) & 1u) &&
         day_ok;
}

static bool same_wall(const struct tm *a, const struct tm *b) {
  return a->tm_min == b->tm_min && a->tm_hour == b->tm_hour && a->tm_mday == b->tm_mday && a->tm_mon == b->tm_mon &&
         a->tm_year == b->tm_year;
}

/* True when the local clock already read this wall time 30, 60 or 120 minutes earlier. */
static bool read_earlier(time_t t, const struct tm *now) {
  static const int setbacks[] = {1800, 3600, 7200};
  size_t i;
  for (i = 0; i < sizeof setbacks / sizeof setbacks[0]; i++) {
    time_t earlier = t - setbacks[i];
    struct tm tm;
    localtime_r(&earlier, &tm);
    if (same_wall(now, &tm)) return true;
  }
  return false;
}

/* Naive minute-by-minute reference. In local mode a wall time repeated by a fall-back (the clock
   read the same an hour earlier) only counts for jobs that run every hour. Returns -2 if nothing
   within `window` seconds. */
static double reference_next(const dc_cron *c, double after, bool utc_mode, double window) {
  double t;
  bool every_hour = (c->hour & 0xFFFFFFu) == 0xFFFFFFu;
  for (t = floor_minute(after) + MINUTE; t <= after + window; t += MINUTE) {
    time_t s = (time_t)t;
    struct tm tm;
    if (t <= after) continue;
    if (utc_mode) {
      gmtime_r(&s, &tm);
    } else {
      localtime_r(&s, &tm);
    }
    if (!fields_match(c, &tm)) continue;
    if (!utc_mode && !every_hour && read_earlier(s, &tm)) continue;
    return t;
  }
  return -2;
}

static void assert_matches_reference(const char *expr, double after, bool utc_mode, double window) {
  dc_cron c = parse_ok(expr);
  double expected = reference_next(&c, after, utc_mode, window);
  double got = dc_cron_next(&c, after, utc_mode);
  if (expected == -2) {
    if (got != -1 && got <= after + window)
      fail_msg("\"%s\" after %.1f: reference found none, got %.1f", expr, after, got);
    return;
  }
  if (got != expected) {
    char a[64], e[64], g[64];
    format_utc(after, a, sizeof a);
    format_utc(expected, e, sizeof e);
    format_utc(got, g, sizeof g);
    fail_msg("\"%s\" (%s) after %s (%.1f): reference %s, got %s", expr, utc_mode ? "utc" : "local", a, after, e, g);
  }
}

/* Deterministic pseudo-random numbers, so failures reproduce. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint32_t rng(void) {
  rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
  return (uint32_t)(rng_state >> 33);
}

/* ------------------------------------------------------------------------------------------ */
/* Parsing: accepted syntax                                                                    */
/* ------------------------------------------------------------------------------------------ */

static void test_parse_all_stars(void **state) {
  (void)state;
  dc_cron c = parse_ok("* * * * *");
  assert_true(c.minute == 0x0FFFFFFFFFFFFFFFu);
  assert_int_equal(c.hour, 0xFFFFFF);
  assert_int_equal(c.dom, 0xFFFFFFFEu);
  assert_int_equal(c.month, 0x1FFE);
  assert_int_equal(c.dow, 0x7F);
  assert_false(c.dom_restricted);
  assert_false(c.dow_restricted);
}

static void test_parse_numbers_lists_ranges(void **state) {
  (void)state;
  dc_cron c = parse_ok("0,30 9-17 1,15,31 1-3,12 1-5");
  assert_true(c.minute == ((1u << 0) | ((uint64_t)1 << 30)));
  assert_int_equal(c.hour, 0x3FE00); /* 9..17 */
  assert_int_equal(c.dom, (1u << 1) | (1u << 15) | (1u << 31));
  assert_int_equal(c.month, (1 << 1) | (1 << 2) | (1 << 3) | (1 << 12));
  assert_int_equal(c.dow, 0x3E);
  assert_true(c.dom_restricted);
  assert_true(c.dow_restricted);
  c = parse_ok("59 23 31 12 6");
  assert_true(c.minute == (uint64_t)1 << 59);
  assert_int_equal(c.hour, 1u << 23);
  c = parse_ok("7-7 0-0 1-31 1-12 0-6");
  assert_true(c.minute == 1u << 7);
  assert_int_equal(c.dom, 0xFFFFFFFEu);
}

static void test_parse_steps(void **state) {
  (void)state;
  dc_cron c = parse_ok("*/15 */6 */10 */3 */2");
  assert_true(c.minute == ((1u << 0) | (1u << 15) | ((uint64_t)1 << 30) | ((uint64_t)1 << 45)));
  assert_int_equal(c.hour, (1 << 0) | (1 << 6) | (1 << 12) | (1 << 18));
  assert_int_equal(c.dom, (1u << 1) | (1u << 11) | (1u << 21) | (1u << 31));
  assert_int_equal(c.month, (1 << 1) | (1 << 4) | (1 << 7) | (1 << 10));
  assert_int_equal(c.dow, (1 << 0) | (1 << 2) | (1 << 4) | (1 << 6));
  c = parse_ok("10-40/10 5/15 2-10/4 * *");
  assert_true(c.minute == (((uint64_t)1 << 10) | ((uint64_t)1 << 20) | ((uint64_t)1 << 30) | ((uint64_t)1 << 40)));
  assert_int_equal(c.hour, (1 << 5) | (1 << 20)); /* 5/15 = 5-23/15 */
  assert_int_equal(c.dom, (1u << 2) | (1u << 6) | (1u << 10));
  c = parse_ok("5/15 * * * *"); /* Vixie: 5-59/15 */
  assert_true(c.minute == (((uint64_t)1 << 5) | ((uint64_t)1 << 20) | ((uint64_t)1 << 35) | ((uint64_t)1 << 50)));
  c = parse_ok("*/60 */24 * * *"); /* a step as wide as the field is allowed: only the first value */
  assert_true(c.minute == 1u);
  assert_int_equal(c.hour, 1);
  c = parse_ok("0,*/20,7 * * * *");
  assert_true(c.minute == ((1u << 0) | (1u << 7) | (1u << 20) | ((uint64_t)1 << 40)));
}

static void test_parse_names(void **state) {
  (void)state;
  dc_cron c = parse_ok("0 0 * jan-mar mon-fri");
  assert_int_equal(c.month, 0xE);
  assert_int_equal(c.dow, 0x3E);
  c = parse_ok("0 0 * JAN,Dec,jUn SUN,sat");
  assert_int_equal(c.month, (1 << 1) | (1 << 6) | (1 << 12));
  assert_int_equal(c.dow, (1 << 0) | (1 << 6));
  c = parse_ok("0 0 * feb-11/3 mon-sat/2");
  assert_int_equal(c.month, (1 << 2) | (1 << 5) | (1 << 8) | (1 << 11));
  assert_int_equal(c.dow, (1 << 1) | (1 << 3) | (1 << 5));
  c = parse_ok("0 0 * * 1-fri");
  assert_int_equal(c.dow, 0x3E);
}

static void test_parse_sunday_as_seven(void **state) {
  (void)state;
  assert_int_equal(parse_ok("0 0 * * 7").dow, 1);
  assert_int_equal(parse_ok("0 0 * * 5-7").dow, (1 << 5) | (1 << 6) | (1 << 0));
  assert_int_equal(parse_ok("0 0 * * 0-7").dow, 0x7F);
  assert_int_equal(parse_ok("0 0 * * fri-7").dow, (1 << 5) | (1 << 6) | (1 << 0));
  assert_int_equal(parse_ok("0 0 * * 1/2").dow, (1 << 1) | (1 << 3) | (1 << 5) | (1 << 0)); /* 1-7/2 */
}

static void test_parse_question_mark_and_restriction(void **state) {
  (void)state;
  dc_cron c = parse_ok("0 0 ? * 1");
  assert_false(c.dom_restricted);
  assert_true(c.dow_restricted);
  assert_int_equal(c.dom, 0xFFFFFFFEu);
  c = parse_ok("0 0 1 * ?");
  assert_true(c.dom_restricted);
  assert_false(c.dow_restricted);
  assert_int_equal(c.dow, 0x7F);
  /* Like Vixie cron, a field starting with '*' is unrestricted even with a step. */
  c = parse_ok("0 0 */2 * 1-5");
  assert_false(c.dom_restricted);
  assert_true(c.dow_restricted);
  c = parse_ok("0 0 1-31 * 0-7");
  assert_true(c.dom_restricted);
  assert_true(c.dow_restricted);
}

static void test_parse_macros(void **state) {
  (void)state;
  static const struct {
    const char *macro, *expansion;
  } cases[] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"},     {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},        {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"}, {"  @DAILY \t\n", "0 0 * * *"}, {"@Hourly", "0 * * * *"},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    dc_cron a = parse_ok(cases[i].macro);
    dc_cron b = parse_ok(cases[i].expansion);
    assert_true(a.minute == b.minute);
    assert_int_equal(a.hour, b.hour);
    assert_int_equal(a.dom, b.dom);
    assert_int_equal(a.month, b.month);
    assert_int_equal(a.dow, b.dow);
    assert_int_equal(a.dom_restricted, b.dom_restricted);
    assert_int_equal(a.dow_restricted, b.dow_restricted);
  }
  assert_rejected("@reboot", "unknown macro", "\"@reboot\"");
  assert_rejected("@", "unknown macro", NULL);
  assert_rejected("@daily 5", "unexpected text after @daily", NULL);
  assert_rejected("@dailyx", "unknown macro", "@dailyx");
  assert_rejected("0 @daily * * *", "hour field", "\"@daily\"");
}

static void test_parse_whitespace(void **state) {
  (void)state;
  dc_cron c = parse_ok("\t 5\t\t4  *   * \t*  \n");
  assert_true(c.minute == 1u << 5);
  assert_int_equal(c.hour, 1 << 4);
  c = parse_ok("0 0 * * *\r\n");
  assert_int_equal(c.hour, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Parsing: rejections                                                                         */
/* ------------------------------------------------------------------------------------------ */

static void test_reject_exact_messages(void **state) {
  (void)state;
  dc_cron c;
  char err[256];
  assert_int_equal(dc_cron_parse("61 * * * *", &c, err, sizeof err), -1);
  assert_string_equal(err, "cron: minute field: value 61 out of range 0-59 in \"61\"");
  assert_int_equal(dc_cron_parse("* * * *", &c, err, sizeof err), -1);
  assert_string_equal(err, "cron: expected 5 fields (minute hour day-of-month month day-of-week), got 4");
  assert_int_equal(dc_cron_parse("0 0 5-1 * *", &c, err, sizeof err), -1);
  assert_string_equal(err, "cron: day-of-month field: reversed range 5-1 in \"5-1\"");
}

static void test_reject_field_count(void **state) {
  (void)state;
  assert_rejected("", "expected 5 fields", "got 0");
  assert_rejected(" \t\n", "expected 5 fields", "got 0");
  assert_rejected("*", "got 1", NULL);
  assert_rejected("* * * * * *", "got 6", NULL);
  assert_rejected("* * * * * extra junk", "got 7", NULL);
  assert_rejected("*,* * * * *,", "day-of-week field", "empty item");
}

static void test_reject_out_of_range(void **state) {
  (void)state;
  assert_rejected("60 * * * *", "minute field", "value 60 out of range 0-59");
  assert_rejected("* 24 * * *", "hour field", "value 24 out of range 0-23");
  assert_rejected("* * 0 * *", "day-of-month field", "value 0 out of range 1-31");
  assert_rejected("* * 32 * *", "day-of-month field", "\"32\"");
  assert_rejected("* * * 0 *", "month field", "value 0 out of range 1-12");
  assert_rejected("* * * 13 *", "month field", "value 13");
  assert_rejected("* * * * 8", "day-of-week field", "value 8 out of range 0-7");
  assert_rejected("1-60 * * * *", "minute field", "value 60");
  assert_rejected("* 1,2,99 * * *", "hour field", "\"1,2,99\"");
}

static void test_reject_reversed_ranges(void **state) {
  (void)state;
  assert_rejected("5-1 * * * *", "minute field", "reversed range 5-1");
  assert_rejected("* 23-0 * * *", "hour field", "reversed range 23-0");
  assert_rejected("* * * dec-jan *", "month field", "reversed range 12-1");
  assert_rejected("* * * * fri-mon", "day-of-week field", "\"fri-mon\"");
  assert_rejected("* * * * 7-1", "day-of-week field", "reversed");
}

static void test_reject_bad_steps(void **state) {
  (void)state;
  assert_rejected("*/0 * * * *", "minute field", "step 0 out of range 1-60");
  assert_rejected("* */25 * * *", "hour field", "step 25 out of range 1-24");
  assert_rejected("1-10/0 * * * *", "step 0", NULL);
  assert_rejected("*/ * * * *", "minute field", "missing step after \"/\"");
  assert_rejected("*/,5 * * * *", "missing step", NULL);
  assert_rejected("*/a * * * *", "step must be a number", "\"a\"");
  assert_rejected("*/-1 * * * *", "step must be a number", NULL);
  assert_rejected("1/2/3 * * * *", "unexpected \"/3\"", NULL);
}

static void test_reject_garbage(void **state) {
  (void)state;
  assert_rejected("1- * * * *", "minute field", "missing value after \"-\"");
  assert_rejected("1-,2 * * * *", "missing value after \"-\"", NULL);
  assert_rejected("a * * * *", "minute field", "\"a\"");
  assert_rejected("* * * * monday", "day-of-week field", "unknown name \"monday\"");
  assert_rejected("* * * foo *", "month field", "unknown name \"foo\"");
  assert_rejected("* * * * jan", "unknown name \"jan\"", NULL);
  assert_rejected("1,,2 * * * *", "minute field", "empty item");
  assert_rejected("1, * * * *", "empty item", "\"1,\"");
  assert_rejected(",1 * * * *", "empty item", NULL);
  assert_rejected("*5 * * * *", "unexpected \"5\"", NULL);
  assert_rejected("** * * * *", "unexpected \"*\"", NULL);
  assert_rejected("1-2-3 * * * *", "unexpected \"-3\"", NULL);
  assert_rejected("1x * * * *", "unexpected \"x\"", NULL);
  assert_rejected("1.5 * * * *", "unexpected \".5\"", NULL);
  assert_rejected("-1 * * * *", "unexpected \"-1\"", NULL);
  assert_rejected("? * * * *", "minute field", "unexpected \"?\"");
  assert_rejected("* * * ? *", "month field", "\"?\"");
  assert_rejected("* * * * 1#2", "day-of-week field", "\"#2\"");
  assert_rejected("* * L * *", "day-of-month field", "names are not allowed");
  assert_rejected("\xff * * * *", "minute field", NULL);
}

static void test_reject_overflow(void **state) {
  (void)state;
  assert_rejected("99999999999999999999 * * * *", "minute field", "too large");
  assert_rejected("4294967297 * * * *", "too large", NULL);
  assert_rejected("*/18446744073709551617 * * * *", "too large", NULL);
  assert_rejected("1-99999999999999999999 * * * *", "too large", NULL);
  assert_rejected("* * * * 000000000000000000000", "day-of-week field", "too large");
  assert_rejected("999999999 * * * *", "value 999999999 out of range", NULL);
}

static void test_reject_null_and_small_buffers(void **state) {
  (void)state;
  dc_cron c;
  char err[8];
  char big[256];
  assert_int_equal(dc_cron_parse(NULL, &c, big, sizeof big), -1);
  assert_non_null(strstr(big, "cron:"));
  assert_int_equal(dc_cron_parse("* * * * *", NULL, big, sizeof big), -1);
  assert_int_equal(dc_cron_parse("61 * * * *", &c, NULL, 0), -1);
  assert_int_equal(dc_cron_parse("61 * * * *", &c, err, sizeof err), -1);
  assert_int_equal(strlen(err), sizeof err - 1); /* truncated, still terminated */
  assert_int_equal(dc_cron_parse("61 * * * *", &c, err, 1), -1);
  assert_int_equal(err[0], '\0');
  assert_int_equal(dc_cron_parse("* * * * *", &c, err, sizeof err), 0);
  assert_int_equal(err[0], '\0');
}

/* ------------------------------------------------------------------------------------------ */
/* Next fire time in UTC                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void test_next_every_minute_and_fractions(void **state) {
  (void)state;
  double t = 1712918671.706882; /* 2024-04-12 10:44:31.706882 UTC */
  assert_true(utc(2024, 4, 12, 10, 44) + 31 == 1712918671.0);
  assert_next_utc("* * * * *", t, utc(2024, 4, 12, 10, 45));
  assert_next_utc("* * * * *", utc(2024, 4, 12, 10, 45), utc(2024, 4, 12, 10, 46));
  assert_next_utc("* * * * *", utc(2024, 4, 12, 10, 45) - 0.001, utc(2024, 4, 12, 10, 45));
  assert_next_utc("* * * * *", utc(2024, 4, 12, 10, 45) + 0.001, utc(2024, 4, 12, 10, 46));
  assert_next_utc("* * * * *", -0.5, 0);
  assert_next_utc("* * * * *", -60, 0);
  assert_next_utc("* * * * *", -61, -60);
}

static void test_next_exact_match_returns_following(void **state) {
  (void)state;
  assert_next_utc("30 10 * * *", utc(2024, 4, 12, 10, 30), utc(2024, 4, 13, 10, 30));
  assert_next_utc("30 10 * * *", utc(2024, 4, 12, 10, 29) + 59.999, utc(2024, 4, 12, 10, 30));
  assert_next_utc("0 0 1 1 *", utc(2024, 1, 1, 0, 0), utc(2025, 1, 1, 0, 0));
  assert_next_utc("*/5 * * * *", utc(2024, 4, 12, 10, 45), utc(2024, 4, 12, 10, 50));
  assert_next_utc("*/5 * * * *", utc(2024, 4, 12, 10, 44), utc(2024, 4, 12, 10, 45));
}

static void test_next_month_ends(void **state) {
  (void)state;
  assert_next_utc("0 0 31 * *", utc(2024, 4, 1, 0, 0), utc(2024, 5, 31, 0, 0));
  assert_next_utc("0 12 30 * *", utc(2024, 1, 31, 0, 0), utc(2024, 3, 30, 12, 0)); /* no Feb 30 */
  assert_next_utc("0 0 31 * *", utc(2024, 7, 31, 0, 0), utc(2024, 8, 31, 0, 0));
  assert_next_utc("0 0 31 * *", utc(2024, 8, 31, 0, 0), utc(2024, 10, 31, 0, 0));
  assert_next_utc("59 23 30 4 *", utc(2024, 4, 30, 23, 58), utc(2024, 4, 30, 23, 59));
  assert_next_utc("0 0 1 * *", utc(2024, 2, 29, 23, 59) + 30, utc(2024, 3, 1, 0, 0));
  assert_next_utc("0 0 28-31 2 *", utc(2023, 2, 28, 0, 0), utc(2024, 2, 28, 0, 0));
}

static void test_next_leap_years(void **state) {
  (void)state;
  assert_next_utc("0 0 29 2 *", utc(2023, 1, 1, 0, 0), utc(2024, 2, 29, 0, 0));
  assert_next_utc("0 0 29 2 *", utc(2024, 2, 29, 0, 0), utc(2028, 2, 29, 0, 0));
  assert_next_utc("0 0 29 2 *", utc(2024, 3, 1, 0, 0), utc(2028, 2, 29, 0, 0));
  assert_next_utc("0 0 29 2 *", utc(1999, 3, 1, 0, 0), utc(2000, 2, 29, 0, 0)); /* 2000 is leap */
  assert_next_utc("0 0 29 2 *", utc(2096, 3, 1, 0, 0), utc(2104, 2, 29, 0, 0)); /* 2100 is not */
  assert_next_utc("30 6 * 2 *", utc(2024, 2, 28, 7, 0), utc(2024, 2, 29, 6, 30));
  assert_next_utc("30 6 * 2 *", utc(2023, 2, 28, 7, 0), utc(2024, 2, 1, 6, 30));
}

static void test_next_vixie_or_rule(void **state) {
  (void)state;
  /* Both restricted: the 13th OR any Friday. 2024-09-01 is a Sunday. */
  static const double chain[] = {1725580800 /* 2024-09-06 Fri */, 1726185600 /* 09-13 Fri 13th */,
                                 1726790400 /* 09-20 Fri */, 1727395200 /* 09-27 Fri */};
  assert_true(chain[0] == utc(2024, 9, 6, 0, 0));
  assert_chain("0 0 13 * 5", utc(2024, 9, 1, 0, 0), true, chain, 4);
  assert_next_utc("0 0 13 * 5", utc(2024, 9, 27, 0, 0), utc(2024, 10, 4, 0, 0));
  assert_next_utc("0 0 13 * 5", utc(2024, 10, 11, 0, 0), utc(2024, 10, 13, 0, 0)); /* Sunday the 13th */
  /* Day-of-week unrestricted: only the day of month counts. */
  assert_next_utc("0 0 13 * *", utc(2024, 9, 1, 0, 0), utc(2024, 9, 13, 0, 0));
  assert_next_utc("0 0 13 * ?", utc(2024, 9, 1, 0, 0), utc(2024, 9, 13, 0, 0));
  /* Day-of-month unrestricted: only the weekday counts. */
  assert_next_utc("0 0 * * 1", utc(2024, 9, 1, 0, 0), utc(2024, 9, 2, 0, 0));
  /* A stepped star is unrestricted (Vixie): odd days AND Mondays. Sep 2: even, Sep 9: odd. */
  assert_next_utc("0 0 */2 * 1", utc(2024, 9, 1, 0, 0), utc(2024, 9, 9, 0, 0));
  /* Impossible day of month but a weekday: fires on the weekday. */
  assert_next_utc("0 0 31 2 mon", utc(2024, 1, 1, 0, 0), utc(2024, 2, 5, 0, 0));
}

static void test_next_macros(void **state) {
  (void)state;
  double after = utc(2024, 4, 12, 10, 44) + 31; /* Friday */
  assert_next_utc("@yearly", after, utc(2025, 1, 1, 0, 0));
  assert_next_utc("@annually", after, utc(2025, 1, 1, 0, 0));
  assert_next_utc("@monthly", after, utc(2024, 5, 1, 0, 0));
  assert_next_utc("@weekly", after, utc(2024, 4, 14, 0, 0));
  assert_next_utc("@daily", after, utc(2024, 4, 13, 0, 0));
  assert_next_utc("@midnight", after, utc(2024, 4, 13, 0, 0));
  assert_next_utc("@hourly", after, utc(2024, 4, 12, 11, 0));
}

static void test_next_year_rollover(void **state) {
  (void)state;
  assert_next_utc("59 23 31 12 *", utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59));
  assert_next_utc("0 0 1 1 *", utc(2024, 12, 31, 23, 59) + 30, utc(2025, 1, 1, 0, 0));
  assert_next_utc("* * * * *", utc(2024, 12, 31, 23, 59), utc(2025, 1, 1, 0, 0));
  assert_next_utc("0 9 * jan mon", utc(2024, 12, 20, 0, 0), utc(2025, 1, 6, 9, 0));
  assert_next_utc("15 3 * 6 *", utc(2024, 6, 30, 3, 15), utc(2025, 6, 1, 3, 15));
}

static void test_next_ranges_steps_names(void **state) {
  (void)state;
  /* Friday 17:50 -> Monday 09:00. */
  assert_next_utc("*/15 9-17 * * mon-fri", utc(2024, 4, 12, 17, 50), utc(2024, 4, 15, 9, 0));
  assert_next_utc("*/15 9-17 * * mon-fri", utc(2024, 4, 12, 17, 44), utc(2024, 4, 12, 17, 45));
  assert_next_utc("10-40/10 * * * *", utc(2024, 4, 12, 10, 41), utc(2024, 4, 12, 11, 10));
  assert_next_utc("5/15 * * * *", utc(2024, 4, 12, 10, 51), utc(2024, 4, 12, 11, 5));
  assert_next_utc("0 0 * * 7", utc(2024, 4, 12, 0, 0), utc(2024, 4, 14, 0, 0));
  assert_next_utc("0 12 1 jan,jul *", utc(2024, 4, 12, 0, 0), utc(2024, 7, 1, 12, 0));
  assert_next_utc("0 0 1 */4 *", utc(2024, 4, 12, 0, 0), utc(2024, 5, 1, 0, 0));
  assert_next_utc("0 0,12 * * *", utc(2024, 4, 12, 0, 0), utc(2024, 4, 12, 12, 0));
}

static void test_next_impossible_dates(void **state) {
  (void)state;
  dc_cron c = parse_ok("0 0 31 2 *");
  assert_true(dc_cron_next(&c, utc(2024, 1, 1, 0, 0), true) == -1);
  assert_true(dc_cron_next(&c, utc(2024, 1, 1, 0, 0), false) == -1);
  c = parse_ok("0 0 30 2 *");
  assert_true(dc_cron_next(&c, utc(2024, 1, 1, 0, 0), true) == -1);
  c = parse_ok("0 0 31 4,6,9,11 *");
  assert_true(dc_cron_next(&c, utc(2024, 1, 1, 0, 0), true) == -1);
}

static void test_next_invalid_arguments(void **state) {
  (void)state;
  dc_cron c = parse_ok("* * * * *");
  assert_true(dc_cron_next(NULL, 0, true) == -1);
  assert_true(dc_cron_next(&c, NAN, true) == -1);
  assert_true(dc_cron_next(&c, INFINITY, true) == -1);
  assert_true(dc_cron_next(&c, -INFINITY, false) == -1);
  assert_true(dc_cron_next(&c, 1e300, true) == -1);
  assert_true(dc_cron_next(&c, -1e300, false) == -1);
  /* A hand-made cron with no allowed months never fires, and does not loop forever. */
  c.month = 0;
  assert_true(dc_cron_next(&c, 0, true) == -1);
  assert_true(dc_cron_next(&c, 0, false) == -1);
  /* Bits outside the fields' ranges are ignored. */
  c.minute = UINT64_MAX;
  c.hour = UINT32_MAX;
  c.dom = UINT32_MAX;
  c.month = UINT16_MAX;
  c.dow = UINT8_MAX;
  c.dom_restricted = c.dow_restricted = true;
  assert_true(dc_cron_next(&c, 0, true) == 60);
}

static void test_next_against_reference_utc(void **state) {
  (void)state;
  static const char *const exprs[] = {
      "* * * * *",        "*/7 * * * *",     "0 */3 * * *",      "30 4 1,15 * *", "0 0 * * 1-5",
      "15 10 13 * 5",     "0 12 * * sun",    "*/20 8-9 */2 * *", "0 0 31 * 3",    "5/15 1-2 * * 0,6",
      "0 0 29,30,31 * *", "45 23 28-31 * *", "0 6 1 1,3,5 *",    "59 23 * * 7",   "0 0 1-7 * 1",
  };
  size_t i;
  int k;
  for (i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
    for (k = 0; k < 30; k++) {
      /* Times spread over 2023-2025, with and without fractions and exact minutes. */
      double after = utc(2023, 1, 1, 0, 0) + (double)(rng() % (3u * 365u * 1440u)) * 60.0;
      if (k % 3 == 1) after += (double)(rng() % 60000u) / 1000.0;
      assert_matches_reference(exprs[i], after, true, 40 * DAY);
    }
  }
}

static void test_next_is_fast(void **state) {
  (void)state;
  /* The impossible case walks the whole 8-year window; it must not step minute by minute. */
  dc_cron impossible = parse_ok("* * 31 2 *");
  dc_cron sparse = parse_ok("59 23 29 2 *");
  clock_t start = clock();
  int i;
  for (i = 0; i < 2000; i++) {
    assert_true(dc_cron_next(&impossible, utc(2024, 1, 1, 0, 0) + i, true) == -1);
    assert_true(dc_cron_next(&sparse, utc(2024, 3, 1, 0, 0) + i, true) == utc(2028, 2, 29, 23, 59));
  }
  assert_true((double)(clock() - start) / CLOCKS_PER_SEC < 2.0);
}

/* ------------------------------------------------------------------------------------------ */
/* Next fire time in local time (Europe/Madrid: CET +1, CEST +2)                               */
/* ------------------------------------------------------------------------------------------ */

static int setup_madrid(void **state) {
  (void)state;
  use_tz("Europe/Madrid");
  return 0;
}

static int teardown_tz(void **state) {
  (void)state;
  use_tz("UTC");
  return 0;
}

static void test_local_basic(void **state) {
  (void)state;
  /* 2024-04-12 12:44:31 CEST = 10:44:31 UTC. */
  assert_next("0 13 * * *", utc(2024, 4, 12, 10, 44) + 31, false, utc(2024, 4, 12, 11, 0));
  assert_next("0 0 * * *", utc(2024, 1, 15, 12, 0), false, utc(2024, 1, 15, 23, 0));
  assert_next("0 0 1 1 *", utc(2024, 6, 1, 0, 0), false, utc(2024, 12, 31, 23, 0));
  /* utc=true ignores TZ. */
  assert_next("0 0 * * *", utc(2024, 1, 15, 12, 0), true, utc(2024, 1, 16, 0, 0));
}

static void test_local_spring_forward_skips_nonexistent(void **state) {
  (void)state;
  /* 2024-03-31 02:00 CET -> 03:00 CEST: 02:30 does not exist that day. */
  assert_next("30 2 * * *", utc(2024, 3, 30, 0, 0), false, utc(2024, 3, 30, 1, 30)); /* 02:30 CET */
  assert_next("30 2 * * *", utc(2024, 3, 30, 1, 30), false, utc(2024, 4, 1, 0, 30)); /* 02:30 CEST, Apr 1 */
  assert_next("30 2 * * *", utc(2024, 3, 31, 0, 59), false, utc(2024, 4, 1, 0, 30));
  assert_next("* 2 * * *", utc(2024, 3, 30, 23, 0), false, utc(2024, 4, 1, 0, 0));
  assert_next("30 2 31 3 *", utc(2024, 1, 1, 0, 0), false, utc(2025, 3, 31, 0, 30)); /* 2025-03-31 is a Monday */
}

static void test_local_spring_forward_three_oclock(void **state) {
  (void)state;
  static const double chain[] = {1711764000 /* 03-30 02:00Z = 03:00 CET */, 1711846800 /* 03-31 01:00Z = 03:00 CEST */,
                                 1711933200 /* 04-01 01:00Z */};
  assert_true(chain[0] == utc(2024, 3, 30, 2, 0));
  assert_true(chain[1] == utc(2024, 3, 31, 1, 0));
  assert_true(chain[2] == utc(2024, 4, 1, 1, 0));
  assert_chain("0 3 * * *", utc(2024, 3, 29, 12, 0), false, chain, 3);
  /* Every half hour: 01:30 CET is followed by 03:00 CEST, 30 real minutes later. */
  {
    const double half_hours[] = {utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1, 0), utc(2024, 3, 31, 1, 30)};
    assert_chain("*/30 * * * *", utc(2024, 3, 31, 0, 15), false, half_hours, 3);
  }
}

static void test_local_fall_back_fixed_time_fires_once(void **state) {
  (void)state;
  /* 2024-10-27 03:00 CEST -> 02:00 CET: 02:30 happens twice; a fixed-hour job fires once. */
  assert_next("30 2 * * *", utc(2024, 10, 26, 12, 0), false, utc(2024, 10, 27, 0, 30));
  assert_next("30 2 * * *", utc(2024, 10, 27, 0, 30), false, utc(2024, 10, 28, 1, 30));
  assert_next("30 2 * * *", utc(2024, 10, 27, 1, 0), false, utc(2024, 10, 28, 1, 30));
  assert_next("0 2 * * *", utc(2024, 10, 26, 12, 0), false, utc(2024, 10, 27, 0, 0));
  assert_next("0 3 * * *", utc(2024, 10, 27, 0, 0), false, utc(2024, 10, 27, 2, 0)); /* 03:00 CET */
}

static void test_local_fall_back_hourly_keeps_rhythm(void **state) {
  (void)state;
  static const double half_hours[] = {1729989000 /* 00:30Z 02:30 CEST */, 1729990800 /* 01:00Z 02:00 CET */,
                                      1729992600 /* 01:30Z 02:30 CET */, 1729994400 /* 02:00Z 03:00 CET */};
  static const double hours[] = {1729987200 /* 00:00Z 02:00 CEST */, 1729990800 /* 01:00Z 02:00 CET */,
                                 1729994400 /* 02:00Z 03:00 CET */};
  assert_true(half_hours[0] == utc(2024, 10, 27, 0, 30));
  assert_true(hours[0] == utc(2024, 10, 27, 0, 0));
  assert_chain("*/30 * * * *", utc(2024, 10, 27, 0, 0), false, half_hours, 4);
  assert_chain("0 * * * *", utc(2024, 10, 26, 23, 30), false, hours, 3);
  /* Every minute: 02:59 CEST is followed by 02:00 CET one real minute later. */
  assert_next("* * * * *", utc(2024, 10, 27, 0, 59), false, utc(2024, 10, 27, 1, 0));
  assert_next("* * * * *", utc(2024, 10, 27, 0, 58) + 30, false, utc(2024, 10, 27, 0, 59));
}

static void test_local_against_reference_around_dst(void **state) {
  (void)state;
  static const char *const exprs[] = {"* * * * *",      "*/7 * * * *", "30 2 * * *", "0 3 * * *",
                                      "*/10 2 * * *",   "0 1-4 * * *", "59 * * * *", "0 0 * * *",
                                      "15 2,3 * * sun", "0 */2 * * *", "45 1 * * *"};
  /* Transition days: Madrid (1h), New York (1h, local 02:00), Lord Howe (30 min). */
  static const struct {
    const char *zone;
    int year, month, day;
  } days[] = {{"Europe/Madrid", 2024, 3, 31},      {"Europe/Madrid", 2024, 10, 27},
              {"Europe/Madrid", 2023, 3, 26},      {"Europe/Madrid", 2023, 10, 29},
              {"America/New_York", 2024, 3, 10},   {"America/New_York", 2024, 11, 3},
              {"Australia/Lord_Howe", 2024, 4, 6}, {"Australia/Lord_Howe", 2024, 10, 5}};
  size_t i, d;
  int step;
  for (d = 0; d < sizeof days / sizeof days[0]; d++) {
    /* Start well before the local transition (which is at most a day away from 00:00 UTC). */
    double start = utc(days[d].year, days[d].month, days[d].day, 0, 0) - 6 * HOUR;
    use_tz(days[d].zone);
    for (i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
      for (step = 0; step < 30 * 60; step += 13) { /* every 13 minutes across 30 hours */
        double after = start + step * MINUTE + ((step % 3 == 0) ? 0 : 12.5);
        assert_matches_reference(exprs[i], after, false, 3 * DAY);
      }
    }
  }
}

static void test_local_other_zones(void **state) {
  (void)state;
  use_tz("Asia/Kolkata"); /* +05:30, no DST */
  assert_next("0 0 * * *", utc(2024, 4, 12, 0, 0), false, utc(2024, 4, 12, 18, 30));
  assert_next("*/45 * * * *", utc(2024, 4, 12, 18, 31), false, utc(2024, 4, 12, 19, 15)); /* 00:45 IST */
  use_tz("America/New_York"); /* 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST */
  assert_next("30 2 * * *", utc(2024, 3, 9, 12, 0), false, utc(2024, 3, 11, 6, 30));
  assert_next("30 1 * * *", utc(2024, 11, 2, 12, 0), false, utc(2024, 11, 3, 5, 30)); /* first 01:30 (EDT) */
  assert_next("30 1 * * *", utc(2024, 11, 3, 5, 30), false, utc(2024, 11, 4, 6, 30));
  use_tz("Europe/Madrid");
}

/* ------------------------------------------------------------------------------------------ */
/* Robustness                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void test_fuzz_parse_and_next(void **state) {
  (void)state;
  static const char alphabet[] = "0123456789*/-,? \t@abcdefjlmnorstuvwyADFJMNOSTW#L\x01\xff";
  int round;
  for (round = 0; round < 20000; round++) {
    char expr[48];
    char err[96];
    dc_cron c;
    size_t len = rng() % (sizeof expr), i;
    for (i = 0; i < len; i++) expr[i] = alphabet[rng() % (sizeof alphabet - 1)];
    expr[len] = '\0';
    memset(err, 'x', sizeof err);
    if (dc_cron_parse(expr, &c, err, sizeof err) == 0) {
      double after = -3e9 + (double)(rng() % 100000u) * 1e5;
      double next = dc_cron_next(&c, after, round % 2 == 0);
      assert_true(next == -1 || next > after);
    } else {
      assert_non_null(memchr(err, '\0', sizeof err));
      assert_true(strncmp(err, "cron: ", 6) == 0);
    }
  }
}

static void test_fuzz_valid_expressions(void **state) {
  (void)state;
  int round;
  for (round = 0; round < 300; round++) {
    char expr[128];
    dc_cron c;
    /* Random but valid fields: value, range or step in each. */
    snprintf(expr, sizeof expr, "%u-%u/%u %u,%u %u */%u", rng() % 30, 30 + rng() % 30, 1 + rng() % 20, rng() % 24,
             rng() % 24, 1 + rng() % 31, 1 + rng() % 12);
    strcat(expr, (rng() % 2) ? " *" : " 1-5");
    c = parse_ok(expr);
    {
      double after = utc(2024, 1, 1, 0, 0) + (double)(rng() % 1000u) * DAY / 3;
      double next = dc_cron_next(&c, after, true);
      if (next != -1) {
        time_t s = (time_t)next;
        struct tm tm;
        gmtime_r(&s, &tm);
        assert_true(next > after);
        assert_true(fields_match(&c, &tm));
        assert_true((long long)next % 60 == 0);
      }
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_all_stars),
      cmocka_unit_test(test_parse_numbers_lists_ranges),
      cmocka_unit_test(test_parse_steps),
      cmocka_unit_test(test_parse_names),
      cmocka_unit_test(test_parse_sunday_as_seven),
      cmocka_unit_test(test_parse_question_mark_and_restriction),
      cmocka_unit_test(test_parse_macros),
      cmocka_unit_test(test_parse_whitespace),
      cmocka_unit_test(test_reject_exact_messages),
      cmocka_unit_test(test_reject_field_count),
      cmocka_unit_test(test_reject_out_of_range),
      cmocka_unit_test(test_reject_reversed_ranges),
      cmocka_unit_test(test_reject_bad_steps),
      cmocka_unit_test(test_reject_garbage),
      cmocka_unit_test(test_reject_overflow),
      cmocka_unit_test(test_reject_null_and_small_buffers),
      cmocka_unit_test(test_next_every_minute_and_fractions),
      cmocka_unit_test(test_next_exact_match_returns_following),
      cmocka_unit_test(test_next_month_ends),
      cmocka_unit_test(test_next_leap_years),
      cmocka_unit_test(test_next_vixie_or_rule),
      cmocka_unit_test(test_next_macros),
      cmocka_unit_test(test_next_year_rollover),
      cmocka_unit_test(test_next_ranges_steps_names),
      cmocka_unit_test(test_next_impossible_dates),
      cmocka_unit_test(test_next_invalid_arguments),
      cmocka_unit_test(test_next_against_reference_utc),
      cmocka_unit_test(test_next_is_fast),
      cmocka_unit_test_setup_teardown(test_local_basic, setup_madrid, teardown_tz),
      cmocka_unit_test_setup_teardown(test_local_spring_forward_skips_nonexistent, setup_madrid, teardown_tz),
      cmocka_unit_test_setup_teardown(test_local_spring_forward_three_oclock, setup_madrid, teardown_tz),
      cmocka_unit_test_setup_teardown(test_local_fall_back_fixed_time_fires_once, setup_madrid, teardown_tz),
      cmocka_unit_test_setup_teardown(test_local_fall_back_hourly_keeps_rhythm, setup_madrid, teardown_tz),
      cmocka_unit_test_setup_teardown(test_local_against_reference_around_dst, setup_madrid, teardown_tz),
      cmocka_unit_test_setup_teardown(test_local_other_zones, setup_madrid, teardown_tz),
      cmocka_unit_test_setup_teardown(test_fuzz_parse_and_next, setup_madrid, teardown_tz),
      cmocka_unit_test(test_fuzz_valid_expressions),
  };
  use_tz("UTC");
  return cmocka_run_group_tests(tests, NULL, NULL);
}
