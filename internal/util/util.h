/*
 * util: allocation wrappers, a growable byte buffer, durations and sizes,
 * UTF-8 validation.  No I/O, no global state other than the allocation
 * failure hook that tests use to exercise out-of-memory paths.
 */
#ifndef UNDERSTUDY_UTIL_H
#define UNDERSTUDY_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define UTIL_WUR __attribute__((warn_unused_result))

/*
 * Allocation wrappers.  They return NULL on failure (never abort), like the
 * libc functions they wrap.  util_alloc_fail_after(n) makes the allocation
 * after the next n succeed-or-fail calls fail, for tests; -1 disables it.
 */
void *util_malloc(size_t n) UTIL_WUR;
void *util_calloc(size_t count, size_t size) UTIL_WUR;
void *util_realloc(void *p, size_t n) UTIL_WUR;
/* Returns a copy of s (NULL when s is NULL or on failure). */
char *util_strdup(const char *s) UTIL_WUR;
/* Copies at most n bytes of s and terminates the copy. */
char *util_strndup(const char *s, size_t n) UTIL_WUR;
void util_alloc_fail_after(long n);

/* snprintf that always terminates and never fails; returns dst. */
char *util_fmt(char *dst, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A growable byte buffer, always NUL-terminated when non-empty. */
struct util_buf {
    char *data;
    size_t len;
    size_t cap;
};

void util_buf_init(struct util_buf *b);
void util_buf_deinit(struct util_buf *b);
void util_buf_reset(struct util_buf *b);
/* Append; 0 on success, -1 on allocation failure (buffer unchanged). */
int util_buf_append(struct util_buf *b, const void *p, size_t n) UTIL_WUR;
int util_buf_puts(struct util_buf *b, const char *s) UTIL_WUR;
int util_buf_printf(struct util_buf *b, const char *fmt, ...) UTIL_WUR
    __attribute__((format(printf, 2, 3)));
/* Takes the data out of the buffer (caller frees) and resets it. */
char *util_buf_steal(struct util_buf *b);

/*
 * Parses a duration such as "30s", "15m", "2h", "1h30m", "250ms", "1d".
 * A bare number is refused: the unit is required.  Stores milliseconds in
 * *out_ms.  Returns 0, or -1 with a reason in err.
 */
int util_parse_duration(const char *s, int64_t *out_ms, char *err, size_t errlen) UTIL_WUR;
/* Formats milliseconds as the shortest duration string ("90m" -> "1h30m"). */
char *util_format_duration(int64_t ms, char *dst, size_t size);

/*
 * Parses a byte size: a plain integer or one with a suffix B, KiB, MiB,
 * GiB (also kB, MB, GB as powers of 1000).  Returns 0 or -1 with a reason.
 */
int util_parse_size(const char *s, int64_t *out, char *err, size_t errlen) UTIL_WUR;

/*
 * Returns 1 when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates,
 * nothing above U+10FFFF), else 0 and the offset of the first bad byte in
 * *bad_at when bad_at is not NULL.
 */
int util_utf8_valid(const unsigned char *s, size_t n, size_t *bad_at);

/*
 * Failpoints: named places where a test build (make FAILPOINTS=1) can crash
 * the process on purpose, to prove that a crash there loses and duplicates
 * nothing.  UNDERSTUDY_FAILPOINT=name aborts at the first hit of that name,
 * name:N at the Nth.  In a normal build FAILPOINT() compiles to nothing.
 */
#ifdef UNDERSTUDY_FAILPOINTS
void util_failpoint(const char *name);
#define FAILPOINT(name) util_failpoint(name)
#else
#define FAILPOINT(name) ((void)0)
#endif

/*
 * Formats microseconds since the Unix epoch as RFC 3339 in UTC with
 * microseconds ("2026-11-02T14:05:11.000000Z").  Needs size >= 28; always
 * terminates dst when size > 0.  Returns dst.  Can't fail.
 */
char *util_format_rfc3339(int64_t us, char *dst, size_t size);

/* Monotonic and wall clocks in microseconds. */
int64_t util_now_mono_us(void);
int64_t util_now_wall_us(void);

#endif
