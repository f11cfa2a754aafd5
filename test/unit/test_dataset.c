/*
 * Unit tests for internal/dataset: the builder and its accessors, the CSV
 * reader, weights, the time-ordered split and the binning.
 *
 * The bad CSV fixtures are data-driven (run from the repository root, or
 * set UNDERSTUDY_FIXTURES): every fixtures/csv/bad-NAME.csv must be refused
 * with the message given on the "error:" line of bad-NAME.expect, after the
 * file's path; other lines of the .expect set reader options (label, ts,
 * group, target, categorical, drop, classes; lists comma-separated; the label
 * is "y" unless said).  Adding a pair adds a case.  The good fixtures each
 * have a test of their own that checks the values read.
 *
 * Random data comes from a seeded splitmix64, so every run sees the same
 * numbers.
 */
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tfile.h"

#include "dataset/dataset.h"
#include "util/util.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double uniform(uint64_t *s)
{
    return (double)(mix(s) >> 11) / 9007199254740992.0;
}

static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static bool same_float(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void tmp_path(char *buf, size_t size, const char *name)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, size, "%s/understudy-test-dataset-%ld-%s", dir && *dir ? dir : "/tmp",
             (long)getpid(), name);
}

static struct ds *csv_ok(const char *name, const struct ds_csv_options *o)
{
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/csv/%s", tfixtures_dir(), name);
    struct ds *d = NULL;
    if (ds_read_csv(path, o, &d, err, sizeof err) != 0)
        fail_msg("%s: %s", path, err);
    assert_non_null(d);
    return d;
}

static const char *const classes7[] = {
    "hold", "bid_up", "bid_down", "budget_up", "budget_down", "creative_pause", "creative_resume"};

/* A dataset of one numeric feature "x" and classes a, b. */
static struct ds *new_numeric(void)
{
    const char *names[] = {"x"};
    enum gbm_kind kinds[] = {GBM_NUMERIC};
    const char *cls[] = {"a", "b"};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 1, cls, 2, &d, err, sizeof err), 0);
    return d;
}

static void add_num(struct ds *d, const char *label, int64_t ts, double x)
{
    struct event_feature_value v = {.missing = false, .num = x};
    assert_int_equal(ds_add_row(d, label, ts, NULL, NAN, &v), 0);
}

/* The number of cuts <= v: the bin gbm.h defines. */
static unsigned ref_bin(const struct gbm_feature *f, double v)
{
    if (isnan(v))
        return GBM_MISSING_BIN;
    unsigned b = 0;
    for (unsigned i = 0; i + 1 < f->n_bins; i++)
        b += f->cuts[i] <= v;
    return b;
}

static void check_cuts_increasing(const struct gbm_feature *f)
{
    assert_true(f->n_bins >= 1 && f->n_bins <= GBM_MAX_BINS);
    for (unsigned i = 1; i + 1 < f->n_bins; i++)
        assert_true(f->cuts[i - 1] < f->cuts[i]);
}

static struct ds_binned *bin_ok(const struct ds *d, unsigned max_bins, unsigned threads)
{
    struct ds_binned *b = NULL;
    char err[256] = "";
    if (ds_bin(d, max_bins, threads, &b, err, sizeof err) != 0)
        fail_msg("ds_bin: %s", err);
    return b;
}

/* ---- builder ------------------------------------------------------------- */

static void test_dataset_new_bad_names(void **state)
{
    (void)state;
    struct ds *d = NULL;
    char err[256];
    const char *dup[] = {"a", "b", "a"};
    enum gbm_kind k3[] = {GBM_NUMERIC, GBM_NUMERIC, GBM_CATEGORICAL};
    assert_int_equal(ds_new(dup, k3, 3, NULL, 0, &d, err, sizeof err), -1);
    assert_string_equal(err, "duplicate feature name \"a\"");
    assert_null(d);
    const char *empty[] = {"a", ""};
    assert_int_equal(ds_new(empty, k3, 2, NULL, 0, &d, err, sizeof err), -1);
    assert_string_equal(err, "feature 1: empty name");
    const char *one[] = {"a"};
    const char *cls[] = {"x", "y", "x"};
    assert_int_equal(ds_new(one, k3, 1, cls, 3, &d, err, sizeof err), -1);
    assert_string_equal(err, "duplicate class name \"x\"");
    enum gbm_kind bad[] = {(enum gbm_kind)7};
    assert_int_equal(ds_new(one, bad, 1, NULL, 0, &d, err, sizeof err), -1);
    assert_string_equal(err, "feature \"a\": unknown kind 7");
    assert_null(d);
}

static void test_dataset_add_row_accessors(void **state)
{
    (void)state;
    const char *names[] = {"cpa", "device", "ctr"};
    enum gbm_kind kinds[] = {GBM_NUMERIC, GBM_CATEGORICAL, GBM_NUMERIC};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 3, classes7, 7, &d, err, sizeof err), 0);
    struct event_feature_value r0[] = {{false, 1.5, NULL}, {false, 0, "mobile"}, {true, 9, NULL}};
    struct event_feature_value r1[] = {
        {false, INFINITY, NULL}, {false, 0, "desktop"}, {false, 0.25, NULL}};
    struct event_feature_value r2[] = {{true, 3, NULL}, {false, 0, NULL}, {false, -2, NULL}};
    struct event_feature_value r3[] = {{false, -0.5, NULL}, {false, 0, "mobile"}, {false, 1, NULL}};
    struct event_feature_value r4[] = {{false, 7, NULL}, {false, 0, ""}, {false, NAN, NULL}};
    assert_int_equal(ds_add_row(d, "hold", 100, "op-1", NAN, r0), 0);
    assert_int_equal(ds_add_row(d, "bid_up", 200, "op-2", 12.5, r1), 0);
    assert_int_equal(ds_add_row(d, "bid_up", 50, NULL, 3.0, r2), 0);
    assert_int_equal(ds_add_row(d, "creative_pause", 300, "op-1", NAN, r3), 0);
    assert_int_equal(ds_add_row(d, "hold", 400, "op-3", NAN, r4), 0);

    assert_int_equal(ds_n_rows(d), 5);
    assert_int_equal(ds_n_features(d), 3);
    assert_string_equal(ds_feature_name(d, 1), "device");
    assert_int_equal(ds_feature_kind(d, 1), GBM_CATEGORICAL);
    assert_int_equal(ds_feature_kind(d, 2), GBM_NUMERIC);
    assert_int_equal(ds_feature_index(d, "ctr"), 2);
    assert_int_equal(ds_feature_index(d, "nope"), -1);
    assert_int_equal(ds_n_classes(d), 7);
    assert_string_equal(ds_class_name(d, 5), "creative_pause");
    size_t want_counts[7] = {2, 2, 0, 0, 0, 1, 0};
    for (size_t c = 0; c < 7; c++)
        assert_int_equal(ds_class_count(d, c), want_counts[c]);

    assert_int_equal(ds_n_groups(d), 3);
    assert_string_equal(ds_group_name(d, 0), "op-1");
    assert_string_equal(ds_row_group(d, 3), "op-1");
    assert_int_equal(ds_row_group_index(d, 3), 0);
    assert_null(ds_row_group(d, 2));
    assert_int_equal(ds_row_group_index(d, 2), -1);

    assert_int_equal(ds_row_label(d, 3), 5);
    assert_int_equal(ds_row_ts(d, 2), 50);
    assert_true(isnan(ds_row_target(d, 0)));
    assert_true(ds_row_target(d, 1) > 12.49 && ds_row_target(d, 1) < 12.51);
    assert_true(ds_row_weight(d, 4) > 0.999f && ds_row_weight(d, 4) < 1.001f);

    assert_true(same_double(ds_cell_num(d, 0, 0), 1.5));
    assert_true(isnan(ds_cell_num(d, 0, 1))); /* infinity is stored as missing */
    assert_true(isnan(ds_cell_num(d, 0, 2)));
    assert_true(same_double(ds_cell_num(d, 0, 3), -0.5));
    assert_true(isnan(ds_cell_num(d, 2, 0)));
    assert_true(isnan(ds_cell_num(d, 2, 4)));
    assert_true(isnan(ds_cell_num(d, 1, 0))); /* categorical asked as numeric */
    assert_null(ds_cell_level(d, 0, 0));      /* and the other way round */
    assert_string_equal(ds_cell_level(d, 1, 0), "mobile");
    assert_string_equal(ds_cell_level(d, 1, 1), "desktop");
    assert_null(ds_cell_level(d, 1, 2));
    assert_string_equal(ds_cell_level(d, 1, 3), "mobile");
    assert_string_equal(ds_cell_level(d, 1, 4), "");
    assert_int_equal(ds_n_levels(d, 1), 3); /* mobile, desktop and "" */
    assert_string_equal(ds_level_name(d, 1, 1), "desktop");
    ds_free(d);
    ds_free(NULL);
}

static void test_dataset_add_row_bad_label(void **state)
{
    (void)state;
    struct ds *d = new_numeric();
    struct event_feature_value v = {false, 1, NULL};
    assert_int_equal(ds_add_row(d, "c", 0, NULL, NAN, &v), -2);
    assert_int_equal(ds_add_row(d, "", 0, NULL, NAN, &v), -2);
    assert_int_equal(ds_add_row(d, NULL, 0, NULL, NAN, &v), -2);
    assert_int_equal(ds_n_rows(d), 0);
    assert_int_equal(ds_n_classes(d), 2);
    assert_int_equal(ds_add_row(d, "b", 0, NULL, NAN, &v), 0);
    assert_int_equal(ds_n_rows(d), 1);
    ds_free(d);
}

static void test_dataset_add_row_discovers_classes(void **state)
{
    (void)state;
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(NULL, NULL, 0, NULL, 0, &d, err, sizeof err), 0);
    const char *labels[] = {"z", "a", "z", "m", "a", "z"};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(ds_add_row(d, labels[i], (int64_t)i, NULL, NAN, NULL), 0);
    assert_int_equal(ds_n_classes(d), 3);
    assert_string_equal(ds_class_name(d, 0), "z");
    assert_string_equal(ds_class_name(d, 1), "a");
    assert_string_equal(ds_class_name(d, 2), "m");
    assert_int_equal(ds_class_count(d, 0), 3);
    assert_int_equal(ds_class_count(d, 2), 1);
    assert_int_equal(ds_row_label(d, 3), 2);
    ds_free(d);
}

/* Many rows and levels: growth and interning keep every cell. */
static void test_dataset_add_row_many_rows(void **state)
{
    (void)state;
    const char *names[] = {"n", "c"};
    enum gbm_kind kinds[] = {GBM_NUMERIC, GBM_CATEGORICAL};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 2, NULL, 0, &d, err, sizeof err), 0);
    const size_t n = 200000;
    char level[32], group[32];
    for (size_t r = 0; r < n; r++) {
        snprintf(level, sizeof level, "level-%zu", (r * 7919) % 5003);
        snprintf(group, sizeof group, "op-%zu", r % 17);
        struct event_feature_value v[2] = {{false, (double)r, NULL}, {false, 0, level}};
        assert_int_equal(ds_add_row(d, r % 3 ? "x" : "y", (int64_t)r, group, NAN, v), 0);
    }
    assert_int_equal(ds_n_rows(d), n);
    assert_int_equal(ds_n_levels(d, 1), 5003);
    assert_int_equal(ds_n_groups(d), 17);
    for (size_t r = 0; r < n; r += 997) {
        snprintf(level, sizeof level, "level-%zu", (r * 7919) % 5003);
        snprintf(group, sizeof group, "op-%zu", r % 17);
        assert_string_equal(ds_cell_level(d, 1, r), level);
        assert_string_equal(ds_row_group(d, r), group);
        assert_true(same_double(ds_cell_num(d, 0, r), (double)r));
    }
    ds_free(d);
}

static void test_dataset_add_row_alloc_failures(void **state)
{
    (void)state;
    const char *names[] = {"n", "c"};
    enum gbm_kind kinds[] = {GBM_NUMERIC, GBM_CATEGORICAL};
    long i;
    for (i = 0; i < 10000; i++) {
        struct ds *d = NULL;
        char err[256] = "";
        util_alloc_fail_after(i);
        int rc = ds_new(names, kinds, 2, NULL, 0, &d, err, sizeof err);
        int added = 0;
        if (rc == 0) {
            char lv[16];
            for (int r = 0; r < 3000; r++) {
                snprintf(lv, sizeof lv, "l%d", r % 40);
                struct event_feature_value v[2] = {{false, r, NULL}, {false, 0, lv}};
                int ar = ds_add_row(d, r % 2 ? "a" : "b", r, r % 3 ? "g" : NULL, NAN, v);
                if (ar != 0) {
                    assert_int_equal(ar, -1);
                    break;
                }
                added++;
            }
        } else {
            assert_string_equal(err, "out of memory");
            assert_null(d);
        }
        util_alloc_fail_after(-1);
        if (d) {
            /* What was added before the failure is intact. */
            assert_int_equal(ds_n_rows(d), (size_t)added);
            for (int r = 0; r < added; r++)
                assert_true(same_double(ds_cell_num(d, 0, (size_t)r), (double)r));
        }
        ds_free(d);
        if (rc == 0 && added == 3000)
            break;
    }
    assert_true(i > 5);
}

/* ---- CSV: good fixtures -------------------------------------------------- */

static void test_dataset_read_csv_basic(void **state)
{
    (void)state;
    struct ds_csv_options o = {.label = "y", .ts = "ts", .group = "operator", .target = "delta"};
    struct ds *d = csv_ok("good-basic.csv", &o);
    assert_int_equal(ds_n_rows(d), 5);
    assert_int_equal(ds_n_features(d), 3);
    assert_string_equal(ds_feature_name(d, 0), "cpa");
    assert_string_equal(ds_feature_name(d, 1), "ctr");
    assert_string_equal(ds_feature_name(d, 2), "device");
    assert_int_equal(ds_feature_kind(d, 0), GBM_NUMERIC);
    assert_int_equal(ds_feature_kind(d, 1), GBM_NUMERIC);
    assert_int_equal(ds_feature_kind(d, 2), GBM_CATEGORICAL);
    /* Discovered classes come sorted by name. */
    assert_int_equal(ds_n_classes(d), 3);
    assert_string_equal(ds_class_name(d, 0), "bid_down");
    assert_string_equal(ds_class_name(d, 1), "bid_up");
    assert_string_equal(ds_class_name(d, 2), "hold");
    assert_int_equal(ds_class_count(d, 1), 2);
    assert_int_equal(ds_class_count(d, 2), 2);
    assert_int_equal(ds_row_label(d, 0), 2);
    assert_int_equal(ds_row_label(d, 2), 0);
    const int64_t t0 = INT64_C(1767225600000000); /* 2026-01-01T00:00:00Z */
    assert_int_equal(ds_row_ts(d, 0), t0);
    assert_int_equal(ds_row_ts(d, 1), t0 + INT64_C(600000000));
    assert_int_equal(ds_row_ts(d, 3), t0 + INT64_C(1800000000) - INT64_C(3600000000));
    assert_int_equal(ds_row_ts(d, 4), t0 + INT64_C(2400500000));
    assert_string_equal(ds_row_group(d, 0), "op-1");
    assert_null(ds_row_group(d, 2));
    assert_int_equal(ds_n_groups(d), 3);
    assert_true(isnan(ds_row_target(d, 0)));
    assert_true(same_double(ds_row_target(d, 1), 12.5));
    assert_true(same_double(ds_row_target(d, 2), -5.0));
    assert_true(same_double(ds_cell_num(d, 0, 1), 2.25));
    assert_true(same_double(ds_cell_num(d, 0, 4), -40.0));
    assert_true(isnan(ds_cell_num(d, 0, 3)));
    assert_true(isnan(ds_cell_num(d, 1, 1)));
    assert_string_equal(ds_cell_level(d, 2, 4), "tablet");
    assert_null(ds_cell_level(d, 2, 2));
    ds_free(d);
}

/* Without a label column (rows to predict): the label is a feature like
 * any other column and every row's label is -1. */
static void test_dataset_read_csv_without_label(void **state)
{
    (void)state;
    struct ds_csv_options o = {.drop = (const char *const[]){"ts", "operator", "delta"},
                               .n_drop = 3};
    struct ds *d = csv_ok("good-basic.csv", &o);
    assert_int_equal(ds_n_rows(d), 5);
    assert_int_equal(ds_n_features(d), 4);
    assert_string_equal(ds_feature_name(d, 3), "y");
    assert_int_equal(ds_n_classes(d), 0);
    for (size_t r = 0; r < 5; r++)
        assert_int_equal(ds_row_label(d, r), -1);
    assert_true(same_double(ds_cell_num(d, 0, 1), 2.25));
    ds_free(d);
}

static void test_dataset_read_csv_quotes_crlf_bom(void **state)
{
    (void)state;
    struct ds_csv_options o = {.label = "y"};
    struct ds *d = csv_ok("good-quotes.csv", &o);
    assert_int_equal(ds_n_rows(d), 4);
    assert_int_equal(ds_n_features(d), 3);
    assert_string_equal(ds_feature_name(d, 0), "name"); /* the BOM is not part of it */
    assert_string_equal(ds_feature_name(d, 1), "note");
    assert_int_equal(ds_feature_kind(d, 0), GBM_CATEGORICAL);
    assert_int_equal(ds_feature_kind(d, 2), GBM_NUMERIC);
    assert_string_equal(ds_cell_level(d, 0, 0), "a \"quoted\" word");
    assert_string_equal(ds_cell_level(d, 0, 1), "plain");
    assert_null(ds_cell_level(d, 0, 2)); /* "" is an empty cell */
    assert_string_equal(ds_cell_level(d, 0, 3), "\xc3\xa9t\xc3\xa9");
    assert_string_equal(ds_cell_level(d, 1, 0), "one, two");
    assert_string_equal(ds_cell_level(d, 1, 1), "line1\r\nline2");
    assert_null(ds_cell_level(d, 1, 3));
    for (size_t r = 0; r < 4; r++)
        assert_true(same_double(ds_cell_num(d, 2, r), (double)(r + 1)));
    assert_string_equal(ds_class_name(d, ds_row_label(d, 1)), "bid_up");
    /* No ts column: ts is the row index. */
    assert_int_equal(ds_row_ts(d, 3), 3);
    ds_free(d);
}

static void test_dataset_read_csv_type_detection(void **state)
{
    (void)state;
    struct ds_csv_options o = {.label = "y"};
    struct ds *d = csv_ok("good-types.csv", &o);
    const struct {
        const char *name;
        enum gbm_kind kind;
    } want[] = {
        {"nums", GBM_NUMERIC},    {"trail", GBM_CATEGORICAL}, {"hex", GBM_CATEGORICAL},
        {"inf", GBM_CATEGORICAL}, {"nan", GBM_CATEGORICAL},   {"empty", GBM_NUMERIC},
        {"quoted", GBM_NUMERIC},  {"late", GBM_CATEGORICAL},
    };
    assert_int_equal(ds_n_features(d), 8);
    for (size_t f = 0; f < 8; f++) {
        assert_string_equal(ds_feature_name(d, f), want[f].name);
        if (ds_feature_kind(d, f) != want[f].kind)
            fail_msg("column %s: wrong kind", want[f].name);
    }
    const double nums[] = {1e3, -0.5, 2, 0.5};
    const double quoted[] = {1.5, -2, 0.5, 0.7};
    for (size_t r = 0; r < 4; r++) {
        assert_true(same_double(ds_cell_num(d, 0, r), nums[r]));
        assert_true(same_double(ds_cell_num(d, 6, r), quoted[r]));
        assert_true(isnan(ds_cell_num(d, 5, r)));
    }
    /* A late non-number makes the column categorical with the texts as read. */
    assert_string_equal(ds_cell_level(d, 7, 0), "1.5");
    assert_string_equal(ds_cell_level(d, 7, 3), "abc");
    assert_string_equal(ds_cell_level(d, 1, 0), "1.5 ");
    assert_string_equal(ds_cell_level(d, 2, 0), "0x10");
    ds_free(d);
}

static void test_dataset_read_csv_epoch_forced_drop(void **state)
{
    (void)state;
    const char *cat[] = {"zip"};
    const char *drop[] = {"junk"};
    struct ds_csv_options o = {.label = "y",
                               .ts = "t",
                               .group = "g",
                               .target = "d",
                               .categorical = cat,
                               .n_categorical = 1,
                               .drop = drop,
                               .n_drop = 1,
                               .classes = classes7,
                               .n_classes = 7};
    struct ds *d = csv_ok("good-epoch.csv", &o);
    assert_int_equal(ds_n_rows(d), 4); /* blank lines skipped */
    assert_int_equal(ds_n_features(d), 2);
    assert_string_equal(ds_feature_name(d, 0), "zip");
    assert_int_equal(ds_feature_kind(d, 0), GBM_CATEGORICAL);
    assert_string_equal(ds_feature_name(d, 1), "score");
    assert_string_equal(ds_cell_level(d, 0, 3), "02134"); /* leading zero kept */
    assert_int_equal(ds_row_ts(d, 0), 100000000);
    assert_int_equal(ds_row_ts(d, 1), 100250000);
    assert_int_equal(ds_row_ts(d, 2), -1500000);
    assert_int_equal(ds_row_ts(d, 3), 99000000);
    /* A fixed class list keeps its order. */
    assert_int_equal(ds_n_classes(d), 7);
    assert_int_equal(ds_row_label(d, 1), 3);
    assert_int_equal(ds_class_count(d, 3), 2);
    assert_int_equal(ds_class_count(d, 0), 2);
    assert_true(same_double(ds_row_target(d, 1), 20.0));
    assert_true(isnan(ds_row_target(d, 3)));
    assert_null(ds_row_group(d, 3));
    assert_true(isnan(ds_cell_num(d, 1, 2)));
    ds_free(d);
}

/* Every field of a numeric column reads exactly as strtod reads it. */
static void test_dataset_read_csv_numbers_match_strtod(void **state)
{
    (void)state;
    uint64_t seed = 42;
    const size_t n = 20000;
    struct util_buf b;
    util_buf_init(&b);
    char **texts = calloc(n, sizeof *texts);
    assert_non_null(texts);
    assert_int_equal(util_buf_puts(&b, "y,x\n"), 0);
    for (size_t i = 0; i < n; i++) {
        char t[64];
        double v = (uniform(&seed) - 0.5) * pow(10, (double)(mix(&seed) % 40) - 20);
        switch (mix(&seed) % 6) {
        case 0:
            snprintf(t, sizeof t, "%.17g", v);
            break;
        case 1:
            snprintf(t, sizeof t, "%.*f", (int)(mix(&seed) % 12), v);
            break;
        case 2:
            snprintf(t, sizeof t, "%.6e", v);
            break;
        case 3:
            snprintf(t, sizeof t, "%llu.%llu",
                     (unsigned long long)(mix(&seed) % 100000000000000ULL),
                     (unsigned long long)(mix(&seed) % 10000000000ULL));
            break;
        case 4:
            snprintf(t, sizeof t, "-%llu",
                     (unsigned long long)(mix(&seed) % 100000000000000000ULL));
            break;
        default:
            snprintf(t, sizeof t, "%.15g", v);
            break;
        }
        texts[i] = strdup(t);
        assert_non_null(texts[i]);
        assert_int_equal(util_buf_printf(&b, "a,%s\n", t), 0);
    }
    char path[512], err[512];
    tmp_path(path, sizeof path, "numbers.csv");
    write_file(path, b.data, b.len);
    struct ds *d = NULL;
    struct ds_csv_options o = {.label = "y"};
    if (ds_read_csv(path, &o, &d, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(ds_feature_kind(d, 0), GBM_NUMERIC);
    for (size_t i = 0; i < n; i++) {
        double want = strtod(texts[i], NULL);
        if (!same_double(ds_cell_num(d, 0, i), want))
            fail_msg("\"%s\": got %.17g, strtod %.17g", texts[i], ds_cell_num(d, 0, i), want);
        free(texts[i]);
    }
    free(texts);
    ds_free(d);
    unlink(path);
    util_buf_deinit(&b);
}

/* ---- CSV: bad fixtures --------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Splits s at commas in place into list (at most max). */
static size_t split_list(char *s, const char **list, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save))
        list[n++] = tok;
    return n;
}

static int check_bad_fixture(const char *dir, const char *base)
{
    char path[4096], csv[4096];
    snprintf(path, sizeof path, "%s/%s.expect", dir, base);
    char *expect = tread_file(path, NULL);
    struct ds_csv_options o = {.label = "y"};
    const char *cat[16], *drop[16], *cls[16];
    const char *want = NULL;
    char *save = NULL;
    for (char *line = strtok_r(expect, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *colon = strstr(line, ": ");
        if (!colon)
            fail_msg("%s: bad line \"%s\"", path, line);
        *colon = '\0';
        char *val = colon + 2;
        if (strcmp(line, "error") == 0) {
            want = val;
        } else if (strcmp(line, "label") == 0) {
            o.label = val;
        } else if (strcmp(line, "ts") == 0) {
            o.ts = val;
        } else if (strcmp(line, "group") == 0) {
            o.group = val;
        } else if (strcmp(line, "target") == 0) {
            o.target = val;
        } else if (strcmp(line, "categorical") == 0) {
            o.categorical = cat;
            o.n_categorical = split_list(val, cat, 16);
        } else if (strcmp(line, "drop") == 0) {
            o.drop = drop;
            o.n_drop = split_list(val, drop, 16);
        } else if (strcmp(line, "classes") == 0) {
            o.classes = cls;
            o.n_classes = split_list(val, cls, 16);
        } else {
            fail_msg("%s: unknown key \"%s\"", path, line);
        }
    }
    if (!want)
        fail_msg("%s: no error line", path);
    snprintf(csv, sizeof csv, "%s/%s.csv", dir, base);
    char full[8192];
    snprintf(full, sizeof full, "%s%s", csv, want);
    struct ds *d = NULL;
    char err[512] = "";
    int rc = ds_read_csv(csv, &o, &d, err, sizeof err);
    int bad = 0;
    if (rc != -1 || strcmp(err, full) != 0) {
        print_error("%s: got %d \"%s\"\n%*s want -1 \"%s\"\n", base, rc, err, (int)strlen(base), "",
                    full);
        bad = 1;
    }
    if (d) {
        print_error("%s: dataset returned on failure\n", base);
        ds_free(d);
        bad = 1;
    }
    free(expect);
    return bad;
}

static char **list_bad(const char *dir, size_t *n)
{
    DIR *dh = opendir(dir);
    if (!dh)
        fail_msg("cannot open %s (run the tests from the repository root)", dir);
    char **names = NULL;
    size_t count = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        size_t len = strlen(de->d_name);
        if (strncmp(de->d_name, "bad-", 4) != 0 || len < 8 ||
            strcmp(de->d_name + len - 7, ".expect") != 0)
            continue;
        names = realloc(names, (count + 1) * sizeof *names);
        assert_non_null(names);
        names[count] = strndup(de->d_name, len - 7);
        assert_non_null(names[count]);
        count++;
    }
    closedir(dh);
    if (count > 0)
        qsort(names, count, sizeof *names, cmp_str);
    *n = count;
    return names;
}

static void test_dataset_read_csv_bad_fixtures(void **state)
{
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/csv", tfixtures_dir());
    size_t n;
    char **names = list_bad(dir, &n);
    assert_true(n >= 20);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        failed += check_bad_fixture(dir, names[i]);
        free(names[i]);
    }
    free(names);
    if (failed)
        fail_msg("%d of %zu bad fixtures not refused as expected", failed, n);
}

static void test_dataset_read_csv_unreadable(void **state)
{
    (void)state;
    struct ds *d = NULL;
    char err[512];
    struct ds_csv_options o = {.label = "y"};
    assert_int_equal(ds_read_csv("/nonexistent/x.csv", &o, &d, err, sizeof err), -1);
    assert_string_equal(err, "/nonexistent/x.csv: cannot open: No such file or directory");
    assert_null(d);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/csv", tfixtures_dir());
    assert_int_equal(ds_read_csv(dir, &o, &d, err, sizeof err), -1);
    char want[1100];
    snprintf(want, sizeof want, "%s: is a directory", dir);
    assert_string_equal(err, want);
    struct ds_csv_options empty = {.label = ""};
    assert_int_equal(ds_read_csv(dir, &empty, &d, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: the label column name is empty", dir);
    assert_string_equal(err, want);
    assert_null(d);
}

/* Each allocation of ds_read_csv fails in turn: -1, "out of memory", no
 * dataset, no leak (checked by the sanitizer build). */
static void test_dataset_read_csv_alloc_failures(void **state)
{
    (void)state;
    const char *cat[] = {"zip"};
    const char *drop[] = {"junk"};
    struct {
        const char *file;
        struct ds_csv_options o;
    } cases[] = {
        {"good-basic.csv", {.label = "y", .ts = "ts", .group = "operator", .target = "delta"}},
        {"good-quotes.csv", {.label = "y"}},
        {"good-types.csv", {.label = "y"}},
        {"good-epoch.csv",
         {.label = "y",
          .ts = "t",
          .group = "g",
          .categorical = cat,
          .n_categorical = 1,
          .drop = drop,
          .n_drop = 1,
          .classes = classes7,
          .n_classes = 7}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/csv/%s", tfixtures_dir(), cases[c].file);
        long i;
        for (i = 0; i < 10000; i++) {
            struct ds *d = NULL;
            char err[512] = "";
            util_alloc_fail_after(i);
            int rc = ds_read_csv(path, &cases[c].o, &d, err, sizeof err);
            util_alloc_fail_after(-1);
            if (rc == 0) {
                assert_non_null(d);
                ds_free(d);
                break;
            }
            assert_int_equal(rc, -1);
            assert_null(d);
            if (strcmp(err, "out of memory") != 0)
                fail_msg("%s, allocation %ld: \"%s\"", cases[c].file, i, err);
        }
        assert_true(i > 3 && i < 10000);
    }
}

/* ---- weights ------------------------------------------------------------- */

static struct ds *new_three_classes(void)
{
    const char *names[] = {"x"};
    enum gbm_kind kinds[] = {GBM_NUMERIC};
    const char *cls[] = {"a", "b", "c", "unused"};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 1, cls, 4, &d, err, sizeof err), 0);
    /* 6 a, 3 b, 1 c, 0 unused; ts 0..9 */
    const char *labels[] = {"a", "b", "a", "a", "c", "b", "a", "a", "b", "a"};
    for (int r = 0; r < 10; r++)
        add_num(d, labels[r], r * 1000, r);
    return d;
}

static void test_dataset_set_weights_balanced(void **state)
{
    (void)state;
    struct ds *d = new_three_classes();
    char err[256];
    struct ds_weight_options w = {.class_weighting = DS_CLASS_WEIGHT_BALANCED};
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), 0);
    double sum[4] = {0};
    for (size_t r = 0; r < 10; r++)
        sum[ds_row_label(d, r)] += ds_row_weight(d, r);
    /* n / k = 10 / 3 per present class. */
    for (int c = 0; c < 3; c++)
        assert_true(fabs(sum[c] - 10.0 / 3.0) < 1e-5);
    /* c: 10 / (3 * 1) */
    assert_true(fabs(ds_row_weight(d, 4) - 10.0 / 3.0) < 1e-5);
    assert_true(fabs(ds_row_weight(d, 0) - 10.0 / 18.0) < 1e-6);
    ds_free(d);
}

static void test_dataset_set_weights_half_life(void **state)
{
    (void)state;
    struct ds *d = new_three_classes();
    char err[256];
    struct ds_weight_options w = {.half_life_us = 2000};
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), 0);
    /* ts_max = 9000: row r is (9 - r) * 1000 us old. */
    for (size_t r = 0; r < 10; r++) {
        double want = pow(0.5, (double)(9 - r) / 2.0);
        if (fabs(ds_row_weight(d, r) - want) > 1e-6)
            fail_msg("row %zu: %g, want %g", r, (double)ds_row_weight(d, r), want);
    }
    assert_true(fabs(ds_row_weight(d, 7) - 0.5) < 1e-7);
    assert_true(fabs(ds_row_weight(d, 5) - 0.25) < 1e-7);
    /* With balanced class weights the factors multiply. */
    w.class_weighting = DS_CLASS_WEIGHT_BALANCED;
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), 0);
    assert_true(fabs(ds_row_weight(d, 4) - pow(0.5, 2.5) * 10.0 / 3.0) < 1e-6);
    /* Negative half-life refused, weights kept. */
    w.half_life_us = -1;
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), -1);
    assert_string_equal(err, "half-life must not be negative");
    assert_true(fabs(ds_row_weight(d, 4) - pow(0.5, 2.5) * 10.0 / 3.0) < 1e-6);
    ds_free(d);
}

static void test_dataset_set_weights_map(void **state)
{
    (void)state;
    struct ds *d = new_three_classes();
    char err[256];
    const char *names[] = {"c", "a"};
    const double cw[] = {4.0, 0.5};
    struct ds_weight_options w = {.class_weighting = DS_CLASS_WEIGHT_MAP,
                                  .class_names = names,
                                  .class_weights = cw,
                                  .n_class_weights = 2};
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), 0);
    for (size_t r = 0; r < 10; r++) {
        const char *c = ds_class_name(d, (size_t)ds_row_label(d, r));
        float want = strcmp(c, "a") == 0 ? 0.5f : strcmp(c, "c") == 0 ? 4.0f : 1.0f;
        assert_true(fabsf(ds_row_weight(d, r) - want) < 1e-7f);
    }
    const char *unknown[] = {"a", "zzz"};
    w.class_names = unknown;
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), -1);
    assert_string_equal(err, "class weights: unknown class \"zzz\"");
    assert_true(fabsf(ds_row_weight(d, 4) - 4.0f) < 1e-7f); /* unchanged */
    const double neg[] = {-1, 1};
    w.class_names = names;
    w.class_weights = neg;
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), -1);
    assert_string_equal(err, "class weights: \"c\": weight must be finite and >= 0");
    ds_free(d);
}

static void test_dataset_set_weights_alloc_failures(void **state)
{
    (void)state;
    struct ds *d = new_three_classes();
    char err[256];
    struct ds_weight_options w = {.half_life_us = 10, .class_weighting = DS_CLASS_WEIGHT_BALANCED};
    long i;
    for (i = 0; i < 100; i++) {
        util_alloc_fail_after(i);
        int rc = ds_set_weights(d, &w, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_string_equal(err, "out of memory");
        assert_true(fabsf(ds_row_weight(d, 0) - 1.0f) < 1e-7f);
    }
    assert_true(i > 0 && i < 100);
    ds_free(d);
}

/* ---- split --------------------------------------------------------------- */

static void test_dataset_split_newest_with_ties(void **state)
{
    (void)state;
    struct ds *d = new_numeric();
    /* ts out of order, with ties at the boundary. */
    const int64_t ts[] = {50, 10, 40, 40, 20, 40, 30, 60, 40, 5};
    for (int r = 0; r < 10; r++)
        add_num(d, "a", ts[r], r);
    char err[256];
    /* 4 validation rows: sorted order is 9(5) 1(10) 4(20) 6(30) 2(40) 3(40)
     * 5(40) 8(40) 0(50) 7(60): the last four are 5, 8, 0, 7. */
    assert_int_equal(ds_split(d, 0.4, err, sizeof err), 0);
    const bool want[] = {true, false, false, false, false, true, false, true, true, false};
    for (size_t r = 0; r < 10; r++)
        if (ds_row_is_valid(d, r) != want[r])
            fail_msg("row %zu: valid %d", r, ds_row_is_valid(d, r));
    struct ds_split_info s;
    ds_split_get(d, &s);
    assert_int_equal(s.n_train, 6);
    assert_int_equal(s.n_valid, 4);
    assert_int_equal(s.train_ts_min, 5);
    assert_int_equal(s.train_ts_max, 40);
    assert_int_equal(s.valid_ts_min, 40);
    assert_int_equal(s.valid_ts_max, 60);

    /* Rounded, and never all rows. */
    assert_int_equal(ds_split(d, 0.04, err, sizeof err), 0);
    ds_split_get(d, &s);
    assert_int_equal(s.n_valid, 1);
    assert_true(ds_row_is_valid(d, 7));
    assert_int_equal(ds_split(d, 0.99, err, sizeof err), 0);
    ds_split_get(d, &s);
    assert_int_equal(s.n_valid, 9);
    assert_false(ds_row_is_valid(d, 9));

    /* 0: everything trains. */
    assert_int_equal(ds_split(d, 0.0, err, sizeof err), 0);
    ds_split_get(d, &s);
    assert_int_equal(s.n_train, 10);
    assert_int_equal(s.n_valid, 0);
    assert_int_equal(s.train_ts_min, 5);
    assert_int_equal(s.train_ts_max, 60);
    for (size_t r = 0; r < 10; r++)
        assert_false(ds_row_is_valid(d, r));

    assert_int_equal(ds_split(d, 1.0, err, sizeof err), -1);
    assert_string_equal(err, "validation fraction must be in [0, 1)");
    assert_int_equal(ds_split(d, -0.1, err, sizeof err), -1);
    assert_int_equal(ds_split(d, NAN, err, sizeof err), -1);

    /* Adding a row forgets the split. */
    assert_int_equal(ds_split(d, 0.5, err, sizeof err), 0);
    add_num(d, "b", 0, 1);
    for (size_t r = 0; r < 11; r++)
        assert_false(ds_row_is_valid(d, r));
    ds_split_get(d, &s);
    assert_int_equal(s.n_train, 11);
    ds_free(d);
}

static void test_dataset_split_csv_without_ts_last_rows(void **state)
{
    (void)state;
    char path[512], err[512];
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(util_buf_puts(&b, "x,y\n"), 0);
    for (int r = 0; r < 100; r++)
        assert_int_equal(util_buf_printf(&b, "%d,%s\n", r, r % 2 ? "a" : "b"), 0);
    tmp_path(path, sizeof path, "split.csv");
    write_file(path, b.data, b.len);
    util_buf_deinit(&b);
    struct ds *d = NULL;
    struct ds_csv_options o = {.label = "y"};
    assert_int_equal(ds_read_csv(path, &o, &d, err, sizeof err), 0);
    unlink(path);
    assert_int_equal(ds_split(d, 0.25, err, sizeof err), 0);
    for (size_t r = 0; r < 100; r++)
        assert_int_equal(ds_row_is_valid(d, r), r >= 75);
    struct ds_split_info s;
    ds_split_get(d, &s);
    assert_int_equal(s.train_ts_max, 74);
    assert_int_equal(s.valid_ts_min, 75);
    ds_free(d);
}

/* ---- binning ------------------------------------------------------------- */

/* Every value, training or validation, lands in the bin gbm.h defines. */
static void check_all_bins(const struct ds *d, const struct ds_binned *b)
{
    for (int side = 0; side < 2; side++) {
        const struct gbm_data *g = side ? ds_binned_valid(b) : ds_binned_train(b);
        if (!g)
            continue;
        size_t n;
        const uint32_t *rows = ds_binned_rows(b, side == 1, &n);
        assert_int_equal(n, g->n_rows);
        for (size_t f = 0; f < g->n_features; f++) {
            const struct gbm_feature *gf = &g->features[f];
            if (gf->kind != GBM_NUMERIC)
                continue;
            check_cuts_increasing(gf);
            for (size_t i = 0; i < n; i++) {
                double v = ds_cell_num(d, f, rows[i]);
                if (g->bins[f][i] != ref_bin(gf, v))
                    fail_msg("feature %zu row %u value %.17g: bin %u, want %u", f, rows[i], v,
                             g->bins[f][i], ref_bin(gf, v));
            }
        }
    }
}

static void test_dataset_bin_cut_semantics(void **state)
{
    (void)state;
    const char *names[] = {"uniform", "skewed", "ints", "heavy", "tiny"};
    enum gbm_kind kinds[] = {GBM_NUMERIC, GBM_NUMERIC, GBM_NUMERIC, GBM_NUMERIC, GBM_NUMERIC};
    const char *cls[] = {"a", "b"};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 5, cls, 2, &d, err, sizeof err), 0);
    uint64_t seed = 7;
    for (int r = 0; r < 30000; r++) {
        double u = uniform(&seed);
        struct event_feature_value v[5] = {
            {uniform(&seed) < 0.1, u * 100 - 50, NULL},
            {false, exp(10 * uniform(&seed)), NULL},
            {false, (double)(mix(&seed) % 1000), NULL},
            {false, uniform(&seed) < 0.6 ? 3.0 : uniform(&seed), NULL},
            /* neighbouring doubles: midpoints round onto an end */
            {false, nextafter(1.0, 2.0 + (double)(mix(&seed) % 300)), NULL},
        };
        if (r % 7 == 0)
            v[4].num = 1.0 + (double)(r % 300) * DBL_EPSILON;
        assert_int_equal(ds_add_row(d, r % 2 ? "a" : "b", r, NULL, NAN, v), 0);
    }
    assert_int_equal(ds_split(d, 0.2, err, sizeof err), 0);
    unsigned max_bins[] = {2, 3, 16, 64, 255};
    for (size_t m = 0; m < 5; m++) {
        struct ds_binned *b = bin_ok(d, max_bins[m], 2);
        size_t nf;
        const struct gbm_feature *fs = ds_binned_features(b, &nf);
        assert_int_equal(nf, 5);
        for (size_t f = 0; f < nf; f++) {
            assert_true(fs[f].n_bins >= 2 && fs[f].n_bins <= max_bins[m]);
            assert_string_equal(fs[f].name, names[f]);
        }
        check_all_bins(d, b);
        ds_binned_free(b);
    }
    ds_free(d);
}

static void test_dataset_bin_quantiles_uniform_balanced(void **state)
{
    (void)state;
    struct ds *d = new_numeric();
    uint64_t seed = 99;
    const size_t n = 100000;
    for (size_t r = 0; r < n; r++)
        add_num(d, "a", (int64_t)r, uniform(&seed));
    const unsigned bins[] = {4, 32, 255};
    for (size_t k = 0; k < 3; k++) {
        struct ds_binned *b = bin_ok(d, bins[k], 1);
        const struct gbm_data *g = ds_binned_train(b);
        assert_int_equal(g->features[0].n_bins, bins[k]);
        size_t count[256] = {0};
        for (size_t i = 0; i < n; i++)
            count[g->bins[0][i]]++;
        double expect = (double)n / bins[k];
        for (unsigned i = 0; i < bins[k]; i++)
            if (fabs((double)count[i] - expect) > 0.02 * expect + 2)
                fail_msg("%u bins: bin %u has %zu rows, want about %.0f", bins[k], i, count[i],
                         expect);
        /* Cuts near the uniform quantiles. */
        for (unsigned i = 0; i + 1 < bins[k]; i++)
            assert_true(fabs(g->features[0].cuts[i] - (double)(i + 1) / bins[k]) < 0.01);
        ds_binned_free(b);
    }
    ds_free(d);
}

/* Weights count: rows weighing 3 get bins of a third as many rows. */
static void test_dataset_bin_quantiles_weighted(void **state)
{
    (void)state;
    struct ds *d = NULL;
    const char *names[] = {"x"};
    enum gbm_kind kinds[] = {GBM_NUMERIC};
    const char *cls[] = {"heavy", "light"};
    char err[256];
    assert_int_equal(ds_new(names, kinds, 1, cls, 2, &d, err, sizeof err), 0);
    const size_t n = 40000;
    for (size_t r = 0; r < n; r++) /* values 0..n-1; the lower half weighs 3 */
        add_num(d, r < n / 2 ? "heavy" : "light", (int64_t)r, (double)r);
    const char *wn[] = {"heavy"};
    const double wv[] = {3.0};
    struct ds_weight_options w = {.class_weighting = DS_CLASS_WEIGHT_MAP,
                                  .class_names = wn,
                                  .class_weights = wv,
                                  .n_class_weights = 1};
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), 0);
    struct ds_binned *b = bin_ok(d, 8, 1);
    const struct gbm_data *g = ds_binned_train(b);
    assert_non_null(g->weight);
    double wsum[8] = {0};
    for (size_t i = 0; i < n; i++)
        wsum[g->bins[0][i]] += g->weight[i];
    double total = 3.0 * n / 2 + 1.0 * n / 2;
    for (int i = 0; i < 8; i++)
        if (fabs(wsum[i] - total / 8) > 0.01 * total / 8)
            fail_msg("bin %d weighs %g, want %g", i, wsum[i], total / 8);
    /* The heavy half holds 6 of the 8 bins. */
    assert_true(fabs(g->features[0].cuts[5] - (double)(n / 2)) < 0.01 * (double)n);
    ds_binned_free(b);
    ds_free(d);
}

static void test_dataset_bin_few_distinct_one_bin_each(void **state)
{
    (void)state;
    const double vals[] = {8, -1, 2.5, 3, 1000, 0, -0.0};
    for (size_t nv = 1; nv <= 6; nv++) {
        struct ds *d = new_numeric();
        for (int r = 0; r < 600; r++)
            add_num(d, "a", r, vals[(size_t)(r * 7) % nv]);
        /* max_bins == nv (or 2): one bin per value, in value order. */
        unsigned mb = nv < 2 ? 2 : (unsigned)nv;
        struct ds_binned *b = bin_ok(d, mb, 1);
        const struct gbm_data *g = ds_binned_train(b);
        assert_int_equal(g->features[0].n_bins, nv);
        check_all_bins(d, b);
        /* Distinct values get distinct bins, ordered like the values. */
        for (size_t i = 0; i < 600; i++)
            for (size_t j = 0; j < 600; j += 37) {
                double a = ds_cell_num(d, 0, i), c = ds_cell_num(d, 0, j);
                if (a < c)
                    assert_true(g->bins[0][i] < g->bins[0][j]);
                else if (a > c)
                    assert_true(g->bins[0][i] > g->bins[0][j]);
                else
                    assert_int_equal(g->bins[0][i], g->bins[0][j]);
            }
        ds_binned_free(b);
        ds_free(d);
    }
    /* -0 and 0 are one value. */
    struct ds *d = new_numeric();
    add_num(d, "a", 0, 0.0);
    add_num(d, "a", 1, -0.0);
    add_num(d, "a", 2, 1.0);
    struct ds_binned *b = bin_ok(d, 2, 1);
    assert_int_equal(ds_binned_train(b)->features[0].n_bins, 2);
    assert_int_equal(ds_binned_train(b)->bins[0][1], 0);
    ds_binned_free(b);
    ds_free(d);
}

static void test_dataset_bin_missing_and_constant(void **state)
{
    (void)state;
    const char *names[] = {"const", "allnan", "some"};
    enum gbm_kind kinds[] = {GBM_NUMERIC, GBM_NUMERIC, GBM_NUMERIC};
    const char *cls[] = {"a"};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 3, cls, 1, &d, err, sizeof err), 0);
    for (int r = 0; r < 1000; r++) {
        struct event_feature_value v[3] = {
            {r % 10 == 0, 4.25, NULL}, {true, 0, NULL}, {r % 3 == 0, (double)r, NULL}};
        assert_int_equal(ds_add_row(d, "a", r, NULL, NAN, v), 0);
    }
    struct ds_binned *b = bin_ok(d, 16, 2);
    const struct gbm_data *g = ds_binned_train(b);
    assert_int_equal(g->features[0].n_bins, 1);
    assert_int_equal(g->features[1].n_bins, 1);
    assert_int_equal(g->features[2].n_bins, 16);
    for (size_t r = 0; r < 1000; r++) {
        assert_int_equal(g->bins[0][r], r % 10 == 0 ? GBM_MISSING_BIN : 0);
        assert_int_equal(g->bins[1][r], GBM_MISSING_BIN);
        if (r % 3 == 0)
            assert_int_equal(g->bins[2][r], GBM_MISSING_BIN);
        else
            assert_true(g->bins[2][r] < 16);
    }
    assert_null(ds_binned_valid(b));
    assert_null(g->weight); /* never weighted: every row weighs 1 */
    ds_binned_free(b);
    ds_free(d);
}

static void test_dataset_bin_categorical_pooling(void **state)
{
    (void)state;
    const char *names[] = {"c"};
    enum gbm_kind kinds[] = {GBM_CATEGORICAL};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 1, NULL, 0, &d, err, sizeof err), 0);
    /* Level Lk appears k+1 times (k = 0..5); "M" and "N" tie with L3 at 4
     * and sort by name after "L3" ("L3" < "M" < "N"); "new" only validates. */
    const char *lv[] = {"L0", "L1", "L2", "L3", "L4", "L5", "M", "N"};
    const int times[] = {1, 2, 3, 4, 5, 6, 4, 4};
    int64_t ts = 0;
    for (size_t l = 0; l < 8; l++)
        for (int k = 0; k < times[l]; k++) {
            struct event_feature_value v = {false, 0, lv[l]};
            assert_int_equal(ds_add_row(d, "a", ts++, NULL, NAN, &v), 0);
        }
    struct event_feature_value miss = {true, 0, NULL};
    assert_int_equal(ds_add_row(d, "a", ts++, NULL, NAN, &miss), 0);
    struct event_feature_value nv = {false, 0, "new"};
    assert_int_equal(ds_add_row(d, "a", ts++, NULL, NAN, &nv), 0);
    assert_int_equal(ds_split(d, 0.03, err, sizeof err), 0); /* the last row validates */
    assert_true(ds_row_is_valid(d, ds_n_rows(d) - 1));

    /* Enough bins: one per level, heaviest first, ties by name. */
    struct ds_binned *b = bin_ok(d, 8, 1);
    const struct gbm_feature *f = &ds_binned_train(b)->features[0];
    const char *order[] = {"L5", "L4", "L3", "M", "N", "L2", "L1", "L0"};
    assert_int_equal(f->n_bins, 8);
    assert_int_equal(f->n_levels, 8);
    for (size_t i = 0; i < 8; i++) {
        assert_string_equal(f->levels[i], order[i]);
        assert_int_equal(f->level_bin[i], i);
    }
    const struct gbm_data *g = ds_binned_train(b);
    for (size_t i = 0; i < g->n_rows; i++) {
        const char *name = ds_cell_level(d, 0, i);
        if (!name) {
            assert_int_equal(g->bins[0][i], GBM_MISSING_BIN);
            continue;
        }
        size_t k = 0;
        while (strcmp(order[k], name) != 0)
            k++;
        assert_int_equal(g->bins[0][i], k);
    }
    /* The level seen only in validation is unseen: missing bin. */
    const struct gbm_data *v = ds_binned_valid(b);
    assert_non_null(v);
    assert_int_equal(v->n_rows, 1);
    assert_int_equal(v->bins[0][0], GBM_MISSING_BIN);
    ds_binned_free(b);

    /* Fewer bins: the top 3 own theirs, the other 5 share bin 3. */
    b = bin_ok(d, 4, 1);
    f = &ds_binned_train(b)->features[0];
    assert_int_equal(f->n_bins, 4);
    assert_int_equal(f->n_levels, 8);
    for (size_t i = 0; i < 8; i++) {
        assert_string_equal(f->levels[i], order[i]);
        assert_int_equal(f->level_bin[i], i < 3 ? i : 3);
    }
    g = ds_binned_train(b);
    for (size_t i = 0; i < g->n_rows; i++)
        if (ds_cell_level(d, 0, i) && strcmp(ds_cell_level(d, 0, i), "L0") == 0)
            assert_int_equal(g->bins[0][i], 3);
    ds_binned_free(b);
    ds_free(d);
}

/* Large enough for the sampled quantiles; the same for any thread count. */
static void test_dataset_bin_deterministic_threads(void **state)
{
    (void)state;
    const char *names[] = {"a", "b", "c", "d", "e", "f"};
    enum gbm_kind kinds[] = {GBM_NUMERIC,     GBM_CATEGORICAL, GBM_NUMERIC,
                             GBM_CATEGORICAL, GBM_NUMERIC,     GBM_NUMERIC};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 6, NULL, 0, &d, err, sizeof err), 0);
    uint64_t seed = 1234;
    const size_t n = 450000;
    char l1[16], l2[16];
    for (size_t r = 0; r < n; r++) {
        snprintf(l1, sizeof l1, "v%u", (unsigned)(mix(&seed) % 400));
        snprintf(l2, sizeof l2, "w%u", (unsigned)(mix(&seed) % 7));
        struct event_feature_value v[6] = {
            {false, uniform(&seed), NULL},
            {false, 0, l1},
            {uniform(&seed) < 0.2, log(uniform(&seed) + 1e-9), NULL},
            {false, 0, l2},
            {false, (double)(mix(&seed) % 50), NULL},
            {false, floor(uniform(&seed) * 1000) / 8, NULL},
        };
        assert_int_equal(
            ds_add_row(d, r % 3 ? "x" : "y", (int64_t)(mix(&seed) % 100000), NULL, NAN, v), 0);
    }
    assert_int_equal(ds_split(d, 0.1, err, sizeof err), 0);
    struct ds_weight_options w = {.half_life_us = 20000,
                                  .class_weighting = DS_CLASS_WEIGHT_BALANCED};
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), 0);
    struct ds_binned *ref = bin_ok(d, 255, 1);
    const struct gbm_data *rt = ds_binned_train(ref);
    for (unsigned threads = 2; threads <= 5; threads += 3) {
        struct ds_binned *b = bin_ok(d, 255, threads);
        for (int side = 0; side < 2; side++) {
            const struct gbm_data *x = side ? ds_binned_valid(ref) : rt;
            const struct gbm_data *y = side ? ds_binned_valid(b) : ds_binned_train(b);
            assert_int_equal(x->n_rows, y->n_rows);
            for (size_t f = 0; f < 6; f++) {
                assert_memory_equal(x->bins[f], y->bins[f], x->n_rows);
                assert_int_equal(x->features[f].n_bins, y->features[f].n_bins);
                if (x->features[f].n_bins > 1 && x->features[f].cuts)
                    assert_memory_equal(x->features[f].cuts, y->features[f].cuts,
                                        (x->features[f].n_bins - 1) * sizeof(double));
                assert_int_equal(x->features[f].n_levels, y->features[f].n_levels);
                for (size_t l = 0; l < x->features[f].n_levels; l++)
                    assert_string_equal(x->features[f].levels[l], y->features[f].levels[l]);
            }
            assert_memory_equal(x->weight, y->weight, x->n_rows * sizeof(float));
            assert_memory_equal(x->label, y->label, x->n_rows * sizeof(int32_t));
        }
        ds_binned_free(b);
    }
    /* Sampled quantiles still honour the cut semantics and give full bins. */
    assert_int_equal(rt->features[0].n_bins, 255);
    assert_int_equal(rt->features[4].n_bins, 50);
    assert_int_equal(rt->features[1].n_bins, 255);
    assert_int_equal(rt->features[1].n_levels, 400);
    check_all_bins(d, ref);
    ds_binned_free(ref);
    ds_free(d);
}

static void test_dataset_bin_class_subset(void **state)
{
    (void)state;
    const char *names[] = {"x", "c"};
    enum gbm_kind kinds[] = {GBM_NUMERIC, GBM_CATEGORICAL};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 2, classes7, 7, &d, err, sizeof err), 0);
    for (int r = 0; r < 100; r++) {
        const char *label = r % 4 == 0 ? "hold" : r % 4 == 1 ? "bid_up" : "bid_down";
        double target = r % 4 == 0 ? NAN : r % 4 == 1 ? r : -r;
        if (r % 10 == 5)
            target = NAN; /* a bid_up without target is left out */
        struct event_feature_value v[2] = {{false, r, NULL}, {false, 0, r % 2 ? "p" : "q"}};
        assert_int_equal(ds_add_row(d, label, r, NULL, target, v), 0);
    }
    assert_int_equal(ds_split(d, 0.2, err, sizeof err), 0);
    struct ds_weight_options w = {.half_life_us = 50};
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), 0);
    struct ds_binned *b = bin_ok(d, 16, 2);
    const struct gbm_data *t = ds_binned_train(b);
    size_t ntr;
    const uint32_t *rows = ds_binned_rows(b, false, &ntr);
    for (int side = 0; side < 2; side++) {
        size_t n;
        const uint32_t *rs = ds_binned_rows(b, side == 1, &n);
        const struct gbm_data *full = side ? ds_binned_valid(b) : t;
        for (int32_t c = 0; c < 7; c++) {
            struct gbm_data s;
            assert_int_equal(ds_binned_class_subset(b, c, side == 1, &s), 0);
            assert_null(s.label);
            assert_int_equal(s.n_features, 2);
            assert_ptr_equal(s.features, t->features);
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                uint32_t r = rs[i];
                if (ds_row_label(d, r) != c || isnan(ds_row_target(d, r)))
                    continue;
                assert_true(k < s.n_rows);
                assert_true(same_float(s.target[k], (float)ds_row_target(d, r)));
                assert_true(same_float(s.weight[k], ds_row_weight(d, r)));
                for (size_t f = 0; f < 2; f++)
                    assert_int_equal(s.bins[f][k], full->bins[f][i]);
                k++;
            }
            assert_int_equal(k, s.n_rows);
            if (c == 0 || c > 2)
                assert_int_equal(s.n_rows, 0);
        }
    }
    struct gbm_data s;
    assert_int_equal(ds_binned_class_subset(b, 1, false, &s), 0);
    assert_int_equal(s.n_rows, 16); /* rows 1, 9, 13, ..., 77 except 5, 15, ... */
    assert_int_equal(ds_binned_class_subset(b, 7, false, &s), -1);
    assert_int_equal(ds_binned_class_subset(b, -1, true, &s), -1);
    assert_int_equal(ntr, 80);
    assert_int_equal(rows[79], 79);
    ds_binned_free(b);
    ds_free(d);
}

static void test_dataset_bin_bad_arguments(void **state)
{
    (void)state;
    struct ds *d = new_numeric();
    struct ds_binned *b = NULL;
    char err[256];
    assert_int_equal(ds_bin(d, 8, 1, &b, err, sizeof err), -1);
    assert_string_equal(err, "no training rows");
    add_num(d, "a", 0, 1);
    assert_int_equal(ds_bin(d, 1, 1, &b, err, sizeof err), -1);
    assert_string_equal(err, "max_bins must be in 2..255");
    assert_int_equal(ds_bin(d, 256, 1, &b, err, sizeof err), -1);
    assert_null(b);
    b = bin_ok(d, 2, 0); /* 0 threads means 1 */
    assert_int_equal(ds_binned_train(b)->n_rows, 1);
    ds_binned_free(b);
    ds_binned_free(NULL);
    ds_free(d);
}

static void test_dataset_bin_alloc_failures(void **state)
{
    (void)state;
    const char *names[] = {"x", "c", "y"};
    enum gbm_kind kinds[] = {GBM_NUMERIC, GBM_CATEGORICAL, GBM_NUMERIC};
    struct ds *d = NULL;
    char err[256];
    assert_int_equal(ds_new(names, kinds, 3, classes7, 7, &d, err, sizeof err), 0);
    uint64_t seed = 5;
    char lv[16];
    for (int r = 0; r < 2000; r++) {
        snprintf(lv, sizeof lv, "l%d", (int)(mix(&seed) % 30));
        struct event_feature_value v[3] = {
            {false, uniform(&seed), NULL}, {r % 9 == 0, 0, lv}, {false, r % 5, NULL}};
        assert_int_equal(ds_add_row(d, classes7[r % 3], r, NULL, r % 3 ? (double)r : NAN, v), 0);
    }
    assert_int_equal(ds_split(d, 0.25, err, sizeof err), 0);
    struct ds_weight_options w = {.class_weighting = DS_CLASS_WEIGHT_BALANCED};
    assert_int_equal(ds_set_weights(d, &w, err, sizeof err), 0);
    long i;
    for (i = 0; i < 10000; i++) {
        struct ds_binned *b = NULL;
        err[0] = '\0';
        util_alloc_fail_after(i);
        int rc = ds_bin(d, 64, 1, &b, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc == 0) {
            check_all_bins(d, b);
            ds_binned_free(b);
            break;
        }
        assert_int_equal(rc, -1);
        assert_null(b);
        assert_string_equal(err, "out of memory");
    }
    assert_true(i > 10 && i < 10000);
    /* The split fails cleanly too. */
    for (i = 0; i < 100; i++) {
        util_alloc_fail_after(i);
        int rc = ds_split(d, 0.5, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_string_equal(err, "out of memory");
        struct ds_split_info s;
        ds_split_get(d, &s);
        assert_int_equal(s.n_valid, 500); /* the old split */
    }
    assert_true(i > 0 && i < 100);
    ds_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dataset_new_bad_names),
        cmocka_unit_test(test_dataset_add_row_accessors),
        cmocka_unit_test(test_dataset_add_row_bad_label),
        cmocka_unit_test(test_dataset_add_row_discovers_classes),
        cmocka_unit_test(test_dataset_add_row_many_rows),
        cmocka_unit_test(test_dataset_add_row_alloc_failures),
        cmocka_unit_test(test_dataset_read_csv_basic),
        cmocka_unit_test(test_dataset_read_csv_without_label),
        cmocka_unit_test(test_dataset_read_csv_quotes_crlf_bom),
        cmocka_unit_test(test_dataset_read_csv_type_detection),
        cmocka_unit_test(test_dataset_read_csv_epoch_forced_drop),
        cmocka_unit_test(test_dataset_read_csv_numbers_match_strtod),
        cmocka_unit_test(test_dataset_read_csv_bad_fixtures),
        cmocka_unit_test(test_dataset_read_csv_unreadable),
        cmocka_unit_test(test_dataset_read_csv_alloc_failures),
        cmocka_unit_test(test_dataset_set_weights_balanced),
        cmocka_unit_test(test_dataset_set_weights_half_life),
        cmocka_unit_test(test_dataset_set_weights_map),
        cmocka_unit_test(test_dataset_set_weights_alloc_failures),
        cmocka_unit_test(test_dataset_split_newest_with_ties),
        cmocka_unit_test(test_dataset_split_csv_without_ts_last_rows),
        cmocka_unit_test(test_dataset_bin_cut_semantics),
        cmocka_unit_test(test_dataset_bin_quantiles_uniform_balanced),
        cmocka_unit_test(test_dataset_bin_quantiles_weighted),
        cmocka_unit_test(test_dataset_bin_few_distinct_one_bin_each),
        cmocka_unit_test(test_dataset_bin_missing_and_constant),
        cmocka_unit_test(test_dataset_bin_categorical_pooling),
        cmocka_unit_test(test_dataset_bin_deterministic_threads),
        cmocka_unit_test(test_dataset_bin_class_subset),
        cmocka_unit_test(test_dataset_bin_bad_arguments),
        cmocka_unit_test(test_dataset_bin_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
