/*
 * Unit tests for internal/event: the wire contract decoder.
 *
 * Two data-driven tests walk the fixtures (run from the repository root, or
 * set UNDERSTUDY_FIXTURES): every fixtures/bad-events/NAME.json must be
 * refused with exactly the reason on the second line of NAME.expect (its
 * first line is the kind), and every .json file and every line of every
 * .jsonl file in fixtures/events must decode.  Adding a file adds a case.
 *
 * The decoder has two paths when the caller needs no state tree (the ingest
 * path): a one-pass scanner for messages of the usual shape, and jansson for
 * everything else.  The fixture tests run both ways, and the *_paths_agree
 * tests decode fixtures, crafted edge cases and systematic mutations of
 * valid events both ways and require the very same outcome: the same event
 * or the same reason.
 *
 * jansson is routed through util_malloc for the whole binary, so that
 * util_alloc_fail_after() reaches its allocations too and the out-of-memory
 * paths can be walked one allocation at a time.
 */
#include <dirent.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event/event.h"
#include "util/util.h"

/* ---- helpers ------------------------------------------------------------- */

/*
 * jansson's allocations go through util_malloc, so that failures can be
 * injected into them, with one exception.  jansson 2.14 keeps the text of
 * the token being scanned in a buffer that doubles from 16 bytes, ignores a
 * failure to grow it, and then trips an assert() (lex_unget_unsave) when it
 * puts back the character after a number or a literal.  Those growths are
 * the allocations of 32, 64, 128... bytes, and only they are never failed:
 * the abort is jansson's, not something the decoder can handle.
 */
static void *json_alloc_via_util(size_t n)
{
    if (n >= 32 && (n & (n - 1)) == 0)
        return malloc(n);
    return util_malloc(n);
}

static const char *fixtures_dir(void)
{
    const char *d = getenv("UNDERSTUDY_FIXTURES");
    return d && *d ? d : "fixtures";
}

/* Reads a whole file (caller frees); fails the test when it cannot. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (run the tests from the repository root)", path);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (cap - n < 1024) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir ending in suffix, sorted; *n gets the count. */
static char **list_dir(const char *dir, const char *suffix, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open directory %s (run the tests from the repository root)", dir);
    char **names = NULL;
    size_t count = 0;
    size_t slen = strlen(suffix);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len <= slen || strcmp(de->d_name + len - slen, suffix) != 0)
            continue;
        names = realloc(names, (count + 1) * sizeof *names);
        assert_non_null(names);
        names[count] = strdup(de->d_name);
        assert_non_null(names[count]);
        count++;
    }
    closedir(d);
    if (count > 0)
        qsort(names, count, sizeof *names, cmp_str);
    *n = count;
    return names;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int kind_parse(const char *s, enum event_kind *out)
{
    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        if (strcmp(s, event_kind_name((enum event_kind)k)) == 0) {
            *out = (enum event_kind)k;
            return 0;
        }
    }
    return -1;
}

static bool event_is_zero(const struct event *ev)
{
    static const struct event zero;
    return memcmp(ev, &zero, sizeof zero) == 0;
}

/* Decodes a C string that must be valid; fails the test with the reason. */
static void decode_ok(enum event_kind kind, const char *json, struct event *ev)
{
    char reason[EVENT_REASON_MAX];
    int rc = event_decode(kind, json, strlen(json), NULL, ev, reason, sizeof reason);
    if (rc != 0)
        fail_msg("decode returned %d: %s\n  input: %s", rc, reason, json);
}

/* Decodes a C string that must be refused with exactly want. */
static void decode_bad(enum event_kind kind, const char *json, const char *want)
{
    struct event ev;
    char reason[EVENT_REASON_MAX];
    int rc = event_decode(kind, json, strlen(json), NULL, &ev, reason, sizeof reason);
    assert_int_equal(rc, -1);
    assert_string_equal(reason, want);
    assert_true(event_is_zero(&ev));
}

#define ACTION_BID                                                                                 \
    "{\"event_id\":\"chg-1\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","           \
    "\"campaign_id\":\"cmp-1042\",\"entity_type\":\"ad_group\",\"entity_id\":\"ag-1042-1\","       \
    "\"action\":\"bid_change\",\"delta_pct\":%s,\"state\":{\"cpa\":30.5,\"channel\":\"search\"}}"

/* ---- data-driven --------------------------------------------------------- */

/*
 * One bad fixture: decodes it and returns 0 when the reason is exactly the
 * expected one and the event stayed zeroed.  On a mismatch prints why.
 */
static const struct event_limits fast_limits = {.no_state_tree = true};
static const struct event_limits slow_limits = {.no_state_tree = true, .no_fast_path = true};

static int check_bad_fixture(const char *dir, const char *base, const struct event_limits *limits)
{
    char path[1024];
    size_t elen = 0, jlen = 0;

    snprintf(path, sizeof path, "%s/%s.expect", dir, base);
    char *expect = read_all(path, &elen);
    char *nl = strchr(expect, '\n');
    if (!nl) {
        print_error("%s: .expect needs two lines: kind, reason\n", base);
        free(expect);
        return 1;
    }
    *nl = '\0';
    char *want = nl + 1;
    want[strcspn(want, "\n")] = '\0';
    enum event_kind kind;
    if (kind_parse(expect, &kind) != 0) {
        print_error("%s: unknown kind '%s'\n", base, expect);
        free(expect);
        return 1;
    }
    snprintf(path, sizeof path, "%s/%s.json", dir, base);
    char *data = read_all(path, &jlen);

    struct event ev;
    char reason[EVENT_REASON_MAX] = "";
    int rc = event_decode(kind, data, jlen, limits, &ev, reason, sizeof reason);
    int bad = 0;
    if (rc != -1 || strcmp(reason, want) != 0) {
        print_error("%s%s: got %d \"%s\"\n%*s want -1 \"%s\"\n", base,
                    limits ? " (no state tree)" : "", rc, reason, (int)strlen(base), "", want);
        bad = 1;
    }
    if (!event_is_zero(&ev)) {
        print_error("%s: event not left zeroed\n", base);
        bad = 1;
    }
    event_deinit(&ev);
    free(data);
    free(expect);
    return bad;
}

static void test_event_decode_bad_fixtures(void **state)
{
    (void)state;
    char dir[512];
    size_t n = 0;
    int failures = 0;

    snprintf(dir, sizeof dir, "%s/bad-events", fixtures_dir());
    char **names = list_dir(dir, ".expect", &n);
    assert_true(n >= 45);
    for (size_t i = 0; i < n; i++) {
        names[i][strlen(names[i]) - strlen(".expect")] = '\0';
        failures += check_bad_fixture(dir, names[i], NULL);
        failures += check_bad_fixture(dir, names[i], &fast_limits);
    }
    free_list(names, n);
    assert_int_equal(failures, 0);
}

/* Checks what every decoded event of its kind must have. */
static void check_good_event(const struct event *ev, enum event_kind kind)
{
    enum event_class cls;
    assert_int_equal(ev->kind, kind);
    assert_non_null(ev->event_id);
    assert_non_null(ev->ts_text);
    /* every fixture is from 2026-11-02 */
    assert_true(ev->ts_us >= INT64_C(1793577600000000) && ev->ts_us < INT64_C(1793664000000000));
    switch (kind) {
    case EVENT_KIND_ACTION:
        assert_non_null(ev->operator_id);
        assert_non_null(ev->campaign_id);
        assert_non_null(ev->entity_id);
        assert_non_null(ev->state);
        assert_non_null(ev->state_json);
        assert_true(ev->has_action);
        assert_int_equal(event_class_of(ev, &cls), 0);
        break;
    case EVENT_KIND_STATE:
        assert_non_null(ev->campaign_id);
        assert_non_null(ev->entity_id);
        assert_non_null(ev->state_json);
        assert_false(ev->has_action);
        assert_int_equal(event_class_of(ev, &cls), -1);
        break;
    default:
        assert_non_null(ev->operator_id);
        assert_null(ev->state);
        assert_true(ev->recommendation_id > 0);
        assert_int_equal(ev->has_action, ev->verdict == EVENT_VERDICT_MODIFIED);
        assert_int_equal(event_class_of(ev, &cls), ev->has_action ? 0 : -1);
        break;
    }
}

static int decode_good(enum event_kind kind, const char *what, const char *data, size_t len)
{
    struct event ev;
    char reason[EVENT_REASON_MAX] = "";
    int rc = event_decode(kind, data, len, NULL, &ev, reason, sizeof reason);
    if (rc != 0) {
        print_error("%s: %d %s\n", what, rc, reason);
        return 1;
    }
    check_good_event(&ev, kind);
    event_deinit(&ev);
    rc = event_decode(kind, data, len, &fast_limits, &ev, reason, sizeof reason);
    if (rc != 0) {
        print_error("%s (no state tree): %d %s\n", what, rc, reason);
        return 1;
    }
    assert_null(ev.state);
    assert_int_equal(ev.state_json != NULL, kind != EVENT_KIND_FEEDBACK);
    event_deinit(&ev);
    return 0;
}

static void test_event_decode_good_fixtures(void **state)
{
    (void)state;
    static const struct {
        const char *prefix;
        enum event_kind kind;
    } json_kinds[] = {
        {"action_", EVENT_KIND_ACTION},
        {"state_", EVENT_KIND_STATE},
        {"feedback_", EVENT_KIND_FEEDBACK},
    };
    static const struct {
        const char *file;
        enum event_kind kind;
        size_t min_lines;
    } jsonl[] = {
        {"actions.jsonl", EVENT_KIND_ACTION, 30},
        {"states.jsonl", EVENT_KIND_STATE, 40},
        {"feedback.jsonl", EVENT_KIND_FEEDBACK, 10},
    };
    char dir[512], path[1024];
    size_t n = 0, len = 0;
    int failures = 0;

    snprintf(dir, sizeof dir, "%s/events", fixtures_dir());
    char **names = list_dir(dir, ".json", &n);
    assert_true(n >= 10);
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < 3 && strncmp(names[i], json_kinds[k].prefix, strlen(json_kinds[k].prefix)) != 0)
            k++;
        if (k == 3)
            fail_msg("%s: name must start with action_, state_ or feedback_", names[i]);
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *data = read_all(path, &len);
        failures += decode_good(json_kinds[k].kind, names[i], data, len);
        free(data);
    }
    free_list(names, n);

    for (size_t f = 0; f < 3; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, jsonl[f].file);
        char *data = read_all(path, &len);
        size_t lines = 0;
        for (char *line = data; *line;) {
            char *end = strchr(line, '\n');
            size_t llen = end ? (size_t)(end - line) : strlen(line);
            char what[128];
            snprintf(what, sizeof what, "%s:%zu", jsonl[f].file, lines + 1);
            failures += decode_good(jsonl[f].kind, what, line, llen);
            lines++;
            line += llen + (end ? 1 : 0);
        }
        assert_true(lines >= jsonl[f].min_lines);
        free(data);
    }
    assert_int_equal(failures, 0);
}

/* ---- RFC 3339 ------------------------------------------------------------ */

static void test_event_parse_rfc3339_epoch_values(void **state)
{
    (void)state;
    static const struct {
        const char *ts;
        int64_t us;
    } cases[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"1969-12-31T23:59:59Z", -1000000},
        {"2000-01-01T00:00:00Z", INT64_C(946684800000000)},
        {"2026-11-02T14:05:11Z", INT64_C(1793628311000000)},
        {"2016-12-31T23:59:59Z", INT64_C(1483228799000000)},
        {"0001-01-01T00:00:00Z", INT64_C(-62135596800000000)},
        {"9999-12-31T23:59:59Z", INT64_C(253402300799000000)},
        {"2026-11-02t14:05:11z", INT64_C(1793628311000000)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t us = 42;
        if (event_parse_rfc3339(cases[i].ts, &us) != 0)
            fail_msg("%s refused", cases[i].ts);
        if (us != cases[i].us)
            fail_msg("%s: got %lld want %lld", cases[i].ts, (long long)us, (long long)cases[i].us);
    }
}

static void test_event_parse_rfc3339_offsets(void **state)
{
    (void)state;
    int64_t z = 0, us = 0;
    assert_int_equal(event_parse_rfc3339("2026-11-02T14:05:11Z", &z), 0);
    assert_int_equal(event_parse_rfc3339("2026-11-02T19:35:11+05:30", &us), 0);
    assert_true(us == z);
    assert_int_equal(event_parse_rfc3339("2026-11-02T06:05:11-08:00", &us), 0);
    assert_true(us == z);
    assert_int_equal(event_parse_rfc3339("2026-11-02T14:05:11+00:00", &us), 0);
    assert_true(us == z);
    assert_int_equal(event_parse_rfc3339("2026-11-02T14:05:11-00:00", &us), 0);
    assert_true(us == z);
    /* an offset that crosses midnight and a month */
    assert_int_equal(event_parse_rfc3339("2026-11-01T23:30:00-23:59", &us), 0);
    assert_int_equal(event_parse_rfc3339("2026-11-02T23:29:00Z", &z), 0);
    assert_true(us == z);
    /* 2026-11-02T14:05:11.123456+05:30, computed independently */
    assert_int_equal(event_parse_rfc3339("2026-11-02T14:05:11.123456+05:30", &us), 0);
    assert_true(us == INT64_C(1793608511123456));
}

static void test_event_parse_rfc3339_fractions(void **state)
{
    (void)state;
    static const struct {
        const char *ts;
        int64_t frac_us;
    } cases[] = {
        {"1970-01-01T00:00:00.1Z", 100000},       {"1970-01-01T00:00:00.25Z", 250000},
        {"1970-01-01T00:00:00.000001Z", 1},       {"1970-01-01T00:00:00.123456Z", 123456},
        {"1970-01-01T00:00:00.1234567Z", 123456}, {"1970-01-01T00:00:00.999999999Z", 999999},
        {"1970-01-01T00:00:00.000000999Z", 0},    {"1970-01-01T00:00:00.5+00:00", 500000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t us = -1;
        assert_int_equal(event_parse_rfc3339(cases[i].ts, &us), 0);
        if (us != cases[i].frac_us)
            fail_msg("%s: got %lld want %lld", cases[i].ts, (long long)us,
                     (long long)cases[i].frac_us);
    }
    /* truncation keeps a negative time inside its second */
    int64_t us = 0;
    assert_int_equal(event_parse_rfc3339("1969-12-31T23:59:59.9999999Z", &us), 0);
    assert_true(us == -1);
}

static void test_event_parse_rfc3339_leap_years(void **state)
{
    (void)state;
    int64_t a = 0, b = 0;
    assert_int_equal(event_parse_rfc3339("2024-02-29T12:00:00Z", &a), 0);
    assert_true(a == INT64_C(1709208000000000));
    assert_int_equal(event_parse_rfc3339("2000-02-29T00:00:00Z", &a), 0);
    assert_int_equal(event_parse_rfc3339("2000-03-01T00:00:00Z", &b), 0);
    assert_true(b - a == INT64_C(86400000000));
    assert_int_equal(event_parse_rfc3339("2024-12-31T00:00:00Z", &a), 0);
    assert_int_equal(event_parse_rfc3339("2024-01-01T00:00:00Z", &b), 0);
    assert_true(a - b == INT64_C(365) * 86400000000); /* 366-day year */
    assert_int_equal(event_parse_rfc3339("2023-02-29T00:00:00Z", &a), -1);
    assert_int_equal(event_parse_rfc3339("1900-02-29T00:00:00Z", &a), -1);
    assert_int_equal(event_parse_rfc3339("2100-02-29T00:00:00Z", &a), -1);
    assert_int_equal(event_parse_rfc3339("2026-04-31T00:00:00Z", &a), -1);
    assert_int_equal(event_parse_rfc3339("2026-12-31T00:00:00Z", &a), 0);
}

static void test_event_parse_rfc3339_leap_second_clamped(void **state)
{
    (void)state;
    int64_t leap = 0, before = 0;
    assert_int_equal(event_parse_rfc3339("2016-12-31T23:59:60Z", &leap), 0);
    assert_int_equal(event_parse_rfc3339("2016-12-31T23:59:59Z", &before), 0);
    assert_true(leap == before + 999999);
    assert_int_equal(event_parse_rfc3339("2016-12-31T23:59:60.5Z", &leap), 0);
    assert_true(leap == before + 999999);
    assert_int_equal(event_parse_rfc3339("2016-12-31T23:59:61Z", &leap), -1);
}

static void test_event_parse_rfc3339_refusals(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026-11-02",
        "2026-11-02T14:05:11",
        "2026-11-02 14:05:11Z",
        "2026-11-02T14:05Z",
        "2026-11-02T14:05:11ZZ",
        "2026-11-02T14:05:11Z ",
        " 2026-11-02T14:05:11Z",
        "2026-11-02T14:05:11+0530",
        "2026-11-02T14:05:11+05",
        "2026-11-02T14:05:11+05:30x",
        "2026-11-02T14:05:11+24:00",
        "2026-11-02T14:05:11+05:60",
        "2026-11-02T14:05:11.Z",
        "2026-11-02T14:05:11.0123456789Z",
        "2026-11-02T14:05:11,5Z",
        "0000-01-01T00:00:00Z",
        "2026-00-02T14:05:11Z",
        "2026-13-02T14:05:11Z",
        "2026-11-00T14:05:11Z",
        "2026-11-31T14:05:11Z",
        "2026-11-02T24:00:00Z",
        "2026-11-02T14:60:11Z",
        "2026-11-02T14:05:61Z",
        "+2026-11-02T14:05:11Z",
        "20261102T140511Z",
        "2026-1-02T14:05:11Z",
        "2026-11-02T14:05:11UTC",
        "2026-11-02T14:05:11+05:3",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us = 7;
        if (event_parse_rfc3339(bad[i], &us) != -1)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(us == 7);
    }
    int64_t us;
    assert_int_equal(event_parse_rfc3339(NULL, &us), -1);
    assert_int_equal(event_parse_rfc3339("2026-11-02T14:05:11Z", NULL), -1);
}

static void test_event_decode_ts_kept_as_sent(void **state)
{
    (void)state;
    struct event ev;
    char json[1024];
    snprintf(json, sizeof json,
             "{\"event_id\":\"fb-1\",\"ts\":\"2026-11-02T15:00:00.250+01:00\","
             "\"recommendation_id\":%s,\"operator_id\":\"op-07\",\"verdict\":\"accepted\"}",
             "9007199254740993");
    decode_ok(EVENT_KIND_FEEDBACK, json, &ev);
    assert_string_equal(ev.ts_text, "2026-11-02T15:00:00.250+01:00");
    assert_true(ev.ts_us == INT64_C(1793628000250000));
    /* a 64-bit id survives exactly, beyond what a double holds */
    assert_true(ev.recommendation_id == INT64_C(9007199254740993));
    assert_int_equal(ev.verdict, EVENT_VERDICT_ACCEPTED);
    event_deinit(&ev);
}

/* ---- classes and names --------------------------------------------------- */

static void test_event_class_of_actions(void **state)
{
    (void)state;
    static const struct {
        const char *action;
        const char *delta;
        enum event_class cls;
    } cases[] = {
        {"bid_change", "12.5", EVENT_CLASS_BID_UP},
        {"bid_change", "-0.5", EVENT_CLASS_BID_DOWN},
        {"budget_change", "1000", EVENT_CLASS_BUDGET_UP},
        {"budget_change", "-99.9", EVENT_CLASS_BUDGET_DOWN},
        {"creative_pause", "null", EVENT_CLASS_CREATIVE_PAUSE},
        {"creative_resume", "null", EVENT_CLASS_CREATIVE_RESUME},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[1024];
        snprintf(
            json, sizeof json,
            "{\"event_id\":\"chg-1\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
            "\"campaign_id\":\"cmp-1042\",\"entity_type\":\"creative\",\"entity_id\":\"cr-1\","
            "\"action\":\"%s\",\"delta_pct\":%s,\"state\":{}}",
            cases[i].action, cases[i].delta);
        struct event ev;
        enum event_class cls = EVENT_CLASS_COUNT;
        decode_ok(EVENT_KIND_ACTION, json, &ev);
        assert_int_equal(event_class_of(&ev, &cls), 0);
        assert_int_equal(cls, cases[i].cls);
        assert_int_equal(ev.has_delta, strcmp(cases[i].delta, "null") != 0);
        event_deinit(&ev);
    }
}

static void test_event_class_of_feedback_and_state(void **state)
{
    (void)state;
    struct event ev;
    enum event_class cls = EVENT_CLASS_COUNT;

    decode_ok(EVENT_KIND_FEEDBACK,
              "{\"event_id\":\"fb-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"recommendation_id\":1,"
              "\"operator_id\":\"op-07\",\"verdict\":\"modified\",\"action\":\"hold\"}",
              &ev);
    assert_int_equal(event_class_of(&ev, &cls), 0);
    assert_int_equal(cls, EVENT_CLASS_HOLD);
    assert_false(ev.has_delta);
    event_deinit(&ev);

    decode_ok(EVENT_KIND_FEEDBACK,
              "{\"event_id\":\"fb-2\",\"ts\":\"2026-11-02T15:00:00Z\",\"recommendation_id\":2,"
              "\"operator_id\":\"op-07\",\"verdict\":\"modified\",\"action\":\"bid_change\","
              "\"delta_pct\":-5}",
              &ev);
    assert_int_equal(event_class_of(&ev, &cls), 0);
    assert_int_equal(cls, EVENT_CLASS_BID_DOWN);
    event_deinit(&ev);

    decode_ok(EVENT_KIND_FEEDBACK,
              "{\"event_id\":\"fb-3\",\"ts\":\"2026-11-02T15:00:00Z\",\"recommendation_id\":3,"
              "\"operator_id\":\"op-07\",\"verdict\":\"rejected\",\"action\":null}",
              &ev);
    assert_int_equal(event_class_of(&ev, &cls), -1);
    event_deinit(&ev);

    decode_ok(EVENT_KIND_STATE,
              "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
              "\"entity_type\":\"keyword\",\"entity_id\":\"k\",\"state\":{},\"action\":null}",
              &ev);
    assert_int_equal(event_class_of(&ev, &cls), -1);
    assert_null(ev.operator_id);
    event_deinit(&ev);

    struct event zero;
    memset(&zero, 0, sizeof zero);
    assert_int_equal(event_class_of(&zero, &cls), -1);
    assert_int_equal(event_class_of(NULL, &cls), -1);
}

static void test_event_class_name_round_trip(void **state)
{
    (void)state;
    static const char *const want[EVENT_CLASS_COUNT] = {
        "hold",        "bid_up",         "bid_down",       "budget_up",
        "budget_down", "creative_pause", "creative_resume"};
    for (int c = 0; c < EVENT_CLASS_COUNT; c++) {
        enum event_class back = EVENT_CLASS_COUNT;
        assert_string_equal(event_class_name((enum event_class)c), want[c]);
        assert_int_equal(event_class_parse(want[c], &back), 0);
        assert_int_equal(back, c);
    }
    enum event_class back;
    assert_int_equal(event_class_parse("bid_change", &back), -1);
    assert_int_equal(event_class_parse(NULL, &back), -1);
    assert_null(event_class_name(EVENT_CLASS_COUNT));
    assert_string_equal(event_entity_name(EVENT_ENTITY_AD_GROUP), "ad_group");
    assert_null(event_entity_name(EVENT_ENTITY_COUNT));
    assert_string_equal(event_action_name(EVENT_ACTION_HOLD), "hold");
    assert_null(event_action_name(EVENT_ACTION_COUNT));
    assert_string_equal(event_verdict_name(EVENT_VERDICT_MODIFIED), "modified");
    assert_null(event_verdict_name(EVENT_VERDICT_COUNT));
    assert_string_equal(event_kind_name(EVENT_KIND_FEEDBACK), "feedback");
    assert_null(event_kind_name(EVENT_KIND_COUNT));
}

/* ---- features ------------------------------------------------------------ */

static void test_event_features_extracts_declared(void **state)
{
    (void)state;
    struct event ev;
    struct event_feature_spec spec[] = {
        {"cpa", EVENT_FEATURE_NUMERIC},         {"hour_of_day", EVENT_FEATURE_NUMERIC},
        {"channel", EVENT_FEATURE_CATEGORICAL}, {"is_learning", EVENT_FEATURE_CATEGORICAL},
        {"paused", EVENT_FEATURE_CATEGORICAL},
    };
    struct event_feature_value v[5];

    decode_ok(EVENT_KIND_STATE,
              "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
              "\"entity_type\":\"creative\",\"entity_id\":\"cr\",\"state\":{\"cpa\":31.2,"
              "\"hour_of_day\":14,\"channel\":\"search\",\"is_learning\":true,\"paused\":false}}",
              &ev);
    event_features(&ev, spec, 5, v);
    assert_false(v[0].missing);
    assert_true(v[0].num > 31.19 && v[0].num < 31.21);
    assert_false(v[1].missing);
    assert_true(v[1].num > 13.99 && v[1].num < 14.01);
    assert_false(v[2].missing);
    assert_string_equal(v[2].cat, "search");
    assert_false(v[3].missing);
    assert_string_equal(v[3].cat, "true");
    assert_false(v[4].missing);
    assert_string_equal(v[4].cat, "false");
    event_deinit(&ev);
}

static void test_event_features_missing_null_wrong_kind(void **state)
{
    (void)state;
    struct event ev;
    struct event_feature_spec spec[] = {
        {"absent", EVENT_FEATURE_NUMERIC},     {"nul", EVENT_FEATURE_NUMERIC},
        {"str", EVENT_FEATURE_NUMERIC},        {"flag", EVENT_FEATURE_NUMERIC},
        {"absent", EVENT_FEATURE_CATEGORICAL}, {"nul", EVENT_FEATURE_CATEGORICAL},
        {"num", EVENT_FEATURE_CATEGORICAL},    {NULL, EVENT_FEATURE_NUMERIC},
    };
    size_t n = sizeof spec / sizeof spec[0];
    struct event_feature_value v[8];

    decode_ok(EVENT_KIND_ACTION,
              "{\"event_id\":\"chg-1\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
              "\"campaign_id\":\"cmp\",\"entity_type\":\"creative\",\"entity_id\":\"cr\","
              "\"action\":\"creative_pause\",\"state\":{\"nul\":null,\"str\":\"31.2\","
              "\"flag\":true,\"num\":3}}",
              &ev);
    event_features(&ev, spec, n, v);
    for (size_t i = 0; i < n; i++) {
        if (!v[i].missing)
            fail_msg("feature %zu (%s) not missing", i, spec[i].name ? spec[i].name : "NULL");
        assert_null(v[i].cat);
    }
    event_deinit(&ev);

    /* feedback has no state: everything is missing */
    decode_ok(EVENT_KIND_FEEDBACK,
              "{\"event_id\":\"fb-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"recommendation_id\":1,"
              "\"operator_id\":\"op-07\",\"verdict\":\"accepted\",\"state\":{\"num\":1}}",
              &ev);
    event_features(&ev, spec, n, v);
    for (size_t i = 0; i < n; i++)
        assert_true(v[i].missing);
    event_deinit(&ev);
}

/* ---- stored text --------------------------------------------------------- */

static void test_event_decode_state_json_as_sent(void **state)
{
    (void)state;
    struct event ev;
    static const char msg[] =
        "{ \"event_id\" : \"s-1\", \"ts\": \"2026-11-02T15:00:00Z\",\n"
        "  \"state\": {\"vertical\": \"retail\", \"cpa\": 31.2, \"b\": null,\n"
        "             \"a\": true, \"n\": -3, \"caf\\u00e9\": \"\\\"x\\\"\"},\n"
        "  \"campaign_id\": \"c\", \"entity_type\": \"campaign\", \"entity_id\": \"c\"}\n";
    static const char want[] =
        "{\"vertical\": \"retail\", \"cpa\": 31.2, \"b\": null,\n"
        "             \"a\": true, \"n\": -3, \"caf\\u00e9\": \"\\\"x\\\"\"}";
    decode_ok(EVENT_KIND_STATE, msg, &ev);
    assert_string_equal(ev.state_json, want);
    assert_null(ev.extra_json);
    assert_int_equal(ev.entity_type, EVENT_ENTITY_CAMPAIGN);
    event_deinit(&ev);

    /* the same text on both paths without the tree (an escaped key: the slow one) */
    char reason[EVENT_REASON_MAX];
    assert_int_equal(
        event_decode(EVENT_KIND_STATE, msg, strlen(msg), &fast_limits, &ev, reason, sizeof reason),
        0);
    assert_string_equal(ev.state_json, want);
    assert_null(ev.state);
    event_deinit(&ev);

    decode_ok(EVENT_KIND_STATE,
              "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
              "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":{}}",
              &ev);
    assert_string_equal(ev.state_json, "{}");
    event_deinit(&ev);

    /* the key found is the top-level one, even when spelled with escapes */
    decode_ok(
        EVENT_KIND_STATE,
        "{\"event_id\":\"s-1\",\"x\":{\"state\":[\"}\",{\"a\":1}]},\"ts\":\"2026-11-02T15:00:00Z\","
        "\"campaign_id\":\"c\",\"entity_type\":\"campaign\",\"entity_id\":\"c\","
        "\"st\\u0061te\" :\t{ \"k\" : \"v\\\"}\" } }",
        &ev);
    assert_string_equal(ev.state_json, "{ \"k\" : \"v\\\"}\" }");
    event_deinit(&ev);
}

static void test_event_decode_extra_json_unknown_keys(void **state)
{
    (void)state;
    struct event ev;
    char json[1024];
    snprintf(json, sizeof json, ACTION_BID, "-8");
    json[strlen(json) - 1] = '\0';
    strcat(json, ",\"source\":\"ops-console\",\"audit\":{\"z\":[1,{\"y\":2}],\"a\":null},"
                 "\"note\":\"\\u20ac5\"}");
    decode_ok(EVENT_KIND_ACTION, json, &ev);
    assert_string_equal(ev.extra_json, "{\"audit\":{\"a\":null,\"z\":[1,{\"y\":2}]},"
                                       "\"note\":\"\xe2\x82\xac"
                                       "5\",\"source\":\"ops-console\"}");
    assert_string_equal(ev.state_json, "{\"cpa\":30.5,\"channel\":\"search\"}");
    assert_true(ev.has_delta);
    assert_true(ev.delta_pct < -7.99 && ev.delta_pct > -8.01);
    event_deinit(&ev);

    /* fields of another kind are unknown keys of this one */
    decode_ok(EVENT_KIND_FEEDBACK,
              "{\"event_id\":\"fb-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"recommendation_id\":1,"
              "\"operator_id\":\"op-07\",\"verdict\":\"accepted\",\"campaign_id\":\"cmp-1\","
              "\"action\":null,\"delta_pct\":null}",
              &ev);
    assert_string_equal(ev.extra_json, "{\"campaign_id\":\"cmp-1\"}");
    assert_null(ev.state_json);
    event_deinit(&ev);
}

static void test_event_decode_state_json_numbers_as_written(void **state)
{
    (void)state;
    struct event ev;
    static const char st[] = "{\"a\":31.2,\"b\":0.30000000000000004,\"c\":25.0,\"d\":1e300,"
                             "\"e\":-0.0,\"f\":1.5e-7,\"g\":25,\"h\":-9223372036854775808,"
                             "\"i\":0.1,\"j\":123456789.123,\"k\":2.50}";
    char msg[1024];
    snprintf(msg, sizeof msg,
             "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
             "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":%s}",
             st);
    decode_ok(EVENT_KIND_STATE, msg, &ev);
    assert_string_equal(ev.state_json, st);
    /* what is stored reads back as the very same values */
    json_error_t err;
    json_t *back = json_loads(ev.state_json, 0, &err);
    assert_non_null(back);
    assert_true(json_equal(back, ev.state));
    json_decref(back);
    event_deinit(&ev);

    /* -9223372036854775808 has 19 digits: the fast path leaves it to jansson */
    char reason[EVENT_REASON_MAX];
    assert_int_equal(
        event_decode(EVENT_KIND_STATE, msg, strlen(msg), &fast_limits, &ev, reason, sizeof reason),
        0);
    assert_string_equal(ev.state_json, st);
    event_deinit(&ev);
}

/* Without reals, the text is byte for byte what jansson's own compact dump gives. */
static void test_event_decode_extra_json_matches_jansson_layout(void **state)
{
    (void)state;
    struct event ev;
    decode_ok(
        EVENT_KIND_FEEDBACK,
        "{\"event_id\":\"fb-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"recommendation_id\":1,"
        "\"operator_id\":\"op-07\",\"verdict\":\"accepted\",\"x\":{\"tab\":\"a\\tb\","
        "\"ctl\":\"\\u0001\\u001f\\u007f\",\"q\":\"\\\"\\\\\\/\",\"u\":\"\\u00e9\\ud83d\\ude00\","
        "\"nl\":\"\\r\\n\\b\\f\",\"arr\":[[],{},[null,true,false,-1,\"\"]],"
        "\"Z\":1,\"a\\u00e9\":2,\"a\":3}}",
        &ev);
    json_error_t err;
    json_t *x = json_loads(ev.extra_json, 0, &err);
    assert_non_null(x);
    char *theirs = json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(theirs);
    assert_string_equal(ev.extra_json, theirs);
    free(theirs);
    json_decref(x);
    event_deinit(&ev);
}

static void test_event_decode_extra_json_deep_value(void **state)
{
    (void)state;
    /* 2046 nested arrays under a top-level key: as deep as jansson parses */
    enum { DEPTH = 2046 };
    char head[1024];
    snprintf(head, sizeof head, ACTION_BID, "5");
    head[strlen(head) - 1] = '\0';
    size_t hlen = strlen(head);
    size_t len = hlen + strlen(",\"trace\":") + 2 * DEPTH + 1;
    char *json = malloc(len + 1);
    assert_non_null(json);
    memcpy(json, head, hlen);
    size_t off = hlen;
    memcpy(json + off, ",\"trace\":", 9);
    off += 9;
    memset(json + off, '[', DEPTH);
    off += DEPTH;
    memset(json + off, ']', DEPTH);
    off += DEPTH;
    json[off++] = '}';
    json[off] = '\0';
    assert_int_equal(off, len);

    struct event ev;
    decode_ok(EVENT_KIND_ACTION, json, &ev);
    assert_non_null(ev.extra_json);
    assert_int_equal(strlen(ev.extra_json), strlen("{\"trace\":}") + 2 * DEPTH);
    event_deinit(&ev);
    free(json);
}

/* ---- sizes, reasons ------------------------------------------------------ */

/* A valid action event of exactly len bytes, padded inside an unknown key. */
static char *action_of_size(size_t len)
{
    char head[1024];
    snprintf(head, sizeof head, ACTION_BID, "5");
    head[strlen(head) - 1] = '\0';
    size_t hlen = strlen(head);
    const char *pad_key = ",\"pad\":\"";
    size_t fixed = hlen + strlen(pad_key) + 2; /* closing quote and brace */
    assert_true(len > fixed);
    char *buf = malloc(len);
    assert_non_null(buf);
    memcpy(buf, head, hlen);
    memcpy(buf + hlen, pad_key, strlen(pad_key));
    memset(buf + hlen + strlen(pad_key), 'p', len - fixed);
    buf[len - 2] = '"';
    buf[len - 1] = '}';
    return buf;
}

static void test_event_decode_size_limit(void **state)
{
    (void)state;
    struct event ev;
    char reason[EVENT_REASON_MAX];

    char *big = action_of_size(EVENT_DEFAULT_LIMIT + 1);
    assert_int_equal(event_decode(EVENT_KIND_ACTION, big, EVENT_DEFAULT_LIMIT + 1, NULL, &ev,
                                  reason, sizeof reason),
                     -1);
    assert_string_equal(reason, "message: 1048577 bytes exceeds the 1048576-byte limit");
    assert_true(event_is_zero(&ev));
    free(big);

    char *fits = action_of_size(EVENT_DEFAULT_LIMIT);
    assert_int_equal(event_decode(EVENT_KIND_ACTION, fits, EVENT_DEFAULT_LIMIT, NULL, &ev, reason,
                                  sizeof reason),
                     0);
    assert_non_null(ev.extra_json);
    event_deinit(&ev);

    struct event_limits limits = {.max_bytes = 1000};
    assert_int_equal(
        event_decode(EVENT_KIND_ACTION, fits, 1001, &limits, &ev, reason, sizeof reason), -1);
    assert_string_equal(reason, "message: 1001 bytes exceeds the 1000-byte limit");
    free(fits);

    /* max_bytes 0 means the default */
    limits.max_bytes = 0;
    char *small = action_of_size(400);
    assert_int_equal(
        event_decode(EVENT_KIND_ACTION, small, 400, &limits, &ev, reason, sizeof reason), 0);
    event_deinit(&ev);
    free(small);
}

static void test_event_decode_reason_one_line_utf8(void **state)
{
    (void)state;
    struct event ev;
    char json[2048];
    char reason[EVENT_REASON_MAX];

    /* a control character in a key is shown as '?' */
    decode_bad(EVENT_KIND_STATE,
               "{\"event_id\":\"s\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
               "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":{\"a\\nb\":[]}}",
               "state.a?b: nesting not allowed");

    /* a long key is cut at 64 bytes on a character boundary */
    char key[300] = "";
    for (int i = 0; i < 100; i++)
        strcat(key, "\xc3\xa9"); /* é, two bytes */
    snprintf(json, sizeof json,
             "{\"event_id\":\"s\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
             "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":{\"%s\":{}}}",
             key);
    char want[512];
    snprintf(want, sizeof want, "state.%.64s...: nesting not allowed", key);
    decode_bad(EVENT_KIND_STATE, json, want);

    /* a short buffer never ends inside a character */
    char tiny[12];
    assert_int_equal(
        event_decode(EVENT_KIND_STATE, json, strlen(json), NULL, &ev, tiny, sizeof tiny), -1);
    assert_string_equal(tiny, "state.\xc3\xa9\xc3\xa9");
    assert_true(event_is_zero(&ev));

    /* no reason buffer at all is fine */
    assert_int_equal(event_decode(EVENT_KIND_STATE, json, strlen(json), NULL, &ev, NULL, 0), -1);

    /* a long duplicate key is cut too */
    snprintf(json, sizeof json, "{\"%s\":1,\"%s\":2}", key, key);
    snprintf(want, sizeof want, "json: duplicate key \"%.64s...\"", key);
    decode_bad(EVENT_KIND_FEEDBACK, json, want);

    /* an escaped quote inside a duplicate key */
    decode_bad(EVENT_KIND_FEEDBACK, "{\"a\\\"b\\\\\":1, \"a\\\"b\\\\\" :2}",
               "json: duplicate key \"a\\\"b\\\\\"");

    /* an unknown kind is refused, not trusted */
    assert_int_equal(event_decode(EVENT_KIND_COUNT, "{}", 2, NULL, &ev, reason, sizeof reason), -1);
    assert_string_equal(reason, "kind: unknown event kind");
    assert_int_equal(event_decode(EVENT_KIND_ACTION, "{}", 2, NULL, NULL, reason, sizeof reason),
                     -1);
    assert_string_equal(reason, "event: no output given");
    assert_int_equal(event_decode(EVENT_KIND_ACTION, NULL, 10, NULL, &ev, reason, sizeof reason),
                     -1);
    assert_string_equal(reason, "message: empty");
}

static void test_event_decode_accepts_edges(void **state)
{
    (void)state;
    struct event ev;
    char json[1024], id[EVENT_ID_MAX + 1];

    memset(id, 'x', EVENT_ID_MAX);
    id[EVENT_ID_MAX] = '\0';
    snprintf(json, sizeof json,
             "\n {\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"o\","
             "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
             "\"action\":\"budget_change\",\"delta_pct\":1000,\"state\":{\"q\":null}}\r\n",
             id);
    decode_ok(EVENT_KIND_ACTION, json, &ev);
    assert_int_equal(strlen(ev.event_id), EVENT_ID_MAX);
    assert_int_equal(ev.entity_type, EVENT_ENTITY_KEYWORD);
    assert_int_equal(ev.action, EVENT_ACTION_BUDGET_CHANGE);
    event_deinit(&ev);

    snprintf(json, sizeof json, ACTION_BID, "-99.999");
    decode_ok(EVENT_KIND_ACTION, json, &ev);
    event_deinit(&ev);
    snprintf(json, sizeof json, ACTION_BID, "1e-300");
    decode_ok(EVENT_KIND_ACTION, json, &ev);
    event_deinit(&ev);

    /* deinit is safe on a zeroed event, twice, and on NULL */
    event_deinit(&ev);
    event_deinit(NULL);
}

/* ---- the fast path against jansson --------------------------------------- */

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Field by field; doubles compared by their bits (-Wfloat-equal). */
static bool same_event(const struct event *a, const struct event *b)
{
    return a->kind == b->kind && same_str(a->event_id, b->event_id) && a->ts_us == b->ts_us &&
           same_str(a->ts_text, b->ts_text) && same_str(a->operator_id, b->operator_id) &&
           same_str(a->campaign_id, b->campaign_id) && a->entity_type == b->entity_type &&
           same_str(a->entity_id, b->entity_id) && a->has_action == b->has_action &&
           a->action == b->action && a->has_delta == b->has_delta &&
           memcmp(&a->delta_pct, &b->delta_pct, sizeof a->delta_pct) == 0 && a->state == NULL &&
           b->state == NULL && same_str(a->state_json, b->state_json) &&
           same_str(a->extra_json, b->extra_json) && a->recommendation_id == b->recommendation_id &&
           a->verdict == b->verdict;
}

/*
 * Decodes data both ways without the tree and fails the test unless both
 * give the same return, the same reason and the same event.  Returns the
 * return code.
 */
static int check_paths_agree(enum event_kind kind, const char *data, size_t len, const char *what)
{
    struct event fast, slow;
    char rf[EVENT_REASON_MAX] = "", rs[EVENT_REASON_MAX] = "";
    int cf = event_decode(kind, data, len, &fast_limits, &fast, rf, sizeof rf);
    int cs = event_decode(kind, data, len, &slow_limits, &slow, rs, sizeof rs);
    if (cf != cs || strcmp(rf, rs) != 0)
        fail_msg("%s: fast path %d \"%s\", jansson %d \"%s\"", what, cf, rf, cs, rs);
    if (cf == 0 && !same_event(&fast, &slow))
        fail_msg("%s: the paths decoded different events", what);
    if (cf != 0 && !(event_is_zero(&fast) && event_is_zero(&slow)))
        fail_msg("%s: a refused event was not left zeroed", what);
    event_deinit(&fast);
    event_deinit(&slow);
    return cf;
}

static void test_event_decode_paths_agree_on_fixtures(void **state)
{
    (void)state;
    static const char *const subdirs[] = {"events", "bad-events"};
    static const char *const suffixes[] = {".json", ".jsonl"};
    char dir[512], path[1024], what[1200];
    size_t checked = 0;

    for (size_t d = 0; d < 2; d++) {
        snprintf(dir, sizeof dir, "%s/%s", fixtures_dir(), subdirs[d]);
        for (size_t x = 0; x < 2; x++) {
            size_t n = 0, len = 0;
            char **names = list_dir(dir, suffixes[x], &n);
            for (size_t i = 0; i < n; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, names[i]);
                char *data = read_all(path, &len);
                for (char *line = data; *line;) {
                    char *end = x == 1 ? strchr(line, '\n') : NULL;
                    size_t llen = end ? (size_t)(end - line) : strlen(line);
                    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
                        snprintf(what, sizeof what, "%s as %s", path,
                                 event_kind_name((enum event_kind)k));
                        check_paths_agree((enum event_kind)k, line, llen, what);
                        checked++;
                    }
                    line += llen + (end ? 1 : 0);
                }
                free(data);
            }
            free_list(names, n);
        }
    }
    assert_true(checked >= 3 * (100 + 80)); /* the bad fixtures and the good lines, each kind */
}

#define STATE_HEAD                                                                                 \
    "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","                 \
    "\"entity_type\":\"campaign\",\"entity_id\":\"c\","

/* Edge cases around every rule the scanner applies for jansson. */
static void test_event_decode_paths_agree_on_edges(void **state)
{
    (void)state;
    static const struct {
        enum event_kind kind;
        const char *json;
        int want; /* the expected return, so that each case tests what it means to */
    } cases[] = {
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1}}", 0},
        {EVENT_KIND_STATE, " \t\r\n" STATE_HEAD "\"state\":{ } } \n", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1,\"a\":2}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1,\"b\":{}}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":[1]}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":\"\\u0000\"}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":\"\\ud800\"}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":\"\\udc00\"}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":\"\\ud83d\\ude00\\u00e9\\n\"}}", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":\"\\x\"}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":\"tab\there\"}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"\xc3\xa9t\xc3\xa9\":\"\xe2\x82\xac\"}}", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":\"\xc3\"}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":\"\xed\xa0\x80\"}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1}}\xc2\xa0", -1},
        {EVENT_KIND_STATE, "\xef\xbb\xbf" STATE_HEAD "\"state\":{}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":123456789012345678}}", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1234567890123456789}}", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":92233720368547758070}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1e308,\"b\":1e-400,\"c\":-0}}", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1e309}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":01}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1.}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":.5}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":-}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1e}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":+1}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":truex}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":nul}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1,}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\" 1}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1}}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1}}x", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1},\"state\":{}}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1},\"event_id\":\"s-2\"}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1},\"extra\":[1,{\"b\":2}]}", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1},\"operator_id\":null}", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1},\"operator_id\":\"\"}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1},\"action\":null,\"delta_pct\":null}", 0},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1},\"action\":\"bid_change\"}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":{\"a\":1},\"delta_pct\":5}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":null}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"state\":\"{}\"}", -1},
        {EVENT_KIND_STATE, STATE_HEAD "\"st\\u0061te\":{\"a\":1}}", 0},
        {EVENT_KIND_STATE,
         "{\"event_id\":\"s\\u002d1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
         "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":{}}",
         0},
        {EVENT_KIND_STATE,
         "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00\\u005a\",\"campaign_id\":\"c\","
         "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":{}}",
         0},
        {EVENT_KIND_STATE,
         "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
         "\"entity_type\":\"\\u0063ampaign\",\"entity_id\":\"c\",\"state\":{}}",
         0},
        {EVENT_KIND_STATE,
         "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T25:00:00Z\",\"campaign_id\":\"c\","
         "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":{}}",
         -1},
        {EVENT_KIND_STATE,
         "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
         "\"entity_type\":\"campaigns\",\"entity_id\":\"c\",\"state\":{}}",
         -1},
        {EVENT_KIND_STATE,
         "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"campaign_id\":\"c\","
         "\"entity_type\":\"campaign\",\"entity_id\":1,\"state\":{}}",
         -1},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
         "\"action\":\"bid_change\",\"delta_pct\":-99.99999999999999,\"state\":{}}",
         0},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
         "\"action\":\"budget_change\",\"delta_pct\":1e3,\"state\":{}}",
         0},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
         "\"action\":\"budget_change\",\"delta_pct\":1000.0000000000001,\"state\":{}}",
         -1},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
         "\"action\":\"bid_change\",\"delta_pct\":-0.0,\"state\":{}}",
         -1},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
         "\"action\":\"bid_change\",\"delta_pct\":\"5\",\"state\":{}}",
         -1},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
         "\"action\":\"creative_pause\",\"delta_pct\":null,\"state\":{\"x\":true}}",
         0},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
         "\"action\":\"creative_pause\",\"delta_pct\":3,\"state\":{}}",
         -1},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"keyword\",\"entity_id\":\"k\","
         "\"action\":\"hold\",\"state\":{}}",
         -1},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":123456789012345678,\"verdict\":\"accepted\"}",
         0},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":9223372036854775807,\"verdict\":\"rejected\"}",
         0},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":-0,\"verdict\":\"accepted\"}",
         -1},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":3.0,\"verdict\":\"accepted\"}",
         -1},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":7,\"verdict\":\"modified\",\"action\":\"hold\",\"delta_pct\":null}",
         0},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":7,\"verdict\":\"modified\",\"action\":\"bid_change\","
         "\"delta_pct\":12}",
         0},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":7,\"verdict\":\"modified\"}",
         -1},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":7,\"verdict\":\"accepted\",\"action\":\"hold\"}",
         -1},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":7,\"verdict\":\"accepted\",\"state\":{}}",
         0},
        {EVENT_KIND_FEEDBACK, "{}", -1},
        {EVENT_KIND_FEEDBACK, "[]", -1},
        {EVENT_KIND_FEEDBACK, "", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "case %zu", i);
        int rc = check_paths_agree(cases[i].kind, cases[i].json, strlen(cases[i].json), what);
        if (rc != cases[i].want)
            fail_msg("case %zu: got %d, want %d: %s", i, rc, cases[i].want, cases[i].json);
    }
    /* raw NUL bytes, after the object and inside a string */
    static const char nul_after[] = STATE_HEAD "\"state\":{\"a\":1}}\0";
    static const char nul_inside[] = STATE_HEAD "\"state\":{\"a\":\"x\0y\"}}";
    assert_int_equal(check_paths_agree(EVENT_KIND_STATE, nul_after, sizeof nul_after - 1, "nul"),
                     -1);
    assert_int_equal(check_paths_agree(EVENT_KIND_STATE, nul_inside, sizeof nul_inside - 1, "nul"),
                     -1);
}

/*
 * Every single-byte change of a few valid events (each byte replaced by each
 * of a set of bytes that matter to a JSON scanner, or deleted), decoded both
 * ways: the outcomes must agree every time.
 */
static void test_event_decode_paths_agree_on_mutations(void **state)
{
    (void)state;
    static const struct {
        enum event_kind kind;
        const char *json;
    } seeds[] = {
        {EVENT_KIND_STATE, STATE_HEAD "\"operator_id\":null,\"state\":{\"cpa\":31.25,\"n\":-3,"
                                      "\"ok\":true,\"no\":false,\"z\":null,\"s\":\"a\\\"\\u00e9\","
                                      "\"e\":1.5e-3}}"},
        {EVENT_KIND_ACTION,
         "{\"event_id\":\"a-1\",\"ts\":\"2026-11-02T14:05:11.5+01:00\",\"operator_id\":\"o\","
         "\"campaign_id\":\"c\",\"entity_type\":\"ad_group\",\"entity_id\":\"g\","
         "\"action\":\"bid_change\",\"delta_pct\":-12.5,\"state\":{\"bid\":1.25}}"},
        {EVENT_KIND_FEEDBACK,
         "{\"event_id\":\"f-1\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"o\","
         "\"recommendation_id\":42,\"verdict\":\"modified\",\"action\":\"budget_change\","
         "\"delta_pct\":20}"},
    };
    static const char subst[] = {'"', '\\', '{', '}', '[', ']', ':', ',', ' ', '\n',   '0',
                                 '9', '-',  '.', 'e', 'u', 'a', 'n', 't', 'f', '\x01', '\x7f'};
    static const unsigned char high[] = {0x80, 0xc3, 0xff};
    char buf[1024];
    size_t accepted = 0, total = 0;

    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        const char *seed = seeds[k].json;
        size_t n = strlen(seed);
        assert_true(n < sizeof buf);
        assert_int_equal(check_paths_agree(seeds[k].kind, seed, n, seed), 0);
        for (size_t pos = 0; pos < n; pos++) {
            for (size_t v = 0; v <= sizeof subst + sizeof high; v++) {
                size_t len = n;
                memcpy(buf, seed, n);
                if (v < sizeof subst) {
                    buf[pos] = subst[v];
                } else if (v < sizeof subst + sizeof high) {
                    buf[pos] = (char)high[v - sizeof subst];
                } else {
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    len--;
                }
                char what[64];
                snprintf(what, sizeof what, "seed %zu, byte %zu, variant %zu", k, pos, v);
                if (check_paths_agree(seeds[k].kind, buf, len, what) == 0)
                    accepted++;
                total++;
            }
        }
    }
    /* both outcomes occur in numbers, or the test proves little */
    assert_true(accepted > total / 20);
    assert_true(accepted < total / 2);
}

/* The fast path is taken for the usual shape: it allocates only the event's strings. */
static void test_event_decode_fast_path_allocates_little(void **state)
{
    (void)state;
    char path[1024];
    size_t len;
    snprintf(path, sizeof path, "%s/events/state_snapshot.json", fixtures_dir());
    char *data = read_all(path, &len);
    long fast = 0, slow = 0;
    for (int way = 0; way < 2; way++) {
        for (long i = 0;; i++) {
            struct event ev;
            char reason[EVENT_REASON_MAX];
            util_alloc_fail_after(i);
            int rc = event_decode(EVENT_KIND_STATE, data, len, way ? &slow_limits : &fast_limits,
                                  &ev, reason, sizeof reason);
            util_alloc_fail_after(-1);
            if (rc == 0) {
                event_deinit(&ev);
                *(way ? &slow : &fast) = i;
                break;
            }
            /* out of memory is reported as such, never as a bad message */
            assert_int_equal(rc, -2);
            assert_string_equal(reason, "out of memory");
            assert_true(event_is_zero(&ev));
        }
    }
    free(data);
    /* one block for event_id, ts_text, operator_id, campaign_id, entity_id, state_json */
    assert_int_equal(fast, 1);
    assert_true(slow > 20);
}

static void test_event_decode_no_state_tree_leaves_features_missing(void **state)
{
    (void)state;
    struct event ev;
    char reason[EVENT_REASON_MAX];
    static const char msg[] = STATE_HEAD "\"state\":{\"cpa\":31.2}}";
    struct event_feature_spec spec[] = {{"cpa", EVENT_FEATURE_NUMERIC}};
    struct event_feature_value v[1];
    assert_int_equal(
        event_decode(EVENT_KIND_STATE, msg, strlen(msg), &fast_limits, &ev, reason, sizeof reason),
        0);
    assert_null(ev.state);
    assert_string_equal(ev.state_json, "{\"cpa\":31.2}");
    event_features(&ev, spec, 1, v);
    assert_true(v[0].missing);
    event_deinit(&ev);
}

static void test_event_json_member_raw_finds_top_level(void **state)
{
    (void)state;
    static const char doc[] = " { \"a\" : [ \"state\" , { \"state\" : 1 } ] , \"q\\\"\" : \"}\" ,"
                              " \"st\\u0061t\\u0065\" : { \"x\" : \"\\\\\" } , \"z\" : 2 } ";
    size_t off = 0, n = 0;
    assert_int_equal(event_json_member_raw(doc, strlen(doc), "state", &off, &n), 0);
    assert_int_equal(n, strlen("{ \"x\" : \"\\\\\" }"));
    assert_memory_equal(doc + off, "{ \"x\" : \"\\\\\" }", n);
    assert_int_equal(event_json_member_raw(doc, strlen(doc), "z", &off, &n), 0);
    assert_memory_equal(doc + off, "2", n);
    assert_int_equal(event_json_member_raw(doc, strlen(doc), "q\"", &off, &n), 0);
    assert_memory_equal(doc + off, "\"}\"", n);
    assert_int_equal(event_json_member_raw(doc, strlen(doc), "x", &off, &n), -1);
    assert_int_equal(event_json_member_raw(doc, strlen(doc), "stat", &off, &n), -1);
    assert_int_equal(
        event_json_member_raw("{\"\\ud83d\\ude00\":true}", 23, "\xf0\x9f\x98\x80", &off, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(event_json_member_raw("[]", 2, "a", &off, &n), -1);
    assert_int_equal(event_json_member_raw("{}", 2, "a", &off, &n), -1);
}

/* ---- the syntax check behind out-of-memory detection --------------------- */

static void test_event_json_wellformed_agrees_with_jansson(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "{}",
        "[]",
        " {\"a\" : [1, -0, 2.5e+3, 0.1E-2, true, false, null, \"\\u00e9\\ud83d\\ude00\"]} ",
        "\"s\"",
        "0",
        "-1",
        "{\"a\":{\"b\":{}}}",
        "[[[]],[{}]]",
        "\t\r\n{}\n",
        "",
        " ",
        "{",
        "}",
        "[",
        "{]",
        "[}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\" 1}",
        "{,}",
        "[,1]",
        "[1,]",
        "{\"a\":1,}",
        "{a:1}",
        "{'a':1}",
        "[01]",
        "[1.]",
        "[.5]",
        "[-]",
        "[1e]",
        "[1e+]",
        "[+1]",
        "[0x10]",
        "[NaN]",
        "[Infinity]",
        "[-Infinity]",
        "[tru]",
        "[truex]",
        "[nul]",
        "[\"\\x\"]",
        "[\"\\u12\"]",
        "[\"\\ud800\"]",
        "[\"\\udc00\"]",
        "[\"\\ud800\\u0041\"]",
        "[\"a\tb\"]",
        "[\"a\nb\"]",
        "[\"abc]",
        "{}{}",
        "{} x",
        "[1 2]",
        "{\"a\":1 \"b\":2}",
        "[\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"]",
        "[\"\x7f\"]",
        "\x0b{}",
        "{}\x0c",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_error_t err;
        json_t *j = json_loadb(cases[i], strlen(cases[i]), JSON_DECODE_ANY, &err);
        int ours = event_json_wellformed(cases[i], strlen(cases[i]));
        if (ours != (j != NULL))
            fail_msg("'%s': ours %d, jansson %s", cases[i], ours, j ? "ok" : err.text);
        json_decref(j);
    }
    /* what jansson refuses with codes of its own is not a syntax matter */
    assert_int_equal(event_json_wellformed("{\"a\":1,\"a\":2}", 13), 1);
    assert_int_equal(event_json_wellformed("[1e999]", 7), 1);
    assert_int_equal(event_json_wellformed(NULL, 0), 0);
}

/* ---- allocation failures ------------------------------------------------- */

/*
 * Fails each allocation of one decode in turn, until the decode completes
 * with want_rc (and, for -1, exactly the reason want).  Every failure before
 * must come back as -2 with the event zeroed and the reason "out of memory";
 * when lenient, a -1 with another reason is tolerated too.  Returns how many
 * allocations the completed decode made.
 */
static long walk_alloc_failures(enum event_kind kind, const char *data, size_t len, int want_rc,
                                const char *want, bool lenient)
{
    for (long i = 0; i < 100000; i++) {
        struct event ev;
        char reason[EVENT_REASON_MAX] = "";
        util_alloc_fail_after(i);
        int rc = event_decode(kind, data, len, NULL, &ev, reason, sizeof reason);
        util_alloc_fail_after(-1);
        if (rc == want_rc && (rc == 0 || strcmp(reason, want) == 0)) {
            event_deinit(&ev);
            return i;
        }
        if (rc == -2) {
            assert_string_equal(reason, "out of memory");
            assert_true(event_is_zero(&ev));
            continue;
        }
        if (rc == -1 && lenient) {
            assert_true(event_is_zero(&ev));
            continue;
        }
        fail_msg("allocation %ld failed: got %d \"%s\", want %d \"%s\"", i, rc, reason, want_rc,
                 want ? want : "");
    }
    fail_msg("decode never completed");
    return -1;
}

static void test_event_decode_alloc_failure_valid(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        enum event_kind kind;
    } cases[] = {
        {"events/action_extra_keys.json", EVENT_KIND_ACTION},
        {"events/state_snapshot.json", EVENT_KIND_STATE},
        {"events/feedback_modified.json", EVENT_KIND_FEEDBACK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[1024];
        size_t len;
        snprintf(path, sizeof path, "%s/%s", fixtures_dir(), cases[i].file);
        char *data = read_all(path, &len);
        long allocs = walk_alloc_failures(cases[i].kind, data, len, 0, NULL, false);
        assert_true(allocs > 5);
        free(data);
    }
}

/*
 * Every bad fixture under every allocation failure: -2, or -1 with the
 * expected reason.  Only for bytes that are not well-formed JSON may the
 * reason differ under memory pressure (jansson's text then describes where
 * it ran out of memory); the message is refused all the same.
 */
static void test_event_decode_alloc_failure_bad_fixtures(void **state)
{
    (void)state;
    char dir[512], path[1024];
    size_t n = 0;

    snprintf(dir, sizeof dir, "%s/bad-events", fixtures_dir());
    char **names = list_dir(dir, ".expect", &n);
    for (size_t i = 0; i < n; i++) {
        size_t elen, jlen;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        char *expect = read_all(path, &elen);
        char *want = strchr(expect, '\n');
        assert_non_null(want);
        *want++ = '\0';
        want[strcspn(want, "\n")] = '\0';
        enum event_kind kind = EVENT_KIND_ACTION;
        assert_int_equal(kind_parse(expect, &kind), 0);
        names[i][strlen(names[i]) - strlen(".expect")] = '\0';
        snprintf(path, sizeof path, "%s/%s.json", dir, names[i]);
        char *data = read_all(path, &jlen);
        bool syntax_error = strncmp(want, "json: ", 6) == 0 && !event_json_wellformed(data, jlen);
        walk_alloc_failures(kind, data, jlen, -1, want, syntax_error);
        free(data);
        free(expect);
    }
    free_list(names, n);
}

int main(void)
{
    json_set_alloc_funcs(json_alloc_via_util, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_decode_bad_fixtures),
        cmocka_unit_test(test_event_decode_good_fixtures),
        cmocka_unit_test(test_event_parse_rfc3339_epoch_values),
        cmocka_unit_test(test_event_parse_rfc3339_offsets),
        cmocka_unit_test(test_event_parse_rfc3339_fractions),
        cmocka_unit_test(test_event_parse_rfc3339_leap_years),
        cmocka_unit_test(test_event_parse_rfc3339_leap_second_clamped),
        cmocka_unit_test(test_event_parse_rfc3339_refusals),
        cmocka_unit_test(test_event_decode_ts_kept_as_sent),
        cmocka_unit_test(test_event_class_of_actions),
        cmocka_unit_test(test_event_class_of_feedback_and_state),
        cmocka_unit_test(test_event_class_name_round_trip),
        cmocka_unit_test(test_event_features_extracts_declared),
        cmocka_unit_test(test_event_features_missing_null_wrong_kind),
        cmocka_unit_test(test_event_decode_state_json_as_sent),
        cmocka_unit_test(test_event_decode_extra_json_unknown_keys),
        cmocka_unit_test(test_event_decode_state_json_numbers_as_written),
        cmocka_unit_test(test_event_decode_extra_json_matches_jansson_layout),
        cmocka_unit_test(test_event_decode_extra_json_deep_value),
        cmocka_unit_test(test_event_decode_size_limit),
        cmocka_unit_test(test_event_decode_reason_one_line_utf8),
        cmocka_unit_test(test_event_decode_accepts_edges),
        cmocka_unit_test(test_event_decode_paths_agree_on_fixtures),
        cmocka_unit_test(test_event_decode_paths_agree_on_edges),
        cmocka_unit_test(test_event_decode_paths_agree_on_mutations),
        cmocka_unit_test(test_event_decode_fast_path_allocates_little),
        cmocka_unit_test(test_event_decode_no_state_tree_leaves_features_missing),
        cmocka_unit_test(test_event_json_member_raw_finds_top_level),
        cmocka_unit_test(test_event_json_wellformed_agrees_with_jansson),
        cmocka_unit_test(test_event_decode_alloc_failure_valid),
        cmocka_unit_test(test_event_decode_alloc_failure_bad_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
