/*
 * Unit tests for internal/report: the JSON document's exact keys and
 * values (null for NaN, null action), the Markdown's content and escaping,
 * the HTML's self-containment, escaping and charts, the format list
 * parser, writing the files atomically into a new directory, the funnel
 * plot's Poisson limits, the number formats, and out-of-memory paths.
 *
 * The audit result is built by hand (static arrays, never passed to
 * audit_result_free): six operators, one of them not audited, seven
 * classes, and one finding of every kind, among them a region of two
 * conditions and fields that are NaN.  Operator ids carry "<&>" and "|"
 * to exercise the escaping.
 *
 * With REPORT_EXAMPLE_DIR set, the binary first writes the example report
 * (all three formats) into that directory; docs/audit-report.png is a
 * rendering of it (scripts/render-report.sh).
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit/audit.h"
#include "report/report.h"
#include "util/util.h"

/* ---- the synthetic result ---------------------------------------------------- */

enum { N_CLASSES = 7, N_OPS = 6, N_FINDINGS = 5 };

static char *class_names[N_CLASSES] = {
    "hold", "bid_up", "bid_down", "budget_up", "budget_down", "creative_pause", "creative_resume"};

static const char *const feature_names[] = {"vertical", "hour_of_day", "cpa_ratio", "pacing"};

/* Expected counts of the whole team per class for an operator of weight 1. */
static const double base_expected[N_CLASSES] = {900, 120, 90, 40, 35, 30, 12};
static const double op_weight[N_OPS] = {1.5, 1.25, 0.8, 1.75, 0.5, 0.1};
/* observed / expected per operator and class (alice over-acts on bid_up,
 * bob rarely pauses, dan under-acts on bid_down). */
static const double op_factor[N_OPS][N_CLASSES] = {
    {0.93, 1.42, 0.95, 1.02, 0.97, 1.05, 0.9}, {1.04, 0.98, 1.03, 0.96, 1.01, 0.31, 1.1},
    {1.0, 0.93, 1.08, 1.12, 0.94, 0.97, 1.0},  {1.05, 1.06, 0.66, 1.0, 1.03, 0.92, 0.95},
    {0.98, 1.1, 0.91, 0.87, 1.12, 1.15, 1.2},  {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
};

static struct audit_cell cells[N_OPS][N_CLASSES];
static struct audit_operator operators[N_OPS];
static struct audit_finding findings[N_FINDINGS];
static struct audit_result result;
static struct report_meta meta;

#define T0      1793491200000000LL /* 2026-11-01T00:00:00Z */
#define HOUR_US 3600000000LL

static void cond_eq(struct audit_cond *c, const char *feature, const char *level)
{
    util_fmt(c->feature, sizeof c->feature, "%s", feature);
    c->op = AUDIT_COND_EQ;
    util_fmt(c->level, sizeof c->level, "%s", level);
    c->value = NAN;
}

static void cond_num(struct audit_cond *c, const char *feature, enum audit_cond_op op, double v)
{
    util_fmt(c->feature, sizeof c->feature, "%s", feature);
    c->op = op;
    c->level[0] = '\0';
    c->value = v;
}

static void finding(struct audit_finding *f, const char *op, enum audit_kind kind, int action,
                    enum audit_severity sev, enum audit_test test, size_t n, double observed,
                    double expected, double effect, double lo, double hi, double p, double q)
{
    memset(f, 0, sizeof *f);
    util_fmt(f->operator_id, sizeof f->operator_id, "%s", op);
    f->kind = kind;
    f->action = action;
    f->severity = sev;
    f->test = test;
    f->n = n;
    f->observed = observed;
    f->expected = expected;
    f->effect = effect;
    f->ci_lo = lo;
    f->ci_hi = hi;
    f->p_value = p;
    f->q_value = q;
    f->inside_observed = f->inside_expected = NAN;
    f->outside_observed = f->outside_expected = NAN;
    f->expected_policy = NAN;
    f->discovery_z = NAN;
}

static void build_result(void)
{
    static const char *const ids[N_OPS] = {"alice", "bob", "carol", "dan<&>", "eve|x", "frank"};
    memset(&result, 0, sizeof result);
    audit_params_default(&result.params);
    result.params.threads = 4;
    result.params.seed = 42;

    for (size_t o = 0; o < N_OPS; o++) {
        struct audit_operator *op = &operators[o];
        memset(op, 0, sizeof *op);
        util_fmt(op->operator_id, sizeof op->operator_id, "%s", ids[o]);
        double dec = 0, act = 0;
        for (size_t k = 0; k < N_CLASSES; k++) {
            double e = base_expected[k] * op_weight[o];
            cells[o][k].expected = e;
            cells[o][k].observed = nearbyint(e * op_factor[o][k]);
            cells[o][k].variance = e * (1 - e / 2000);
            cells[o][k].expected_policy = o == 4 ? NAN : e * 1.01;
            dec += cells[o][k].observed;
            act += k == 0 ? 0 : cells[o][k].observed;
        }
        op->cells = cells[o];
        op->decisions = (size_t)dec;
        op->actions = (size_t)act;
        op->audited = o != 5;
        op->in_reference = o != 0;
        op->policy_agreement = o == 4 ? NAN : 0.8 - 0.02 * (double)o;
        op->acceptance_rate = o < 3 ? 0.55 + 0.1 * (double)o : NAN;
        op->verdicts = o < 3 ? 40 + o : 0;
    }
    operators[0].n_disagreements = 2;
    operators[0].disagreements[0] = (struct audit_disagreement){.did = 1, .policy = 0, .n = 61};
    operators[0].disagreements[1] = (struct audit_disagreement){.did = 0, .policy = 2, .n = 9};

    /* 1: over-acting in a region of two conditions */
    struct audit_finding *f = &findings[0];
    finding(f, "alice", AUDIT_OVER_ACTING, 1, AUDIT_SEVERITY_HIGH, AUDIT_TEST_CONDITIONAL_BINOMIAL,
            412, 96, 41.5, 2.313, 1.80, 2.95, 1e-9, 2.4e-7);
    f->region.n_conds = 2;
    cond_eq(&f->region.conds[0], "vertical", "retail");
    cond_num(&f->region.conds[1], "hour_of_day", AUDIT_COND_GE, 20);
    f->inside_observed = 96;
    f->inside_expected = 41.5;
    f->outside_observed = 130;
    f->outside_expected = 121.5;
    f->expected_policy = 44;
    f->discovery_z = 5.2;
    util_fmt(f->summary, sizeof f->summary,
             "alice raised bids 2.3 times as often as the peers would have when vertical = "
             "retail and hour_of_day >= 20 (96 against 41.5 expected).");

    /* 2: blind spot in a region of one condition */
    f = &findings[1];
    finding(f, "bob", AUDIT_BLIND_SPOT, 5, AUDIT_SEVERITY_MEDIUM, AUDIT_TEST_POISSON_BINOMIAL, 180,
            1, 22.4, 0.0446, 0.0011, 0.25, 3.1e-8, 4.6e-6);
    f->region.n_conds = 1;
    cond_num(&f->region.conds[0], "cpa_ratio", AUDIT_COND_GE, 1.5);
    f->inside_observed = 1;
    f->inside_expected = 22.4;
    f->outside_observed = 10;
    f->outside_expected = 13.1;
    f->discovery_z = -4.1;
    util_fmt(f->summary, sizeof f->summary,
             "bob paused creatives once where the peers would have paused them 22.4 times, "
             "when cpa_ratio >= 1.5.");

    /* 3: magnitude, everywhere */
    f = &findings[2];
    finding(f, "carol", AUDIT_MAGNITUDE, 3, AUDIT_SEVERITY_MEDIUM, AUDIT_TEST_WELCH_T, 95, 24.6,
            12.1, 2.03, 1.55, 2.66, 2e-6, 0.00012);
    util_fmt(f->summary, sizeof f->summary,
             "carol's budget increases are about twice the size of the peers' in the same "
             "states (24.6%% against 12.1%%).");

    /* 4: under-acting, everywhere */
    f = &findings[3];
    finding(f, "dan<&>", AUDIT_UNDER_ACTING, 2, AUDIT_SEVERITY_LOW, AUDIT_TEST_NORMAL_SKEW, 3012,
            104, 157.5, 0.66, 0.54, 0.8, 0.0021, 0.0123);
    f->expected_policy = 160.2;
    util_fmt(f->summary, sizeof f->summary,
             "dan<&> lowered bids a third less often than the peers would have (104 against "
             "157.5 expected).");

    /* 5: policy disagreement, no action, NaN interval */
    f = &findings[4];
    finding(f, "eve|x", AUDIT_POLICY_DISAGREEMENT, -1, AUDIT_SEVERITY_INFO,
            AUDIT_TEST_POISSON_BINOMIAL, 560, 0.58, 0.71, -0.13, NAN, NAN, 0.004, 0.021);
    util_fmt(f->summary, sizeof f->summary,
             "The policy agrees with eve|x on 58%% of decisions and with the rest of the team "
             "on 71%%.");

    result.n_classes = N_CLASSES;
    result.classes = class_names;
    result.hold_class = 0;
    result.rows = 0;
    for (size_t o = 0; o < N_OPS; o++)
        result.rows += operators[o].decisions;
    result.from_us = T0 + 125000000LL;
    result.to_us = T0 + 14 * 24 * HOUR_US - 3000000LL;
    result.n_operators = N_OPS;
    result.operators = operators;
    result.n_findings = N_FINDINGS;
    result.findings = findings;
    result.n_tests = 1284;
    result.passes = 2;
    result.have_policy = true;
    result.seconds = 12.5;
    audit_result_sort(&result);

    memset(&meta, 0, sizeof meta);
    meta.source = "database";
    meta.csv_path = NULL;
    meta.run_id = 17;
    meta.policy_version = 3;
    meta.window_from_us = T0;
    meta.window_to_us = INT64_MIN;
    meta.generated_us = T0 + 15 * 24 * HOUR_US + 5 * HOUR_US + 123456;
    meta.features = feature_names;
    meta.n_features = sizeof feature_names / sizeof feature_names[0];
}

/* The number of the charts the HTML must hold: one per finding, one funnel
 * per class with a rate finding (bid_up, bid_down, creative_pause). */
enum { EXPECTED_SVGS = N_FINDINGS + 3 };

static int setup(void **state)
{
    (void)state;
    build_result();
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static void *json_alloc_via_util(size_t n)
{
    return util_malloc(n);
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0, len = strlen(needle);
    for (const char *p = strstr(hay, needle); p; p = strstr(p + len, needle))
        n++;
    return n;
}

static json_t *load_report(void)
{
    char *text = report_json(&result, &meta);
    assert_non_null(text);
    json_error_t e;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (!doc)
        fail_msg("report_json is not JSON: %s at line %d", e.text, e.line);
    free(text);
    return doc;
}

/* The object's keys, in order, are exactly keys[0..n). */
static void assert_keys(const json_t *o, const char *const *keys, size_t n)
{
    assert_true(json_is_object(o));
    assert_int_equal(json_object_size(o), n);
    size_t i = 0;
    for (void *it = json_object_iter((json_t *)o); it;
         it = json_object_iter_next((json_t *)o, it), i++)
        assert_string_equal(json_object_iter_key(it), keys[i]);
    assert_int_equal(i, n);
}

static double num(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        fail_msg("%s is not a number", key);
    return json_number_value(v);
}

static const char *str(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("%s is not a string", key);
    return json_string_value(v);
}

static void assert_near(double got, double want)
{
    if (!(fabs(got - want) <= 1e-9 * fmax(1, fabs(want))))
        fail_msg("got %.17g, want %.17g", got, want);
}

static const json_t *finding_of(const json_t *doc, const char *op)
{
    const json_t *fs = json_object_get(doc, "findings");
    for (size_t i = 0; i < json_array_size(fs); i++) {
        const json_t *f = json_array_get(fs, i);
        if (strcmp(str(f, "operator_id"), op) == 0)
            return f;
    }
    fail_msg("no finding about %s", op);
    return NULL;
}

static char *read_whole(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct util_buf b;
    util_buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(util_buf_append(&b, chunk, n), 0);
    fclose(f);
    if (!b.data)
        return util_strdup("");
    return util_buf_steal(&b);
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/test_report.XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return util_strdup(d);
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char sub[4096];
        util_fmt(sub, sizeof sub, "%s/%s", path, e->d_name);
        remove_tree(sub);
    }
    closedir(d);
    rmdir(path);
}

static size_t dir_entries(const char *path)
{
    DIR *d = opendir(path);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* ---- JSON ------------------------------------------------------------------- */

static void test_report_json_document_has_exact_keys(void **state)
{
    (void)state;
    json_t *doc = load_report();
    static const char *const top[] = {"format",    "version", "generated_at",   "source",
                                      "csv",       "run_id",  "policy_version", "window",
                                      "decisions", "classes", "parameters",     "seconds",
                                      "operators", "findings"};
    assert_keys(doc, top, sizeof top / sizeof top[0]);
    static const char *const params[] = {
        "fdr_q",  "min_support",   "tolerance", "blind_spot_ratio", "blind_spot_min_expected",
        "rounds", "learning_rate", "max_bins",  "reference_rows",   "threads",
        "seed",   "passes",        "tests",     "have_policy",      "features"};
    assert_keys(json_object_get(doc, "parameters"), params, sizeof params / sizeof params[0]);
    static const char *const win[] = {"from", "to"};
    assert_keys(json_object_get(doc, "window"), win, 2);
    static const char *const dec[] = {"from", "to", "rows"};
    assert_keys(json_object_get(doc, "decisions"), dec, 3);

    static const char *const op_keys[] = {"operator_id",      "decisions",       "actions",
                                          "audited",          "in_reference",    "outside_support",
                                          "policy_agreement", "acceptance_rate", "verdicts",
                                          "findings",         "disagreements",   "cells"};
    static const char *const sev_keys[] = {"high", "medium", "low", "info"};
    static const char *const cell_keys[] = {"observed", "expected", "variance", "expected_policy"};
    const json_t *ops = json_object_get(doc, "operators");
    assert_int_equal(json_array_size(ops), N_OPS);
    for (size_t o = 0; o < N_OPS; o++) {
        const json_t *op = json_array_get(ops, o);
        assert_keys(op, op_keys, sizeof op_keys / sizeof op_keys[0]);
        assert_keys(json_object_get(op, "findings"), sev_keys, 4);
        const json_t *c = json_object_get(op, "cells");
        assert_keys(c, (const char *const *)class_names, N_CLASSES);
        for (size_t k = 0; k < N_CLASSES; k++)
            assert_keys(json_object_get(c, class_names[k]), cell_keys, 4);
    }

    static const char *const f_keys[] = {
        "operator_id", "kind",     "action",   "region",  "conditions", "n",
        "observed",    "expected", "effect",   "ci_low",  "ci_high",    "p_value",
        "q_value",     "test",     "severity", "summary", "details"};
    static const char *const d_keys[] = {"inside_observed",  "inside_expected", "outside_observed",
                                         "outside_expected", "expected_policy", "discovery_z",
                                         "overdispersion"};
    const json_t *fs = json_object_get(doc, "findings");
    assert_int_equal(json_array_size(fs), N_FINDINGS);
    for (size_t i = 0; i < N_FINDINGS; i++) {
        const json_t *f = json_array_get(fs, i);
        assert_keys(f, f_keys, sizeof f_keys / sizeof f_keys[0]);
        assert_keys(json_object_get(f, "details"), d_keys, 7);
        /* in the result's order */
        assert_string_equal(str(f, "operator_id"), result.findings[i].operator_id);
    }
    json_decref(doc);
}

static void test_report_json_values(void **state)
{
    (void)state;
    json_t *doc = load_report();
    assert_string_equal(str(doc, "format"), "understudy-audit");
    assert_int_equal(json_integer_value(json_object_get(doc, "version")), 1);
    assert_string_equal(str(doc, "generated_at"), "2026-11-16T05:00:00.123456Z");
    assert_string_equal(str(doc, "source"), "database");
    assert_true(json_is_null(json_object_get(doc, "csv")));
    assert_int_equal(json_integer_value(json_object_get(doc, "run_id")), 17);
    assert_int_equal(json_integer_value(json_object_get(doc, "policy_version")), 3);
    const json_t *w = json_object_get(doc, "window");
    assert_string_equal(str(w, "from"), "2026-11-01T00:00:00.000000Z");
    assert_true(json_is_null(json_object_get(w, "to")));
    const json_t *d = json_object_get(doc, "decisions");
    assert_string_equal(str(d, "from"), "2026-11-01T00:02:05.000000Z");
    assert_string_equal(str(d, "to"), "2026-11-14T23:59:57.000000Z");
    assert_int_equal(json_integer_value(json_object_get(d, "rows")), result.rows);
    const json_t *cl = json_object_get(doc, "classes");
    assert_int_equal(json_array_size(cl), N_CLASSES);
    assert_string_equal(json_string_value(json_array_get(cl, 5)), "creative_pause");

    const json_t *p = json_object_get(doc, "parameters");
    assert_near(num(p, "fdr_q"), 0.05);
    assert_int_equal(json_integer_value(json_object_get(p, "min_support")), 30);
    assert_near(num(p, "tolerance"), 1.1);
    assert_int_equal(json_integer_value(json_object_get(p, "threads")), 4);
    assert_int_equal(json_integer_value(json_object_get(p, "seed")), 42);
    assert_int_equal(json_integer_value(json_object_get(p, "passes")), 2);
    assert_int_equal(json_integer_value(json_object_get(p, "tests")), 1284);
    assert_true(json_is_true(json_object_get(p, "have_policy")));
    const json_t *feats = json_object_get(p, "features");
    assert_int_equal(json_array_size(feats), 4);
    assert_string_equal(json_string_value(json_array_get(feats, 1)), "hour_of_day");
    assert_near(num(doc, "seconds"), 12.5);

    /* operators: NaN is null, severity counts from audit_result_sort */
    const json_t *ops = json_object_get(doc, "operators");
    const json_t *alice = json_array_get(ops, 0), *eve = json_array_get(ops, 4);
    assert_string_equal(str(alice, "operator_id"), "alice");
    assert_true(json_is_false(json_object_get(alice, "in_reference")));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(alice, "findings"), "high")), 1);
    const json_t *dis = json_object_get(alice, "disagreements");
    assert_int_equal(json_array_size(dis), 2);
    assert_string_equal(str(json_array_get(dis, 0), "did"), "bid_up");
    assert_string_equal(str(json_array_get(dis, 0), "policy"), "hold");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(dis, 0), "n")), 61);
    const json_t *cell = json_object_get(json_object_get(alice, "cells"), "bid_up");
    assert_near(num(cell, "expected"), 180);
    assert_near(num(cell, "observed"), cells[0][1].observed);
    assert_string_equal(str(eve, "operator_id"), "eve|x");
    assert_true(json_is_null(json_object_get(eve, "policy_agreement")));
    assert_true(json_is_null(json_object_get(eve, "acceptance_rate")));
    assert_true(json_is_null(json_object_get(json_object_get(json_object_get(eve, "cells"), "hold"),
                                             "expected_policy")));
    assert_true(json_is_false(json_object_get(json_array_get(ops, 5), "audited")));

    /* findings */
    const json_t *f = finding_of(doc, "alice");
    assert_string_equal(str(f, "kind"), "over_acting");
    assert_string_equal(str(f, "action"), "bid_up");
    assert_string_equal(str(f, "region"), "vertical = retail and hour_of_day >= 20");
    const json_t *conds = json_object_get(f, "conditions");
    assert_int_equal(json_array_size(conds), 2);
    assert_string_equal(str(json_array_get(conds, 0), "op"), "=");
    assert_string_equal(str(json_array_get(conds, 0), "level"), "retail");
    assert_null(json_object_get(json_array_get(conds, 0), "value"));
    assert_string_equal(str(json_array_get(conds, 1), "feature"), "hour_of_day");
    assert_string_equal(str(json_array_get(conds, 1), "op"), ">=");
    assert_near(num(json_array_get(conds, 1), "value"), 20);
    assert_null(json_object_get(json_array_get(conds, 1), "level"));
    assert_int_equal(json_integer_value(json_object_get(f, "n")), 412);
    assert_near(num(f, "q_value"), 2.4e-7);
    assert_near(num(f, "p_value"), 1e-9);
    assert_near(num(f, "ci_low"), 1.8);
    assert_near(num(f, "ci_high"), 2.95);
    assert_string_equal(str(f, "test"), "conditional_binomial");
    assert_string_equal(str(f, "severity"), "high");
    assert_string_equal(str(f, "summary"), findings[0].summary);
    const json_t *det = json_object_get(f, "details");
    assert_near(num(det, "inside_observed"), 96);
    assert_near(num(det, "outside_expected"), 121.5);
    assert_near(num(det, "expected_policy"), 44);
    assert_near(num(det, "discovery_z"), 5.2);

    f = finding_of(doc, "bob");
    assert_string_equal(str(f, "kind"), "blind_spot");
    assert_string_equal(str(f, "region"), "cpa_ratio >= 1.5");
    assert_true(json_is_null(json_object_get(json_object_get(f, "details"), "expected_policy")));

    f = finding_of(doc, "carol");
    assert_string_equal(str(f, "kind"), "magnitude");
    assert_string_equal(str(f, "region"), "");
    assert_int_equal(json_array_size(json_object_get(f, "conditions")), 0);
    det = json_object_get(f, "details");
    /* inside/outside mean nothing without a region */
    assert_true(json_is_null(json_object_get(det, "inside_observed")));
    assert_true(json_is_null(json_object_get(det, "outside_expected")));
    assert_true(json_is_null(json_object_get(det, "discovery_z")));

    f = finding_of(doc, "eve|x");
    assert_string_equal(str(f, "kind"), "policy_disagreement");
    assert_true(json_is_null(json_object_get(f, "action")));
    assert_true(json_is_null(json_object_get(f, "ci_low")));
    assert_true(json_is_null(json_object_get(f, "ci_high")));
    assert_near(num(f, "effect"), -0.13);
    assert_string_equal(str(f, "severity"), "info");
    json_decref(doc);
}

static void test_report_json_csv_source_has_nulls(void **state)
{
    (void)state;
    struct report_meta m = meta;
    m.source = "csv";
    m.csv_path = "/data/decisions.csv";
    m.run_id = 0;
    m.policy_version = 0;
    m.window_from_us = INT64_MIN;
    m.features = NULL;
    m.n_features = 0;
    char *text = report_json(&result, &m);
    assert_non_null(text);
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(str(doc, "source"), "csv");
    assert_string_equal(str(doc, "csv"), "/data/decisions.csv");
    assert_true(json_is_null(json_object_get(doc, "run_id")));
    assert_true(json_is_null(json_object_get(doc, "policy_version")));
    assert_true(json_is_null(json_object_get(json_object_get(doc, "window"), "from")));
    assert_int_equal(
        json_array_size(json_object_get(json_object_get(doc, "parameters"), "features")), 0);
    json_decref(doc);
    free(text);
}

static void test_report_json_invalid_utf8_is_replaced(void **state)
{
    (void)state;
    struct audit_operator saved = operators[2];
    util_fmt(operators[2].operator_id, sizeof operators[2].operator_id, "car\xffol");
    char *text = report_json(&result, &meta);
    operators[2] = saved;
    assert_non_null(text);
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(str(json_array_get(json_object_get(doc, "operators"), 2), "operator_id"),
                        "car?ol");
    json_decref(doc);
    free(text);
}

static void test_report_json_team_finding_has_null_operator(void **state)
{
    (void)state;
    struct audit_finding team[1];
    finding(&team[0], "", AUDIT_POLICY_DISAGREEMENT, -1, AUDIT_SEVERITY_LOW,
            AUDIT_TEST_POISSON_BINOMIAL, 9000, 0.7, 0.75, -0.05, -0.07, -0.03, 0.001, 0.01);
    struct audit_result r = result;
    r.n_findings = 1;
    r.findings = team;
    char *text = report_json(&r, &meta);
    assert_non_null(text);
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    const json_t *f = json_array_get(json_object_get(doc, "findings"), 0);
    assert_true(json_is_null(json_object_get(f, "operator_id")));
    assert_near(num(f, "ci_low"), -0.07);
    json_decref(doc);
    free(text);
    /* the page names the team */
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(report_html(&r, &meta, &b), 0);
    assert_non_null(strstr(b.data, "<code>the team</code>"));
    util_buf_deinit(&b);
}

static void test_report_json_out_of_memory(void **state)
{
    (void)state;
    char *full = report_json(&result, &meta);
    assert_non_null(full);
    long i;
    for (i = 0; i < 100000; i++) {
        util_alloc_fail_after(i);
        char *t = report_json(&result, &meta);
        util_alloc_fail_after(-1);
        if (t) {
            assert_string_equal(t, full);
            free(t);
            break;
        }
    }
    assert_true(i > 10); /* the failures were reached, then it succeeded */
    assert_true(i < 100000);
    free(full);
}

/* ---- Markdown --------------------------------------------------------------- */

/* Pipes that are not escaped with a backslash. */
static size_t bare_pipes(const char *line, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += line[i] == '|' && (i == 0 || line[i - 1] != '\\');
    return n;
}

static void test_report_markdown_contains_summaries_and_escapes(void **state)
{
    (void)state;
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(report_markdown(&result, &meta, &b), 0);
    const char *md = b.data;
    assert_non_null(strstr(md, "# Operator audit\n"));
    /* summaries in bold, escaped */
    assert_non_null(strstr(md, "**alice raised bids 2.3 times as often as the peers would have "
                               "when vertical = retail and hour\\_of\\_day \\>= 20 (96 against "
                               "41.5 expected).**"));
    assert_non_null(strstr(md, "**bob paused creatives once"));
    assert_non_null(strstr(md, "**carol's budget increases"));
    assert_non_null(strstr(md, "**dan\\<\\&\\> lowered bids"));
    assert_non_null(strstr(md, "**The policy agrees with eve\\|x on 58%"));
    assert_null(strstr(md, "eve|x"));
    /* every row of the operators' table has its 12 cell borders, so the
     * escaped pipe in eve|x did not split a cell */
    const char *row = strstr(md, "| eve\\|x |");
    assert_non_null(row);
    const char *eol = strchr(row, '\n');
    assert_int_equal(bare_pipes(row, (size_t)(eol - row)), 12);
    const char *head = strstr(md, "| Operator |");
    assert_non_null(head);
    assert_int_equal(bare_pipes(head, (size_t)(strchr(head, '\n') - head)), 12);
    /* sections, method and parameters */
    assert_non_null(strstr(md, "## Operators"));
    assert_non_null(strstr(md, "## Findings"));
    assert_non_null(strstr(md, "## Method"));
    assert_non_null(strstr(md, "All 1284 tests"));
    assert_non_null(strstr(md, "| `fdr_q` | 0.05 |"));
    assert_non_null(
        strstr(md, "Features audited: vertical, hour\\_of\\_day, cpa\\_ratio, pacing."));
    /* times, durations, the source */
    assert_non_null(strstr(md, "- Requested window: 2026-11-01T00:00:00Z to open\n"));
    assert_non_null(strstr(md, "2026-11-14T23:59:57Z (14 days)"));
    assert_non_null(strstr(md, "- Source: database, audit run 17\n"));
    assert_non_null(strstr(md, "- Findings: 1 high, 2 medium, 1 low, 1 info\n"));
    util_buf_deinit(&b);
}

static void test_report_markdown_formats_numbers(void **state)
{
    (void)state;
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(report_markdown(&result, &meta, &b), 0);
    const char *md = b.data;
    assert_non_null(
        strstr(md, "| Ratio observed / expected (95% interval) | 2.31 (1.80 to 2.95) |"));
    assert_non_null(strstr(md, "| Times it took the action | 96 |"));
    assert_non_null(strstr(md, "| Expected from the peers | 41.5 |"));
    assert_non_null(strstr(md, "| p-value | \\< 0.001 |"));
    assert_non_null(strstr(md, "| q-value (after the correction for all tests) | 0.0123 |"));
    assert_non_null(strstr(md, "| Inside the region: took / expected | 96 / 41.5 (ratio 2.31) |"));
    assert_non_null(strstr(md, "| Test | welch\\_t |"));
    assert_non_null(strstr(md, "| Policy agrees with this operator | 58.0% |"));
    assert_non_null(strstr(md, "| Difference in points (95% interval) | -13.0 |"));
    assert_non_null(strstr(md, "| Operator's typical change | 24.6% |"));
    /* alice's acceptance: 55.0% of 40 verdicts; eve has none */
    assert_non_null(strstr(md, "| 80.0% | 55.0% of 40 |"));
    assert_non_null(strstr(md, "| n/a | n/a |"));
    util_buf_deinit(&b);
}

static void test_report_markdown_out_of_memory_leaves_buffer(void **state)
{
    (void)state;
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(util_buf_puts(&b, "before\n"), 0);
    long i;
    for (i = 0; i < 100000; i++) {
        util_alloc_fail_after(i);
        int rc = report_markdown(&result, &meta, &b);
        util_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, -1);
        assert_int_equal(b.len, 7);
        assert_string_equal(b.data, "before\n");
    }
    assert_true(i > 0);
    assert_non_null(strstr(b.data, "before\n# Operator audit"));
    util_buf_deinit(&b);
}

/* ---- HTML ------------------------------------------------------------------- */

static char *html_of(const struct audit_result *r)
{
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(report_html(r, &meta, &b), 0);
    return util_buf_steal(&b);
}

static void test_report_html_is_self_contained(void **state)
{
    (void)state;
    char *html = html_of(&result);
    assert_true(strncmp(html, "<!DOCTYPE html>", 15) == 0);
    assert_non_null(strstr(html, "</html>\n"));
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "http"));
    assert_null(strstr(html, "src="));
    assert_null(strstr(html, "@import"));
    assert_null(strstr(html, "url(http"));
    assert_null(strstr(html, "<link"));
    assert_null(strstr(html, "<img"));
    /* the only url() is a clip path inside the page */
    assert_int_equal(count_of(html, "url("), count_of(html, "url(#funnel-clip-"));
    free(html);
}

static void test_report_html_escapes_text(void **state)
{
    (void)state;
    char *html = html_of(&result);
    assert_null(strstr(html, "dan<&>"));
    assert_non_null(strstr(html, "<code>dan&lt;&amp;&gt;</code>"));
    assert_non_null(strstr(html, "dan&lt;&amp;&gt; lowered bids a third less often"));
    assert_non_null(strstr(html, "hour_of_day &gt;= 20"));
    assert_non_null(strstr(html, "carol&#39;s budget increases"));
    assert_non_null(strstr(html, "<code>eve|x</code>"));
    free(html);
}

static void test_report_html_has_every_part(void **state)
{
    (void)state;
    char *html = html_of(&result);
    assert_non_null(strstr(html, "<h1>Operator audit</h1>"));
    assert_non_null(strstr(html, "<dd>database, audit run 17</dd>"));
    assert_non_null(strstr(html, "<dd>version 3 (the champion)</dd>"));
    assert_non_null(strstr(html, "<dd>2026-11-01T00:00:00Z to open</dd>"));
    /* one chart per finding and one funnel per class with a rate finding */
    assert_int_equal(count_of(html, "<svg"), EXPECTED_SVGS);
    assert_int_equal(count_of(html, "</svg>"), EXPECTED_SVGS);
    assert_int_equal(count_of(html, "<article class=\"finding"), N_FINDINGS);
    assert_non_null(strstr(html, "aria-label=\"Funnel plot of bid_up\""));
    assert_non_null(strstr(html, "aria-label=\"Funnel plot of bid_down\""));
    assert_non_null(strstr(html, "aria-label=\"Funnel plot of creative_pause\""));
    assert_null(strstr(html, "aria-label=\"Funnel plot of hold\""));
    /* in the result's order: the high finding first */
    char *first = strstr(html, "<article class=\"finding high\">");
    char *second = strstr(html, "<article class=\"finding medium\">");
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second);
    /* every summary and the blind-spot sentence */
    assert_non_null(strstr(html, "bob paused creatives once"));
    assert_non_null(strstr(html, "this operator almost never does."));
    assert_non_null(strstr(html, "All 1284 tests"));
    assert_non_null(strstr(html, "class=\"b high\""));
    assert_non_null(strstr(html, "<h2>Method</h2>"));
    free(html);
}

static void test_report_html_without_findings_plots_busiest_action(void **state)
{
    (void)state;
    struct audit_result r = result;
    r.n_findings = 0;
    r.findings = NULL;
    char *html = html_of(&r);
    assert_int_equal(count_of(html, "<svg"), 1);
    /* bid_up is the most frequent class other than hold */
    assert_non_null(strstr(html, "aria-label=\"Funnel plot of bid_up\""));
    assert_non_null(strstr(html, "No findings"));
    free(html);
}

static void test_report_html_out_of_memory_leaves_buffer(void **state)
{
    (void)state;
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(util_buf_puts(&b, "x"), 0);
    long i;
    for (i = 0; i < 100000; i++) {
        util_alloc_fail_after(i);
        int rc = report_html(&result, &meta, &b);
        util_alloc_fail_after(-1);
        if (rc == 0)
            break;
        assert_int_equal(rc, -1);
        assert_int_equal(b.len, 1);
    }
    assert_true(i > 0);
    assert_true(b.len > 1000);
    util_buf_deinit(&b);
}

/* ---- formats ------------------------------------------------------------------ */

static void test_report_parse_formats_accepts(void **state)
{
    (void)state;
    char err[128];
    unsigned m = 0;
    assert_int_equal(report_parse_formats("html,md,json", &m, err, sizeof err), 0);
    assert_int_equal(m, REPORT_HTML | REPORT_MD | REPORT_JSON);
    assert_int_equal(report_parse_formats("json", &m, err, sizeof err), 0);
    assert_int_equal(m, REPORT_JSON);
    assert_int_equal(report_parse_formats(" md , html", &m, err, sizeof err), 0);
    assert_int_equal(m, REPORT_MD | REPORT_HTML);
    assert_int_equal(report_parse_formats("json,html", &m, err, sizeof err), 0);
    assert_int_equal(m, REPORT_JSON | REPORT_HTML);
}

static void test_report_parse_formats_refuses(void **state)
{
    (void)state;
    static const struct {
        const char *in, *reason;
    } bad[] = {
        {"pdf", "unknown format \"pdf\" (use html, md, json)"},
        {"html,pdf", "unknown format \"pdf\" (use html, md, json)"},
        {"HTML", "unknown format \"HTML\" (use html, md, json)"},
        {"html,md,html", "format \"html\" given twice"},
        {"html,,md", "empty format name in \"html,,md\" (use html, md, json)"},
        {"json,", "empty format name in \"json,\" (use html, md, json)"},
        {"", "empty format list (use html, md, json)"},
        {"  ", "empty format list (use html, md, json)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[128] = "";
        unsigned m = 99;
        assert_int_equal(report_parse_formats(bad[i].in, &m, err, sizeof err), -1);
        assert_string_equal(err, bad[i].reason);
        assert_int_equal(m, 99); /* untouched */
    }
    char err[128];
    unsigned m;
    assert_int_equal(report_parse_formats(NULL, &m, err, sizeof err), -1);
}

/* ---- writing ------------------------------------------------------------------ */

static void test_report_write_creates_nested_dir(void **state)
{
    (void)state;
    char *tmp = make_tmpdir(), dir[512], path[600], err[256];
    util_fmt(dir, sizeof dir, "%s/a/b/c/", tmp);
    assert_int_equal(
        report_write(&result, &meta, dir, REPORT_HTML | REPORT_MD | REPORT_JSON, err, sizeof err),
        0);
    util_fmt(dir, sizeof dir, "%s/a/b/c", tmp);
    /* exactly the three files: no temporary file left behind */
    assert_int_equal(dir_entries(dir), 3);

    util_fmt(path, sizeof path, "%s/audit.json", dir);
    char *got = read_whole(path), *want = report_json(&result, &meta);
    assert_non_null(got);
    assert_non_null(want);
    assert_int_equal(strlen(got), strlen(want) + 1);
    assert_true(strncmp(got, want, strlen(want)) == 0);
    assert_int_equal(got[strlen(want)], '\n');
    free(got);
    free(want);

    struct util_buf b;
    util_buf_init(&b);
    util_fmt(path, sizeof path, "%s/audit.md", dir);
    got = read_whole(path);
    assert_int_equal(report_markdown(&result, &meta, &b), 0);
    assert_string_equal(got, b.data);
    free(got);
    util_buf_reset(&b);
    util_fmt(path, sizeof path, "%s/audit.html", dir);
    got = read_whole(path);
    assert_int_equal(report_html(&result, &meta, &b), 0);
    assert_string_equal(got, b.data);
    free(got);
    util_buf_deinit(&b);

    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    remove_tree(tmp);
    free(tmp);
}

static void test_report_write_replaces_only_the_asked_formats(void **state)
{
    (void)state;
    char *tmp = make_tmpdir(), path[600], err[256];
    assert_int_equal(report_write(&result, &meta, tmp, REPORT_JSON, err, sizeof err), 0);
    assert_int_equal(dir_entries(tmp), 1);
    struct report_meta m = meta;
    m.run_id = 18;
    assert_int_equal(report_write(&result, &m, tmp, REPORT_JSON | REPORT_MD, err, sizeof err), 0);
    assert_int_equal(dir_entries(tmp), 2);
    util_fmt(path, sizeof path, "%s/audit.json", tmp);
    char *got = read_whole(path);
    assert_non_null(strstr(got, "\"run_id\": 18,"));
    free(got);
    util_fmt(path, sizeof path, "%s/audit.html", tmp);
    assert_int_equal(access(path, F_OK), -1);
    /* nothing asked, nothing written */
    assert_int_equal(report_write(&result, &m, tmp, 0, err, sizeof err), 0);
    assert_int_equal(dir_entries(tmp), 2);
    assert_int_equal(report_write(&result, &m, tmp, 8u, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown format bits"));
    remove_tree(tmp);
    free(tmp);
}

static void test_report_write_unwritable_path_fails(void **state)
{
    (void)state;
    char *tmp = make_tmpdir(), file[512], dir[600], err[256] = "";
    util_fmt(file, sizeof file, "%s/plain-file", tmp);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
    /* a regular file in the way: even root cannot create a directory in it */
    util_fmt(dir, sizeof dir, "%s/sub/dir", file);
    assert_int_equal(report_write(&result, &meta, dir, REPORT_JSON, err, sizeof err), -1);
    char want[700];
    util_fmt(want, sizeof want, "%s: not a directory", file);
    assert_string_equal(err, want);
    /* the target is itself a file */
    assert_int_equal(report_write(&result, &meta, file, REPORT_MD, err, sizeof err), -1);
    assert_string_equal(err, want);
    assert_int_equal(dir_entries(tmp), 1);
    remove_tree(tmp);
    free(tmp);
}

/* ---- shared helpers --------------------------------------------------------------- */

/* P(X <= k) for X ~ Poisson(e), summed directly. */
static double poisson_cdf(double e, int k)
{
    double pmf = exp(-e), cdf = pmf;
    for (int i = 1; i <= k; i++) {
        pmf *= e / i;
        cdf += pmf;
    }
    return cdf;
}

static void test_report_funnel_limits_match_poisson(void **state)
{
    (void)state;
    const double z95 = 1.959963985, z998 = 3.090232306;
    static const double es[] = {0.5, 1, 3, 10, 42, 150, 699};
    for (size_t i = 0; i < sizeof es / sizeof es[0]; i++) {
        double lo, hi, lo2, hi2, e = es[i];
        report_funnel_limits(e, z95, &lo, &hi);
        report_funnel_limits(e, z998, &lo2, &hi2);
        assert_true(lo >= 0);
        assert_true(lo < e && e < hi);
        assert_true(lo2 <= lo && hi < hi2);
        /* the interpolated limit lies between the whole counts around the
         * exact quantile: F(ceil(hi) - 1) < 0.975 <= F(ceil(hi)) */
        int k = (int)ceil(hi);
        assert_true(poisson_cdf(e, k) >= 0.975 - 1e-12);
        assert_true(k == 0 || poisson_cdf(e, k - 1) < 0.975);
        if (lo > 0) {
            k = (int)ceil(lo);
            assert_true(poisson_cdf(e, k) >= 0.025 - 1e-12);
            assert_true(k == 0 || poisson_cdf(e, k - 1) < 0.025);
        }
    }
    /* E = 10: the 95 % limits lie in (3, 4] and (16, 17] */
    double lo, hi;
    report_funnel_limits(10, z95, &lo, &hi);
    assert_true(lo > 3 && lo <= 4);
    assert_true(hi > 16 && hi <= 17);
    /* continuous where the method changes, at E = 700 */
    double lo_a, hi_a, lo_b, hi_b;
    report_funnel_limits(699.999, z95, &lo_a, &hi_a);
    report_funnel_limits(700.001, z95, &lo_b, &hi_b);
    assert_true(fabs(hi_a - hi_b) < 1.0 && fabs(lo_a - lo_b) < 1.0);
    /* large E: close to the normal limits */
    report_funnel_limits(1e6, z95, &lo, &hi);
    assert_true(fabs(hi - (1e6 + z95 * 1000)) < 1);
    assert_true(fabs(lo - (1e6 - z95 * 1000)) < 1);
    report_funnel_limits(0, z95, &lo, &hi);
    assert_true(lo <= 0 && lo >= 0 && hi <= 0 && hi >= 0);
    report_funnel_limits(NAN, z95, &lo, &hi);
    assert_true(lo <= 0 && hi <= 0);
}

static void test_report_fmt_numbers_and_times(void **state)
{
    (void)state;
    char b[REPORT_NUM_MAX];
    assert_string_equal(report_fmt_p(0.0004, b, sizeof b), "< 0.001");
    assert_string_equal(report_fmt_p(0.001, b, sizeof b), "0.001");
    assert_string_equal(report_fmt_p(0.012345, b, sizeof b), "0.0123");
    assert_string_equal(report_fmt_p(0.5, b, sizeof b), "0.5");
    assert_string_equal(report_fmt_p(NAN, b, sizeof b), "n/a");
    assert_string_equal(report_fmt_count(42, b, sizeof b), "42");
    assert_string_equal(report_fmt_count(17.26, b, sizeof b), "17.3");
    assert_string_equal(report_fmt_count(INFINITY, b, sizeof b), "n/a");
    assert_string_equal(report_fmt_ratio(2.313, b, sizeof b), "2.31");
    assert_string_equal(report_fmt_share(0.5555, b, sizeof b), "55.5%");
    assert_string_equal(report_fmt_time(INT64_MIN, b, sizeof b), "open");
    assert_string_equal(report_fmt_time(T0 + 999999, b, sizeof b), "2026-11-01T00:00:00Z");
    assert_string_equal(report_fmt_duration(14 * 24 * HOUR_US, b, sizeof b), "14 days");
    assert_string_equal(report_fmt_duration(60 * HOUR_US, b, sizeof b), "2.5 days");
    assert_string_equal(report_fmt_duration(36 * HOUR_US, b, sizeof b), "36 hours");
    assert_string_equal(report_fmt_duration(HOUR_US / 2, b, sizeof b), "30 minutes");
    assert_string_equal(report_fmt_duration(60000000LL, b, sizeof b), "1 minute");
    assert_string_equal(report_fmt_duration(5000000LL, b, sizeof b), "5 seconds");
    assert_string_equal(report_fmt_duration(-1, b, sizeof b), "n/a");
}

static void test_report_finding_rows_by_kind(void **state)
{
    (void)state;
    struct report_row rows[REPORT_ROWS_MAX];
    size_t n = report_finding_rows(&result, &findings[0], rows, REPORT_ROWS_MAX);
    /* alice's region finding: scope, took, expected, policy, ratio, inside,
     * outside, discovery, p, q, test */
    assert_int_equal(n, 11);
    assert_string_equal(rows[0].label, "Decisions in scope (test half)");
    assert_string_equal(rows[0].value, "412");
    assert_string_equal(rows[3].value, "44");
    assert_string_equal(rows[7].value, "z = 5.2");
    assert_string_equal(rows[10].value, "conditional_binomial");
    /* capped at max */
    assert_int_equal(report_finding_rows(&result, &findings[0], rows, 3), 3);
    /* policy disagreement without an interval */
    const struct audit_finding *pd = NULL;
    for (size_t i = 0; i < N_FINDINGS; i++)
        if (findings[i].kind == AUDIT_POLICY_DISAGREEMENT)
            pd = &findings[i];
    assert_non_null(pd);
    n = report_finding_rows(&result, pd, rows, REPORT_ROWS_MAX);
    assert_int_equal(n, 7);
    assert_string_equal(rows[3].value, "-13.0");
    char s[REPORT_PARA_MAX];
    assert_non_null(strstr(report_finding_meaning(&result, pd, s, sizeof s), "less often"));
    assert_string_equal(report_kind_title(AUDIT_BLIND_SPOT), "Blind spot");
    assert_string_equal(report_kind_title(AUDIT_KIND_COUNT), "Finding");
    assert_string_equal(report_class_name(&result, -1), "(none)");
    assert_string_equal(report_class_name(&result, N_CLASSES), "(none)");
    assert_true(report_is_rate_kind(AUDIT_BLIND_SPOT));
    assert_false(report_is_rate_kind(AUDIT_MAGNITUDE));
}

static void test_report_method_text_uses_the_run(void **state)
{
    (void)state;
    char p[REPORT_PARA_MAX];
    assert_non_null(strstr(report_method_text(&result, &meta, 1, p, sizeof p), "2 passes"));
    assert_non_null(strstr(report_method_text(&result, &meta, 2, p, sizeof p), "seed 42"));
    assert_non_null(strstr(report_method_text(&result, &meta, 3, p, sizeof p), "All 1284 tests"));
    assert_non_null(strstr(report_method_text(&result, &meta, 4, p, sizeof p), "0.91 to 1.10"));
    assert_non_null(strstr(report_method_text(&result, &meta, 7, p, sizeof p), "version 3"));
    assert_string_equal(report_method_text(&result, &meta, REPORT_METHOD_PARAS, p, sizeof p), "");
    struct audit_result r = result;
    r.have_policy = false;
    assert_non_null(strstr(report_method_text(&r, &meta, 7, p, sizeof p), "No champion policy"));
}

/* ---- main ------------------------------------------------------------------------- */

/* Writes the example report for docs/audit-report.png when asked. */
static int write_example(void)
{
    const char *dir = getenv("REPORT_EXAMPLE_DIR");
    char err[512];
    if (!dir || !*dir)
        return 0;
    build_result();
    if (report_write(&result, &meta, dir, REPORT_HTML | REPORT_MD | REPORT_JSON, err, sizeof err) !=
        0) {
        fprintf(stderr, "test_report: example: %s\n", err);
        return -1;
    }
    fprintf(stderr, "test_report: example written to %s\n", dir);
    return 0;
}

int main(void)
{
    json_set_alloc_funcs(json_alloc_via_util, free);
    if (write_example() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_json_document_has_exact_keys),
        cmocka_unit_test(test_report_json_values),
        cmocka_unit_test(test_report_json_csv_source_has_nulls),
        cmocka_unit_test(test_report_json_invalid_utf8_is_replaced),
        cmocka_unit_test(test_report_json_team_finding_has_null_operator),
        cmocka_unit_test(test_report_json_out_of_memory),
        cmocka_unit_test(test_report_markdown_contains_summaries_and_escapes),
        cmocka_unit_test(test_report_markdown_formats_numbers),
        cmocka_unit_test(test_report_markdown_out_of_memory_leaves_buffer),
        cmocka_unit_test(test_report_html_is_self_contained),
        cmocka_unit_test(test_report_html_escapes_text),
        cmocka_unit_test(test_report_html_has_every_part),
        cmocka_unit_test(test_report_html_without_findings_plots_busiest_action),
        cmocka_unit_test(test_report_html_out_of_memory_leaves_buffer),
        cmocka_unit_test(test_report_parse_formats_accepts),
        cmocka_unit_test(test_report_parse_formats_refuses),
        cmocka_unit_test(test_report_write_creates_nested_dir),
        cmocka_unit_test(test_report_write_replaces_only_the_asked_formats),
        cmocka_unit_test(test_report_write_unwritable_path_fails),
        cmocka_unit_test(test_report_funnel_limits_match_poisson),
        cmocka_unit_test(test_report_fmt_numbers_and_times),
        cmocka_unit_test(test_report_finding_rows_by_kind),
        cmocka_unit_test(test_report_method_text_uses_the_run),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
