/* Unit tests for internal/log: formats, thresholds, escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log/log.h"

/* Captures what the logger writes during fn into a string. */
static char *capture(enum log_level lv, enum log_format fmt, void (*fn)(void))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    log_setup(lv, fmt);
    log_set_stream(f);
    fn();
    log_set_stream(NULL);
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void emit_all_levels(void)
{
    log_debug("d %d", 1);
    log_info("i %s", "two");
    log_warn("w");
    log_error("e");
}

static void emit_tricky(void)
{
    log_info("quote \" backslash \\ newline\nend tab\t");
}

static void test_log_write_filters_below_threshold(void **state)
{
    (void)state;
    char *out = capture(LOG_LEVEL_WARN, LOG_FORMAT_TEXT, emit_all_levels);
    assert_null(strstr(out, " d 1"));
    assert_null(strstr(out, " i two"));
    assert_non_null(strstr(out, "warn  w\n"));
    assert_non_null(strstr(out, "error e\n"));
    free(out);
    out = capture(LOG_LEVEL_DEBUG, LOG_FORMAT_TEXT, emit_all_levels);
    assert_non_null(strstr(out, "debug d 1\n"));
    assert_non_null(strstr(out, "info  i two\n"));
    free(out);
}

static void test_log_write_text_is_one_line_per_call(void **state)
{
    (void)state;
    char *out = capture(LOG_LEVEL_INFO, LOG_FORMAT_TEXT, emit_tricky);
    size_t lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 1);
    /* RFC 3339 UTC timestamp first. */
    assert_true(strlen(out) > 24);
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[23], 'Z');
    free(out);
}

static void test_log_write_json_escapes_and_names_level(void **state)
{
    (void)state;
    char *out = capture(LOG_LEVEL_INFO, LOG_FORMAT_JSON, emit_tricky);
    assert_int_equal(strncmp(out, "{\"ts\":\"", 7), 0);
    assert_non_null(strstr(out, "\"level\":\"info\""));
    assert_non_null(strstr(out, "\"msg\":\"quote \\\" backslash \\\\ newline end tab\\u0009\"}\n"));
    free(out);
}

static void test_log_level_parse_and_names(void **state)
{
    (void)state;
    enum log_level lv;
    enum log_format f;
    assert_int_equal(log_level_parse("warn", &lv), 0);
    assert_int_equal(lv, LOG_LEVEL_WARN);
    assert_int_equal(log_level_parse("WARN", &lv), -1);
    assert_int_equal(log_level_parse("verbose", &lv), -1);
    assert_int_equal(log_format_parse("json", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("xml", &f), -1);
    assert_string_equal(log_level_name(LOG_LEVEL_ERROR), "error");
    assert_string_equal(log_format_name(LOG_FORMAT_TEXT), "text");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_write_filters_below_threshold),
        cmocka_unit_test(test_log_write_text_is_one_line_per_call),
        cmocka_unit_test(test_log_write_json_escapes_and_names_level),
        cmocka_unit_test(test_log_level_parse_and_names),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
