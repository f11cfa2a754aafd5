/*
 * Unit tests for internal/gbm: split finding against brute force, the
 * Newton step on hand-computed data, missing-value and categorical splits,
 * compiled step functions and explanations against plain stump sums,
 * serialization, determinism across thread counts, early stopping, the
 * magnitude model, malformed models (fixtures/models/bad-NAME.json, each
 * refused with a reason containing the text of bad-NAME.expect; run from the
 * repository root or set UNDERSTUDY_FIXTURES), out-of-memory paths, and a
 * quality check on data with a known rule.
 *
 * UNDERSTUDY_GBM_BENCH=ROWS[,THREADS[,ROUNDS]] runs a timing harness instead
 * of the tests (synthetic data: 25 features, 7 classes, valid = ROWS/4).
 *
 * jansson is routed through util_malloc for the whole binary, so that
 * util_alloc_fail_after() reaches its allocations too (see test_event.c for
 * the growth buffers that are left out).
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
#include <time.h>

#include <cmocka.h>

#include "tfile.h"

#include "gbm/gbm.h"
#include "gbm/gbm_impl.h"
#include "util/util.h"

/* ---- helpers ------------------------------------------------------------- */

static void *json_alloc_via_util(size_t n)
{
    if (n >= 32 && (n & (n - 1)) == 0)
        return malloc(n);
    return util_malloc(n);
}

/* xorshift64*: the tests' own seeded randomness. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static unsigned rng_below(uint64_t *s, unsigned n)
{
    return (unsigned)(rng_next(s) % n);
}

/* Bitwise equality (the build forbids == on floats). */
static bool same(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static bool close_rel(double a, double b, double tol)
{
    double d = fabs(a - b), m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return d <= tol * (m > 1.0 ? m : 1.0);
}

/* ---- synthetic data ------------------------------------------------------ */

#define TD_MAX_F      32
#define TD_MAX_LEVELS 16

/* A binned data set that owns its memory. */
struct tdata {
    size_t n, F;
    struct gbm_feature feat[TD_MAX_F];
    char names[TD_MAX_F][16];
    double cuts[TD_MAX_F][GBM_MAX_BINS];
    char level_names[TD_MAX_F][TD_MAX_LEVELS][8];
    const char *levels[TD_MAX_F][TD_MAX_LEVELS];
    uint8_t level_bin[TD_MAX_F][TD_MAX_LEVELS];
    uint8_t *bins[TD_MAX_F];
    int32_t *label;
    float *target;
    float *weight;
    struct gbm_data d;
};

/* Feature f: numeric with nb bins (cuts 1, 2, ...), or categorical with
 * nb levels "a".."p", one bin each (the last two pooled when pool). */
static void td_feature(struct tdata *t, size_t f, enum gbm_kind kind, unsigned nb, bool pool)
{
    struct gbm_feature *fe = &t->feat[f];
    snprintf(t->names[f], sizeof t->names[f], "%s%zu", kind == GBM_NUMERIC ? "x" : "c", f);
    fe->name = t->names[f];
    fe->kind = kind;
    if (kind == GBM_NUMERIC) {
        fe->n_bins = nb;
        for (unsigned i = 0; i + 1 < nb; i++)
            t->cuts[f][i] = (double)(i + 1);
        fe->cuts = t->cuts[f];
    } else {
        assert_true(nb <= TD_MAX_LEVELS);
        for (unsigned i = 0; i < nb; i++) {
            snprintf(t->level_names[f][i], sizeof t->level_names[f][i], "%c", 'a' + (int)i);
            t->levels[f][i] = t->level_names[f][i];
            t->level_bin[f][i] = (uint8_t)(pool && i + 1 == nb ? i - 1 : i);
        }
        fe->n_bins = pool ? nb - 1 : nb;
        fe->n_levels = nb;
        fe->levels = t->levels[f];
        fe->level_bin = t->level_bin[f];
    }
}

static void td_alloc(struct tdata *t, size_t n, size_t F)
{
    memset(t, 0, sizeof *t);
    t->n = n;
    t->F = F;
    for (size_t f = 0; f < F; f++) {
        t->bins[f] = calloc(n ? n : 1, 1);
        assert_non_null(t->bins[f]);
    }
    t->label = calloc(n ? n : 1, sizeof *t->label);
    t->target = calloc(n ? n : 1, sizeof *t->target);
    t->weight = calloc(n ? n : 1, sizeof *t->weight);
    assert_non_null(t->label);
    assert_non_null(t->target);
    assert_non_null(t->weight);
    for (size_t r = 0; r < n; r++)
        t->weight[r] = 1.0f;
}

static void td_finish(struct tdata *t, bool weights)
{
    t->d.n_rows = t->n;
    t->d.n_features = t->F;
    t->d.features = t->feat;
    t->d.bins = (const uint8_t *const *)t->bins;
    t->d.label = t->label;
    t->d.target = t->target;
    t->d.weight = weights ? t->weight : NULL;
}

static void td_free(struct tdata *t)
{
    for (size_t f = 0; f < t->F; f++)
        free(t->bins[f]);
    free(t->label);
    free(t->target);
    free(t->weight);
}

/*
 * The standard mixed set: x0..x2 numeric (16, 40, 255 bins; x1 10%
 * missing), c3 and c4 categorical (6 levels, c4 with a pooled bin and 5%
 * missing), K classes drawn from a softmax of a rule plus noise, random
 * weights in [0.5, 2) when weights.
 */
static void td_mixed(struct tdata *t, size_t n, size_t K, uint64_t seed, bool weights)
{
    uint64_t s = seed;
    td_alloc(t, n, 5);
    td_feature(t, 0, GBM_NUMERIC, 16, false);
    td_feature(t, 1, GBM_NUMERIC, 40, false);
    td_feature(t, 2, GBM_NUMERIC, 255, false);
    td_feature(t, 3, GBM_CATEGORICAL, 6, false);
    td_feature(t, 4, GBM_CATEGORICAL, 6, true);
    for (size_t r = 0; r < n; r++) {
        unsigned b0 = rng_below(&s, 16), b1 = rng_below(&s, 40), b2 = rng_below(&s, 255);
        unsigned c3 = rng_below(&s, 6), c4 = rng_below(&s, 5);
        bool m1 = rng_unit(&s) < 0.1, m4 = rng_unit(&s) < 0.05;
        t->bins[0][r] = (uint8_t)b0;
        t->bins[1][r] = m1 ? GBM_MISSING_BIN : (uint8_t)b1;
        t->bins[2][r] = (uint8_t)b2;
        t->bins[3][r] = (uint8_t)c3;
        t->bins[4][r] = m4 ? GBM_MISSING_BIN : (uint8_t)c4;
        double logit[GBM_MAX_CLASSES], mx = -1e300, sum = 0.0;
        for (size_t k = 0; k < K; k++) {
            logit[k] = (b0 > 4 + k ? 1.2 : -0.3) + (m1 && k == 1 ? 1.5 : 0.0) +
                       0.8 * sin(0.05 * b2 + (double)k) + ((c3 + k) % 3 == 0 ? 0.9 : 0.0) +
                       (!m4 && c4 == k % 5 ? 0.7 : 0.0);
            mx = logit[k] > mx ? logit[k] : mx;
        }
        for (size_t k = 0; k < K; k++)
            sum += (logit[k] = exp(logit[k] - mx));
        double u = rng_unit(&s) * sum;
        size_t y = 0;
        while (y + 1 < K && (u -= logit[y]) >= 0.0)
            y++;
        t->label[r] = (int32_t)y;
        t->target[r] = (float)(b0 * 0.5 + (m1 ? 3.0 : 0.0) + rng_unit(&s));
        t->weight[r] = (float)(0.5 + 1.5 * rng_unit(&s));
    }
    td_finish(t, weights);
}

/* A raw input that falls in bin b of feature f of t (b = GBM_MISSING_BIN: missing). */
static struct gbm_input td_input(const struct tdata *t, size_t f, unsigned b)
{
    struct gbm_input x = {false, 0.0, NULL};
    const struct gbm_feature *fe = &t->feat[f];
    if (b == GBM_MISSING_BIN) {
        x.missing = true;
        return x;
    }
    if (fe->kind == GBM_NUMERIC) {
        if (fe->n_bins == 1)
            x.num = 0.0;
        else if (b == 0)
            x.num = fe->cuts[0] - 0.5;
        else if (b + 1 == fe->n_bins)
            x.num = fe->cuts[b - 1] + 0.5;
        else
            x.num = (fe->cuts[b - 1] + fe->cuts[b]) / 2.0;
        return x;
    }
    for (size_t i = 0; i < fe->n_levels; i++) {
        if (fe->level_bin[i] == b) {
            x.cat = fe->levels[i];
            return x;
        }
    }
    x.missing = true;
    return x;
}

static const char *const class_names[] = {
    "hold", "bid_up", "bid_down", "budget_up", "budget_down", "creative_pause", "creative_resume",
    "k7",   "k8",     "k9",       "k10",       "k11"};

static struct gbm_params params_of(unsigned rounds, unsigned threads)
{
    struct gbm_params p;
    gbm_params_default(&p);
    p.rounds = rounds;
    p.threads = threads;
    return p;
}

static struct gbm_model *fit_ok(const struct tdata *tr, const struct tdata *va, size_t K,
                                const struct gbm_params *p)
{
    struct gbm_model *m = NULL;
    char err[256] = "";
    int rc =
        gbm_fit(&tr->d, va ? &va->d : NULL, K, class_names, p, NULL, NULL, &m, err, sizeof err);
    if (rc != 0)
        fail_msg("gbm_fit: %s", err);
    assert_non_null(m);
    return m;
}

/* ---- split finding --------------------------------------------------------- */

/* Gain of a partition given as left bins (+ missing when dl), or -inf when
 * it breaks min_child_weight or leaves a side without any bin with rows. */
static double partition_gain(unsigned nb, const double *g, const double *h, const double *mass,
                             uint64_t left, bool dl, double lambda, double mcw)
{
    double gl = 0, hl = 0, gr = 0, hr = 0;
    for (unsigned b = 0; b <= nb; b++) {
        bool l = b == nb ? dl : ((left >> b) & 1);
        if (l) {
            gl += g[b];
            hl += h[b];
        } else {
            gr += g[b];
            hr += h[b];
        }
    }
    (void)mass;
    if (hl < mcw || hr < mcw)
        return -HUGE_VAL;
    return gbm_split_gain(gl, hl, gr, hr, lambda);
}

static void random_hist(uint64_t *s, unsigned nb, double *g, double *h, double *mass, bool miss,
                        double empty_rate)
{
    for (unsigned b = 0; b <= nb; b++) {
        bool rows = b == nb ? miss : rng_unit(s) >= empty_rate;
        mass[b] = rows ? 1.0 + 10.0 * rng_unit(s) : 0.0;
        g[b] = rows ? (rng_unit(s) - 0.5) * 10.0 : 0.0;
        h[b] = rows ? 0.05 + 3.0 * rng_unit(s) : 0.0;
    }
}

static void test_gbm_split_find_numeric_brute_force(void **state)
{
    (void)state;
    uint64_t s = 42;
    for (int it = 0; it < 3000; it++) {
        unsigned nb = 2 + rng_below(&s, 12);
        double g[GBM_MAX_BINS + 1], h[GBM_MAX_BINS + 1], mass[GBM_MAX_BINS + 1];
        bool miss = rng_below(&s, 2);
        random_hist(&s, nb, g, h, mass, miss, 0.2);
        double lambda = rng_below(&s, 3) * 0.7, mcw = rng_below(&s, 3) * 1.5;
        struct gbm_split sp;
        gbm_split_find(GBM_NUMERIC, nb, g, h, mass, lambda, mcw, &sp);
        double best = -HUGE_VAL;
        for (unsigned t = 0; t + 1 < nb; t++) {
            uint64_t left = (((uint64_t)1 << (t + 1)) - 1);
            for (int dl = 0; dl < (miss ? 2 : 1); dl++) {
                double v = partition_gain(nb, g, h, mass, left, dl, lambda, mcw);
                best = v > best ? v : best;
            }
        }
        assert_int_equal(sp.found, best > -HUGE_VAL);
        if (!sp.found)
            continue;
        assert_true(close_rel(sp.gain, best, 1e-9));
        /* The split it names has the gain it reports. */
        double again =
            partition_gain(nb, g, h, mass, sp.left_bins[0], sp.default_left, lambda, mcw);
        assert_true(close_rel(sp.gain, again, 1e-9));
        assert_int_equal(sp.left_bins[0], (((uint64_t)1 << (sp.threshold_bin + 1)) - 1));
        if (!miss) {
            /* Without missing values the default side is the heavier one. */
            double ml = 0, mr = 0;
            for (unsigned b = 0; b < nb; b++)
                *(b <= sp.threshold_bin ? &ml : &mr) += mass[b];
            assert_int_equal(sp.default_left, !(mr > ml));
        }
    }
}

static void test_gbm_split_find_categorical_brute_force(void **state)
{
    (void)state;
    uint64_t s = 7;
    for (int it = 0; it < 1500; it++) {
        unsigned nb = 2 + rng_below(&s, 7);
        double g[GBM_MAX_BINS + 1], h[GBM_MAX_BINS + 1], mass[GBM_MAX_BINS + 1];
        bool miss = rng_below(&s, 2);
        random_hist(&s, nb, g, h, mass, miss, 0.15);
        /* With lambda 0 and no min_child_weight the best prefix of the
         * bins sorted by G/H is the best of all partitions. */
        bool exact = it % 2 == 0;
        double lambda = exact ? 0.0 : 0.5 + rng_unit(&s);
        double mcw = exact ? 0.0 : rng_below(&s, 2) * 0.5;
        struct gbm_split sp;
        gbm_split_find(GBM_CATEGORICAL, nb, g, h, mass, lambda, mcw, &sp);
        /* Brute force over every partition of the bins with rows. */
        uint64_t with_rows = 0;
        unsigned m = 0;
        for (unsigned b = 0; b < nb; b++) {
            if (mass[b] > 0.0) {
                with_rows |= (uint64_t)1 << b;
                m++;
            }
        }
        double best = -HUGE_VAL;
        for (uint64_t left = 0; left < ((uint64_t)1 << nb); left++) {
            if (left & ~with_rows)
                continue;
            for (int dl = 0; dl < (miss ? 2 : 1); dl++) {
                /* Each side needs a level, or missing values alone. */
                if ((left == 0 && !dl) || (left == with_rows && (dl || !miss)))
                    continue;
                double v = partition_gain(nb, g, h, mass, left, dl, lambda, mcw);
                best = v > best ? v : best;
            }
        }
        if (m < 2 && !miss) {
            assert_false(sp.found);
            continue;
        }
        if (!sp.found) {
            /* Only when min_child_weight rules out every prefix; with
             * lambda 0 that means every partition. */
            if (exact)
                assert_true(isinf(best));
            continue;
        }
        double again = partition_gain(nb, g, h, mass, sp.left_bins[0] & with_rows, sp.default_left,
                                      lambda, mcw);
        assert_true(close_rel(sp.gain, again, 1e-9));
        assert_true(sp.gain <= best + 1e-9 * (fabs(best) > 1 ? fabs(best) : 1));
        if (exact)
            assert_true(close_rel(sp.gain, best, 1e-9));
        /* Bins without rows follow missing values. */
        for (unsigned b = 0; b < nb; b++) {
            if (mass[b] <= 0.0)
                assert_int_equal((sp.left_bins[0] >> b) & 1, sp.default_left);
        }
    }
}

static void test_gbm_leaf_value_and_gain_hand_computed(void **state)
{
    (void)state;
    assert_true(close_rel(gbm_leaf_value(-2.0, 3.0, 1.0, 0.5), 0.25, 1e-15));
    assert_true(close_rel(gbm_leaf_value(1.0, 1.5, 1.0, 1.0), -0.4, 1e-15));
    assert_true(same(gbm_leaf_value(1.0, 0.0, 0.0, 1.0), 0.0));
    /* (-2)^2/2.5 + 1^2/2.5 - (-1)^2/4 = 1.6 + 0.4 - 0.25 */
    assert_true(close_rel(gbm_split_gain(-2.0, 1.5, 1.0, 1.5, 1.0), 1.75, 1e-15));
    assert_true(close_rel(gbm_split_gain(1.0, 1.0, 1.0, 1.0, 0.0), 0.0, 1e-15));
}

/* ---- fitting --------------------------------------------------------------- */

/*
 * Four classes start at p = 1/4, so g = 1/4 - [y = k] and h = 2 (1/4)(3/4)
 * = 3/8 per row, all exact in the quantized sums.  Bin 0 holds labels
 * 0 0 0 1, bin 1 labels 2 2 3 3.  Class 0: G = (-2 | 1), H = (1.5 | 1.5),
 * gain 1.6 + 0.4 - 0.25 = 1.75, leaves 2/2.5 = 0.8 and -1/2.5 = -0.4
 * (lambda 1, eta 1).  Class 2: G = (1 | -1), gain 0.8, leaves -0.4, 0.4.
 */
static void test_gbm_fit_first_round_hand_computed(void **state)
{
    (void)state;
    struct tdata t;
    static const int32_t labels[] = {0, 0, 0, 1, 2, 2, 3, 3};
    td_alloc(&t, 8, 1);
    td_feature(&t, 0, GBM_NUMERIC, 2, false);
    for (size_t r = 0; r < 8; r++) {
        t.bins[0][r] = r < 4 ? 0 : 1;
        t.label[r] = labels[r];
    }
    td_finish(&t, false);
    struct gbm_params p = params_of(1, 1);
    p.learning_rate = 1.0;
    p.min_child_weight = 0.0;
    struct gbm_model *m = fit_ok(&t, NULL, 4, &p);
    assert_int_equal(gbm_model_rounds(m), 1);
    const struct gbm_stump *s0 = &m->cls.stumps[0], *s2 = &m->cls.stumps[2];
    assert_int_equal(s0->feature, 0);
    assert_true(close_rel(s0->threshold, 1.0, 0));
    assert_true(close_rel(s0->gain, 1.75, 1e-12));
    assert_true(close_rel(s0->left_value, 0.8, 1e-12));
    assert_true(close_rel(s0->right_value, -0.4, 1e-12));
    assert_true(close_rel(s2->gain, 0.8, 1e-12));
    assert_true(close_rel(s2->left_value, -0.4, 1e-12));
    assert_true(close_rel(s2->right_value, 0.4, 1e-12));
    /* Class 1: G = (0 | 1), H = 3: gain 0 + 1/2.5 - 1/4 = 0.15. */
    assert_true(close_rel(m->cls.stumps[1].gain, 0.15, 1e-12));
    struct gbm_input x = {false, 0.5, NULL};
    double margin[4], prob[4];
    gbm_predict(m, &x, margin, prob);
    assert_true(close_rel(margin[0], 0.8, 1e-12));
    assert_true(close_rel(margin[2], -0.4, 1e-12));
    double sum = 0;
    for (int k = 0; k < 4; k++)
        sum += prob[k];
    assert_true(close_rel(sum, 1.0, 1e-12));
    gbm_model_free(m);
    td_free(&t);
}

/* A leaf-only round: one feature with a single bin cannot split. */
static void test_gbm_fit_no_split_gives_root_leaf(void **state)
{
    (void)state;
    struct tdata t;
    td_alloc(&t, 8, 1);
    td_feature(&t, 0, GBM_NUMERIC, 1, false);
    for (size_t r = 0; r < 8; r++)
        t.label[r] = r < 6 ? 0 : 1;
    td_finish(&t, false);
    struct gbm_params p = params_of(1, 1);
    p.learning_rate = 0.5;
    struct gbm_model *m = fit_ok(&t, NULL, 2, &p);
    /* p = 1/2: class 0 G = 8/2 - 6 = -2, H = 8 * 0.5 = 4: -(-2)/5 * 0.5. */
    assert_int_equal(m->cls.stumps[0].feature, -1);
    assert_true(close_rel(m->cls.stumps[0].left_value, 0.2, 1e-12));
    assert_true(close_rel(m->cls.stumps[1].left_value, -0.2, 1e-12));
    gbm_model_free(m);
    td_free(&t);
}

/* Missing values with class 1: they must join the side where class 1 is. */
static void test_gbm_fit_missing_direction_learned(void **state)
{
    (void)state;
    for (int hi_side = 0; hi_side < 2; hi_side++) {
        struct tdata t;
        uint64_t s = 99 + (uint64_t)hi_side;
        td_alloc(&t, 2000, 1);
        td_feature(&t, 0, GBM_NUMERIC, 10, false);
        for (size_t r = 0; r < t.n; r++) {
            bool miss = rng_unit(&s) < 0.3;
            unsigned b = rng_below(&s, 10);
            t.bins[0][r] = miss ? GBM_MISSING_BIN : (uint8_t)b;
            bool one = miss ? true : hi_side ? b >= 5 : b < 5;
            if (rng_unit(&s) < 0.05)
                one = !one;
            t.label[r] = one;
        }
        td_finish(&t, false);
        struct gbm_params p = params_of(5, 1);
        struct gbm_model *m = fit_ok(&t, NULL, 2, &p);
        const struct gbm_stump *st = &m->cls.stumps[1];
        assert_int_equal(st->feature, 0);
        assert_int_equal(st->bin, 4);
        /* Class 1 lives right (bins >= 5) when hi_side, else left. */
        assert_int_equal(st->default_left, !hi_side);
        struct gbm_input miss = {true, 0.0, NULL}, one = td_input(&t, 0, hi_side ? 8 : 1),
                         zero = td_input(&t, 0, hi_side ? 1 : 8);
        double pm[2], p1[2], p0[2];
        gbm_predict(m, &miss, NULL, pm);
        gbm_predict(m, &one, NULL, p1);
        gbm_predict(m, &zero, NULL, p0);
        assert_true(pm[1] > 0.5);
        assert_true(close_rel(pm[1], p1[1], 1e-12));
        assert_true(p0[1] < 0.5);
        gbm_model_free(m);
        td_free(&t);
    }
}

/* Levels a, c, e are class 0 and b, d, f class 1: one partition split. */
static void test_gbm_fit_categorical_split_separates_levels(void **state)
{
    (void)state;
    struct tdata t;
    uint64_t s = 5;
    td_alloc(&t, 3000, 2);
    td_feature(&t, 0, GBM_NUMERIC, 8, false);
    td_feature(&t, 1, GBM_CATEGORICAL, 6, false);
    for (size_t r = 0; r < t.n; r++) {
        unsigned c = rng_below(&s, 6);
        t.bins[0][r] = (uint8_t)rng_below(&s, 8);
        t.bins[1][r] = (uint8_t)c;
        t.label[r] = (int32_t)(c % 2);
    }
    td_finish(&t, false);
    struct gbm_params p = params_of(10, 1);
    struct gbm_model *m = fit_ok(&t, NULL, 2, &p);
    const struct gbm_stump *st = &m->cls.stumps[0];
    assert_int_equal(st->feature, 1);
    uint64_t odd = (1u << 1) | (1u << 3) | (1u << 5), even = (1u << 0) | (1u << 2) | (1u << 4);
    assert_true(st->left[0] == odd || st->left[0] == even);
    for (unsigned c = 0; c < 6; c++) {
        struct gbm_input x[2] = {td_input(&t, 0, 3), td_input(&t, 1, c)};
        double prob[2];
        gbm_predict(m, x, NULL, prob);
        assert_true(prob[c % 2] > 0.95);
    }
    /* An unseen level takes the default sides, like a missing value. */
    struct gbm_input un[2] = {td_input(&t, 0, 3), {false, 0.0, "zzz"}};
    struct gbm_input mi[2] = {td_input(&t, 0, 3), {true, 0.0, NULL}};
    double a[2], b[2], base, contrib[2];
    struct gbm_step steps[2];
    gbm_predict(m, un, a, NULL);
    gbm_predict(m, mi, b, NULL);
    assert_true(same(a[0], b[0]) && same(a[1], b[1]));
    gbm_explain(m, un, 0, &base, contrib, steps);
    assert_true(steps[1].missing && steps[1].unseen);
    assert_int_equal(gbm_model_feature_bin(m, 1, &un[1]), GBM_MISSING_BIN);
    gbm_model_free(m);
    td_free(&t);
}

static char *fit_json(const struct tdata *tr, const struct tdata *va, size_t K, unsigned threads,
                      unsigned rounds)
{
    struct gbm_params p = params_of(rounds, threads);
    p.seed = 12345;
    struct gbm_model *m = fit_ok(tr, va, K, &p);
    char *j = gbm_model_to_json(m);
    assert_non_null(j);
    gbm_model_free(m);
    return j;
}

static void test_gbm_fit_deterministic_across_threads(void **state)
{
    (void)state;
    struct tdata tr, va;
    td_mixed(&tr, 6011, 7, 1, true);
    td_mixed(&va, 1503, 7, 2, true);
    char *one = fit_json(&tr, &va, 7, 1, 25);
    for (unsigned th = 1; th <= 3; th++) {
        char *j = fit_json(&tr, &va, 7, th, 25);
        assert_string_equal(one, j);
        free(j);
    }
    /* The 16-row AVX-512 softmax (where the CPU has it) computes the same
     * bits as the 8-row one. */
    gbm_allow_avx512 = false;
    char *narrow = fit_json(&tr, &va, 7, 2, 25);
    gbm_allow_avx512 = true;
    assert_string_equal(one, narrow);
    free(narrow);
    free(one);
    /* Also with padded classes (5) and with more than eight (11). */
    td_free(&tr);
    td_free(&va);
    td_mixed(&tr, 3001, 11, 3, false);
    td_mixed(&va, 700, 11, 4, false);
    for (size_t K = 5; K <= 11; K += 6) {
        for (size_t r = 0; r < tr.n; r++)
            tr.label[r] %= (int32_t)K;
        for (size_t r = 0; r < va.n; r++)
            va.label[r] %= (int32_t)K;
        char *a = fit_json(&tr, &va, K, 1, 8), *b = fit_json(&tr, &va, K, 2, 8),
             *c = fit_json(&tr, &va, K, 3, 8);
        gbm_allow_avx512 = false;
        char *e = fit_json(&tr, &va, K, 2, 8);
        gbm_allow_avx512 = true;
        assert_string_equal(a, b);
        assert_string_equal(a, c);
        assert_string_equal(a, e);
        free(e);
        free(a);
        free(b);
        free(c);
    }
    td_free(&tr);
    td_free(&va);
}

struct progress_log {
    unsigned n;
    double valid[512];
    double train[512];
};

static int log_progress(void *arg, unsigned round, double train_loss, double valid_loss)
{
    struct progress_log *l = arg;
    assert_int_equal(round, l->n + 1);
    l->train[l->n] = train_loss;
    l->valid[l->n] = valid_loss;
    l->n++;
    return 0;
}

/* Validation labels unrelated to the features: the loss soon rises. */
static void test_gbm_fit_early_stopping_truncates(void **state)
{
    (void)state;
    struct tdata tr, va;
    td_mixed(&tr, 3000, 3, 11, false);
    td_mixed(&va, 1000, 3, 12, false);
    uint64_t s = 3;
    for (size_t r = 0; r < va.n; r++)
        va.label[r] = (int32_t)rng_below(&s, 3);
    struct gbm_params p = params_of(400, 2);
    p.early_stop = 5;
    p.learning_rate = 0.5;
    struct progress_log pl = {0};
    struct gbm_model *m = NULL;
    char err[256];
    assert_int_equal(
        gbm_fit(&tr.d, &va.d, 3, class_names, &p, log_progress, &pl, &m, err, sizeof err), 0);
    unsigned best = gbm_model_rounds(m), trained = gbm_model_rounds_trained(m);
    assert_true(trained < 400);
    assert_int_equal(trained, best + 5);
    assert_int_equal(pl.n, trained);
    for (unsigned i = 0; i < pl.n; i++) {
        if (i + 1 != best)
            assert_true(pl.valid[best - 1] <= pl.valid[i]);
        if (i + 1 > best)
            assert_true(pl.valid[best - 1] < pl.valid[i]);
    }
    /* The kept model is the best round's: its loss, in double precision. */
    assert_true(fabs(gbm_model_valid_logloss(m) - pl.valid[best - 1]) < 1e-4);
    double ll, acc;
    assert_int_equal(gbm_evaluate(m, &va.d, &ll, &acc, err, sizeof err), 0);
    assert_true(same(ll, gbm_model_valid_logloss(m)));
    assert_true(same(acc, gbm_model_valid_accuracy(m)));
    gbm_model_free(m);
    td_free(&tr);
    td_free(&va);
}

static int stop_at_3(void *arg, unsigned round, double train_loss, double valid_loss)
{
    (void)arg;
    (void)train_loss;
    (void)valid_loss;
    return round >= 3;
}

static void test_gbm_fit_progress_can_stop(void **state)
{
    (void)state;
    struct tdata tr;
    td_mixed(&tr, 500, 3, 21, false);
    struct gbm_params p = params_of(50, 1);
    struct gbm_model *m = NULL;
    char err[256];
    assert_int_equal(gbm_fit(&tr.d, NULL, 3, class_names, &p, stop_at_3, NULL, &m, err, sizeof err),
                     0);
    assert_int_equal(gbm_model_rounds(m), 3);
    assert_int_equal(gbm_model_rounds_trained(m), 3);
    assert_true(isnan(gbm_model_valid_logloss(m)));
    gbm_model_free(m);
    td_free(&tr);
}

/*
 * A plain double-precision booster with exact gradients (libm exp, no
 * quantization, one thread), the same split rules: the reference the fast
 * trainer is held to.  Returns the validation log loss after each round.
 */
static void reference_fit(const struct tdata *tr, const struct tdata *va, size_t K,
                          const struct gbm_params *p, double *valid_loss)
{
    size_t F = tr->F;
    double *mtr = calloc(tr->n * K, sizeof *mtr), *mva = calloc(va->n * K, sizeof *mva);
    double *g = calloc(F * K * (GBM_MAX_BINS + 1), sizeof *g);
    double *h = calloc(F * K * (GBM_MAX_BINS + 1), sizeof *h);
    double mass[TD_MAX_F][GBM_MAX_BINS + 1];
    assert_true(mtr && mva && g && h);
    memset(mass, 0, sizeof mass);
    for (size_t f = 0; f < F; f++) {
        for (size_t r = 0; r < tr->n; r++) {
            unsigned b = tr->bins[f][r];
            mass[f][b == GBM_MISSING_BIN ? tr->feat[f].n_bins : b] += 1.0;
        }
    }
    for (unsigned t = 0; t < p->rounds; t++) {
        memset(g, 0, F * K * (GBM_MAX_BINS + 1) * sizeof *g);
        memset(h, 0, F * K * (GBM_MAX_BINS + 1) * sizeof *h);
        for (size_t r = 0; r < tr->n; r++) {
            double mx = -HUGE_VAL, sum = 0, pr[GBM_MAX_CLASSES];
            for (size_t k = 0; k < K; k++)
                mx = mtr[r * K + k] > mx ? mtr[r * K + k] : mx;
            for (size_t k = 0; k < K; k++)
                sum += (pr[k] = exp(mtr[r * K + k] - mx));
            for (size_t k = 0; k < K; k++) {
                double pk = pr[k] / sum;
                double gk = pk - (tr->label[r] == (int32_t)k), hk = 2 * pk * (1 - pk);
                for (size_t f = 0; f < F; f++) {
                    unsigned b = tr->bins[f][r];
                    b = b == GBM_MISSING_BIN ? tr->feat[f].n_bins : b;
                    g[(f * K + k) * (GBM_MAX_BINS + 1) + b] += gk;
                    h[(f * K + k) * (GBM_MAX_BINS + 1) + b] += hk;
                }
            }
        }
        for (size_t k = 0; k < K; k++) {
            struct gbm_split best = {0}, sp;
            size_t bf = 0;
            for (size_t f = 0; f < F; f++) {
                gbm_split_find(tr->feat[f].kind, tr->feat[f].n_bins,
                               g + (f * K + k) * (GBM_MAX_BINS + 1),
                               h + (f * K + k) * (GBM_MAX_BINS + 1), mass[f], p->lambda,
                               p->min_child_weight, &sp);
                if (sp.found && sp.gain > GBM_MIN_GAIN && (!best.found || sp.gain > best.gain)) {
                    best = sp;
                    bf = f;
                }
            }
            double lv, rv;
            if (best.found) {
                lv = gbm_leaf_value(best.g_left, best.h_left, p->lambda, p->learning_rate);
                rv = gbm_leaf_value(best.g_right, best.h_right, p->lambda, p->learning_rate);
            } else {
                double G = 0, H = 0;
                for (unsigned b = 0; b <= tr->feat[0].n_bins; b++) {
                    G += g[k * (GBM_MAX_BINS + 1) + b];
                    H += h[k * (GBM_MAX_BINS + 1) + b];
                }
                lv = rv = gbm_leaf_value(G, H, p->lambda, p->learning_rate);
            }
            for (int set = 0; set < 2; set++) {
                const struct tdata *d = set ? va : tr;
                double *m = set ? mva : mtr;
                for (size_t r = 0; r < d->n; r++) {
                    bool left = true;
                    if (best.found) {
                        unsigned b = d->bins[bf][r];
                        left = b == GBM_MISSING_BIN
                                   ? best.default_left
                                   : (bool)((best.left_bins[b / 64] >> (b % 64)) & 1);
                    }
                    m[r * K + k] += left ? lv : rv;
                }
            }
        }
        double loss = 0;
        for (size_t r = 0; r < va->n; r++) {
            double mx = -HUGE_VAL, sum = 0;
            for (size_t k = 0; k < K; k++)
                mx = mva[r * K + k] > mx ? mva[r * K + k] : mx;
            for (size_t k = 0; k < K; k++)
                sum += exp(mva[r * K + k] - mx);
            loss += log(sum) - (mva[r * K + va->label[r]] - mx);
        }
        valid_loss[t] = loss / (double)va->n;
    }
    free(mtr);
    free(mva);
    free(g);
    free(h);
}

/* Quantized gradients and float margins cost next to nothing in quality. */
static void test_gbm_fit_matches_exact_reference(void **state)
{
    (void)state;
    struct tdata tr, va;
    td_mixed(&tr, 4000, 5, 71, false);
    td_mixed(&va, 2000, 5, 72, false);
    struct gbm_params p = params_of(40, 2);
    struct progress_log pl = {0};
    struct gbm_model *m = NULL;
    char err[256];
    assert_int_equal(
        gbm_fit(&tr.d, &va.d, 5, class_names, &p, log_progress, &pl, &m, err, sizeof err), 0);
    double ref[40];
    reference_fit(&tr, &va, 5, &p, ref);
    for (unsigned t = 0; t < 40; t++) {
        if (fabs(pl.valid[t] - ref[t]) > 1e-4)
            fail_msg("round %u: valid log loss %.6f, exact reference %.6f", t + 1, pl.valid[t],
                     ref[t]);
    }
    assert_true(fabs(gbm_model_valid_logloss(m) - ref[39]) < 1e-4);
    gbm_model_free(m);
    td_free(&tr);
    td_free(&va);
}

/* A rule stumps can express (plus 5% noise): learned well. */
static void test_gbm_fit_quality_known_rule(void **state)
{
    (void)state;
    struct tdata tr, va;
    for (int i = 0; i < 2; i++) {
        struct tdata *t = i ? &va : &tr;
        uint64_t s = 1000 + (uint64_t)i;
        td_alloc(t, i ? 2000 : 8000, 3);
        td_feature(t, 0, GBM_NUMERIC, 20, false);
        td_feature(t, 1, GBM_CATEGORICAL, 4, false);
        td_feature(t, 2, GBM_NUMERIC, 20, false);
        for (size_t r = 0; r < t->n; r++) {
            unsigned x = rng_below(&s, 20), c = rng_below(&s, 4);
            t->bins[0][r] = (uint8_t)x;
            t->bins[1][r] = (uint8_t)c;
            t->bins[2][r] = (uint8_t)rng_below(&s, 20);
            int32_t y = x < 7 ? 0 : (c == 2 ? 1 : 2);
            if (rng_unit(&s) < 0.05)
                y = (int32_t)rng_below(&s, 3);
            t->label[r] = y;
        }
        td_finish(t, false);
    }
    struct gbm_params p = params_of(60, 2);
    struct progress_log pl = {0};
    struct gbm_model *m = NULL;
    char err[256];
    assert_int_equal(
        gbm_fit(&tr.d, &va.d, 3, class_names, &p, log_progress, &pl, &m, err, sizeof err), 0);
    assert_true(pl.valid[pl.n - 1] < pl.valid[0]);
    assert_true(pl.valid[0] < log(3.0));
    assert_true(gbm_model_valid_accuracy(m) > 0.94);
    assert_true(gbm_model_valid_logloss(m) < 0.35);
    double imp[3];
    gbm_model_importance(m, imp);
    assert_true(imp[0] > imp[2] && imp[1] > imp[2]);
    gbm_model_free(m);
    td_free(&tr);
    td_free(&va);
}

static void test_gbm_fit_rejects_bad_input(void **state)
{
    (void)state;
    struct tdata t;
    td_mixed(&t, 100, 3, 1, true);
    struct gbm_params p = params_of(5, 1);
    struct gbm_model *m = (struct gbm_model *)&p; /* must be reset to NULL */
    char err[256];

    t.bins[2][50] = 254; /* feature x2 has 255 bins: fine */
    assert_int_equal(gbm_fit(&t.d, NULL, 3, class_names, &p, NULL, NULL, &m, err, sizeof err), 0);
    gbm_model_free(m);
    t.bins[0][50] = 16; /* x0 has 16 bins */
    assert_int_equal(gbm_fit(&t.d, NULL, 3, class_names, &p, NULL, NULL, &m, err, sizeof err), -1);
    assert_null(m);
    assert_non_null(strstr(err, "row 50: feature x0: bin out of range"));
    t.bins[0][50] = 3;
    t.label[7] = 3;
    assert_int_equal(gbm_fit(&t.d, NULL, 3, class_names, &p, NULL, NULL, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "row 7: label 3 out of range"));
    t.label[7] = 0;
    t.weight[9] = -1.0f;
    assert_int_equal(gbm_fit(&t.d, NULL, 3, class_names, &p, NULL, NULL, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "row 9: weight"));
    t.weight[9] = 1.0f;
    p.learning_rate = 0.0;
    assert_int_equal(gbm_fit(&t.d, NULL, 3, class_names, &p, NULL, NULL, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "learning_rate"));
    p.learning_rate = 0.3;
    assert_int_equal(gbm_fit(&t.d, NULL, 1, class_names, &p, NULL, NULL, &m, err, sizeof err), -1);
    const char *dup[] = {"a", "a"};
    assert_int_equal(gbm_fit(&t.d, NULL, 2, dup, &p, NULL, NULL, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "duplicate"));
    /* Validation data binned differently. */
    struct tdata v;
    td_mixed(&v, 50, 3, 2, false);
    v.cuts[0][3] = 3.5;
    assert_int_equal(gbm_fit(&t.d, &v.d, 3, class_names, &p, NULL, NULL, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "cuts differ"));
    td_free(&v);
    td_free(&t);
}

/* ---- compiled model, explanations ---------------------------------------- */

/* A model with random stumps over the mixed features (no fitting). */
static struct gbm_model *random_model(const struct tdata *t, size_t K, unsigned rounds,
                                      uint64_t seed)
{
    uint64_t s = seed;
    struct gbm_model *m = gbm_model_alloc(t->F, K);
    assert_non_null(m);
    for (size_t k = 0; k < K; k++)
        m->classes[k] = strdup(class_names[k]);
    for (size_t f = 0; f < t->F; f++)
        assert_int_equal(gbm_feat_copy(&m->feat[f], &t->feat[f], NULL), 0);
    struct gbm_booster *b = &m->cls;
    b->objective = GBM_SOFTMAX;
    b->K = K;
    gbm_params_default(&b->params);
    b->params.rounds = rounds;
    b->n_rounds = b->rounds_trained = rounds;
    b->train_loss = b->valid_loss = b->valid_accuracy = NAN;
    b->base_margin = calloc(K, sizeof *b->base_margin);
    b->stumps = calloc((size_t)rounds * K, sizeof *b->stumps);
    assert_non_null(b->base_margin);
    assert_non_null(b->stumps);
    for (size_t k = 0; k < K; k++)
        b->base_margin[k] = rng_unit(&s) - 0.5;
    for (size_t i = 0; i < (size_t)rounds * K; i++) {
        struct gbm_stump *st = &b->stumps[i];
        st->left_value = rng_unit(&s) - 0.5;
        st->right_value = rng_unit(&s) - 0.5;
        st->gain = 10.0 * rng_unit(&s);
        if (rng_below(&s, 10) == 0) {
            st->feature = -1;
            st->right_value = st->left_value;
            st->gain = 0.0;
            continue;
        }
        st->feature = (int32_t)rng_below(&s, (unsigned)t->F);
        st->default_left = rng_below(&s, 2);
        const struct gbm_feature *fe = &t->feat[st->feature];
        if (fe->kind == GBM_NUMERIC) {
            st->bin = (uint8_t)rng_below(&s, fe->n_bins - 1);
            st->threshold = fe->cuts[st->bin];
            for (unsigned bb = 0; bb <= st->bin; bb++)
                st->left[bb / 64] |= (uint64_t)1 << (bb % 64);
        } else {
            for (unsigned bb = 0; bb < fe->n_bins; bb++) {
                if (rng_below(&s, 2))
                    st->left[bb / 64] |= (uint64_t)1 << (bb % 64);
            }
        }
    }
    assert_int_equal(gbm_booster_compile(m, b), 0);
    return m;
}

/* The margin as the plain sum of stumps, from raw values. */
static void stump_sum(const struct gbm_model *m, const struct gbm_input *x, double *margin)
{
    const struct gbm_booster *b = &m->cls;
    for (size_t k = 0; k < b->K; k++)
        margin[k] = b->base_margin[k];
    for (size_t i = 0; i < (size_t)b->n_rounds * b->K; i++) {
        const struct gbm_stump *st = &b->stumps[i];
        bool left;
        if (st->feature < 0) {
            left = true;
        } else {
            const struct gbm_input *v = &x[st->feature];
            const struct gbm_feat *f = &m->feat[st->feature];
            if (f->kind == GBM_NUMERIC) {
                left = v->missing || isnan(v->num) ? st->default_left : v->num < st->threshold;
            } else {
                int bin = v->missing || !v->cat ? -1 : gbm_feat_level_bin(f, v->cat);
                left = bin < 0 ? st->default_left : (bool)((st->left[bin / 64] >> (bin % 64)) & 1);
            }
        }
        margin[i % b->K] += left ? st->left_value : st->right_value;
    }
}

/* Random raw inputs: values in and around the cuts, on cuts, missing, NaN,
 * infinities, known and unseen levels. */
static void random_input(uint64_t *s, const struct tdata *t, struct gbm_input *x)
{
    for (size_t f = 0; f < t->F; f++) {
        const struct gbm_feature *fe = &t->feat[f];
        x[f] = (struct gbm_input){false, 0.0, NULL};
        unsigned pick = rng_below(s, 20);
        if (pick == 0) {
            x[f].missing = true;
        } else if (fe->kind == GBM_NUMERIC) {
            if (pick == 1)
                x[f].num = NAN;
            else if (pick == 2)
                x[f].num = rng_below(s, 2) ? HUGE_VAL : -HUGE_VAL;
            else if (pick < 8)
                x[f].num = fe->n_bins > 1 ? fe->cuts[rng_below(s, fe->n_bins - 1)] : 0.0;
            else
                x[f].num = (rng_unit(s) * (fe->n_bins + 2.0)) - 1.0;
        } else {
            x[f].cat = pick == 1 ? "unseen" : fe->levels[rng_below(s, (unsigned)fe->n_levels)];
        }
    }
}

static void test_gbm_compile_equals_stump_sum(void **state)
{
    (void)state;
    struct tdata t;
    td_mixed(&t, 10, 7, 1, false);
    uint64_t s = 77;
    for (int mi = 0; mi < 20; mi++) {
        struct gbm_model *m = random_model(&t, 7, 1 + rng_below(&s, 60), 1000 + (uint64_t)mi);
        for (int it = 0; it < 300; it++) {
            struct gbm_input x[5];
            double a[7], b[7];
            random_input(&s, &t, x);
            gbm_predict(m, x, a, NULL);
            stump_sum(m, x, b);
            for (int k = 0; k < 7; k++)
                assert_true(fabs(a[k] - b[k]) <= 1e-12);
        }
        gbm_model_free(m);
    }
    td_free(&t);
}

static void test_gbm_explain_sums_to_margin(void **state)
{
    (void)state;
    struct tdata t;
    td_mixed(&t, 10, 7, 1, false);
    uint64_t s = 78;
    for (int mi = 0; mi < 10; mi++) {
        struct gbm_model *m = random_model(&t, 7, 40, 2000 + (uint64_t)mi);
        for (int it = 0; it < 200; it++) {
            struct gbm_input x[5];
            double margin[7], base, contrib[5];
            struct gbm_step steps[5];
            random_input(&s, &t, x);
            gbm_predict(m, x, margin, NULL);
            for (size_t c = 0; c < 7; c++) {
                gbm_explain(m, x, c, &base, contrib, steps);
                double sum = base;
                for (size_t f = 0; f < 5; f++)
                    sum += contrib[f];
                assert_true(fabs(sum - margin[c]) <= 1e-9);
                /* The class's step is constant on [lo, hi) and x is in it. */
                for (size_t f = 0; f < 3; f++) {
                    if (steps[f].missing)
                        continue;
                    assert_true(steps[f].lo <= x[f].num);
                    assert_true(x[f].num < steps[f].hi || (isinf(x[f].num) && isinf(steps[f].hi)));
                    struct gbm_input y[5];
                    double c2[5], b2;
                    memcpy(y, x, sizeof y);
                    if (isfinite(steps[f].lo)) {
                        y[f].num = steps[f].lo;
                        gbm_explain(m, y, c, &b2, c2, NULL);
                        assert_true(same(c2[f], contrib[f]));
                    }
                    if (isfinite(steps[f].hi)) {
                        y[f].num = nextafter(steps[f].hi, -HUGE_VAL);
                        gbm_explain(m, y, c, &b2, c2, NULL);
                        assert_true(same(c2[f], contrib[f]));
                        y[f].num = steps[f].hi;
                        gbm_explain(m, y, c, &b2, c2, NULL);
                        assert_false(same(c2[f], contrib[f]));
                    }
                }
            }
        }
        gbm_model_free(m);
    }
    td_free(&t);
}

/* ---- serialization ------------------------------------------------------- */

static void test_gbm_json_round_trip_exact(void **state)
{
    (void)state;
    struct tdata tr, va;
    td_mixed(&tr, 3000, 7, 31, true);
    td_mixed(&va, 800, 7, 32, true);
    struct gbm_params p = params_of(30, 2);
    p.seed = UINT64_MAX;
    p.early_stop = 10;
    struct gbm_model *m = fit_ok(&tr, &va, 7, &p);
    char err[256];
    assert_int_equal(gbm_fit_magnitude(m, "bid_up", &tr.d, &va.d, &p, err, sizeof err), 0);
    assert_int_equal(gbm_model_set_feature_range(m, 0, -1.5, 16.25), 0);
    assert_int_equal(gbm_model_set_feature_range(m, 3, 0, 1), -1);
    json_t *meta = json_pack("{s:s, s:i, s:{s:f}}", "window", "2024-01-01/2024-02-01", "rows", 3800,
                             "metrics", "auc", 0.1 + 0.2);
    assert_non_null(meta);
    assert_int_equal(gbm_model_set_metadata(m, meta), 0);
    json_decref(meta);
    char *j1 = gbm_model_to_json(m);
    assert_non_null(j1);
    struct gbm_model *m2 = NULL;
    if (gbm_model_from_json(j1, strlen(j1), &m2, err, sizeof err) != 0)
        fail_msg("from_json: %s", err);
    char *j2 = gbm_model_to_json(m2);
    assert_string_equal(j1, j2);
    assert_int_equal(gbm_model_params(m2)->seed, UINT64_MAX);
    assert_true(same(gbm_model_valid_logloss(m2), gbm_model_valid_logloss(m)));
    double mn, mx;
    assert_int_equal(gbm_model_feature_range(m2, 0, &mn, &mx), 0);
    assert_true(same(mn, -1.5) && same(mx, 16.25));
    assert_true(same(json_real_value(json_object_get(
                         json_object_get((json_t *)gbm_model_metadata(m2), "metrics"), "auc")),
                     0.1 + 0.2));
    uint64_t s = 5;
    for (int it = 0; it < 500; it++) {
        struct gbm_input x[5];
        double a[7], b[7], pa[7], pb[7], ma, mb;
        random_input(&s, &tr, x);
        gbm_predict(m, x, a, pa);
        gbm_predict(m2, x, b, pb);
        assert_memory_equal(a, b, sizeof a);
        assert_memory_equal(pa, pb, sizeof pa);
        assert_int_equal(gbm_predict_magnitude(m, 1, x, &ma), 0);
        assert_int_equal(gbm_predict_magnitude(m2, 1, x, &mb), 0);
        assert_memory_equal(&ma, &mb, sizeof ma);
        assert_int_equal(gbm_predict_magnitude(m2, 0, x, &mb), -1);
    }
    free(j1);
    free(j2);
    gbm_model_free(m);
    gbm_model_free(m2);
    td_free(&tr);
    td_free(&va);
}

/* A model's JSON as a jansson tree, for mutation. */
static json_t *small_model_tree(void)
{
    struct tdata tr;
    td_mixed(&tr, 600, 3, 41, false);
    struct gbm_params p = params_of(4, 1);
    struct gbm_model *m = fit_ok(&tr, NULL, 3, &p);
    char err[256];
    assert_int_equal(gbm_fit_magnitude(m, "hold", &tr.d, NULL, &p, err, sizeof err), 0);
    char *j = gbm_model_to_json(m);
    json_t *root = json_loads(j, 0, NULL);
    assert_non_null(root);
    free(j);
    gbm_model_free(m);
    td_free(&tr);
    return root;
}

/* Loads root; the reason must contain want. */
static void expect_refused(json_t *root, const char *want)
{
    char *text = json_dumps(root, JSON_COMPACT);
    assert_non_null(text);
    struct gbm_model *m = (struct gbm_model *)text;
    char err[512] = "";
    int rc = gbm_model_from_json(text, strlen(text), &m, err, sizeof err);
    if (rc != -1 || !strstr(err, want))
        fail_msg("want a refusal with \"%s\", got rc %d \"%s\"", want, rc, err);
    assert_null(m);
    free(text);
}

/* First numeric stump of the classifier, or NULL. */
static json_t *find_stump(json_t *root, const char *key)
{
    json_t *rounds = json_object_get(root, "stumps");
    for (size_t r = 0; r < json_array_size(rounds); r++) {
        json_t *round = json_array_get(rounds, r);
        for (size_t k = 0; k < json_array_size(round); k++) {
            json_t *s = json_array_get(round, k);
            if (json_object_get(s, key))
                return s;
        }
    }
    return NULL;
}

static void test_gbm_from_json_mutations_refused(void **state)
{
    (void)state;
    json_t *root = small_model_tree(), *t;
    struct gbm_model *m = NULL;
    char err[256];
    char *ok = json_dumps(root, JSON_COMPACT);
    assert_int_equal(gbm_model_from_json(ok, strlen(ok), &m, err, sizeof err), 0);
    gbm_model_free(m);
    free(ok);

/* R is a fresh copy of the good model for each mutation. */
#define MUTATE(stmt, want)                                                                         \
    do {                                                                                           \
        json_t *R = json_deep_copy(root);                                                          \
        assert_non_null(R);                                                                        \
        stmt;                                                                                      \
        expect_refused(R, want);                                                                   \
        json_decref(R);                                                                            \
    } while (0)

    MUTATE(json_object_set_new(R, "version", json_integer(2)), "version: unsupported version 2");
    MUTATE(json_object_set_new(R, "format", json_string("xgboost")), "format: not");
    MUTATE(json_object_del(R, "classes"), "classes: missing");
    MUTATE(json_object_set_new(R, "extra", json_true()), "extra: unknown key");
    MUTATE(json_array_append_new(json_object_get(R, "classes"), json_string("more")),
           "base_margin: 3 elements, not in 4..4");
    MUTATE(json_array_set_new(json_object_get(R, "classes"), 1, json_string("hold")),
           "classes[1]: duplicate class");
    MUTATE((t = find_stump(R, "threshold"), json_object_set_new(t, "feature", json_integer(5))),
           "].feature: out of range");
    MUTATE((t = find_stump(R, "threshold"), json_object_set_new(t, "threshold", json_real(0.25))),
           "].threshold: not one of the feature's cuts");
    MUTATE((t = find_stump(R, "threshold"), json_object_set_new(t, "left", json_string("x"))),
           "].left: not a number");
    MUTATE((t = find_stump(R, "threshold"), json_object_del(t, "default_left")),
           "].default_left: missing");
    MUTATE(json_array_set_new(
               json_object_get(json_array_get(json_object_get(R, "features"), 0), "cuts"), 1,
               json_real(-100.0)),
           "features[0].cuts[1]: not above the cut before");
    MUTATE(json_object_set_new(json_array_get(json_object_get(R, "features"), 3), "n_bins",
                               json_integer(300)),
           "features[3].n_bins: out of range");
    MUTATE(json_array_set_new(
               json_object_get(json_array_get(json_object_get(R, "features"), 3), "level_bins"), 0,
               json_integer(9)),
           "features[3].level_bins[0]: out of range");
    MUTATE(json_array_set_new(
               json_object_get(json_array_get(json_object_get(R, "features"), 3), "levels"), 1,
               json_string("a")),
           "features[3].levels[1]: duplicate level");
    MUTATE(json_array_set_new(
               json_object_get(json_array_get(json_object_get(R, "features"), 0), "mass"), 0,
               json_real(-1.0)),
           "features[0].mass[0]: negative");
    MUTATE(json_object_set_new(R, "best_round", json_integer(9)), "best_round: out of range");
    MUTATE(json_object_set_new(R, "rounds_trained", json_integer(3)), "best_round: out of range");
    MUTATE(json_array_remove(json_object_get(R, "stumps"), 0), "stumps: 3 elements, not in 4..4");
    MUTATE(json_array_remove(json_array_get(json_object_get(R, "stumps"), 2), 0),
           "stumps[2]: 2 stumps, not 3");
    MUTATE(json_object_set_new(json_object_get(R, "params"), "seed", json_string("-1")),
           "params.seed: not a decimal");
    MUTATE(json_object_set_new(json_object_get(R, "params"), "learning_rate", json_real(2.0)),
           "params.learning_rate: not in (0, 1]");
    MUTATE(json_object_set_new(R, "metadata", json_integer(1)), "metadata: not an object or null");
    MUTATE(json_object_set_new(json_object_get(R, "magnitude"), "nope", json_object()),
           "magnitude.nope: not a class");
    MUTATE(
        json_array_set_new(
            json_array_get(
                json_object_get(json_object_get(json_object_get(R, "magnitude"), "hold"), "stumps"),
                0),
            0, json_object()),
        "magnitude.hold.stumps[0][0].feature: missing");
#undef MUTATE
    json_decref(root);

    const char *junk = "{\"format\": ";
    assert_int_equal(gbm_model_from_json(junk, strlen(junk), &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "json: line 1"));
    assert_int_equal(gbm_model_from_json("[]", 2, &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "model: not a JSON object"));
}

static void test_gbm_from_json_bad_fixtures(void **state)
{
    (void)state;
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/models", tfixtures_dir());
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s (run the tests from the repository root)", dir);
    struct dirent *de;
    size_t n_bad = 0, n_good = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        size_t jlen, elen;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        char *text = tread_file(path, &jlen);
        struct gbm_model *m = NULL;
        char err[512] = "";
        int rc = gbm_model_from_json(text, jlen, &m, err, sizeof err);
        if (strncmp(de->d_name, "good-", 5) == 0) {
            if (rc != 0)
                fail_msg("%s: refused: %s", de->d_name, err);
            /* A good model writes back to what it read, modulo layout. */
            char *back = gbm_model_to_json(m);
            struct gbm_model *m2 = NULL;
            assert_int_equal(gbm_model_from_json(back, strlen(back), &m2, err, sizeof err), 0);
            gbm_model_free(m2);
            free(back);
            gbm_model_free(m);
            n_good++;
        } else {
            snprintf(path, sizeof path, "%s/%.*s.expect", dir, (int)(len - 5), de->d_name);
            char *want = tread_file(path, &elen);
            while (elen > 0 && (want[elen - 1] == '\n' || want[elen - 1] == '\r'))
                want[--elen] = '\0';
            if (rc != -1 || !strstr(err, want))
                fail_msg("%s: want a refusal with \"%s\", got rc %d \"%s\"", de->d_name, want, rc,
                         err);
            assert_null(m);
            free(want);
            n_bad++;
        }
        free(text);
    }
    closedir(d);
    assert_true(n_good >= 1);
    assert_true(n_bad >= 10);
}

/* ---- magnitude model ------------------------------------------------------- */

static void test_gbm_fit_magnitude_step_target(void **state)
{
    (void)state;
    struct tdata t;
    uint64_t s = 8;
    td_alloc(&t, 4000, 2);
    td_feature(&t, 0, GBM_NUMERIC, 10, false);
    td_feature(&t, 1, GBM_NUMERIC, 10, false);
    double wsum = 0, wy = 0;
    for (size_t r = 0; r < t.n; r++) {
        unsigned b = rng_below(&s, 10);
        t.bins[0][r] = (uint8_t)b;
        t.bins[1][r] = (uint8_t)rng_below(&s, 10);
        t.label[r] = 0;
        t.target[r] = (float)((b >= 6 ? 10.0 : 2.0) + 0.2 * (rng_unit(&s) - 0.5));
        t.weight[r] = (float)(1.0 + rng_below(&s, 3));
        wsum += t.weight[r];
        wy += t.weight[r] * (double)t.target[r];
    }
    td_finish(&t, true);
    struct gbm_params p = params_of(3, 1);
    struct gbm_model *m = fit_ok(&t, NULL, 2, &p);
    char err[256];
    assert_int_equal(gbm_fit_magnitude(m, "nope", &t.d, NULL, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown class"));
    p.rounds = 80;
    assert_int_equal(gbm_fit_magnitude(m, "bid_up", &t.d, NULL, &p, err, sizeof err), 0);
    assert_true(gbm_model_has_magnitude(m, 1));
    assert_false(gbm_model_has_magnitude(m, 0));
    assert_true(close_rel(m->mag[1]->base_margin[0], wy / wsum, 1e-12));
    struct gbm_input lo[2] = {td_input(&t, 0, 2), td_input(&t, 1, 5)};
    struct gbm_input hi[2] = {td_input(&t, 0, 8), td_input(&t, 1, 5)};
    double a, b, base, contrib[2];
    assert_int_equal(gbm_predict_magnitude(m, 1, lo, &a), 0);
    assert_int_equal(gbm_predict_magnitude(m, 1, hi, &b), 0);
    assert_true(fabs(a - 2.0) < 0.05);
    assert_true(fabs(b - 10.0) < 0.05);
    assert_int_equal(gbm_explain_magnitude(m, 1, hi, &base, contrib, NULL), 0);
    assert_true(fabs(base + contrib[0] + contrib[1] - b) < 1e-9);
    assert_true(fabs(contrib[0]) > 10 * fabs(contrib[1]));
    assert_true(m->mag[1]->train_loss < 0.01);
    gbm_model_free(m);
    td_free(&t);
}

/* ---- out of memory ---------------------------------------------------------- */

static void test_gbm_fit_alloc_failure(void **state)
{
    (void)state;
    struct tdata tr, va;
    td_mixed(&tr, 700, 3, 51, true);
    td_mixed(&va, 200, 3, 52, false);
    struct gbm_params p = params_of(3, 2);
    long n;
    for (n = 0;; n++) {
        struct gbm_model *m = NULL;
        char err[256];
        util_alloc_fail_after(n);
        int rc = gbm_fit(&tr.d, &va.d, 3, class_names, &p, NULL, NULL, &m, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc == 0) {
            /* Magnitude models too; a failure keeps the model as it was. */
            long k;
            for (k = 0;; k++) {
                util_alloc_fail_after(k);
                rc = gbm_fit_magnitude(m, "bid_up", &tr.d, NULL, &p, err, sizeof err);
                util_alloc_fail_after(-1);
                if (rc == 0)
                    break;
                assert_int_equal(rc, -1);
                assert_false(gbm_model_has_magnitude(m, 1));
            }
            assert_true(k > 5);
            gbm_model_free(m);
            break;
        }
        assert_int_equal(rc, -1);
        assert_null(m);
        assert_non_null(strstr(err, "out of memory"));
    }
    assert_true(n > 10);
    td_free(&tr);
    td_free(&va);
}

static void test_gbm_from_json_alloc_failure(void **state)
{
    (void)state;
    json_t *root = small_model_tree();
    json_object_set_new(root, "metadata", json_pack("{s:[i,i,i]}", "x", 1, 2, 3));
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    long n;
    for (n = 0;; n++) {
        struct gbm_model *m = NULL;
        char err[256];
        util_alloc_fail_after(n);
        int rc = gbm_model_from_json(text, strlen(text), &m, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc == 0) {
            char *back = NULL;
            for (long k = 0; !back; k++) {
                util_alloc_fail_after(k);
                back = gbm_model_to_json(m);
                util_alloc_fail_after(-1);
            }
            free(back);
            gbm_model_free(m);
            break;
        }
        assert_int_equal(rc, -1);
        assert_null(m);
    }
    assert_true(n > 20);
    free(text);
}

/* ---- small things ----------------------------------------------------------- */

static void test_gbm_fast_math_accuracy(void **state)
{
    (void)state;
    double worst = 0;
    for (double x = -87.0; x <= 0.0; x += 0.001) {
        double e = exp((double)(float)x), a = gbm_fast_expf((float)x);
        double r = fabs(a - e) / e;
        worst = r > worst ? r : worst;
    }
    assert_true(worst < 3e-7);
    worst = 0;
    for (double x = 1e-30; x < 1e30; x *= 1.013) {
        float xf = (float)x;
        double l = log((double)xf), a = gbm_fast_logf(xf);
        double err = fabs(a - l) / (fabs(l) > 1 ? fabs(l) : 1);
        worst = err > worst ? err : worst;
    }
    assert_true(worst < 3e-7);
}

static void test_gbm_model_dump_writes_steps(void **state)
{
    (void)state;
    struct tdata t;
    td_mixed(&t, 500, 3, 61, false);
    struct gbm_params p = params_of(5, 1);
    struct gbm_model *m = fit_ok(&t, NULL, 3, &p);
    char err[256];
    assert_int_equal(gbm_fit_magnitude(m, "hold", &t.d, NULL, &p, err, sizeof err), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(gbm_model_dump(m, f), 0);
    fclose(f);
    assert_non_null(strstr(buf, "classifier: 3 classes, 5 features, 5 rounds"));
    assert_non_null(strstr(buf, "feature x0 (numeric)"));
    assert_non_null(strstr(buf, "[-inf, "));
    assert_non_null(strstr(buf, "magnitude hold:"));
    assert_non_null(strstr(buf, "missing:"));
    free(buf);
    assert_int_equal(gbm_feature_index(m, "c3"), 3);
    assert_int_equal(gbm_feature_index(m, "nope"), -1);
    assert_string_equal(gbm_model_class_name(m, 2), "bid_down");
    size_t nm;
    const double *mass = gbm_model_feature_mass(m, 1, &nm);
    assert_int_equal(nm, 41);
    double total = 0;
    for (size_t i = 0; i < nm; i++)
        total += mass[i];
    assert_true(close_rel(total, 500.0, 1e-12));
    assert_true(mass[40] > 0.0); /* x1 has missing values */
    gbm_model_free(m);
    td_free(&t);
}

/* ---- timing harness (not a test) ----------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 25 features (20 numeric with 255 bins, some 10% missing; 5 categorical
 * with 40 levels), 7 classes from a noisy softmax of a few of them. */
static void bench_data(struct tdata *t, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    td_alloc(t, n, 25);
    for (size_t f = 0; f < 25; f++)
        td_feature(t, f, f < 20 ? GBM_NUMERIC : GBM_CATEGORICAL, f < 20 ? 255 : 16, false);
    for (size_t r = 0; r < n; r++) {
        double x[25], logit[7], mx = -1e300, sum = 0;
        for (size_t f = 0; f < 25; f++) {
            x[f] = rng_unit(&s);
            unsigned b = f < 20 ? (unsigned)(x[f] * 255) : (unsigned)(x[f] * 16);
            t->bins[f][r] = (uint8_t)(f % 5 == 0 && rng_unit(&s) < 0.1 ? GBM_MISSING_BIN : b);
        }
        for (size_t k = 0; k < 7; k++) {
            logit[k] = 1.5 * sin(6 * x[k] + (double)k) + (x[(k + 3) % 20] > 0.5 ? 1.0 : -0.5) +
                       0.8 * ((t->bins[20 + k % 5][r] * 7 + k) % 5 == 0);
            mx = logit[k] > mx ? logit[k] : mx;
        }
        for (size_t k = 0; k < 7; k++)
            sum += (logit[k] = exp(logit[k] - mx));
        double u = rng_unit(&s) * sum;
        size_t y = 0;
        while (y + 1 < 7 && (u -= logit[y]) >= 0.0)
            y++;
        t->label[r] = (int32_t)y;
    }
    td_finish(t, false);
}

static int bench(const char *spec)
{
    unsigned long rows = 128000, threads = 2, rounds = 200;
    if (sscanf(spec, "%lu,%lu,%lu", &rows, &threads, &rounds) < 1 || rows < 100)
        return 2;
    struct tdata tr, va;
    bench_data(&tr, rows, 1);
    bench_data(&va, rows / 4, 2);
    struct gbm_params p = params_of((unsigned)rounds, (unsigned)threads);
    struct gbm_model *m = NULL;
    char err[256];
    double t0 = now_s();
    if (gbm_fit(&tr.d, &va.d, 7, class_names, &p, NULL, NULL, &m, err, sizeof err) != 0) {
        fprintf(stderr, "gbm_fit: %s\n", err);
        return 1;
    }
    double t1 = now_s();
    printf("rows %lu+%lu, 25 features, 7 classes, threads %lu: %u rounds in %.3f s, %.3f "
           "ms/round; valid log loss %.5f, accuracy %.4f\n",
           rows, rows / 4, threads, gbm_model_rounds_trained(m), t1 - t0,
           (t1 - t0) * 1000.0 / gbm_model_rounds_trained(m), gbm_model_valid_logloss(m),
           gbm_model_valid_accuracy(m));
    gbm_model_free(m);
    td_free(&tr);
    td_free(&va);
    return 0;
}

int main(void)
{
    json_set_alloc_funcs(json_alloc_via_util, free);
    const char *b = getenv("UNDERSTUDY_GBM_BENCH");
    if (b && *b)
        return bench(b);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gbm_split_find_numeric_brute_force),
        cmocka_unit_test(test_gbm_split_find_categorical_brute_force),
        cmocka_unit_test(test_gbm_leaf_value_and_gain_hand_computed),
        cmocka_unit_test(test_gbm_fit_first_round_hand_computed),
        cmocka_unit_test(test_gbm_fit_no_split_gives_root_leaf),
        cmocka_unit_test(test_gbm_fit_missing_direction_learned),
        cmocka_unit_test(test_gbm_fit_categorical_split_separates_levels),
        cmocka_unit_test(test_gbm_fit_deterministic_across_threads),
        cmocka_unit_test(test_gbm_fit_early_stopping_truncates),
        cmocka_unit_test(test_gbm_fit_progress_can_stop),
        cmocka_unit_test(test_gbm_fit_quality_known_rule),
        cmocka_unit_test(test_gbm_fit_matches_exact_reference),
        cmocka_unit_test(test_gbm_fit_rejects_bad_input),
        cmocka_unit_test(test_gbm_compile_equals_stump_sum),
        cmocka_unit_test(test_gbm_explain_sums_to_margin),
        cmocka_unit_test(test_gbm_json_round_trip_exact),
        cmocka_unit_test(test_gbm_from_json_mutations_refused),
        cmocka_unit_test(test_gbm_from_json_bad_fixtures),
        cmocka_unit_test(test_gbm_fit_magnitude_step_target),
        cmocka_unit_test(test_gbm_fit_alloc_failure),
        cmocka_unit_test(test_gbm_from_json_alloc_failure),
        cmocka_unit_test(test_gbm_fast_math_accuracy),
        cmocka_unit_test(test_gbm_model_dump_writes_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
