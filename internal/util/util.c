/*
 * util: see util.h.  The allocation hook is a process-wide counter: it is
 * meant for single-threaded unit tests that walk every allocation of a
 * function and check that each failure is reported and leaks nothing.
 */
#include "util/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_long alloc_fail_countdown = -1;

void util_alloc_fail_after(long n)
{
    atomic_store(&alloc_fail_countdown, n);
}

static int alloc_should_fail(void)
{
    long v = atomic_load(&alloc_fail_countdown);
    if (v < 0)
        return 0;
    if (v == 0)
        return 1;
    atomic_fetch_sub(&alloc_fail_countdown, 1);
    return 0;
}

void *util_malloc(size_t n)
{
    if (alloc_should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *util_calloc(size_t count, size_t size)
{
    if (alloc_should_fail())
        return NULL;
    if (count == 0 || size == 0)
        count = size = 1;
    return calloc(count, size);
}

void *util_realloc(void *p, size_t n)
{
    if (alloc_should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

char *util_strdup(const char *s)
{
    if (!s)
        return NULL;
    return util_strndup(s, strlen(s));
}

char *util_strndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    size_t len = strnlen(s, n);
    char *d = util_malloc(len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *util_fmt(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    if (!dst || size == 0)
        return dst;
    va_start(ap, fmt);
    int n = vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    if (n < 0)
        dst[0] = '\0';
    return dst;
}

void util_buf_init(struct util_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void util_buf_deinit(struct util_buf *b)
{
    free(b->data);
    util_buf_init(b);
}

void util_buf_reset(struct util_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int buf_reserve(struct util_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return -1;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = util_realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int util_buf_append(struct util_buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int util_buf_puts(struct util_buf *b, const char *s)
{
    return util_buf_append(b, s, strlen(s));
}

int util_buf_printf(struct util_buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) != 0) {
        va_end(ap2);
        return -1;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
    return 0;
}

char *util_buf_steal(struct util_buf *b)
{
    char *p = b->data;
    util_buf_init(b);
    return p;
}

static const struct {
    const char *unit;
    int64_t ms;
} duration_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
};

int util_parse_duration(const char *s, int64_t *out_ms, char *err, size_t errlen)
{
    const char *p = s;
    int64_t total = 0;

    if (!s || !*s) {
        util_fmt(err, errlen, "empty duration");
        return -1;
    }
    while (*p) {
        if (!isdigit((unsigned char)*p)) {
            util_fmt(err, errlen, "'%s' is not a duration (use e.g. 30s, 15m, 2h)", s);
            return -1;
        }
        int64_t v = 0;
        while (isdigit((unsigned char)*p)) {
            if (v > (INT64_MAX - 9) / 10) {
                util_fmt(err, errlen, "'%s' is too large", s);
                return -1;
            }
            v = v * 10 + (*p - '0');
            p++;
        }
        size_t ulen = 0;
        while (isalpha((unsigned char)p[ulen]))
            ulen++;
        int64_t mult = 0;
        for (size_t i = 0; i < sizeof duration_units / sizeof duration_units[0]; i++) {
            if (strlen(duration_units[i].unit) == ulen &&
                strncmp(p, duration_units[i].unit, ulen) == 0)
                mult = duration_units[i].ms;
        }
        if (mult == 0) {
            util_fmt(err, errlen, "'%s' needs a unit: ms, s, m, h or d", s);
            return -1;
        }
        if (v > (INT64_MAX - total) / mult) {
            util_fmt(err, errlen, "'%s' is too large", s);
            return -1;
        }
        total += v * mult;
        p += ulen;
    }
    *out_ms = total;
    return 0;
}

char *util_format_duration(int64_t ms, char *dst, size_t size)
{
    if (ms == 0) {
        util_fmt(dst, size, "0s");
        return dst;
    }
    char tmp[96] = "";
    size_t off = 0;
    int64_t rest = ms;
    static const int64_t mult[] = {86400000, 3600000, 60000, 1000, 1};
    static const char *const name[] = {"d", "h", "m", "s", "ms"};
    for (size_t i = 0; i < 5 && rest > 0; i++) {
        int64_t q = rest / mult[i];
        if (q > 0) {
            int n = snprintf(tmp + off, sizeof tmp - off, "%lld%s", (long long)q, name[i]);
            if (n > 0 && (size_t)n < sizeof tmp - off)
                off += (size_t)n;
            rest -= q * mult[i];
        }
    }
    util_fmt(dst, size, "%s", tmp);
    return dst;
}

int util_parse_size(const char *s, int64_t *out, char *err, size_t errlen)
{
    static const struct {
        const char *suffix;
        int64_t mult;
    } units[] = {
        {"", 1},          {"B", 1},     {"KiB", 1024},   {"MiB", 1 << 20},
        {"GiB", 1 << 30}, {"kB", 1000}, {"MB", 1000000}, {"GB", 1000000000},
    };
    char *end = NULL;

    if (!s || !isdigit((unsigned char)*s)) {
        util_fmt(err, errlen, "'%s' is not a size (use e.g. 1048576, 512KiB, 1MiB)", s ? s : "");
        return -1;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0) {
        util_fmt(err, errlen, "'%s' is too large", s);
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > INT64_MAX / units[i].mult) {
                util_fmt(err, errlen, "'%s' is too large", s);
                return -1;
            }
            *out = (int64_t)v * units[i].mult;
            return 0;
        }
    }
    util_fmt(err, errlen, "'%s' has an unknown unit (use B, KiB, MiB, GiB)", s);
    return -1;
}

int util_utf8_valid(const unsigned char *s, size_t n, size_t *bad_at)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            goto bad;
        }
        if (n - i < len)
            goto bad;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                goto bad;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            goto bad;
        i += len;
    }
    return 1;
bad:
    if (bad_at)
        *bad_at = i;
    return 0;
}

int64_t util_now_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_now_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#ifdef UNDERSTUDY_FAILPOINTS
#include <signal.h>
#include <unistd.h>

static atomic_long failpoint_hits;

void util_failpoint(const char *name)
{
    const char *want = getenv("UNDERSTUDY_FAILPOINT");
    if (!want)
        return;
    size_t n = strcspn(want, ":");
    if (strlen(name) != n || strncmp(want, name, n) != 0)
        return;
    long nth = want[n] == ':' ? strtol(want + n + 1, NULL, 10) : 1;
    if (atomic_fetch_add(&failpoint_hits, 1) + 1 < nth)
        return;
    static const char msg[] = "failpoint hit: crashing on purpose\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    /* The test build's whole point: die here like a power cut would. */
    abort(); /* NOLINT */
}
#endif

char *util_format_rfc3339(int64_t us, char *dst, size_t size)
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    /* Days since 1970-01-01 to a proleptic Gregorian date, by 400-year eras. */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    return util_fmt(dst, size, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%06lldZ", (long long)y,
                    (long long)m, (long long)d, (long long)(rem / 3600), (long long)(rem / 60 % 60),
                    (long long)(rem % 60), (long long)frac);
}
