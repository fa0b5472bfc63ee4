/* timefmt.h - time text as the original Python agent (APScheduler + logging) printed it,
   plus parsing of user-given date/times and durations. */
#ifndef DC_TIMEFMT_H
#define DC_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>

/* All take unix seconds as double. utc=false means local time (TZ). Return bytes written (excl NUL)
   or -1 if buf is too small (or NULL) or t is not finite / not representable. */

/* "12-Apr-24 10:44:31": Python logging datefmt %d-%b-%y %H:%M:%S, English month abbreviation
   regardless of locale, seconds truncated. */
int dc_time_format_log(double t, bool utc, char *buf, size_t n);
/* "2024-04-12 10:49:31 UTC" (local: zone abbreviation, e.g. "CET"): APScheduler "next run at". */
int dc_time_format_next(double t, bool utc, char *buf, size_t n);
/* "2024-04-12 10:44:31.706882+00:00": Python str(datetime) with tz, as in APScheduler
   "scheduled at". Microseconds rounded half-even like Python, and omitted when zero, as Python
   does ("2024-04-12 10:45:00+00:00"); offset "+HH:MM" (":SS" appended only if non-zero). */
int dc_time_format_precise(double t, bool utc, char *buf, size_t n);
/* "2024-04-12T10:44:31.706Z": UTC, milliseconds (truncated after rounding to microseconds),
   for JSON logs. */
int dc_time_format_iso(double t, char *buf, size_t n);
/* UTC date and time with `digits` fractional digits (0, 3 or 6; truncated after rounding to
   microseconds, as above). rfc3339: "2024-04-12T10:44:31Z", "2024-04-12T10:44:31.706Z",
   "2024-04-12T10:44:31.706882Z" (Kubernetes' MicroTime); else "2024-04-12 10:44:31" (no zone:
   the CSV exports' and the messages' text). */
int dc_time_format_utc(double t, int digits, bool rfc3339, char *buf, size_t n);
/* Python str(datetime.timedelta(seconds=s)): "0:05:00", "0:00:01", "1 day, 0:00:00",
   "2 days, 3:04:05", "0:00:00.500000" (microseconds only when non-zero). s >= 0 (else -1). */
int dc_interval_format(double seconds, char *buf, size_t n);

/* Parses a date/time: "2024-04-12", "2024-04-12 10:44", "2024-04-12 10:44:31",
   "2024-04-12T10:44:31", with optional fraction ".706882" (1-9 digits), and optional zone "Z",
   "UTC", "+02:00", "+0200", "+02", "-05:00" (a space before the zone is allowed; a zone needs a
   time). Surrounding whitespace is ignored.
   No zone: interpreted in UTC when utc is true, else local time (a repeated local time takes its
   first occurrence; a nonexistent one is read with the offset in force before the change, like
   Python's fold=0). Returns 0 and sets *out, or -1 and a clear message in err naming the text,
   e.g. "invalid date \"2024-13-01\": month 13 out of range 1-12". */
int dc_time_parse(const char *text, bool utc, double *out, char *err, size_t errlen);

/* Parses a duration: a plain number of seconds "300", "1.5", or number+unit components
   "500ms", "5s", "5m", "2h", "1d", "1w", "1h30m", "1.5h" (units ms s m h d w; spaces allowed
   between components). Returns 0 and sets *out (seconds), or -1 with a message in err.
   Rejects negative, empty, unknown unit, and durations over 1e12 seconds. */
int dc_duration_parse(const char *text, double *out, char *err, size_t errlen);

/* Days in a month of the Gregorian calendar (month 1..12). */
int dc_days_in_month(int year, int month);

#endif
