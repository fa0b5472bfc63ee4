/* test_timefmt.c - unit tests for runtime/timefmt.c (cmocka). */
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

#include "timefmt.h"

#define T_SAMPLE 1712918671.706882 /* 2024-04-12 10:44:31.706882 UTC, a Friday */
#define T_SAMPLE_WHOLE 1712918671.0

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static double distance(double a, double b) { return a > b ? a - b : b - a; }

static void use_tz(const char *zone) {
  setenv("TZ", zone, 1);
  tzset();
}

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

static double utc(int year, int month, int day, int hour, int minute, int second) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return (double)timegm(&tm);
}

typedef int (*formatter)(double t, bool utc, char *buf, size_t n);

static void assert_formats(formatter f, double t, bool utc_mode, const char *expected) {
  char buf[128];
  int len = f(t, utc_mode, buf, sizeof buf);
  assert_string_equal(buf, expected);
  assert_int_equal(len, (int)strlen(expected));
}

static int format_iso_adapter(double t, bool utc_mode, char *buf, size_t n) {
  (void)utc_mode;
  return dc_time_format_iso(t, buf, n);
}

static int format_interval_adapter(double t, bool utc_mode, char *buf, size_t n) {
  (void)utc_mode;
  return dc_interval_format(t, buf, n);
}

/* Exactly len+1 bytes fit; len bytes do not (and leave an empty string). */
static void assert_exact_fit(formatter f, double t, bool utc_mode) {
  char full[128], small[128];
  int len = f(t, utc_mode, full, sizeof full);
  assert_true(len > 0);
  assert_int_equal(f(t, utc_mode, small, (size_t)len + 1), len);
  assert_string_equal(small, full);
  memset(small, 'x', sizeof small);
  assert_int_equal(f(t, utc_mode, small, (size_t)len), -1);
  assert_int_equal(small[0], '\0');
  assert_int_equal(f(t, utc_mode, small, 1), -1);
  assert_int_equal(f(t, utc_mode, NULL, 64), -1);
  assert_int_equal(f(t, utc_mode, small, 0), -1);
}

static double parse_ok(const char *text, bool utc_mode) {
  double t = -12345;
  char err[256];
  if (dc_time_parse(text, utc_mode, &t, err, sizeof err) != 0) fail_msg("parse of \"%s\" failed: %s", text, err);
  return t;
}

static void assert_parses(const char *text, bool utc_mode, double expected) {
  double got = parse_ok(text, utc_mode);
  if (distance(got, expected) > 1e-6) fail_msg("\"%s\": expected %.6f, got %.6f", text, expected, got);
}

static void assert_parse_fails(const char *text, const char *fragment, const char *fragment2) {
  double t = -12345;
  char err[256] = "untouched";
  if (dc_time_parse(text, true, &t, err, sizeof err) != -1) fail_msg("\"%s\" was accepted", text);
  assert_true(t == -12345);
  if (strstr(err, fragment) == NULL) fail_msg("error for \"%s\" lacks \"%s\": %s", text, fragment, err);
  if (fragment2 != NULL && strstr(err, fragment2) == NULL) {
    fail_msg("error for \"%s\" lacks \"%s\": %s", text, fragment2, err);
  }
}

static void assert_duration(const char *text, double expected) {
  double got = -1;
  char err[256];
  if (dc_duration_parse(text, &got, err, sizeof err) != 0) fail_msg("duration \"%s\" failed: %s", text, err);
  if (distance(got, expected) > 1e-9) fail_msg("duration \"%s\": expected %.9f, got %.9f", text, expected, got);
}

static void assert_duration_fails(const char *text, const char *fragment) {
  double got = -12345;
  char err[256] = "untouched";
  if (dc_duration_parse(text, &got, err, sizeof err) != -1) fail_msg("duration \"%s\" was accepted", text);
  assert_true(got == -12345);
  if (strstr(err, fragment) == NULL) fail_msg("error for \"%s\" lacks \"%s\": %s", text, fragment, err);
  if (strncmp(err, "invalid duration", 16) != 0) fail_msg("error for \"%s\" has no prefix: %s", text, err);
}

static uint64_t rng_state = 0x2545F4914F6CDD1Du;
static uint32_t rng(void) {
  rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
  return (uint32_t)(rng_state >> 33);
}

/* ------------------------------------------------------------------------------------------ */
/* Formatting                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void test_format_log(void **state) {
  (void)state;
  assert_formats(dc_time_format_log, T_SAMPLE, true, "12-Apr-24 10:44:31");
  assert_formats(dc_time_format_log, T_SAMPLE_WHOLE + 0.9999, true, "12-Apr-24 10:44:31"); /* truncated */
  assert_formats(dc_time_format_log, 0, true, "01-Jan-70 00:00:00");
  assert_formats(dc_time_format_log, utc(2009, 12, 5, 7, 8, 9), true, "05-Dec-09 07:08:09");
  assert_formats(dc_time_format_log, utc(2000, 9, 30, 23, 59, 59), true, "30-Sep-00 23:59:59");
  assert_exact_fit(dc_time_format_log, T_SAMPLE, true);
}

static void test_format_log_local(void **state) {
  (void)state;
  assert_formats(dc_time_format_log, T_SAMPLE, false, "12-Apr-24 12:44:31");
  assert_formats(dc_time_format_log, utc(2024, 1, 31, 23, 30, 0), false, "01-Feb-24 00:30:00");
}

static void test_format_next(void **state) {
  (void)state;
  assert_formats(dc_time_format_next, T_SAMPLE_WHOLE + 300, true, "2024-04-12 10:49:31 UTC");
  assert_formats(dc_time_format_next, 0, true, "1970-01-01 00:00:00 UTC");
  assert_exact_fit(dc_time_format_next, T_SAMPLE, true);
}

static void test_format_next_local(void **state) {
  (void)state;
  assert_formats(dc_time_format_next, T_SAMPLE_WHOLE + 300, false, "2024-04-12 12:49:31 CEST");
  assert_formats(dc_time_format_next, utc(2024, 1, 15, 9, 0, 0), false, "2024-01-15 10:00:00 CET");
  use_tz("America/New_York");
  assert_formats(dc_time_format_next, utc(2024, 1, 15, 9, 0, 0), false, "2024-01-15 04:00:00 EST");
}

static void test_format_precise(void **state) {
  (void)state;
  assert_formats(dc_time_format_precise, T_SAMPLE, true, "2024-04-12 10:44:31.706882+00:00");
  /* Like Python's str(datetime): no fraction when the microseconds are zero. */
  assert_formats(dc_time_format_precise, T_SAMPLE_WHOLE, true, "2024-04-12 10:44:31+00:00");
  assert_formats(dc_time_format_precise, T_SAMPLE_WHOLE + 0.5, true, "2024-04-12 10:44:31.500000+00:00");
  assert_formats(dc_time_format_precise, T_SAMPLE_WHOLE + 0.9999996, true, "2024-04-12 10:44:32+00:00");
  assert_formats(dc_time_format_precise, T_SAMPLE_WHOLE + 0.000001, true, "2024-04-12 10:44:31.000001+00:00");
  /* Negative times round the way Python's datetime.fromtimestamp does. */
  assert_formats(dc_time_format_precise, -0.5, true, "1969-12-31 23:59:59.500000+00:00");
  assert_formats(dc_time_format_precise, -1.0000005, true, "1969-12-31 23:59:58.999999+00:00");
  assert_exact_fit(dc_time_format_precise, T_SAMPLE, true);
}

static void test_format_precise_local(void **state) {
  (void)state;
  assert_formats(dc_time_format_precise, T_SAMPLE, false, "2024-04-12 12:44:31.706882+02:00");
  assert_formats(dc_time_format_precise, utc(2024, 1, 15, 9, 0, 0), false, "2024-01-15 10:00:00+01:00");
  use_tz("America/New_York");
  assert_formats(dc_time_format_precise, T_SAMPLE, false, "2024-04-12 06:44:31.706882-04:00");
  use_tz("Asia/Kolkata");
  assert_formats(dc_time_format_precise, T_SAMPLE, false, "2024-04-12 16:14:31.706882+05:30");
  use_tz("Africa/Monrovia"); /* -00:44:30 until 1972: Python shows the seconds too */
  assert_formats(dc_time_format_precise, utc(1960, 1, 1, 12, 0, 0), false, "1960-01-01 11:15:30-00:44:30");
}

static void test_format_iso(void **state) {
  (void)state;
  char buf[64];
  assert_int_equal(dc_time_format_iso(T_SAMPLE, buf, sizeof buf), 24);
  assert_string_equal(buf, "2024-04-12T10:44:31.706Z");
  assert_formats(format_iso_adapter, 0, true, "1970-01-01T00:00:00.000Z");
  assert_formats(format_iso_adapter, 0.9999, true, "1970-01-01T00:00:00.999Z"); /* truncated */
  assert_formats(format_iso_adapter, 0.9999996, true, "1970-01-01T00:00:01.000Z");
  assert_formats(format_iso_adapter, 1712918671.001, true, "2024-04-12T10:44:31.001Z");
  assert_formats(format_iso_adapter, -0.25, true, "1969-12-31T23:59:59.750Z");
  assert_exact_fit(format_iso_adapter, T_SAMPLE, true);
}

static void test_format_iso_ignores_tz(void **state) {
  (void)state;
  assert_formats(format_iso_adapter, T_SAMPLE, false, "2024-04-12T10:44:31.706Z");
}

static void test_format_utc(void **state) {
  (void)state;
  char buf[64];
  assert_int_equal(dc_time_format_utc(T_SAMPLE, 0, true, buf, sizeof buf), 20);
  assert_string_equal(buf, "2024-04-12T10:44:31Z");
  assert_int_equal(dc_time_format_utc(T_SAMPLE, 3, true, buf, sizeof buf), 24);
  assert_string_equal(buf, "2024-04-12T10:44:31.706Z");
  assert_int_equal(dc_time_format_utc(T_SAMPLE, 6, true, buf, sizeof buf), 27);
  assert_string_equal(buf, "2024-04-12T10:44:31.706882Z");
  assert_int_equal(dc_time_format_utc(T_SAMPLE, 0, false, buf, sizeof buf), 19);
  assert_string_equal(buf, "2024-04-12 10:44:31");
  assert_int_equal(dc_time_format_utc(0.9999, 0, true, buf, sizeof buf), 20); /* seconds truncated */
  assert_string_equal(buf, "1970-01-01T00:00:00Z");
  assert_int_equal(dc_time_format_utc(T_SAMPLE, 2, true, buf, sizeof buf), -1);
  assert_int_equal(dc_time_format_utc(NAN, 0, true, buf, sizeof buf), -1);
  assert_int_equal(dc_time_format_utc(T_SAMPLE, 0, true, buf, 20), -1);
}

static void test_format_rejects_unrepresentable(void **state) {
  (void)state;
  static const double bad[] = {NAN, INFINITY, -INFINITY, 1e300, -1e300, 253402300800.0, -62135596801.0};
  static const formatter formatters[] = {dc_time_format_log, dc_time_format_next, dc_time_format_precise,
                                         format_iso_adapter};
  size_t i, f;
  char buf[64];
  for (f = 0; f < sizeof formatters / sizeof formatters[0]; f++) {
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      assert_int_equal(formatters[f](bad[i], f % 2 == 0, buf, sizeof buf), -1);
      assert_int_equal(buf[0], '\0');
    }
  }
  /* The ends of Python's datetime range still work. */
  assert_formats(dc_time_format_precise, 253402300799.0, true, "9999-12-31 23:59:59+00:00");
  assert_formats(dc_time_format_precise, -62135596800.0, true, "0001-01-01 00:00:00+00:00");
}

static void test_interval_format(void **state) {
  (void)state;
  assert_formats(format_interval_adapter, 300, true, "0:05:00");
  assert_formats(format_interval_adapter, 1, true, "0:00:01");
  assert_formats(format_interval_adapter, 0, true, "0:00:00");
  assert_formats(format_interval_adapter, 86400, true, "1 day, 0:00:00");
  assert_formats(format_interval_adapter, 2 * 86400 + 3 * 3600 + 4 * 60 + 5, true, "2 days, 3:04:05");
  assert_formats(format_interval_adapter, 0.5, true, "0:00:00.500000");
  assert_formats(format_interval_adapter, 36000, true, "10:00:00");
  assert_formats(format_interval_adapter, 86399, true, "23:59:59");
  assert_formats(format_interval_adapter, 90061.000001, true, "1 day, 1:01:01.000001");
  /* Python rounds to microseconds half-even: 1.0000005 is just above half, 1.5e-6 is a tie. */
  assert_formats(format_interval_adapter, 1.0000005, true, "0:00:01.000001");
  assert_formats(format_interval_adapter, 0.0000015, true, "0:00:00.000002");
  assert_formats(format_interval_adapter, 0.0000025, true, "0:00:00.000002");
  assert_formats(format_interval_adapter, 86399.9999996, true, "1 day, 0:00:00");
  assert_formats(format_interval_adapter, 999999999.0 * 86400 + 86399, true, "999999999 days, 23:59:59");
  assert_exact_fit(format_interval_adapter, 2 * 86400 + 3 * 3600 + 4 * 60 + 5, true);
}

static void test_interval_format_rejects(void **state) {
  (void)state;
  static const double bad[] = {-1, -0.000001, NAN, INFINITY, -INFINITY, 1e300, 1e15};
  size_t i;
  char buf[64];
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(dc_interval_format(bad[i], buf, sizeof buf), -1);
}

/* ------------------------------------------------------------------------------------------ */
/* Date/time parsing                                                                           */
/* ------------------------------------------------------------------------------------------ */

static void test_parse_forms_utc(void **state) {
  (void)state;
  assert_parses("2024-04-12", true, utc(2024, 4, 12, 0, 0, 0));
  assert_parses("2024-04-12 10:44", true, utc(2024, 4, 12, 10, 44, 0));
  assert_parses("2024-04-12 10:44:31", true, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12T10:44:31", true, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12t10:44:31", true, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12 10:44:31.706882", true, T_SAMPLE);
  assert_parses("2024-04-12 10:44:31.7", true, T_SAMPLE_WHOLE + 0.7);
  assert_parses("2024-04-12 10:44:31.123456789", true, T_SAMPLE_WHOLE + 0.123456789);
  assert_parses("  2024-04-12 10:44:31 \n", true, T_SAMPLE_WHOLE);
  assert_parses("1970-01-01", true, 0);
  assert_parses("1969-12-31 23:59:59", true, -1);
  assert_parses("0001-01-01", true, -62135596800.0);
  assert_parses("9999-12-31 23:59:59", true, 253402300799.0);
}

static void test_parse_zones(void **state) {
  (void)state;
  assert_parses("2024-04-12T10:44:31Z", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12T10:44:31z", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12T10:44:31.706882Z", false, T_SAMPLE);
  assert_parses("2024-04-12 10:44:31 UTC", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12 10:44:31utc", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12 12:44:31+02:00", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12 12:44:31+0200", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12 12:44:31+02", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12 05:44:31-05:00", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12 16:14:31 +05:30", false, T_SAMPLE_WHOLE);
  assert_parses("2024-04-12 10:44:31.706882+00:00", false, T_SAMPLE);
  assert_parses("2024-04-12 10:44-00:00", false, utc(2024, 4, 12, 10, 44, 0));
  assert_parses("2024-04-13 00:00+23:59", true, utc(2024, 4, 12, 0, 1, 0));
}

static void test_parse_local(void **state) {
  (void)state;
  assert_parses("2024-04-12 12:44:31", false, T_SAMPLE_WHOLE);          /* CEST */
  assert_parses("2024-01-15 10:00", false, utc(2024, 1, 15, 9, 0, 0));  /* CET */
  assert_parses("2024-04-12", false, utc(2024, 4, 11, 22, 0, 0));
  assert_parses("2024-04-12 12:44:31", true, utc(2024, 4, 12, 12, 44, 31)); /* utc flag wins over TZ */
  /* Repeated 02:30 on 2024-10-27: the first one (CEST), like Python's fold=0. */
  assert_parses("2024-10-27 02:30", false, utc(2024, 10, 27, 0, 30, 0));
  /* Nonexistent 02:30 on 2024-03-31: read with the offset before the change (+01:00). */
  assert_parses("2024-03-31 02:30", false, utc(2024, 3, 31, 1, 30, 0));
  assert_parses("2024-03-31 03:00", false, utc(2024, 3, 31, 1, 0, 0));
}

static void test_parse_leap_years(void **state) {
  (void)state;
  assert_parses("2024-02-29", true, utc(2024, 2, 29, 0, 0, 0));
  assert_parses("2000-02-29", true, utc(2000, 2, 29, 0, 0, 0));
  assert_parses("1600-02-29", true, utc(1600, 2, 29, 0, 0, 0));
  assert_parse_fails("2023-02-29", "day 29 out of range 1-28 for 2023-02", "\"2023-02-29\"");
  assert_parse_fails("1900-02-29", "day 29 out of range 1-28", NULL);
  assert_parse_fails("2100-02-29 12:00", "day 29 out of range 1-28", NULL);
  assert_parse_fails("2024-02-30", "day 30 out of range 1-29 for 2024-02", NULL);
  assert_parse_fails("2024-04-31", "day 31 out of range 1-30", NULL);
  assert_parse_fails("2024-06-31", "day 31 out of range 1-30", NULL);
  assert_parses("2024-12-31", true, utc(2024, 12, 31, 0, 0, 0));
  assert_parse_fails("2024-12-32", "day 32 out of range 1-31", NULL);
  assert_parse_fails("2024-01-00", "day 0 out of range 1-31", NULL);
}

static void test_parse_errors(void **state) {
  (void)state;
  double t = -12345;
  char err[256];
  assert_int_equal(dc_time_parse("2024-13-01", true, &t, err, sizeof err), -1);
  assert_string_equal(err, "invalid date \"2024-13-01\": month 13 out of range 1-12");
  assert_parse_fails("2024-00-01", "month 0 out of range 1-12", NULL);
  assert_parse_fails("0000-01-01", "year 0 out of range 1-9999", NULL);
  assert_parse_fails("", "invalid date \"\": empty", NULL);
  assert_parse_fails("   ", "empty", NULL);
  assert_parse_fails("2024-4-12", "expected YYYY-MM-DD", "\"2024-4-12\"");
  assert_parse_fails("24-04-12", "expected YYYY-MM-DD", NULL);
  assert_parse_fails("20240-04-12", "expected YYYY-MM-DD", NULL);
  assert_parse_fails("2024/04/12", "expected YYYY-MM-DD", NULL);
  assert_parse_fails("2024-04-123", "expected YYYY-MM-DD", NULL);
  assert_parse_fails("now", "expected YYYY-MM-DD", "\"now\"");
  assert_parse_fails("2024-04-12x", "unexpected \"x\" after the date", NULL);
  assert_parse_fails("2024-04-12T", "expected HH:MM", NULL);
  assert_parse_fails("2024-04-12 10", "expected HH:MM", NULL);
  assert_parse_fails("2024-04-12 1:05", "expected HH:MM", NULL);
  assert_parse_fails("2024-04-12  10:44", "expected HH:MM", NULL);
  assert_parse_fails("2024-04-12 24:00", "hour 24 out of range 0-23", NULL);
  assert_parse_fails("2024-04-12 10:60", "minute 60 out of range 0-59", NULL);
  assert_parse_fails("2024-04-12 10:44:60", "second 60 out of range 0-59", NULL);
  assert_parse_fails("2024-04-12 10:44:6", "expected two-digit seconds", NULL);
  assert_parse_fails("2024-04-12 10:44:31.", "expected digits after \".\"", NULL);
  assert_parse_fails("2024-04-12 10:44:31.1234567890", "more than 9 digits", NULL);
  assert_parse_fails("2024-04-12 10:44:31 CET", "unknown time zone \"CET\"", NULL);
  assert_parse_fails("2024-04-12 10:44:31 UTCX", "unknown time zone \"UTCX\"", NULL);
  assert_parse_fails("2024-04-12 10:44:31+2", "expected +HH:MM", NULL);
  assert_parse_fails("2024-04-12 10:44:31+02:0", "expected two-digit minutes", NULL);
  assert_parse_fails("2024-04-12 10:44:31+24:00", "zone offset hour 24 out of range 0-23", NULL);
  assert_parse_fails("2024-04-12 10:44:31+02:60", "zone offset minute 60 out of range 0-59", NULL);
  assert_parse_fails("2024-04-12 10:44:31Z junk", "unexpected \" junk\" after the time zone", NULL);
  assert_parse_fails("2024-04-12 10:44:31+02:00:00", "unexpected \":00\"", NULL);
  assert_parse_fails("2024-04-12 10:44.5", "unknown time zone \".5\"", NULL);
  assert_parse_fails("2024-04-12\xff", "unexpected", NULL);
}

static void test_parse_null_and_small_buffers(void **state) {
  (void)state;
  double t = 0;
  char err[8];
  assert_int_equal(dc_time_parse(NULL, true, &t, err, sizeof err), -1);
  assert_int_equal(dc_time_parse("2024-04-12", true, NULL, err, sizeof err), -1);
  assert_int_equal(dc_time_parse("2024-13-01", true, &t, NULL, 0), -1);
  assert_int_equal(dc_time_parse("2024-13-01", true, &t, err, sizeof err), -1);
  assert_int_equal(strlen(err), sizeof err - 1);
  assert_int_equal(dc_time_parse("2024-04-12", true, &t, err, sizeof err), 0);
  assert_int_equal(err[0], '\0');
  assert_int_equal(dc_duration_parse(NULL, &t, err, sizeof err), -1);
  assert_int_equal(dc_duration_parse("5", NULL, err, sizeof err), -1);
  assert_int_equal(dc_duration_parse("x", &t, NULL, 0), -1);
}

static void test_round_trips(void **state) {
  (void)state;
  int i;
  for (i = 0; i < 2000; i++) {
    char text[64], again[64], err[256];
    double t = -2e9 + (double)rng() * 3.0 + (double)(rng() % 1000000u) / 1e6, parsed;
    bool utc_mode = i % 2 == 0;
    /* precise: parse(format(t)) gives t to the microsecond, and formats identically. */
    assert_true(dc_time_format_precise(t, utc_mode, text, sizeof text) > 0);
    if (dc_time_parse(text, !utc_mode, &parsed, err, sizeof err) != 0) fail_msg("%s: %s", text, err);
    assert_true(distance(parsed, t) <= 1.5e-6); /* 0.5us rounding + double precision */
    assert_true(dc_time_format_precise(parsed, utc_mode, again, sizeof again) > 0);
    assert_string_equal(again, text);
    /* iso: milliseconds survive exactly. */
    assert_true(dc_time_format_iso(t, text, sizeof text) > 0);
    if (dc_time_parse(text, false, &parsed, err, sizeof err) != 0) fail_msg("%s: %s", text, err);
    assert_true(parsed <= t + 1e-6 && parsed > t - 1e-3 - 1e-6);
    assert_true(dc_time_format_iso(parsed, again, sizeof again) > 0);
    assert_string_equal(again, text);
    /* next (UTC): whole seconds. */
    assert_true(dc_time_format_next(t, true, text, sizeof text) > 0);
    if (dc_time_parse(text, false, &parsed, err, sizeof err) != 0) fail_msg("%s: %s", text, err);
    assert_true(parsed <= t && parsed > t - 1);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Duration parsing                                                                            */
/* ------------------------------------------------------------------------------------------ */

static void test_duration_forms(void **state) {
  (void)state;
  assert_duration("300", 300);
  assert_duration("1.5", 1.5);
  assert_duration("0", 0);
  assert_duration("0.000001", 0.000001);
  assert_duration("500ms", 0.5);
  assert_duration("5s", 5);
  assert_duration("5m", 300);
  assert_duration("2h", 7200);
  assert_duration("1d", 86400);
  assert_duration("1w", 604800);
  assert_duration("1h30m", 5400);
  assert_duration("1h 30m", 5400);
  assert_duration("1d2h3m4s5ms", 93784.005);
  assert_duration("1.5h", 5400);
  assert_duration(" 45s\n", 45);
  assert_duration("1h1h", 7200);
  assert_duration("1000000000000", 1e12);
}

static void test_duration_errors(void **state) {
  (void)state;
  double t = 0;
  char err[256];
  assert_int_equal(dc_duration_parse("5x", &t, err, sizeof err), -1);
  assert_string_equal(err, "invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h, d or w)");
  assert_duration_fails("", "empty");
  assert_duration_fails("  ", "empty");
  assert_duration_fails("-5", "negative");
  assert_duration_fails("-5m", "negative");
  assert_duration_fails("+5", "expected a number");
  assert_duration_fails("5 minutes", "missing unit");
  assert_duration_fails("5sec", "unknown unit \"sec\"");
  assert_duration_fails("5M", "unknown unit \"M\"");
  assert_duration_fails("1h30", "missing unit");
  assert_duration_fails("1h 30", "missing unit");
  assert_duration_fails("1e3", "unknown unit \"e\"");
  assert_duration_fails("1..5", "expected digits after \".\"");
  assert_duration_fails("5.", "expected digits after \".\"");
  assert_duration_fails(".5", "expected a number");
  assert_duration_fails("h", "expected a number");
  assert_duration_fails("5m-3s", "expected a number at \"-3s\"");
  assert_duration_fails("5,5", "unknown unit \",5\"");
  assert_duration_fails("99999999999999999999", "number too large");
  assert_duration_fails("1000000000001", "too large");
  assert_duration_fails("2000000w", "too large");
  assert_duration_fails("999999999999999w999999999999999w", "too large");
  assert_duration_fails("nan", "expected a number");
  assert_duration_fails("inf", "expected a number");
}

/* ------------------------------------------------------------------------------------------ */
/* Robustness                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void test_fuzz_parsers(void **state) {
  (void)state;
  static const char alphabet[] = "0123456789-:.+ TZzUTCmshdw\t\x01\xff";
  int round;
  for (round = 0; round < 50000; round++) {
    char text[40], err[96];
    double t = -999;
    size_t len = rng() % sizeof text, i;
    for (i = 0; i < len; i++) text[i] = alphabet[rng() % (sizeof alphabet - 1)];
    text[len] = '\0';
    if (round % 4 == 0 && len > 10) memcpy(text, "2024-02-29 ", 11); /* reach the deeper states */
    memset(err, 'x', sizeof err);
    if (dc_time_parse(text, round % 2 == 0, &t, err, sizeof err) == 0) {
      assert_true(t > -62135596800.0 - 86400 * 2 && t < 253402300800.0 + 86400 * 2);
    } else {
      assert_non_null(memchr(err, '\0', sizeof err));
    }
    memset(err, 'x', sizeof err);
    if (dc_duration_parse(text, &t, err, sizeof err) == 0) {
      assert_true(t >= 0 && t <= 1e12);
    } else {
      assert_non_null(memchr(err, '\0', sizeof err));
    }
  }
}

static void test_fuzz_formatters(void **state) {
  (void)state;
  int round;
  for (round = 0; round < 20000; round++) {
    union {
      uint64_t bits;
      double value;
    } random_double;
    char buf[64];
    double t;
    random_double.bits = ((uint64_t)rng() << 32) | rng();
    t = (round % 2) ? random_double.value : ((double)rng() - 2147483648.0) * 150.0 + (double)rng() / 4294967296.0;
    (void)dc_time_format_log(t, round % 3 == 0, buf, sizeof buf);
    (void)dc_time_format_next(t, round % 3 == 0, buf, sizeof buf);
    (void)dc_time_format_precise(t, round % 3 == 0, buf, sizeof buf);
    (void)dc_time_format_iso(t, buf, sizeof buf);
    (void)dc_interval_format(t, buf, sizeof buf);
    (void)dc_time_format_precise(t, true, buf, (size_t)(rng() % 40));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_format_log),
      cmocka_unit_test_setup_teardown(test_format_log_local, setup_madrid, teardown_tz),
      cmocka_unit_test(test_format_next),
      cmocka_unit_test_setup_teardown(test_format_next_local, setup_madrid, teardown_tz),
      cmocka_unit_test(test_format_precise),
      cmocka_unit_test_setup_teardown(test_format_precise_local, setup_madrid, teardown_tz),
      cmocka_unit_test(test_format_iso),
      cmocka_unit_test(test_format_utc),
      cmocka_unit_test_setup_teardown(test_format_iso_ignores_tz, setup_madrid, teardown_tz),
      cmocka_unit_test(test_format_rejects_unrepresentable),
      cmocka_unit_test(test_interval_format),
      cmocka_unit_test(test_interval_format_rejects),
      cmocka_unit_test(test_parse_forms_utc),
      cmocka_unit_test(test_parse_zones),
      cmocka_unit_test_setup_teardown(test_parse_local, setup_madrid, teardown_tz),
      cmocka_unit_test(test_parse_leap_years),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_parse_null_and_small_buffers),
      cmocka_unit_test_setup_teardown(test_round_trips, setup_madrid, teardown_tz),
      cmocka_unit_test(test_duration_forms),
      cmocka_unit_test(test_duration_errors),
      cmocka_unit_test_setup_teardown(test_fuzz_parsers, setup_madrid, teardown_tz),
      cmocka_unit_test_setup_teardown(test_fuzz_formatters, setup_madrid, teardown_tz),
  };
  use_tz("UTC");
  return cmocka_run_group_tests(tests, NULL, NULL);
}
