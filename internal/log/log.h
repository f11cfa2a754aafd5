/*
 * log: leveled logging to stderr, as text lines or JSON lines.
 *
 * Each call writes one whole line with one fwrite, so lines from different
 * threads never interleave.  Messages are lowercase and carry their own
 * context ("ingest: ops.actions[2]@1042: ...").  Never pass secrets.
 */
#ifndef UNDERSTUDY_LOG_H
#define UNDERSTUDY_LOG_H

#include <stdio.h>

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
};

enum log_format {
    LOG_FORMAT_TEXT = 0,
    LOG_FORMAT_JSON,
};

/* Sets the threshold and format; may be called again (SIGHUP reload). */
void log_setup(enum log_level level, enum log_format format);
/* Redirects output (tests); NULL restores stderr.  Borrowed. */
void log_set_stream(FILE *f);
enum log_level log_get_level(void);

/* Parse "debug|info|warn|error" and "text|json".  0 on success, -1 if unknown. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);
const char *log_level_name(enum log_level level);
const char *log_format_name(enum log_format format);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
