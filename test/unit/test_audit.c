/*
 * Unit tests for internal/audit: the tests behind the findings checked
 * against direct computations, and the whole audit on simulated teams
 * (internal/sim) with planted biases of every kind, and without any.
 *
 * A simulation is written to a mkdtemp directory and loaded as the audit
 * sees decisions: examples.csv gives the states, labels and sizes, line i
 * of states.jsonl the operator of row i.
 */
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

#include "audit/audit.h"
#include "dataset/dataset.h"
#include "policy/policy.h"
#include "sim/sim.h"
#include "util/util.h"

/* ---- statistics ------------------------------------------------------- */

static void test_audit_pbinom_tail_matches_enumeration(void **state)
{
    (void)state;
    enum { N = 12 };
    double p[N];
    uint64_t x = 12345;
    for (size_t i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (double)(x >> 11) / 9007199254740992.0;
    }
    p[3] = 0.0;
    p[7] = 1.0;
    double dist[N + 1] = {0};
    for (unsigned mask = 0; mask < (1u << N); mask++) {
        double pr = 1;
        unsigned k = 0;
        for (size_t i = 0; i < N; i++) {
            bool on = mask & (1u << i);
            pr *= on ? p[i] : 1 - p[i];
            k += on;
        }
        dist[k] += pr;
    }
    for (unsigned k = 0; k <= N; k++) {
        double up = 0, low = 0;
        for (unsigned j = 0; j <= N; j++) {
            if (j >= k)
                up += dist[j];
            if (j <= k)
                low += dist[j];
        }
        enum audit_test t;
        assert_true(fabs(audit_pbinom_tail(p, N, k, true, &t) - up) < 1e-12);
        assert_int_equal(t, AUDIT_TEST_POISSON_BINOMIAL);
        assert_true(fabs(audit_pbinom_tail(p, N, k, false, &t) - low) < 1e-12);
    }
}

static void test_audit_pbinom_tail_large_counts_use_the_approximation(void **state)
{
    (void)state;
    /* Equal p: the count is binomial, whose exact tail we know. */
    enum { N = 40000 };
    double *p = malloc(N * sizeof *p);
    assert_non_null(p);
    for (size_t i = 0; i < N; i++)
        p[i] = 0.3;
    for (unsigned k = 12050; k <= 12400; k += 50) {
        enum audit_test t;
        double approx = audit_pbinom_tail(p, N, k, true, &t);
        double exact = audit_binom_tail(N, 0.3, k, true);
        assert_int_equal(t, AUDIT_TEST_NORMAL_SKEW);
        assert_true(fabs(approx - exact) <= 0.02 * exact + 1e-9);
    }
    /* A small count stays exact: P(S <= 11900). */
    enum audit_test t;
    double low = audit_pbinom_tail(p, N, 11900, false, &t);
    assert_true(fabs(low - audit_binom_tail(N, 0.3, 11900, false)) <= 0.02 * low);
    free(p);
}

static void test_audit_binom_tail_matches_sum(void **state)
{
    (void)state;
    const uint64_t n = 50;
    const double p = 0.2;
    for (uint64_t k = 0; k <= n; k++) {
        double up = 0, low = 0;
        for (uint64_t j = 0; j <= n; j++) {
            double lc = lgamma((double)n + 1) - lgamma((double)j + 1) - lgamma((double)(n - j) + 1);
            double pr = exp(lc + (double)j * log(p) + (double)(n - j) * log(1 - p));
            if (j >= k)
                up += pr;
            if (j <= k)
                low += pr;
        }
        assert_true(fabs(audit_binom_tail(n, p, k, true) - up) < 1e-10);
        assert_true(fabs(audit_binom_tail(n, p, k, false) - low) < 1e-10);
    }
}

static void test_audit_t_two_sided_known_values(void **state)
{
    (void)state;
    /* Student's t quantiles: t(0.975; 10) = 2.228139, t(0.995; 3) = 5.840909. */
    assert_true(fabs(audit_t_two_sided(2.228139, 10) - 0.05) < 1e-5);
    assert_true(fabs(audit_t_two_sided(-5.840909, 3) - 0.01) < 1e-5);
    assert_true(fabs(audit_t_two_sided(1.959964, 1e9) - 0.05) < 1e-5);
    assert_true(fabs(audit_t_two_sided(0, 7) - 1.0) < 1e-12);
    assert_true(fabs(audit_norm_upper(1.959964) - 0.025) < 1e-6);
}

static void test_audit_bh_hand_computed(void **state)
{
    (void)state;
    const double p[] = {0.01, 0.04, 0.03, 0.005, 0.9};
    double q[5];
    audit_bh(p, 5, q);
    /* sorted: 0.005 (1), 0.01 (2), 0.03 (3), 0.04 (4), 0.9 (5); m = 5 */
    const double want[] = {0.025, 0.05, 0.05, 0.025, 0.9};
    for (size_t i = 0; i < 5; i++)
        assert_true(fabs(q[i] - want[i]) < 1e-12);
}

static void test_audit_region_text_formats_conditions(void **state)
{
    (void)state;
    struct audit_region r = {.n_conds = 2};
    strcpy(r.conds[0].feature, "hour_of_day");
    r.conds[0].op = AUDIT_COND_GE;
    r.conds[0].value = 20;
    strcpy(r.conds[1].feature, "vertical");
    r.conds[1].op = AUDIT_COND_EQ;
    strcpy(r.conds[1].level, "retail");
    char buf[256];
    assert_string_equal(audit_region_text(&r, buf, sizeof buf),
                        "hour_of_day >= 20 and vertical = retail");
    r.n_conds = 1;
    r.conds[0].op = AUDIT_COND_LT;
    r.conds[0].value = 1.25;
    assert_string_equal(audit_region_text(&r, buf, sizeof buf), "hour_of_day < 1.25");
    r.n_conds = 0;
    assert_string_equal(audit_region_text(&r, buf, sizeof buf), "");
}

/* ---- simulated teams ----------------------------------------------------- */

static char *operators_of(const char *dir, size_t *n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/states.jsonl", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t cap = 1024, len = 0;
    char *ops = malloc(cap * 8);
    assert_non_null(ops);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "\"operator_id\":\"");
        assert_non_null(at);
        at += strlen("\"operator_id\":\"");
        if (len == cap) {
            cap *= 2;
            ops = realloc(ops, cap * 8);
            assert_non_null(ops);
        }
        size_t l = strcspn(at, "\"");
        assert_true(l < 8);
        memcpy(ops + len * 8, at, l);
        ops[len * 8 + l] = '\0';
        len++;
    }
    fclose(f);
    *n = len;
    return ops;
}

static void rm_dir(const char *dir)
{
    static const char *const files[] = {"states.jsonl", "actions.jsonl", "examples.csv",
                                        "truth.json", "features.yaml"};
    char path[1024];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/*
 * Simulates rows decisions of 8 operators on campaigns campaigns with the
 * given bias specs and loads them with each row's operator as its group.
 */
static struct ds *simulate(uint64_t rows, unsigned campaigns, uint64_t seed,
                           const char *const *specs, size_t n_specs)
{
    char dir[] = "/tmp/understudy-test-audit.XXXXXX";
    char err[512];
    assert_non_null(mkdtemp(dir));
    struct sim_bias biases[8];
    assert_true(n_specs <= 8);
    for (size_t i = 0; i < n_specs; i++)
        assert_int_equal(sim_parse_bias(specs[i], &biases[i], err, sizeof err), 0);
    struct sim_options o;
    sim_options_default(&o);
    o.rows = rows;
    o.campaigns = campaigns;
    o.seed = seed;
    o.biases = biases;
    o.n_biases = n_specs;
    if (sim_run(&o, dir, NULL, err, sizeof err) != 0)
        fail_msg("sim_run: %s", err);

    char path[1024];
    snprintf(path, sizeof path, "%s/examples.csv", dir);
    struct ds_csv_options co = {.label = "label", .target = "delta_pct"};
    struct ds *csv = NULL;
    if (ds_read_csv(path, &co, &csv, err, sizeof err) != 0)
        fail_msg("ds_read_csv: %s", err);
    size_t n_ops;
    char *ops = operators_of(dir, &n_ops);
    assert_int_equal(n_ops, ds_n_rows(csv));

    size_t nf = ds_n_features(csv);
    const char **names = calloc(nf, sizeof *names);
    enum gbm_kind *kinds = calloc(nf, sizeof *kinds);
    const char **classes = calloc(ds_n_classes(csv), sizeof *classes);
    struct event_feature_value *v = calloc(nf, sizeof *v);
    assert_true(names && kinds && classes && v);
    for (size_t f = 0; f < nf; f++) {
        names[f] = ds_feature_name(csv, f);
        kinds[f] = ds_feature_kind(csv, f);
    }
    for (size_t k = 0; k < ds_n_classes(csv); k++)
        classes[k] = ds_class_name(csv, k);
    struct ds *d = NULL;
    assert_int_equal(ds_new(names, kinds, nf, classes, ds_n_classes(csv), &d, err, sizeof err), 0);
    for (size_t r = 0; r < ds_n_rows(csv); r++) {
        for (size_t f = 0; f < nf; f++) {
            v[f].num = ds_cell_num(csv, f, r);
            v[f].cat = ds_cell_level(csv, f, r);
            v[f].missing = kinds[f] == GBM_NUMERIC ? isnan(v[f].num) : v[f].cat == NULL;
        }
        assert_int_equal(ds_add_row(d, ds_class_name(csv, (size_t)ds_row_label(csv, r)),
                                    (int64_t)r * 1000000, ops + r * 8, ds_row_target(csv, r), v),
                         0);
    }
    free(names);
    free(kinds);
    free(classes);
    free(v);
    free(ops);
    ds_free(csv);
    rm_dir(dir);
    return d;
}

static struct audit_result *run_audit(const struct ds *d, const struct gbm_model *policy)
{
    struct audit_params p;
    audit_params_default(&p);
    p.threads = 2;
    struct audit_result *r = NULL;
    char err[512];
    if (audit_run(d, policy, &p, &r, err, sizeof err) != 0)
        fail_msg("audit_run: %s", err);
    return r;
}

static const char *cls(const struct audit_result *r, const struct audit_finding *f)
{
    return f->action >= 0 ? r->classes[f->action] : "";
}

/* The finding of op and action with the given kind, or NULL. */
static const struct audit_finding *find(const struct audit_result *r, const char *op,
                                        const char *action, enum audit_kind kind)
{
    for (size_t i = 0; i < r->n_findings; i++) {
        const struct audit_finding *f = &r->findings[i];
        if (strcmp(f->operator_id, op) == 0 && strcmp(cls(r, f), action) == 0 && f->kind == kind)
            return f;
    }
    return NULL;
}

static bool region_names(const struct audit_finding *f, const char *feature)
{
    for (size_t i = 0; i < f->region.n_conds; i++) {
        if (strcmp(f->region.conds[i].feature, feature) == 0)
            return true;
    }
    return false;
}

static void print_findings(const struct audit_result *r)
{
    for (size_t i = 0; i < r->n_findings; i++)
        print_message("  [%s] %s\n", audit_severity_name(r->findings[i].severity),
                      r->findings[i].summary);
}

/* Every finding is about a planted (operator, action) pair. */
static void assert_only_planted(const struct audit_result *r, const char *const (*planted)[2],
                                size_t n)
{
    for (size_t i = 0; i < r->n_findings; i++) {
        const struct audit_finding *f = &r->findings[i];
        bool ok = false;
        for (size_t j = 0; j < n; j++)
            ok |=
                strcmp(f->operator_id, planted[j][0]) == 0 && strcmp(cls(r, f), planted[j][1]) == 0;
        if (!ok)
            fail_msg("finding about nothing planted: %s", f->summary);
        assert_true(f->q_value <= r->params.fdr_q);
        assert_true(f->n >= (size_t)r->params.min_support);
        assert_true(f->summary[0] != '\0');
    }
}

static void test_audit_run_finds_every_planted_bias(void **state)
{
    (void)state;
    static const char *const specs[] = {
        "op-03:never=bid_down@channel=social",
        "op-02:shift=bid_down:cpa_ratio:-0.3",
        "op-05:scale=budget_up:1.8",
        "op-04:favor=creative_pause:3",
        "op-06:never=bid_up",
    };
    struct ds *d = simulate(40000, 160, 12, specs, 5);
    struct audit_result *r = run_audit(d, NULL);
    print_findings(r);

    const struct audit_finding *f = find(r, "op-03", "bid_down", AUDIT_BLIND_SPOT);
    assert_non_null(f);
    assert_true(region_names(f, "channel"));
    assert_true(f->observed < 0.5 && f->expected >= 10);
    assert_non_null(find(r, "op-02", "bid_down", AUDIT_UNDER_ACTING));
    f = find(r, "op-05", "budget_up", AUDIT_MAGNITUDE);
    assert_non_null(f);
    assert_true(f->effect > 1.5 && f->effect < 2.1 && f->ci_lo < f->effect && f->ci_hi > f->effect);
    f = find(r, "op-04", "creative_pause", AUDIT_OVER_ACTING);
    assert_non_null(f);
    assert_true(f->effect > 1.5);
    f = find(r, "op-06", "bid_up", AUDIT_BLIND_SPOT);
    assert_non_null(f);
    assert_int_equal(f->region.n_conds, 0);
    assert_int_equal(f->severity, AUDIT_SEVERITY_HIGH);

    static const char *const planted[][2] = {{"op-03", "bid_down"},
                                             {"op-02", "bid_down"},
                                             {"op-05", "budget_up"},
                                             {"op-04", "creative_pause"},
                                             {"op-06", "bid_up"}};
    assert_only_planted(r, planted, 5);
    /* The unbiased operators: no findings, and they stayed in the references. */
    for (size_t o = 0; o < r->n_operators; o++) {
        const struct audit_operator *op = &r->operators[o];
        bool unbiased = strcmp(op->operator_id, "op-01") == 0 ||
                        strcmp(op->operator_id, "op-07") == 0 ||
                        strcmp(op->operator_id, "op-08") == 0;
        size_t n = 0;
        for (size_t s = 0; s < AUDIT_SEVERITY_COUNT; s++)
            n += op->findings_by_severity[s];
        if (unbiased) {
            assert_int_equal(n, 0);
            assert_true(op->in_reference);
        }
        print_message("  %s: %zu of %zu decisions outside the reference's support\n",
                      op->operator_id, op->outside_support, op->decisions);
        assert_true(op->audited);
    }
    /* Findings are ordered most severe first. */
    for (size_t i = 1; i < r->n_findings; i++)
        assert_true(r->findings[i - 1].severity >= r->findings[i].severity);
    audit_result_free(r);
    ds_free(d);
}

static void test_audit_run_finds_regional_and_favouring_biases(void **state)
{
    (void)state;
    static const char *const specs[] = {
        "op-07:favor=bid_up:4@hour_of_day>11",
        "op-02:favor=creative_pause:0.25",
        "op-05:never=budget_down",
        "op-08:favor=creative_pause:4@device=mobile",
    };
    struct ds *d = simulate(40000, 160, 22, specs, 4);
    struct audit_result *r = run_audit(d, NULL);
    print_findings(r);
    assert_non_null(find(r, "op-02", "creative_pause", AUDIT_UNDER_ACTING));
    assert_non_null(find(r, "op-05", "budget_down", AUDIT_BLIND_SPOT));
    assert_non_null(find(r, "op-08", "creative_pause", AUDIT_OVER_ACTING));
    /* op-07's favour is regional: a region finding names the hour. */
    bool hour = false;
    for (size_t i = 0; i < r->n_findings; i++) {
        const struct audit_finding *f = &r->findings[i];
        if (strcmp(f->operator_id, "op-07") == 0 && strcmp(cls(r, f), "bid_up") == 0 &&
            f->kind == AUDIT_OVER_ACTING && region_names(f, "hour_of_day")) {
            hour = true;
            assert_true(f->inside_observed > f->inside_expected);
            assert_true(isfinite(f->discovery_z) && f->discovery_z > 0);
        }
    }
    assert_true(hour);
    static const char *const planted[][2] = {{"op-07", "bid_up"},
                                             {"op-02", "creative_pause"},
                                             {"op-05", "budget_down"},
                                             {"op-08", "creative_pause"}};
    assert_only_planted(r, planted, 4);
    audit_result_free(r);
    ds_free(d);
}

/*
 * False findings over seeds: with no bias planted every finding is false,
 * and Benjamini-Hochberg at q = 0.05 then bounds the chance of any finding
 * in a run by 0.05.  Over 8 seeds that allows at most one run with
 * findings (P(2 or more of 8) = 0.057 at the bound).
 */
static void test_audit_run_unbiased_teams_stay_within_the_fdr(void **state)
{
    (void)state;
    size_t runs_with_findings = 0, findings = 0;
    for (uint64_t seed = 101; seed < 109; seed++) {
        struct ds *d = simulate(20000, 120, seed, NULL, 0);
        struct audit_result *r = run_audit(d, NULL);
        print_findings(r);
        runs_with_findings += r->n_findings > 0;
        findings += r->n_findings;
        assert_true(r->n_tests > 100);
        audit_result_free(r);
        ds_free(d);
    }
    print_message("  %zu finding(s) in %zu of 8 unbiased runs\n", findings, runs_with_findings);
    assert_true(runs_with_findings <= 1);
}

/* One strongly biased operator must not make the others look biased. */
static void test_audit_run_biased_peer_leaves_the_others_clean(void **state)
{
    (void)state;
    static const char *const specs[] = {"op-04:favor=bid_down:4"};
    struct ds *d = simulate(30000, 120, 31, specs, 1);
    struct audit_result *r = run_audit(d, NULL);
    print_findings(r);
    assert_non_null(find(r, "op-04", "bid_down", AUDIT_OVER_ACTING));
    static const char *const planted[][2] = {{"op-04", "bid_down"}};
    assert_only_planted(r, planted, 1);
    for (size_t o = 0; o < r->n_operators; o++)
        assert_int_equal(r->operators[o].in_reference,
                         strcmp(r->operators[o].operator_id, "op-04") != 0);
    assert_true(r->passes >= 2);
    audit_result_free(r);
    ds_free(d);
}

static void test_audit_run_with_a_champion_reports_agreement(void **state)
{
    (void)state;
    static const char *const specs[] = {"op-06:never=bid_up"};
    struct ds *d = simulate(20000, 120, 41, specs, 1);
    /* A champion fitted on everyone, as the trainer would. */
    char err[512];
    struct ds_binned *b = NULL;
    assert_int_equal(ds_bin(d, 64, 2, &b, err, sizeof err), 0);
    const char **classes = calloc(ds_n_classes(d), sizeof *classes);
    assert_non_null(classes);
    for (size_t k = 0; k < ds_n_classes(d); k++)
        classes[k] = ds_class_name(d, k);
    struct gbm_params gp;
    gbm_params_default(&gp);
    gp.rounds = 60;
    gp.threads = 2;
    struct gbm_model *m = NULL;
    assert_int_equal(gbm_fit(ds_binned_train(b), NULL, ds_n_classes(d), classes, &gp, NULL, NULL,
                             &m, err, sizeof err),
                     0);
    struct audit_result *r = run_audit(d, m);
    print_findings(r);
    assert_true(r->have_policy);
    assert_non_null(find(r, "op-06", "bid_up", AUDIT_BLIND_SPOT));
    bool held_instead = false;
    for (size_t o = 0; o < r->n_operators; o++) {
        const struct audit_operator *op = &r->operators[o];
        assert_true(op->policy_agreement >= 0 && op->policy_agreement <= 1);
        double sum_pol = 0;
        for (size_t k = 0; k < r->n_classes; k++) {
            assert_true(isfinite(op->cells[k].expected_policy));
            sum_pol += op->cells[k].expected_policy;
        }
        /* The champion's probabilities sum to one per decision. */
        assert_true(fabs(sum_pol - (double)(op->decisions - op->outside_support)) < 1e-6 * sum_pol);
        assert_true(op->n_disagreements <= AUDIT_MAX_DISAGREE);
        for (size_t i = 1; i < op->n_disagreements; i++)
            assert_true(op->disagreements[i - 1].n >= op->disagreements[i].n);
        /* The champion learnt the team's bid raises; op-06 holds there. */
        for (size_t i = 0; i < op->n_disagreements; i++)
            print_message("  %s did %s, policy %s: %zu\n", op->operator_id,
                          r->classes[op->disagreements[i].did],
                          r->classes[op->disagreements[i].policy], op->disagreements[i].n);
        bool held = false;
        for (size_t i = 0; i < op->n_disagreements; i++)
            held |= strcmp(r->classes[op->disagreements[i].did], "hold") == 0 &&
                    strcmp(r->classes[op->disagreements[i].policy], "bid_up") == 0;
        if (strcmp(op->operator_id, "op-06") == 0)
            held_instead = held;
        else
            assert_false(held);
    }
    assert_true(held_instead);
    audit_result_free(r);
    gbm_model_free(m);
    free(classes);
    ds_binned_free(b);
    ds_free(d);
}

static void test_audit_run_refuses_bad_input(void **state)
{
    (void)state;
    char err[512];
    struct audit_params p;
    audit_params_default(&p);
    struct audit_result *r = NULL;
    const char *fn[] = {"x"};
    enum gbm_kind kinds[] = {GBM_NUMERIC};
    const char *classes[] = {"hold", "bid_up"};
    struct event_feature_value v = {.num = 1};

    /* No decisions. */
    struct ds *d = NULL;
    assert_int_equal(ds_new(fn, kinds, 1, classes, 2, &d, err, sizeof err), 0);
    assert_int_equal(audit_run(d, NULL, &p, &r, err, sizeof err), -1);
    assert_null(r);
    assert_non_null(strstr(err, "no decisions"));
    /* One operator only. */
    for (int i = 0; i < 100; i++) {
        v.num = i;
        assert_int_equal(ds_add_row(d, i % 3 ? "hold" : "bid_up", i, "op-01", NAN, &v), 0);
    }
    assert_int_equal(audit_run(d, NULL, &p, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "only one operator (op-01)"));
    /* Two operators, neither with min_support decisions. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(ds_add_row(d, "hold", i, "op-02", NAN, &v), 0);
    p.min_support = 500;
    assert_int_equal(audit_run(d, NULL, &p, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "min_support (500)"));
    assert_non_null(strstr(err, "op-02 has 10"));
    /* An operator asked for that has no decisions. */
    p.min_support = 5;
    const char *only[] = {"op-09"};
    p.only = only;
    p.n_only = 1;
    assert_int_equal(audit_run(d, NULL, &p, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "op-09"));
    /* Bad parameters. */
    p.only = NULL;
    p.n_only = 0;
    p.fdr_q = 0.9;
    assert_int_equal(audit_run(d, NULL, &p, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "fdr_q"));
    ds_free(d);

    /* No hold class. */
    const char *noh[] = {"bid_up", "bid_down"};
    assert_int_equal(ds_new(fn, kinds, 1, noh, 2, &d, err, sizeof err), 0);
    assert_int_equal(ds_add_row(d, "bid_up", 0, "op-01", NAN, &v), 0);
    audit_params_default(&p);
    assert_int_equal(audit_run(d, NULL, &p, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "'hold'"));
    ds_free(d);
}

static void test_audit_names_cover_every_value(void **state)
{
    (void)state;
    for (int k = 0; k < AUDIT_KIND_COUNT; k++)
        assert_non_null(audit_kind_name((enum audit_kind)k));
    for (int s = 0; s < AUDIT_SEVERITY_COUNT; s++)
        assert_non_null(audit_severity_name((enum audit_severity)s));
    for (int t = 0; t < AUDIT_TEST_COUNT; t++)
        assert_non_null(audit_test_name((enum audit_test)t));
    assert_null(audit_kind_name(AUDIT_KIND_COUNT));
    assert_string_equal(audit_kind_name(AUDIT_BLIND_SPOT), "blind_spot");
    audit_result_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_pbinom_tail_matches_enumeration),
        cmocka_unit_test(test_audit_pbinom_tail_large_counts_use_the_approximation),
        cmocka_unit_test(test_audit_binom_tail_matches_sum),
        cmocka_unit_test(test_audit_t_two_sided_known_values),
        cmocka_unit_test(test_audit_bh_hand_computed),
        cmocka_unit_test(test_audit_region_text_formats_conditions),
        cmocka_unit_test(test_audit_names_cover_every_value),
        cmocka_unit_test(test_audit_run_refuses_bad_input),
        cmocka_unit_test(test_audit_run_finds_every_planted_bias),
        cmocka_unit_test(test_audit_run_finds_regional_and_favouring_biases),
        cmocka_unit_test(test_audit_run_biased_peer_leaves_the_others_clean),
        cmocka_unit_test(test_audit_run_with_a_champion_reports_agreement),
        cmocka_unit_test(test_audit_run_unbiased_teams_stay_within_the_fdr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
