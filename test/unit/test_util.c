/* Unit tests for internal/util. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event/event.h"
#include "util/util.h"

static void test_util_parse_duration_accepts_units_and_combinations(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t ms;
    } ok[] = {
        {"30s", 30000},   {"15m", 900000},           {"2h", 7200000}, {"1h30m", 5400000},
        {"250ms", 250},   {"1d", 86400000},          {"0s", 0},       {"1m30s", 90000},
        {"90m", 5400000}, {"1d2h3m4s5ms", 93784005},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        int64_t v = -1;
        char err[128] = "";
        assert_int_equal(util_parse_duration(ok[i].in, &v, err, sizeof err), 0);
        assert_int_equal(v, ok[i].ms);
    }
}

static void test_util_parse_duration_rejects_bad_input_with_reason(void **state)
{
    (void)state;
    static const char *const bad[] = {"",
                                      "30",
                                      "s",
                                      "-5m",
                                      "5x",
                                      "1.5h",
                                      "5m ",
                                      " 5m",
                                      "99999999999999999999h",
                                      "10000000000000d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 42;
        char err[128] = "";
        assert_int_equal(util_parse_duration(bad[i], &v, err, sizeof err), -1);
        assert_int_equal(v, 42);
        assert_true(strlen(err) > 0);
    }
    int64_t v;
    char err[128];
    assert_int_equal(util_parse_duration("5x", &v, err, sizeof err), -1);
    assert_string_equal(err, "'5x' needs a unit: ms, s, m, h or d");
}

static void test_util_format_duration_is_shortest_and_round_trips(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(util_format_duration(5400000, buf, sizeof buf), "1h30m");
    assert_string_equal(util_format_duration(0, buf, sizeof buf), "0s");
    assert_string_equal(util_format_duration(250, buf, sizeof buf), "250ms");
    assert_string_equal(util_format_duration(86400000, buf, sizeof buf), "1d");
    for (int64_t ms = 0; ms < 200000000; ms = ms * 3 + 7) {
        int64_t back = -1;
        char err[64];
        util_format_duration(ms, buf, sizeof buf);
        assert_int_equal(util_parse_duration(buf, &back, err, sizeof err), 0);
        assert_int_equal(back, ms);
    }
}

static void test_util_parse_size_units_and_errors(void **state)
{
    (void)state;
    int64_t v = 0;
    char err[128];
    assert_int_equal(util_parse_size("1048576", &v, err, sizeof err), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(util_parse_size("1MiB", &v, err, sizeof err), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(util_parse_size("512KiB", &v, err, sizeof err), 0);
    assert_int_equal(v, 524288);
    assert_int_equal(util_parse_size("2GB", &v, err, sizeof err), 0);
    assert_int_equal(v, 2000000000);
    assert_int_equal(util_parse_size("1 MiB", &v, err, sizeof err), -1);
    assert_int_equal(util_parse_size("-1", &v, err, sizeof err), -1);
    assert_int_equal(util_parse_size("1TiB", &v, err, sizeof err), -1);
    assert_string_equal(err, "'1TiB' has an unknown unit (use B, KiB, MiB, GiB)");
    assert_int_equal(util_parse_size("99999999999999999999", &v, err, sizeof err), -1);
    assert_int_equal(util_parse_size("9999999999999GiB", &v, err, sizeof err), -1);
}

static void test_util_utf8_valid_accepts_and_locates_errors(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
        int ok;
        size_t bad_at;
    } cases[] = {
        {"plain ascii", 11, 1, 0},
        {"caf\xc3\xa9", 5, 1, 0},
        {"\xe2\x82\xac euro", 8, 1, 0},
        {"\xf0\x9f\x98\x80", 4, 1, 0},
        {"ab\xc0\xaf", 4, 0, 2},       /* overlong '/' */
        {"\x80", 1, 0, 0},             /* lone continuation */
        {"x\xed\xa0\x80", 4, 0, 1},    /* encoded surrogate */
        {"\xf4\x90\x80\x80", 4, 0, 0}, /* above U+10FFFF */
        {"abc\xe2\x82", 5, 0, 3},      /* truncated */
        {"\xe0\x80\xaf", 3, 0, 0},     /* overlong 3-byte */
        {"\xf0\x80\x80\xaf", 4, 0, 0}, /* overlong 4-byte */
        {"\xff", 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t at = 999;
        int ok = util_utf8_valid((const unsigned char *)cases[i].s, cases[i].len, &at);
        assert_int_equal(ok, cases[i].ok);
        if (!ok)
            assert_int_equal(at, cases[i].bad_at);
    }
}

static void test_util_buf_appends_printf_and_steal(void **state)
{
    (void)state;
    struct util_buf b;
    util_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(util_buf_printf(&b, "%d,", i), 0);
    assert_true(b.len > 2000);
    assert_int_equal(strncmp(b.data, "0,1,2,", 6), 0);
    assert_int_equal(util_buf_puts(&b, "end"), 0);
    assert_string_equal(b.data + b.len - 3, "end");
    util_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(util_buf_append(&b, "x\0y", 3), 0);
    assert_int_equal(b.len, 3);
    char *s = util_buf_steal(&b);
    assert_null(b.data);
    assert_int_equal(memcmp(s, "x\0y", 4), 0);
    free(s);
    util_buf_deinit(&b);
}

static void test_util_alloc_fail_after_fails_exactly_the_nth(void **state)
{
    (void)state;
    util_alloc_fail_after(2);
    void *a = util_malloc(8), *b = util_malloc(8), *c = util_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    util_alloc_fail_after(-1);
    void *d = util_malloc(8);
    assert_non_null(d);
    free(a);
    free(b);
    free(d);

    struct util_buf buf;
    util_buf_init(&buf);
    util_alloc_fail_after(0);
    assert_int_equal(util_buf_puts(&buf, "hello"), -1);
    assert_null(util_strdup("x"));
    util_alloc_fail_after(-1);
    assert_int_equal(buf.len, 0);
    util_buf_deinit(&buf);
}

static void test_util_strndup_and_fmt_terminate(void **state)
{
    (void)state;
    char *s = util_strndup("abcdef", 3);
    assert_string_equal(s, "abc");
    free(s);
    assert_null(util_strdup(NULL));
    char small[4];
    util_fmt(small, sizeof small, "%s", "truncated");
    assert_string_equal(small, "tru");
}

static void test_util_format_rfc3339_known_values_and_round_trip(void **state)
{
    (void)state;
    char buf[40];
    assert_string_equal(util_format_rfc3339(0, buf, sizeof buf), "1970-01-01T00:00:00.000000Z");
    assert_string_equal(util_format_rfc3339(-1, buf, sizeof buf), "1969-12-31T23:59:59.999999Z");
    /* 2000-02-29 (a leap day of a century divisible by 400) 12:34:56.5 */
    assert_string_equal(util_format_rfc3339(951827696500000LL, buf, sizeof buf),
                        "2000-02-29T12:34:56.500000Z");
    /* Every ~11.6 days over 1900..2100 round-trips through the parser. */
    for (int64_t us = -2208988800LL * 1000000; us < 4102444800LL * 1000000;
         us += 1000003LL * 1000003) {
        int64_t back = 0;
        util_format_rfc3339(us, buf, sizeof buf);
        assert_int_equal(event_parse_rfc3339(buf, &back), 0);
        assert_true(back == us);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_util_parse_duration_accepts_units_and_combinations),
        cmocka_unit_test(test_util_parse_duration_rejects_bad_input_with_reason),
        cmocka_unit_test(test_util_format_duration_is_shortest_and_round_trips),
        cmocka_unit_test(test_util_parse_size_units_and_errors),
        cmocka_unit_test(test_util_utf8_valid_accepts_and_locates_errors),
        cmocka_unit_test(test_util_buf_appends_printf_and_steal),
        cmocka_unit_test(test_util_alloc_fail_after_fails_exactly_the_nth),
        cmocka_unit_test(test_util_strndup_and_fmt_terminate),
        cmocka_unit_test(test_util_format_rfc3339_known_values_and_round_trip),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
