/*
 * audit: the operator bias audit.  For every operator, what the operator
 * decided is compared with what the rest of the team would have decided in
 * the same states, with honest statistics.  No I/O: the input is a dataset
 * (internal/dataset) of decisions with their operator (the row's group),
 * time, label and size (the row's target, delta_pct), and optionally the
 * champion policy; the output is a plain result that internal/report
 * renders and internal/store writes.  audit.c has the method and every
 * formula; docs/audit.md explains them for analysts.
 *
 * Decisions that the audit leaves open and takes here:
 *  - the reference for an operator is a peer policy fitted without that
 *    operator (leave one operator out), so no decision is scored by a model
 *    that saw it; operators found biased in one pass are left out of every
 *    reference in the next (at most AUDIT_MAX_PASSES passes), so one biased
 *    operator does not make the others look biased;
 *  - a region is searched on one half of each operator's decisions (a
 *    seeded hash of the row) and tested on the other half only;
 *  - every test of a run, whether it becomes a finding or not, enters one
 *    Benjamini-Hochberg adjustment;
 *  - a finding needs q <= fdr_q and at least min_support decisions in its
 *    scope.
 *
 * Nothing here is thread-safe; audit_run may use several threads inside.
 */
#ifndef UNDERSTUDY_AUDIT_H
#define UNDERSTUDY_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset/dataset.h"
#include "gbm/gbm.h"

#define AUDIT_WUR __attribute__((warn_unused_result))

#define AUDIT_MAX_PASSES   3
#define AUDIT_MAX_CONDS    2   /* conditions of a region */
#define AUDIT_NAME_MAX     129 /* operator ids, feature names, levels: 128 bytes + NUL */
#define AUDIT_SUMMARY_MAX  512
#define AUDIT_MAX_DISAGREE 3 /* main disagreements kept per operator */

enum audit_kind {
    AUDIT_OVER_ACTING = 0,     /* takes the action more often than the reference */
    AUDIT_UNDER_ACTING,        /* less often */
    AUDIT_BLIND_SPOT,          /* (almost) never, where peers act on a material count */
    AUDIT_MAGNITUDE,           /* sizes of bid/budget changes differ from the peers' */
    AUDIT_POLICY_DISAGREEMENT, /* the champion agrees with the operator less than with the team */
    AUDIT_KIND_COUNT,
};

enum audit_severity {
    AUDIT_SEVERITY_INFO = 0,
    AUDIT_SEVERITY_LOW,
    AUDIT_SEVERITY_MEDIUM,
    AUDIT_SEVERITY_HIGH,
    AUDIT_SEVERITY_COUNT,
};

/* "over_acting", "under_acting", "blind_spot", "magnitude",
 * "policy_disagreement"; NULL out of range. */
const char *audit_kind_name(enum audit_kind k);
/* "info", "low", "medium", "high"; NULL out of range. */
const char *audit_severity_name(enum audit_severity s);

enum audit_cond_op {
    AUDIT_COND_EQ = 0, /* categorical feature = level */
    AUDIT_COND_LT,     /* numeric feature < value (missing is outside) */
    AUDIT_COND_GE,     /* numeric feature >= value (missing is outside) */
};

struct audit_cond {
    char feature[AUDIT_NAME_MAX];
    enum audit_cond_op op;
    char level[AUDIT_NAME_MAX]; /* AUDIT_COND_EQ */
    double value;               /* AUDIT_COND_LT / GE: a value with at most 3 significant digits */
};

/* A conjunction of 0..AUDIT_MAX_CONDS conditions; 0 = everywhere. */
struct audit_region {
    size_t n_conds;
    struct audit_cond conds[AUDIT_MAX_CONDS];
};

/*
 * The region as text, "vertical = retail", "hour_of_day >= 20 and
 * cpa_ratio < 1.2" ("" for everywhere), into out.  Returns out.
 */
char *audit_region_text(const struct audit_region *r, char *out, size_t outlen);

/* How a p-value was computed (also the "test" field in details). */
enum audit_test {
    AUDIT_TEST_POISSON_BINOMIAL = 0, /* exact tail of the count under the reference */
    AUDIT_TEST_NORMAL_SKEW,          /* refined normal approximation of that tail (large counts) */
    AUDIT_TEST_CONDITIONAL_BINOMIAL, /* inside vs outside a region, given the total */
    AUDIT_TEST_WELCH_T,              /* log size ratios, operator against peers */
    AUDIT_TEST_NORMAL_OVERDISPERSED, /* z test with the team's overdispersion (see audit.c) */
    AUDIT_TEST_COUNT,
};
const char *audit_test_name(enum audit_test t);

/*
 * One finding.  Meaning of the numbers by kind:
 *  - over_acting, under_acting, blind_spot: observed = decisions of the
 *    class by the operator in the region, expected = the reference's
 *    expected count there, effect = observed / expected (rate ratio),
 *    [ci_lo, ci_hi] a 95 % interval of that ratio, n = the operator's
 *    decisions in the region.  For a region finding these numbers come
 *    from the test half; inside/outside hold both sides on that half.
 *  - magnitude: observed = the operator's geometric mean |delta_pct|,
 *    expected = the peers' size in the same states (observed / effect),
 *    effect = the ratio of the operator's sizes to the reference's, relative
 *    to the same ratio for the peers, with its 95 % interval; n = the
 *    operator's sized decisions of the class.
 *  - policy_disagreement: observed = the share of the operator's decisions
 *    the champion agrees with, expected = that share for the rest of the
 *    team, effect = observed - expected, interval of the difference.
 */
struct audit_finding {
    char operator_id[AUDIT_NAME_MAX];
    enum audit_kind kind;
    int action; /* class index in the result's class list; -1 = none */
    struct audit_region region;
    size_t n;
    double observed, expected, effect, ci_lo, ci_hi;
    double p_value, q_value;
    enum audit_test test;
    enum audit_severity severity;
    char summary[AUDIT_SUMMARY_MAX];
    /* Region findings: the operator inside and outside the region, on the
     * test half (counts of the class and reference expectations). */
    double inside_observed, inside_expected, outside_observed, outside_expected;
    /* Rate findings: the champion's expected count in the same scope (NaN
     * without a champion). */
    double expected_policy;
    /* Discovery half of a region finding: its z score there (NaN otherwise). */
    double discovery_z;
    /* The variance inflation applied to the test (1 = none; see audit.c). */
    double overdispersion;
};

/* Per operator and class, over the whole window (no region). */
struct audit_cell {
    double observed;        /* decisions of the class */
    double expected;        /* under the operator's final reference */
    double variance;        /* of the count under the reference: sum p (1 - p) */
    double expected_policy; /* under the champion; NaN without one */
};

struct audit_disagreement {
    int did;    /* class the operator took */
    int policy; /* class the champion would take */
    size_t n;
};

struct audit_operator {
    char operator_id[AUDIT_NAME_MAX];
    size_t decisions; /* rows of the operator in the window */
    size_t actions;   /* of which not hold */
    bool audited;     /* asked for, with min_support decisions inside the support */
    /* Decisions in states outside the reference's support (feature values
     * the rest of the team never showed): left out of every test. */
    size_t outside_support;
    bool in_reference; /* its decisions are in the other operators' final references */
    /* cells[k] for class k of the result's class list */
    struct audit_cell *cells;
    /* Champion agreement: share of decisions where the champion's most
     * probable class is what the operator did (NaN without a champion). */
    double policy_agreement;
    size_t n_disagreements;
    struct audit_disagreement disagreements[AUDIT_MAX_DISAGREE];
    /* Verdicts on recommendations (filled by the caller from the store;
     * NaN / 0 when there are none). */
    double acceptance_rate;
    size_t verdicts;
    size_t findings_by_severity[AUDIT_SEVERITY_COUNT];
};

struct audit_params {
    double fdr_q;        /* Benjamini-Hochberg level, (0, 0.5] */
    int64_t min_support; /* least decisions of an operator (and of a region) */
    /* A rate finding needs the rate ratio beyond [1/tolerance, tolerance]:
     * the null hypothesis is "within that band", tested at its edge. */
    double tolerance;
    /* blind_spot: observed / expected at most this, with expected >= blind_spot_min_expected */
    double blind_spot_ratio;
    double blind_spot_min_expected;
    unsigned rounds; /* boosting rounds of each reference model */
    double learning_rate;
    unsigned max_bins;
    size_t reference_rows; /* the training rows of a reference are sampled down to this */
    unsigned threads;
    uint64_t seed; /* the half split and the reference sample */
    /* Audit only these operators (borrowed; NULL = every operator).  The
     * others' decisions still make the references. */
    const char *const *only;
    size_t n_only;
    /* Polled between reference fits (may be NULL): returning true stops
     * the run, which then fails with "stopped". */
    bool (*should_stop)(void *arg);
    void *stop_arg;
};

/* fdr_q 0.05, min_support 30, tolerance 1.1, blind spot ratio 0.1 with at
 * least 10 expected, 100 rounds at 0.3, 64 bins, 150000 reference rows,
 * 1 thread, seed 1. */
void audit_params_default(struct audit_params *p);

struct audit_result {
    struct audit_params params;
    size_t n_classes;
    char **classes;         /* [n_classes] class names, as in the dataset */
    int hold_class;         /* index of "hold", -1 when the dataset has none */
    size_t rows;            /* decisions audited (rows with an operator) */
    int64_t from_us, to_us; /* the decisions' time span; INT64_MIN when unknown */
    size_t n_operators;
    struct audit_operator *operators;
    size_t n_findings;
    struct audit_finding *findings; /* most severe first, then by q */
    size_t n_tests;                 /* tests in the BH family */
    unsigned passes;
    bool have_policy;
    double seconds; /* wall time of audit_run */
};

/*
 * Runs the audit on ds.  Rows without a group (operator) are used in the
 * references but not audited.  policy (may be NULL) is the champion: the
 * second reference and the policy_disagreement findings.  Returns 0 and
 * *out (caller frees with audit_result_free), or -1 with a one-line reason:
 * no decisions, fewer than two operators with decisions, no operator with
 * min_support decisions, an operator of p->only without decisions, a
 * dataset without the "hold" class, bad parameters, out of memory.  ds is borrowed and not
 * modified.
 */
int audit_run(const struct ds *ds, const struct gbm_model *policy, const struct audit_params *p,
              struct audit_result **out, char *err, size_t errlen) AUDIT_WUR;

/*
 * The checks audit_run makes before any work (parameters, decisions, the
 * hold class, operators, min_support, p->only), so a caller can refuse a
 * run before recording it.  0, or -1 with audit_run's reason.
 */
int audit_check(const struct ds *ds, const struct audit_params *p, char *err,
                size_t errlen) AUDIT_WUR;

void audit_result_free(struct audit_result *r);

/* Sorts findings by severity, then q, and refreshes findings_by_severity. */
void audit_result_sort(struct audit_result *r);

/* ---- statistics (exposed for tests) ------------------------------------ */

/*
 * P(S >= k) (upper) or P(S <= k) (lower) for S a sum of independent
 * Bernoulli(p[i]), i < n.  Exact by dynamic programming when n * k is small
 * enough, otherwise a skew-corrected normal approximation; *test says which.
 */
double audit_pbinom_tail(const double *p, size_t n, double k, bool upper, enum audit_test *test);
/* Upper tail of Binomial(n, p) at k: P(X >= k); lower: P(X <= k). */
double audit_binom_tail(uint64_t n, double p, uint64_t k, bool upper);
/* Two-sided p-value of Student's t with df degrees of freedom. */
double audit_t_two_sided(double t, double df);
/* Standard normal upper tail P(Z >= z). */
double audit_norm_upper(double z);
/* Benjamini-Hochberg adjusted q-values of p[0..n) into q (may alias p). */
void audit_bh(const double *p, size_t n, double *q);

#endif
