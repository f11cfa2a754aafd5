/*
 * log: see log.h.  Settings are atomics so a SIGHUP reload on the main thread
 * can change them while other threads log.
 */
#include "log/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static atomic_int cur_level = LOG_LEVEL_INFO;
static atomic_int cur_format = LOG_FORMAT_TEXT;
static FILE *_Atomic cur_stream = NULL;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const format_names[] = {"text", "json"};

void log_setup(enum log_level level, enum log_format format)
{
    atomic_store(&cur_level, (int)level);
    atomic_store(&cur_format, (int)format);
}

void log_set_stream(FILE *f)
{
    atomic_store(&cur_stream, f);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&cur_level);
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (s && strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_format_parse(const char *s, enum log_format *out)
{
    for (int i = 0; i < 2; i++) {
        if (s && strcmp(s, format_names[i]) == 0) {
            *out = (enum log_format)i;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level level)
{
    return (unsigned)level < 4 ? level_names[level] : "?";
}

const char *log_format_name(enum log_format format)
{
    return (unsigned)format < 2 ? format_names[format] : "?";
}

/* Appends s to line as a JSON string body (without quotes), truncating. */
static size_t json_escape(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else if (c < 0x20) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c);
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o] = '\0';
    return o;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&cur_level))
        return;

    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    for (char *p = msg; *p; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    }

    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(ts.tv_nsec / 1000000) % 1000);

    char line[4600];
    int len;
    if (atomic_load(&cur_format) == LOG_FORMAT_JSON) {
        char esc[4400];
        json_escape(esc, sizeof esc, msg);
        len = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}\n", when,
                       log_level_name(level), esc);
    } else {
        len = snprintf(line, sizeof line, "%s %-5s %s\n", when, log_level_name(level), msg);
    }
    if (len < 0)
        return;
    if ((size_t)len >= sizeof line) {
        len = (int)sizeof line - 1;
        line[len - 1] = '\n';
    }
    FILE *f = atomic_load(&cur_stream);
    fwrite(line, 1, (size_t)len, f ? f : stderr);
}
