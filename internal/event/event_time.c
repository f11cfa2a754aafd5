/*
 * event_time: RFC 3339 timestamps to microseconds since the Unix epoch.
 *
 * Accepted: YYYY-MM-DD('T'|'t')hh:mm:ss[.f{1,9}]('Z'|'z'|('+'|'-')hh:mm),
 * years 0001..9999, calendar-checked days (Gregorian leap years), hour < 24,
 * minute < 60, second <= 60, offset hour < 24 and minute < 60.
 *
 * Choices, all deliberate:
 *  - The space RFC 3339 allows "for readability" in place of 'T' is refused:
 *    producers on the wire contract send 'T', and one strict form keeps
 *    "2026-11-02 14:05:11Z" (a log line, usually) out of the store.
 *  - A leap second (ss = 60) is accepted in any minute and clamped to
 *    ss = 59.999999: the event stays inside its minute and in order with its
 *    neighbours, and no leap-second table is needed.
 *  - Fractions beyond microseconds are truncated, not rounded, so a value
 *    never moves into the next second.
 *  - "-00:00" (offset unknown) is read as UTC.
 *
 * No timegm(), no locale, no time zone database: the calendar arithmetic is
 * the days-from-civil count below.
 */
#include "event/event.h"

#include <stdint.h>

/* Reads exactly n ASCII digits at s; -1 if any is not a digit. */
static int read_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/*
 * Days from 1970-01-01 to y-m-d (proleptic Gregorian).  The year is shifted
 * to start on March 1st so the leap day is the last day of its year; then a
 * 400-year era holds exactly 146097 days and the day of the shifted year is a
 * linear function of the month (153 days per 5 months).  y >= 1, so every
 * quotient below is of non-negative numbers.
 */
static int64_t days_from_civil(int y, int m, int d)
{
    int64_t yy = (int64_t)y - (m <= 2 ? 1 : 0);
    int64_t era = yy / 400;
    int64_t year_of_era = yy - era * 400;                        /* 0..399 */
    int64_t shifted_month = m > 2 ? m - 3 : m + 9;               /* Mar = 0 */
    int64_t day_of_year = (153 * shifted_month + 2) / 5 + d - 1; /* 0..365 */
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468; /* 719468: 0000-03-01 to 1970-01-01 */
}

int event_parse_rfc3339(const char *s, int64_t *out_us)
{
    int year, mon, day, hour, min, sec;
    int64_t frac_us = 0;
    int64_t offset_s = 0;
    const char *p;

    if (!s || !out_us)
        return -1;
    if (read_digits(s, 4, &year) || s[4] != '-' || read_digits(s + 5, 2, &mon) || s[7] != '-' ||
        read_digits(s + 8, 2, &day))
        return -1;
    if (s[10] != 'T' && s[10] != 't')
        return -1;
    if (read_digits(s + 11, 2, &hour) || s[13] != ':' || read_digits(s + 14, 2, &min) ||
        s[16] != ':' || read_digits(s + 17, 2, &sec))
        return -1;
    if (year < 1 || mon < 1 || mon > 12 || day < 1 || day > month_days(year, mon) || hour > 23 ||
        min > 59 || sec > 60)
        return -1;

    p = s + 19;
    if (*p == '.') {
        int ndigits = 0;
        p++;
        while (*p >= '0' && *p <= '9') {
            if (++ndigits > 9)
                return -1;
            if (ndigits <= 6)
                frac_us = frac_us * 10 + (*p - '0');
            p++;
        }
        if (ndigits == 0)
            return -1;
        for (int i = ndigits; i < 6; i++)
            frac_us *= 10;
    }

    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        int sign = *p == '-' ? -1 : 1;
        if (read_digits(p + 1, 2, &oh) || p[3] != ':' || read_digits(p + 4, 2, &om))
            return -1;
        if (oh > 23 || om > 59)
            return -1;
        offset_s = sign * (int64_t)(oh * 3600 + om * 60);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;

    if (sec == 60) {
        sec = 59;
        frac_us = 999999;
    }
    int64_t secs =
        days_from_civil(year, mon, day) * 86400 + (int64_t)hour * 3600 + (int64_t)min * 60 + sec;
    *out_us = (secs - offset_s) * 1000000 + frac_us;
    return 0;
}
