/*
 * audit: the operator bias audit (audit.h has the decisions it takes).
 *
 * The question for each operator o and decision class k is: in the states
 * o actually met, does o take k more or less often (or with other sizes)
 * than the rest of the team would have?  Raw rates cannot answer it:
 * operators manage different campaigns, and their own actions change the
 * states they see next.  So every comparison is made row by row, on o's own
 * states.
 *
 * Reference.  For operator o the reference is a softmax stump policy (the
 * same booster as the champion, internal/gbm) fitted on the decisions of
 * every other operator, never on o's: p_r(k) is the probability that the
 * team takes k in the state of o's decision r.  Its magnitude models fit
 * log |delta_pct| of each sized class, so sizes compare as ratios.  A
 * reference is fitted on at most reference_rows decisions (a sample picked
 * by the decisions' keys, row_hash).
 *
 * Robust to biased peers.  One operator who over-acts in a region raises
 * the others' references there, which would make them look like
 * under-acting.  So the audit runs in passes: operators with a rate or
 * magnitude finding in one pass (the set F) are left out of every
 * reference in the next one (o not in F: fitted on everyone but F and o;
 * o in F: on everyone but F), until F stops changing, at most
 * AUDIT_MAX_PASSES passes, and while at least two operators stay in the
 * reference.  The findings of the last pass are reported.
 *
 * Tests, each entering one Benjamini-Hochberg family (audit_stats.c has the
 * distributions):
 *
 *  - rate (whole window): O = sum_r [y_r = k], under the reference
 *    O ~ PoissonBinomial(p_r(k)).  The null is "o's propensity is within a
 *    factor tolerance of the team's", tested at its edges:
 *        p = min(1, 2 min(P(S >= O | min(1, tau p_r)), P(S <= O | p_r / tau)))
 *  - region: the region is searched on the discovery half of o's
 *    decisions (a seeded hash of the row) and tested on the other half.
 *    With O_in + O_out = O decisions of k on the test half, inside and
 *    outside the region, and E_in, E_out the reference's expectations,
 *    "o's rate ratio to the team is the same inside and outside" makes
 *    O_in | O ~ Bin(O, E_in / (E_in + E_out)); with the tolerance, in the
 *    direction found on the discovery half (one-sided: the direction was
 *    fixed before the test half was looked at):
 *        over:  P(X >= O_in), X ~ Bin(O, tau E_in / (tau E_in + E_out))
 *        under: P(X <= O_in), X ~ Bin(O, E_in / (E_in + tau E_out))
 *    Candidates are one condition (a categorical level, or a numeric
 *    feature below / at or above one of the deciles of o's discovery
 *    values, rounded to two significant digits), scored on the discovery
 *    half by z = (O_in - O pi) / sqrt(O pi (1 - pi)), pi = E_in / E; a second
 *    condition is kept when it raises |z| by at least 1.
 *  - magnitude: e_r = log |delta_r| - m_r (m_r the reference's prediction of
 *    log |delta|) for o's decisions of a sized class, against the same
 *    residuals of the peers still in the reference (each scored by its own
 *    reference); Welch's t on d = mean_o - mean_peers with the null
 *    |d| <= ln tau: t = (|d| - ln tau) / se, two-sided.
 *    effect = exp(d), interval exp(d +- t_{0.975, df} se).
 *  - policy disagreement (with a champion): c_r = the champion's most
 *    probable class for o's state r, A = sum_r [y_r = c_r] against
 *    S ~ PoissonBinomial(p_r(c_r) / tau), one-sided (lower).
 *
 * A finding needs q <= fdr_q and min_support decisions of o (and in the
 * region, on the discovery half).  A region finding replaces the
 * whole-window finding of the same operator and class unless the
 * deviation also holds outside the region (its own test there, p <= fdr_q,
 * same direction).  Kinds: blind_spot when observed <= blind_spot_ratio *
 * expected with expected >= blind_spot_min_expected (over the whole
 * region), else over_acting or under_acting by the sign.  Severity: high
 * when q < 0.001 and the ratio (or its inverse) is at least 2, or a blind
 * spot with q < 0.001; medium when q < 0.01 and the ratio is at least 1.5
 * (1.25 for policy agreement), or a blind spot; low otherwise.
 *
 * Intervals: a rate ratio's is the Poisson interval of O (Byar's
 * approximation) over E.
 */
#include "audit/audit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define MAGNITUDE_MIN_ROWS 20
#define N_DECILES          9
#define SECOND_COND_GAIN   1.0
#define PEER_ROWS          200000
#define Z95                1.959963984540054

enum test_type { T_GLOBAL = 0, T_REGION, T_MAGNITUDE, T_AGREEMENT };

struct op_info {
    const char *name;
    size_t start, n;  /* rows in the permuted order */
    bool audited;     /* min_support decisions: tested (and a peer for calibration) */
    bool asked;       /* in params.only (or no list): its tests are reported */
    size_t supported; /* rows inside the current reference's support */
};

/* Everything about one test of the current pass; becomes a finding when
 * significant. */
struct cand {
    enum test_type type;
    size_t op;
    int cls;
    int dir; /* +1 over, -1 under */
    struct audit_finding f;
    double p_outside; /* T_REGION: the whole-window test outside the region */
    double full_in_expected;
    /* For the overdispersion step: the plain z of the test (no tolerance)
     * and what a z test at the tolerance's edges needs. */
    double z0;
    double obs, e_up, v_up, e_low, v_low; /* rates and agreement */
    double d, se, log_tol;                /* magnitude */
    double r_tot, r_pi, r_ein, r_vin;     /* region: test-half total, pi', in-region E', V' */
};

struct ctx {
    const struct ds *ds;
    const struct audit_params *p;
    const struct gbm_model *policy;
    struct ds_binned *binned;
    const struct gbm_feature *feats;
    size_t F, K, n;
    const char **class_names;
    int hold;
    uint32_t *perm;  /* permuted position -> ds row */
    uint64_t *rhash; /* [n] the row's key (row_hash) */
    uint8_t **bins;  /* [F][n], permuted */
    int32_t *label;
    float *logsize; /* log |delta_pct|, NaN when none */
    int32_t *grp;   /* operator index, -1 = none */
    uint8_t *half;  /* 0 = discovery, 1 = test */
    size_t n_ops;
    struct op_info *ops;
    bool *sized;     /* [K] */
    double *prob;    /* [n][K] reference probabilities */
    double *logpred; /* [n] reference log size, NaN when none */
    double *pprob;   /* [n][K] champion probabilities, or NULL */
    int32_t *pbest;  /* [n] champion's most probable class (dataset index), or -1 */
    double *scratch; /* [n] */
    double *gather;  /* [n] */
    uint8_t *inside; /* [n] region membership of one operator's rows */
    uint8_t *sup;    /* [n] 1 when the row's state is inside its reference's support */
    struct cand *cands;
    size_t n_cands, cap_cands;
};

/* ---- small helpers ------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

static double round_sig2(double v)
{
    if (!isfinite(v) || !(fabs(v) > 0))
        return v;
    double e = floor(log10(fabs(v))) - 1;
    double s = pow(10, e);
    double r = round(v / s) * s;
    /* Print-and-parse so the threshold is exactly the decimal shown. */
    char buf[64];
    snprintf(buf, sizeof buf, "%.3g", r);
    return strtod(buf, NULL);
}

/* Poisson interval of a count (Byar), as a ratio to e. */
static void poisson_ratio_ci(double o, double e, double *lo, double *hi)
{
    if (e <= 0) {
        *lo = *hi = NAN;
        return;
    }
    double l = 0;
    if (o > 0) {
        double a = 1 - 1 / (9 * o) - Z95 / (3 * sqrt(o));
        l = o * a * a * a;
    }
    double o1 = o + 1;
    double b = 1 - 1 / (9 * o1) + Z95 / (3 * sqrt(o1));
    *lo = (l < 0 ? 0 : l) / e;
    *hi = o1 * b * b * b / e;
}

/* t quantile for a two-sided 95 % interval, by bisection. */
static double t_quantile95(double df)
{
    if (!(df > 0))
        return NAN;
    if (df > 1e6)
        return Z95;
    double lo = 0, hi = 1000;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (audit_t_two_sided(mid, df) > 0.05)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

static int push_cand(struct ctx *c, const struct cand *x)
{
    if (c->n_cands == c->cap_cands) {
        size_t cap = c->cap_cands ? 2 * c->cap_cands : 64;
        struct cand *n = util_realloc(c->cands, cap * sizeof *n);
        if (!n)
            return -1;
        c->cands = n;
        c->cap_cands = cap;
    }
    c->cands[c->n_cands++] = *x;
    return 0;
}

/* Sized classes have a regression target on enough rows. */
static void find_sized(struct ctx *c)
{
    size_t local[GBM_MAX_CLASSES] = {0};
    for (size_t i = 0; i < c->n; i++) {
        if (!isnan(c->logsize[i]))
            local[c->label[i]]++;
    }
    for (size_t k = 0; k < c->K; k++)
        c->sized[k] = (int)k != c->hold && local[k] >= MAGNITUDE_MIN_ROWS;
}

/* ---- preparing the rows -------------------------------------------------- */

/*
 * A row's key: a hash of what the row says (time, operator, class, size and
 * every feature value) and the seed.  It picks the half a row belongs to,
 * the reference samples and the quantile samples, so none of them depends
 * on the order the rows were read in.
 */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static uint64_t row_hash(const struct ds *ds, size_t r, uint64_t seed)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325) ^ mix64(seed + 1);
    int64_t ts = ds_row_ts(ds, r);
    int32_t label = ds_row_label(ds, r);
    double t = ds_row_target(ds, r);
    const char *g = ds_row_group(ds, r);
    h = hash_bytes(h, &ts, sizeof ts);
    h = hash_bytes(h, &label, sizeof label);
    if (!isnan(t))
        h = hash_bytes(h, &t, sizeof t);
    if (g)
        h = hash_bytes(h, g, strlen(g) + 1);
    for (size_t f = 0; f < ds_n_features(ds); f++) {
        if (ds_feature_kind(ds, f) == GBM_NUMERIC) {
            double v = ds_cell_num(ds, f, r);
            if (!isnan(v))
                h = hash_bytes(h, &v, sizeof v);
        } else {
            const char *lv = ds_cell_level(ds, f, r);
            if (lv)
                h = hash_bytes(h, lv, strlen(lv) + 1);
        }
        h = hash_bytes(h, "|", 1);
    }
    return mix64(h);
}

struct keyed {
    uint64_t hash;
    uint32_t row;
};

static int keyed_cmp(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static int op_name_cmp(const void *a, const void *b)
{
    const struct op_info *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static int prepare(struct ctx *c, char *err, size_t errlen)
{
    const struct ds *ds = c->ds;
    size_t n = ds_n_rows(ds);
    c->n = n;
    c->K = ds_n_classes(ds);
    c->hold = -1;
    if (c->K < 2 || c->K > GBM_MAX_CLASSES) {
        util_fmt(err, errlen, "the decisions have %zu classes; the audit needs 2 to %d", c->K,
                 GBM_MAX_CLASSES);
        return -1;
    }
    c->class_names = util_calloc(c->K, sizeof *c->class_names);
    if (!c->class_names)
        goto oom;
    for (size_t k = 0; k < c->K; k++) {
        c->class_names[k] = ds_class_name(ds, k);
        if (strcmp(c->class_names[k], "hold") == 0)
            c->hold = (int)k;
    }
    /* audit_check made sure of a hold class, two operators and one to audit. */

    /* Operators: the dataset's groups, in name order. */
    size_t G = ds_n_groups(ds);
    struct op_info *tmp = util_calloc(G ? G : 1, sizeof *tmp);
    size_t *gcount = util_calloc(G ? G : 1, sizeof *gcount);
    size_t *gmap = util_calloc(G ? G : 1, sizeof *gmap);
    if (!tmp || !gcount || !gmap) {
        free(tmp);
        free(gcount);
        free(gmap);
        goto oom;
    }
    for (size_t r = 0; r < n; r++) {
        int32_t g = ds_row_group_index(ds, r);
        if (g >= 0) {
            gcount[g]++;
        }
    }
    size_t n_ops = 0;
    for (size_t g = 0; g < G; g++) {
        if (gcount[g]) {
            tmp[n_ops].name = ds_group_name(ds, g);
            tmp[n_ops].n = gcount[g];
            tmp[n_ops].start = g; /* remember the group while sorting */
            n_ops++;
        }
    }
    qsort(tmp, n_ops, sizeof *tmp, op_name_cmp);
    for (size_t o = 0; o < n_ops; o++)
        gmap[tmp[o].start] = o;
    c->ops = tmp;
    c->n_ops = n_ops;
    free(gcount);
    /* Every operator with enough decisions is tested, asked for or not: the
     * screen, the overdispersion and the regions' peer calibration look at
     * the whole team, so naming operators changes only whose tests are
     * reported (and corrected for). */
    for (size_t o = 0; o < n_ops; o++) {
        bool chosen = c->p->n_only == 0;
        for (size_t j = 0; j < c->p->n_only; j++)
            chosen |= strcmp(c->ops[o].name, c->p->only[j]) == 0;
        c->ops[o].asked = chosen;
        c->ops[o].audited = (int64_t)c->ops[o].n >= c->p->min_support;
    }

    /* Permutation: operators' rows contiguous (in name order), then the
     * rows without an operator. */
    size_t pos = 0;
    for (size_t o = 0; o < n_ops; o++) {
        c->ops[o].start = pos;
        pos += c->ops[o].n;
    }
    size_t *fill = util_calloc(n_ops, sizeof *fill);
    c->perm = util_calloc(n ? n : 1, sizeof *c->perm);
    c->grp = util_calloc(n ? n : 1, sizeof *c->grp);
    c->label = util_calloc(n ? n : 1, sizeof *c->label);
    c->logsize = util_calloc(n ? n : 1, sizeof *c->logsize);
    c->half = util_calloc(n ? n : 1, sizeof *c->half);
    c->prob = util_calloc(n ? n * c->K : 1, sizeof *c->prob);
    c->logpred = util_calloc(n ? n : 1, sizeof *c->logpred);
    c->scratch = util_calloc(n ? n : 1, sizeof *c->scratch);
    c->gather = util_calloc(n ? n : 1, sizeof *c->gather);
    c->inside = util_calloc(n ? n : 1, sizeof *c->inside);
    c->sup = util_calloc(n ? n : 1, sizeof *c->sup);
    c->sized = util_calloc(c->K, sizeof *c->sized);
    if (!fill || !c->perm || !c->grp || !c->label || !c->logsize || !c->half || !c->prob ||
        !c->logpred || !c->scratch || !c->gather || !c->inside || !c->sup || !c->sized) {
        free(fill);
        free(gmap);
        goto oom;
    }
    struct keyed *keys = util_calloc(n ? n : 1, sizeof *keys);
    if (!keys) {
        free(fill);
        free(gmap);
        goto oom;
    }
    size_t tail = pos;
    for (size_t r = 0; r < n; r++) {
        int32_t g = ds_row_group_index(ds, r);
        size_t at;
        if (g >= 0) {
            size_t o = gmap[g];
            at = c->ops[o].start + fill[o]++;
        } else {
            at = tail++;
        }
        keys[at].hash = row_hash(ds, r, c->p->seed);
        keys[at].row = (uint32_t)r;
    }
    /* Within an operator, rows in the order of their hashes: the same
     * decisions give the same audit whatever order they were read in. */
    for (size_t o = 0; o < n_ops; o++)
        qsort(keys + c->ops[o].start, c->ops[o].n, sizeof *keys, keyed_cmp);
    qsort(keys + pos, n - pos, sizeof *keys, keyed_cmp);
    c->rhash = util_calloc(n ? n : 1, sizeof *c->rhash);
    if (!c->rhash) {
        free(keys);
        free(fill);
        free(gmap);
        goto oom;
    }
    for (size_t at = 0; at < n; at++) {
        size_t r = keys[at].row;
        int32_t g = ds_row_group_index(ds, r);
        c->grp[at] = g >= 0 ? (int32_t)gmap[g] : -1;
        c->perm[at] = (uint32_t)r;
        c->rhash[at] = keys[at].hash;
        c->label[at] = ds_row_label(ds, r);
        double t = ds_row_target(ds, r);
        c->logsize[at] = isfinite(t) && fabs(t) > 0 ? (float)log(fabs(t)) : NAN;
        c->half[at] = (uint8_t)(keys[at].hash >> 63);
    }
    free(keys);
    free(fill);
    free(gmap);

    /* Bins, permuted. */
    if (ds_bin(ds, c->p->max_bins, c->p->threads, &c->binned, err, errlen) != 0)
        return -1;
    size_t nb;
    const uint32_t *brows = ds_binned_rows(c->binned, false, &nb);
    const struct gbm_data *bd = ds_binned_train(c->binned);
    c->feats = ds_binned_features(c->binned, &c->F);
    uint32_t *pos_of = util_calloc(n ? n : 1, sizeof *pos_of);
    c->bins = util_calloc(c->F ? c->F : 1, sizeof *c->bins);
    if (!pos_of || !c->bins) {
        free(pos_of);
        goto oom;
    }
    for (size_t i = 0; i < n; i++)
        pos_of[c->perm[i]] = (uint32_t)i;
    for (size_t f = 0; f < c->F; f++) {
        if (!(c->bins[f] = util_malloc(n ? n : 1))) {
            free(pos_of);
            goto oom;
        }
        for (size_t i = 0; i < nb; i++)
            c->bins[f][pos_of[brows[i]]] = bd->bins[f][i];
    }
    free(pos_of);
    find_sized(c);
    for (size_t i = 0; i < n; i++)
        c->logpred[i] = NAN;
    return 0;
oom:
    util_fmt(err, errlen, "out of memory");
    return -1;
}

/* ---- references ------------------------------------------------------- */

static void slice(const struct ctx *c, size_t start, size_t n, const uint8_t **cols,
                  struct gbm_data *d)
{
    for (size_t f = 0; f < c->F; f++)
        cols[f] = c->bins[f] + start;
    memset(d, 0, sizeof *d);
    d->n_rows = n;
    d->n_features = c->F;
    d->features = c->feats;
    d->bins = cols;
    d->label = c->label + start;
}

/*
 * Fits the reference on every row whose operator is not excluded (rows
 * without an operator always count), sampled down to reference_rows, and
 * magnitude models of log |delta| for the sized classes.
 */
static int fit_reference(struct ctx *c, const bool *excluded, struct gbm_model **out,
                         uint32_t (*mass)[GBM_MAX_BINS + 1], char *err, size_t errlen)
{
    size_t eligible = 0;
    for (size_t i = 0; i < c->n; i++)
        eligible += c->grp[i] < 0 || !excluded[c->grp[i]];
    size_t want = eligible < c->p->reference_rows ? eligible : c->p->reference_rows;
    /* Room for every eligible row: the sample's size is want on average,
     * and cutting it at want would take the excess from the last operator. */
    uint32_t *rows = util_calloc(eligible ? eligible : 1, sizeof *rows);
    uint8_t **cols = util_calloc(c->F ? c->F : 1, sizeof *cols);
    int32_t *lab = util_calloc(eligible ? eligible : 1, sizeof *lab);
    float *tgt = util_calloc(eligible ? eligible : 1, sizeof *tgt);
    uint8_t **kcols = util_calloc(c->F ? c->F : 1, sizeof *kcols);
    struct gbm_model *m = NULL;
    int rc = -1;
    if (!rows || !cols || !lab || !tgt || !kcols) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    if (want < 2) {
        util_fmt(err, errlen, "too few decisions (%zu) left for a reference", want);
        goto out;
    }
    /* A sample by the rows' keys: each eligible row with probability
     * want / eligible, the same rows whatever order they were read in. */
    size_t m_rows = 0;
    double frac = (double)want / (double)eligible;
    for (size_t i = 0; i < c->n; i++) {
        if (!(c->grp[i] < 0 || !excluded[c->grp[i]]))
            continue;
        /* The low 53 bits: independent of the half (the top bit). */
        double u = (double)(c->rhash[i] & ((UINT64_C(1) << 53) - 1)) * 0x1p-53;
        if (want >= eligible || u < frac)
            rows[m_rows++] = (uint32_t)i;
    }
    for (size_t f = 0; f < c->F; f++) {
        if (!(cols[f] = util_malloc(m_rows)) || !(kcols[f] = util_malloc(m_rows))) {
            util_fmt(err, errlen, "out of memory");
            goto out;
        }
        for (size_t j = 0; j < m_rows; j++)
            cols[f][j] = c->bins[f][rows[j]];
    }
    for (size_t j = 0; j < m_rows; j++)
        lab[j] = c->label[rows[j]];
    for (size_t f = 0; f < c->F; f++) {
        memset(mass[f], 0, sizeof mass[f]);
        for (size_t j = 0; j < m_rows; j++)
            mass[f][cols[f][j]]++;
    }
    struct gbm_data d = {.n_rows = m_rows,
                         .n_features = c->F,
                         .features = c->feats,
                         .bins = (const uint8_t *const *)cols,
                         .label = lab};
    struct gbm_params gp;
    gbm_params_default(&gp);
    gp.rounds = c->p->rounds;
    gp.learning_rate = c->p->learning_rate;
    gp.threads = c->p->threads ? c->p->threads : 1;
    gp.seed = c->p->seed;
    if (gbm_fit(&d, NULL, c->K, c->class_names, &gp, NULL, NULL, &m, err, errlen) != 0)
        goto out;
    struct gbm_params mp = gp;
    mp.rounds = gp.rounds < 50 ? gp.rounds : 50;
    for (size_t k = 0; k < c->K; k++) {
        if (!c->sized[k])
            continue;
        size_t mk = 0;
        for (size_t j = 0; j < m_rows; j++) {
            uint32_t i = rows[j];
            if (c->label[i] != (int32_t)k || isnan(c->logsize[i]))
                continue;
            for (size_t f = 0; f < c->F; f++)
                kcols[f][mk] = cols[f][j];
            tgt[mk++] = c->logsize[i];
        }
        if (mk < MAGNITUDE_MIN_ROWS)
            continue;
        struct gbm_data dk = {.n_rows = mk,
                              .n_features = c->F,
                              .features = c->feats,
                              .bins = (const uint8_t *const *)kcols,
                              .target = tgt};
        if (gbm_fit_magnitude(m, c->class_names[k], &dk, NULL, &mp, err, errlen) != 0)
            goto out;
    }
    *out = m;
    m = NULL;
    rc = 0;
out:
    gbm_model_free(m);
    for (size_t f = 0; cols && f < c->F; f++)
        free(cols[f]);
    for (size_t f = 0; kcols && f < c->F; f++)
        free(kcols[f]);
    free(cols);
    free(kcols);
    free(rows);
    free(lab);
    free(tgt);
    return rc;
}

/*
 * Support.  A reference can only speak for states like those its operators
 * met: a decision whose state falls, for some feature, in a bin (a quantile
 * bin of the whole data, or the missing bin) where the reference's own
 * decisions number fewer than SUPPORT_MIN is outside its support.  Such
 * decisions (states the rest of the team never showed) are counted per
 * operator and left out of every test: the reference would be extrapolating
 * there.
 */
#define SUPPORT_MIN    5
#define SUPPORT_WINDOW 2

/* The reference's decisions near bin b of feature f: the bin itself for a
 * category or a missing value; for a number, the bins within
 * SUPPORT_WINDOW of it (a campaign-level value such as a target is one bin
 * per campaign, and a value between the team's values is still inside
 * their experience). */
static uint32_t support_mass(const struct ctx *c, uint32_t (*mass)[GBM_MAX_BINS + 1], size_t f,
                             unsigned b)
{
    if (c->feats[f].kind != GBM_NUMERIC || b == GBM_MISSING_BIN)
        return mass[f][b];
    unsigned lo = b > SUPPORT_WINDOW ? b - SUPPORT_WINDOW : 0;
    unsigned hi =
        b + SUPPORT_WINDOW < c->feats[f].n_bins ? b + SUPPORT_WINDOW : c->feats[f].n_bins - 1;
    uint32_t sum = 0;
    for (unsigned j = lo; j <= hi; j++)
        sum += mass[f][j];
    return sum;
}

/* Scores operator o's rows with model m: probabilities, log sizes and
 * support. */
static int score_operator(struct ctx *c, size_t o, const struct gbm_model *m,
                          uint32_t (*mass)[GBM_MAX_BINS + 1], char *err, size_t errlen)
{
    struct op_info *op = &c->ops[o];
    op->supported = 0;
    for (size_t i = op->start; i < op->start + op->n; i++) {
        uint8_t ok = 1;
        for (size_t f = 0; ok && f < c->F; f++)
            ok = support_mass(c, mass, f, c->bins[f][i]) >= SUPPORT_MIN;
        c->sup[i] = ok;
        op->supported += ok;
    }
    const uint8_t **cols = util_calloc(c->F ? c->F : 1, sizeof *cols);
    double *pred = util_calloc(op->n ? op->n : 1, sizeof *pred);
    int rc = -1;
    if (!cols || !pred) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    struct gbm_data d;
    slice(c, op->start, op->n, cols, &d);
    if (gbm_predict_data(m, &d, c->prob + op->start * c->K, err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < op->n; i++)
        c->logpred[op->start + i] = NAN;
    for (size_t k = 0; k < c->K; k++) {
        if (!gbm_model_has_magnitude(m, k))
            continue;
        if (gbm_predict_magnitude_data(m, k, &d, pred, err, errlen) != 0)
            goto out;
        for (size_t i = 0; i < op->n; i++) {
            if (c->label[op->start + i] == (int32_t)k)
                c->logpred[op->start + i] = pred[i];
        }
    }
    rc = 0;
out:
    free(cols);
    free(pred);
    return rc;
}

static int fit_and_score(struct ctx *c, const bool *flagged, char *err, size_t errlen)
{
    bool *ex = util_calloc(c->n_ops, sizeof *ex);
    uint32_t(*mass)[GBM_MAX_BINS + 1] = util_calloc(c->F ? c->F : 1, sizeof *mass);
    struct gbm_model *m = NULL;
    int rc = -1;
    if (!ex || !mass) {
        free(ex);
        free(mass);
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    bool any = false;
    for (size_t o = 0; o < c->n_ops; o++)
        any |= flagged[o];
    /* The flagged operators share one reference: everyone else. */
    if (any) {
        memcpy(ex, flagged, c->n_ops * sizeof *ex);
        if (fit_reference(c, ex, &m, mass, err, errlen) != 0)
            goto out;
        for (size_t o = 0; o < c->n_ops; o++) {
            if (flagged[o] && score_operator(c, o, m, mass, err, errlen) != 0)
                goto out;
        }
        gbm_model_free(m);
        m = NULL;
    }
    for (size_t o = 0; o < c->n_ops; o++) {
        if (flagged[o])
            continue;
        if (c->p->should_stop && c->p->should_stop(c->p->stop_arg)) {
            util_fmt(err, errlen, "stopped");
            goto out;
        }
        memcpy(ex, flagged, c->n_ops * sizeof *ex);
        ex[o] = true;
        if (fit_reference(c, ex, &m, mass, err, errlen) != 0 ||
            score_operator(c, o, m, mass, err, errlen) != 0)
            goto out;
        gbm_model_free(m);
        m = NULL;
    }
    rc = 0;
out:
    gbm_model_free(m);
    free(ex);
    free(mass);
    return rc;
}

/* ---- the champion -------------------------------------------------------- */

static int score_policy(struct ctx *c, char *err, size_t errlen)
{
    const struct gbm_model *pm = c->policy;
    size_t nf = gbm_model_n_features(pm), nc = gbm_model_n_classes(pm);
    long *col = util_calloc(nf ? nf : 1, sizeof *col);
    int *cls = util_calloc(nc ? nc : 1, sizeof *cls); /* policy class -> dataset class */
    struct gbm_input *x = util_calloc(nf ? nf : 1, sizeof *x);
    double *prob = util_calloc(nc ? nc : 1, sizeof *prob);
    c->pprob = util_calloc(c->n ? c->n * c->K : 1, sizeof *c->pprob);
    c->pbest = util_calloc(c->n ? c->n : 1, sizeof *c->pbest);
    int rc = -1;
    if (!col || !cls || !x || !prob || !c->pprob || !c->pbest) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    ds_model_columns(c->ds, pm, col);
    for (size_t q = 0; q < nc; q++) {
        cls[q] = -1;
        for (size_t k = 0; k < c->K; k++) {
            if (strcmp(gbm_model_class_name(pm, q), c->class_names[k]) == 0)
                cls[q] = (int)k;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        c->pbest[i] = -1;
        if (c->grp[i] < 0)
            continue;
        size_t r = c->perm[i];
        ds_model_input(c->ds, pm, col, r, x);
        gbm_predict(pm, x, NULL, prob);
        double *pp = c->pprob + i * c->K;
        double best = -1;
        for (size_t q = 0; q < nc; q++) {
            if (cls[q] < 0)
                continue;
            pp[cls[q]] += prob[q];
            if (prob[q] > best) {
                best = prob[q];
                c->pbest[i] = cls[q];
            }
        }
    }
    rc = 0;
out:
    free(col);
    free(cls);
    free(x);
    free(prob);
    return rc;
}

/* ---- rate tests ---------------------------------------------------------- */

/* What a rate test saw, for the overdispersion step. */
struct rate_stats {
    double z0, e_up, v_up, e_low, v_low;
};

/* Two-sided rate test with the tolerance band; sets *dir and *test, and
 * *rs when not NULL. */
static double rate_test(struct ctx *c, const double *p, size_t stride, size_t n, double O, int *dir,
                        enum audit_test *test, struct rate_stats *rs)
{
    double tau = c->p->tolerance, E = 0, V = 0;
    double *s = c->scratch;
    struct rate_stats st = {0};
    for (size_t i = 0; i < n; i++) {
        double q = p[i * stride];
        E += q;
        V += q * (1 - q);
        double v = q * tau;
        s[i] = v > 1 ? 1 : v;
        st.e_up += s[i];
        st.v_up += s[i] * (1 - s[i]);
        st.e_low += q / tau;
        st.v_low += q / tau * (1 - q / tau);
    }
    st.z0 = V > 0 ? (O - E) / sqrt(V) : 0;
    if (rs)
        *rs = st;
    enum audit_test t1 = AUDIT_TEST_POISSON_BINOMIAL, t2 = AUDIT_TEST_POISSON_BINOMIAL;
    double up = O > E ? audit_pbinom_tail(s, n, O, true, &t1) : 1.0;
    for (size_t i = 0; i < n; i++)
        s[i] = p[i * stride] / tau;
    double low = O < E ? audit_pbinom_tail(s, n, O, false, &t2) : 1.0;
    *dir = O >= E ? 1 : -1;
    *test = *dir > 0 ? t1 : t2;
    double v = 2 * (up < low ? up : low);
    return v > 1 ? 1 : v;
}

/* ---- regions --------------------------------------------------------------- */

#define CODE_MISSING 255

/*
 * One operator's discovery rows, each feature coded: numeric values as the
 * number of thresholds at or below them (thresholds: the deciles of the
 * operator's discovery values, rounded to two significant digits),
 * categorical values as their bin when the bin holds one level.
 */
struct op_codes {
    size_t nd;
    size_t *rows;   /* [nd] permuted positions */
    uint8_t **code; /* [F][nd] */
    double (*thr)[N_DECILES];
    size_t *n_thr;
    const char ***level; /* [F][n_bins]: the level of a bin, NULL = pooled */
};

static void codes_free(struct op_codes *oc, size_t F)
{
    for (size_t f = 0; f < F; f++) {
        if (oc->code)
            free(oc->code[f]);
        if (oc->level)
            free(oc->level[f]);
    }
    free(oc->code);
    free(oc->level);
    free(oc->rows);
    free(oc->thr);
    free(oc->n_thr);
    memset(oc, 0, sizeof *oc);
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int codes_build(struct ctx *c, size_t o, struct op_codes *oc)
{
    const struct op_info *op = &c->ops[o];
    memset(oc, 0, sizeof *oc);
    oc->rows = util_calloc(op->n ? op->n : 1, sizeof *oc->rows);
    oc->code = util_calloc(c->F ? c->F : 1, sizeof *oc->code);
    oc->level = util_calloc(c->F ? c->F : 1, sizeof *oc->level);
    oc->thr = util_calloc(c->F ? c->F : 1, sizeof *oc->thr);
    oc->n_thr = util_calloc(c->F ? c->F : 1, sizeof *oc->n_thr);
    if (!oc->rows || !oc->code || !oc->level || !oc->thr || !oc->n_thr)
        return -1;
    for (size_t i = op->start; i < op->start + op->n; i++) {
        if (c->half[i] == 0 && c->sup[i])
            oc->rows[oc->nd++] = i;
    }
    for (size_t f = 0; f < c->F; f++) {
        if (!(oc->code[f] = util_malloc(oc->nd ? oc->nd : 1)))
            return -1;
        const struct gbm_feature *ft = &c->feats[f];
        if (ft->kind == GBM_NUMERIC) {
            /* Deciles from at most 4096 evenly spaced discovery values. */
            size_t m = 0, step = oc->nd / 4096 + 1;
            for (size_t j = 0; j < oc->nd; j += step) {
                /* rows are in key order: a stride is a sample by key */
                double v = ds_cell_num(c->ds, f, c->perm[oc->rows[j]]);
                if (!isnan(v))
                    c->scratch[m++] = v;
            }
            if (m >= 2)
                qsort(c->scratch, m, sizeof *c->scratch, dbl_cmp);
            for (size_t d = 1; m >= 2 && d <= N_DECILES; d++) {
                double t = round_sig2(c->scratch[d * m / (N_DECILES + 1)]);
                if (oc->n_thr[f] && oc->thr[f][oc->n_thr[f] - 1] >= t)
                    continue;
                oc->thr[f][oc->n_thr[f]++] = t;
            }
            for (size_t j = 0; j < oc->nd; j++) {
                double v = ds_cell_num(c->ds, f, c->perm[oc->rows[j]]);
                uint8_t code = CODE_MISSING;
                if (!isnan(v)) {
                    code = 0;
                    while (code < oc->n_thr[f] && v >= oc->thr[f][code])
                        code++;
                }
                oc->code[f][j] = code;
            }
        } else {
            if (!(oc->level[f] = util_calloc(GBM_MAX_BINS + 1, sizeof *oc->level[f])))
                return -1;
            unsigned count[GBM_MAX_BINS + 1] = {0};
            for (size_t l = 0; l < ft->n_levels; l++) {
                unsigned b = ft->level_bin[l];
                count[b]++;
                oc->level[f][b] = ft->levels[l];
            }
            for (unsigned b = 0; b <= GBM_MAX_BINS; b++) {
                if (count[b] != 1)
                    oc->level[f][b] = NULL;
            }
            for (size_t j = 0; j < oc->nd; j++) {
                uint8_t b = c->bins[f][oc->rows[j]];
                oc->code[f][j] = oc->level[f][b] ? b : CODE_MISSING;
            }
        }
    }
    return 0;
}

/* Whether coded row j satisfies condition (f, op, idx): idx is a threshold
 * index (numeric) or a bin (categorical). */
struct code_cond {
    size_t f;
    enum audit_cond_op op;
    unsigned idx;
};

static bool code_holds(const struct op_codes *oc, const struct code_cond *cc, size_t j)
{
    uint8_t v = oc->code[cc->f][j];
    if (v == CODE_MISSING)
        return false;
    switch (cc->op) {
    case AUDIT_COND_EQ:
        return v == cc->idx;
    case AUDIT_COND_LT:
        return v <= cc->idx; /* below threshold idx */
    case AUDIT_COND_GE:
        return v > cc->idx;
    }
    return false;
}

struct region_def {
    struct audit_region r;
    size_t n;
    struct code_cond cc[AUDIT_MAX_CONDS];
};

static void def_to_region(const struct ctx *c, const struct op_codes *oc, struct region_def *rd)
{
    for (size_t j = 0; j < rd->n; j++) {
        const struct code_cond *cc = &rd->cc[j];
        struct audit_cond *cd = &rd->r.conds[j];
        memset(cd, 0, sizeof *cd);
        util_fmt(cd->feature, sizeof cd->feature, "%s", c->feats[cc->f].name);
        cd->op = cc->op;
        if (cc->op == AUDIT_COND_EQ)
            util_fmt(cd->level, sizeof cd->level, "%s", oc->level[cc->f][cc->idx]);
        else
            cd->value = oc->thr[cc->f][cc->idx];
    }
    rd->r.n_conds = rd->n;
}

/*
 * Best condition on any feature other than those in `within` (NULL: none),
 * for class k in direction dir, over the discovery rows inside `within`.
 * O and E are the operator's discovery totals for k.
 */
/* best[0] / best_z[0]: the best region where the operator acts less
 * (dir -1), best[1] / best_z[1] where it acts more; dirs: bit 0 less, bit 1
 * more. */
static void search(const struct ctx *c, const struct op_codes *oc, int k, unsigned dirs,
                   const struct region_def *within, double O, double E, struct region_def *best,
                   double *best_z)
{
    double min_n = (double)c->p->min_support;
    for (size_t f = 0; f < c->F; f++) {
        bool used = false;
        for (size_t j = 0; within && j < within->n; j++)
            used |= within->cc[j].f == f;
        if (used)
            continue;
        struct {
            double o, e, n;
        } cell[GBM_MAX_BINS + 1];
        memset(cell, 0, sizeof cell);
        for (size_t j = 0; j < oc->nd; j++) {
            uint8_t v = oc->code[f][j];
            if (v == CODE_MISSING)
                continue;
            bool in = true;
            for (size_t w = 0; within && in && w < within->n; w++)
                in = code_holds(oc, &within->cc[w], j);
            if (!in)
                continue;
            size_t i = oc->rows[j];
            cell[v].o += c->label[i] == k;
            cell[v].e += c->prob[i * c->K + (size_t)k];
            cell[v].n += 1;
        }
        bool numeric = c->feats[f].kind == GBM_NUMERIC;
        size_t n_cand = numeric ? 2 * oc->n_thr[f] : GBM_MAX_BINS;
        for (size_t j = 0; j < n_cand; j++) {
            struct code_cond cc = {.f = f};
            double io = 0, ie = 0, in_n = 0;
            if (numeric) {
                cc.idx = (unsigned)(j / 2);
                cc.op = j % 2 == 0 ? AUDIT_COND_LT : AUDIT_COND_GE;
                for (size_t v = 0; v <= oc->n_thr[f]; v++) {
                    if (cc.op == AUDIT_COND_LT ? v <= cc.idx : v > cc.idx) {
                        io += cell[v].o;
                        ie += cell[v].e;
                        in_n += cell[v].n;
                    }
                }
            } else {
                if (!oc->level[f][j])
                    continue;
                cc.idx = (unsigned)j;
                cc.op = AUDIT_COND_EQ;
                io = cell[j].o;
                ie = cell[j].e;
                in_n = cell[j].n;
            }
            if (in_n < min_n || E <= 0 || O <= 0)
                continue;
            double pi = ie / E;
            if (pi <= 0 || pi >= 1)
                continue;
            double ex = O * pi;
            if (ex < 2)
                continue;
            double z = (io - ex) / sqrt(ex * (1 - pi));
            double ratio = io / ie;
            int d = z > 0 && ratio > 1 ? 1 : z < 0 && ratio < 1 ? 0 : -1;
            if (d < 0 || !(dirs & (1u << d)) || fabs(z) <= fabs(best_z[d]))
                continue;
            best_z[d] = z;
            if (within)
                best[d] = *within;
            else
                memset(&best[d], 0, sizeof best[d]);
            best[d].cc[best[d].n++] = cc;
        }
    }
}

/* Inside/outside counts of class k for rows of operator o (one half, or
 * both when half is 2), by raw values. */
struct region_stats {
    double o_in, e_in, o_out, e_out, n_in, pol_in;
};

static bool cond_holds(const struct ctx *c, const struct region_def *rd, size_t j, size_t i)
{
    const struct audit_cond *cd = &rd->r.conds[j];
    size_t f = rd->cc[j].f, r = c->perm[i];
    if (cd->op == AUDIT_COND_EQ) {
        const char *lv = ds_cell_level(c->ds, f, r);
        return lv && strcmp(lv, cd->level) == 0;
    }
    double v = ds_cell_num(c->ds, f, r);
    if (isnan(v))
        return false;
    return cd->op == AUDIT_COND_LT ? v < cd->value : v >= cd->value;
}

/* in[i - start]: whether row i of operator o is inside the region. */
static void region_count(const struct ctx *c, size_t o, int k, const uint8_t *inside, int half,
                         struct region_stats *s)
{
    memset(s, 0, sizeof *s);
    const struct op_info *op = &c->ops[o];
    for (size_t i = op->start; i < op->start + op->n; i++) {
        if ((half != 2 && c->half[i] != half) || !c->sup[i])
            continue;
        bool in = inside[i - op->start];
        double y = c->label[i] == k, e = c->prob[i * c->K + (size_t)k];
        if (in) {
            s->o_in += y;
            s->e_in += e;
            s->n_in++;
            if (c->pprob)
                s->pol_in += c->pprob[i * c->K + (size_t)k];
        } else {
            s->o_out += y;
            s->e_out += e;
        }
    }
}

/* ---- one pass ------------------------------------------------------------- */

static void finding_base(const struct ctx *c, size_t o, int k, struct audit_finding *f)
{
    memset(f, 0, sizeof *f);
    util_fmt(f->operator_id, sizeof f->operator_id, "%s", c->ops[o].name);
    f->action = k;
    f->inside_observed = f->inside_expected = f->outside_observed = f->outside_expected = NAN;
    f->expected_policy = NAN;
    f->discovery_z = NAN;
    f->ci_lo = f->ci_hi = NAN;
    f->overdispersion = 1.0;
}

/*
 * The peers' own behaviour in a region: over the rows of the operators in
 * the references (not o, not flagged), the ratios of observed to expected
 * counts of class k inside and outside the region, each smoothed with 0.5.
 * A reference misfits some regions for everyone (a stump model cannot
 * express every interaction), and then every operator looks "different"
 * there; the region tests compare o with what the peers actually do.
 * *n_in gets the peers' decisions in the region.
 */
static void peer_calibration(const struct ctx *c, size_t o, int k, const struct region_def *rd,
                             const bool *flagged, double *kin, double *kout, double *n_in)
{
    double oi = 0, ei = 0, oo = 0, eo = 0;
    *n_in = 0;
    /* At most about PEER_ROWS of the peers' decisions, picked by key: the
     * ratios are then as good as exact, at a fraction of the cost. */
    double frac = (double)PEER_ROWS / (double)(c->n ? c->n : 1), scale = 1;
    if (frac < 1)
        scale = 1 / frac;
    for (size_t i = 0; i < c->n; i++) {
        int32_t g = c->grp[i];
        if (g < 0 || (size_t)g == o || flagged[g] || !c->ops[g].audited || !c->sup[i])
            continue;
        if (frac < 1 && (double)((c->rhash[i] >> 8) & 0xffffffffu) * 0x1p-32 >= frac)
            continue;
        bool in = true;
        for (size_t j = 0; in && j < rd->n; j++)
            in = cond_holds(c, rd, j, i);
        double y = c->label[i] == k, e = c->prob[i * c->K + (size_t)k];
        if (in) {
            oi += y;
            ei += e;
            *n_in += 1;
        } else {
            oo += y;
            eo += e;
        }
    }
    *n_in *= scale;
    *kin = (oi + 0.5) / (ei + 0.5);
    *kout = (oo + 0.5) / (eo + 0.5);
}

static int rate_tests(struct ctx *c, size_t o, const struct op_codes *oc, const bool *flagged)
{
    const struct op_info *op = &c->ops[o];
    for (size_t kk = 0; kk < c->K; kk++) {
        int k = (int)kk;
        if (k == c->hold)
            continue;
        /* Whole window. */
        double O = 0, Epol = 0;
        size_t ns = 0;
        for (size_t i = op->start; i < op->start + op->n; i++) {
            if (!c->sup[i])
                continue;
            O += c->label[i] == k;
            c->gather[ns++] = c->prob[i * c->K + kk];
            if (c->pprob)
                Epol += c->pprob[i * c->K + kk];
        }
        struct cand g = {.type = T_GLOBAL, .op = o, .cls = k};
        finding_base(c, o, k, &g.f);
        g.f.n = ns;
        g.f.observed = O;
        struct rate_stats rs;
        g.f.p_value = rate_test(c, c->gather, 1, ns, O, &g.dir, &g.f.test, &rs);
        g.z0 = rs.z0;
        g.obs = O;
        g.e_up = rs.e_up;
        g.v_up = rs.v_up;
        g.e_low = rs.e_low;
        g.v_low = rs.v_low;
        double E = 0;
        for (size_t i = 0; i < ns; i++)
            E += c->gather[i];
        g.f.expected = E;
        g.f.effect = E > 0 ? O / E : NAN;
        poisson_ratio_ci(O, E, &g.f.ci_lo, &g.f.ci_hi);
        g.f.expected_policy = c->pprob ? Epol : NAN;
        g.full_in_expected = E;
        if (push_cand(c, &g) != 0)
            return -1;

        /* Region: search on the discovery half, test on the other. */
        double Od = 0, Ed = 0;
        for (size_t j = 0; j < oc->nd; j++) {
            size_t i = oc->rows[j];
            Od += c->label[i] == k;
            Ed += c->prob[i * c->K + kk];
        }
        struct region_def best, first[2];
        memset(&best, 0, sizeof best);
        memset(first, 0, sizeof first);
        double best_z = 0, fz[2] = {0, 0};
        int best_dir = 0;
        search(c, oc, k, 3u, NULL, Od, Ed, first, fz);
        for (int d = 0; d < 2; d++) {
            struct region_def rd = first[d];
            double z = fz[d];
            if (rd.n == 0)
                continue;
            struct region_def rd2[2];
            memset(rd2, 0, sizeof rd2);
            double z2[2] = {z, z};
            search(c, oc, k, 1u << d, &rd, Od, Ed, rd2, z2);
            if (rd2[d].n == 2 && fabs(z2[d]) >= fabs(z) + SECOND_COND_GAIN) {
                rd = rd2[d];
                z = z2[d];
            }
            if (fabs(z) > fabs(best_z)) {
                best = rd;
                best_z = z;
                best_dir = d ? 1 : -1;
            }
        }
        if (best.n == 0)
            continue;
        def_to_region(c, oc, &best);
        struct region_stats t, full;
        /* Which of the operator's decisions the region holds, once. */
        uint8_t *inside = c->inside;
        for (size_t i = op->start; i < op->start + op->n; i++) {
            bool in = true;
            for (size_t j = 0; in && j < best.n; j++)
                in = cond_holds(c, &best, j, i);
            inside[i - op->start] = in;
        }
        region_count(c, o, k, inside, 1, &t);
        region_count(c, o, k, inside, 2, &full);
        struct cand r = {.type = T_REGION, .op = o, .cls = k, .dir = best_dir};
        finding_base(c, o, k, &r.f);
        r.f.region = best.r;
        r.f.discovery_z = best_z;
        r.f.n = (size_t)t.n_in;
        r.f.observed = t.o_in;
        r.f.inside_observed = t.o_in;
        r.f.outside_observed = t.o_out;
        r.f.expected_policy = c->pprob ? t.pol_in : NAN;
        r.f.test = AUDIT_TEST_CONDITIONAL_BINOMIAL;
        double kin, kout, peers_in;
        peer_calibration(c, o, k, &best, flagged, &kin, &kout, &peers_in);
        /* A region the peers hardly know is outside the references' support:
         * no test. */
        if (peers_in < (double)c->p->min_support)
            continue;
        t.e_in *= kin;
        t.e_out *= kout;
        full.e_in *= kin;
        r.f.expected = t.e_in;
        r.f.effect = t.e_in > 0 ? t.o_in / t.e_in : NAN;
        poisson_ratio_ci(t.o_in, t.e_in, &r.f.ci_lo, &r.f.ci_hi);
        r.f.inside_expected = t.e_in;
        r.f.outside_expected = t.e_out;
        r.full_in_expected = full.e_in;
        double tau = c->p->tolerance, tot = t.o_in + t.o_out;
        if (tot < 1 || t.e_in <= 0 || t.e_out <= 0) {
            r.f.p_value = 1.0;
        } else if (best_dir > 0) {
            double pi = tau * t.e_in / (tau * t.e_in + t.e_out);
            r.f.p_value = audit_binom_tail((uint64_t)tot, pi, (uint64_t)t.o_in, true);
            r.r_pi = pi;
        } else {
            double pi = t.e_in / (t.e_in + tau * t.e_out);
            r.f.p_value = audit_binom_tail((uint64_t)tot, pi, (uint64_t)t.o_in, false);
            r.r_pi = pi;
        }
        r.r_tot = tot;
        r.obs = t.o_in;
        /* Intersection-union: the region must also deviate on its own
         * (test half, the same direction, beyond the tolerance), so a
         * region that merely differs from a deviating outside is no
         * finding about the region. */
        double *tmp = util_calloc(op->n ? op->n : 1, sizeof *tmp);
        if (!tmp)
            return -1;
        {
            size_t m = 0;
            for (size_t i = op->start; i < op->start + op->n; i++) {
                if (c->half[i] != 1 || !c->sup[i] || !inside[i - op->start])
                    continue;
                double q = c->prob[i * c->K + kk] * kin;
                q = best_dir > 0 ? q * tau : q / tau;
                q = q > 1 ? 1 : q;
                tmp[m++] = q;
                r.r_ein += q;
                r.r_vin += q * (1 - q);
            }
            enum audit_test tt;
            double p_in = audit_pbinom_tail(tmp, m, t.o_in, best_dir > 0, &tt);
            if (p_in > r.f.p_value) {
                r.f.p_value = p_in;
                r.f.test = tt; /* the part that decided */
            }
        }
        /* The whole window outside the region: does the deviation hold
         * there too (same direction as the whole-window test)? */
        {
            int dout = 0;
            enum audit_test tt;
            size_t m = 0;
            double Oout = 0;
            for (size_t i = op->start; i < op->start + op->n; i++) {
                if (!c->sup[i] || inside[i - op->start])
                    continue;
                tmp[m++] = c->prob[i * c->K + kk];
                Oout += c->label[i] == k;
            }
            double pv = m ? rate_test(c, tmp, 1, m, Oout, &dout, &tt, NULL) : 1.0;
            r.p_outside = dout == g.dir ? pv : 1.0;
        }
        free(tmp);
        if (push_cand(c, &r) != 0)
            return -1;
    }
    return 0;
}

static int magnitude_tests(struct ctx *c, size_t o, const bool *flagged)
{
    for (size_t kk = 0; kk < c->K; kk++) {
        if (!c->sized[kk])
            continue;
        double so = 0, sso = 0, no = 0, sp = 0, ssp = 0, np = 0, slog = 0;
        for (size_t i = 0; i < c->n; i++) {
            if (c->grp[i] < 0 || !c->sup[i] || c->label[i] != (int32_t)kk || isnan(c->logsize[i]) ||
                isnan(c->logpred[i]))
                continue;
            double e = c->logsize[i] - c->logpred[i];
            if ((size_t)c->grp[i] == o) {
                so += e;
                sso += e * e;
                no++;
                slog += c->logsize[i];
            } else if (!flagged[c->grp[i]]) {
                sp += e;
                ssp += e * e;
                np++;
            }
        }
        if (no < (double)c->p->min_support || no < 2 || np < 2)
            continue;
        double mo = so / no, mp = sp / np;
        double vo = (sso - no * mo * mo) / (no - 1), vp = (ssp - np * mp * mp) / (np - 1);
        vo = vo > 0 ? vo : 0;
        vp = vp > 0 ? vp : 0;
        double se2 = vo / no + vp / np;
        if (!(se2 > 0))
            continue;
        double se = sqrt(se2);
        double df = se2 * se2 /
                    ((vo / no) * (vo / no) / (no - 1) + (vp / np) * (vp / np) / (np - 1) + 1e-300);
        double d = mo - mp;
        double excess = fabs(d) - log(c->p->tolerance);
        struct cand m = {.type = T_MAGNITUDE, .op = o, .cls = (int)kk, .dir = d >= 0 ? 1 : -1};
        finding_base(c, o, (int)kk, &m.f);
        m.f.kind = AUDIT_MAGNITUDE;
        m.f.test = AUDIT_TEST_WELCH_T;
        m.f.n = (size_t)no;
        m.f.p_value = excess > 0 ? audit_t_two_sided(excess / se, df) : 1.0;
        m.z0 = d / se;
        m.d = d;
        m.se = se;
        m.log_tol = log(c->p->tolerance);
        double tq = t_quantile95(df);
        m.f.effect = exp(d);
        m.f.ci_lo = exp(d - tq * se);
        m.f.ci_hi = exp(d + tq * se);
        m.f.observed = exp(slog / no);
        m.f.expected = m.f.observed / m.f.effect;
        if (push_cand(c, &m) != 0)
            return -1;
    }
    return 0;
}

static int agreement_test(struct ctx *c, size_t o)
{
    const struct op_info *op = &c->ops[o];
    double A = 0, E = 0, V = 0;
    double *q = c->scratch;
    size_t n = 0;
    for (size_t i = op->start; i < op->start + op->n; i++) {
        int b = c->pbest[i];
        if (b < 0 || !c->sup[i])
            continue;
        A += c->label[i] == b;
        double p = c->prob[i * c->K + (size_t)b];
        E += p;
        V += p * (1 - p);
        q[n++] = p / c->p->tolerance;
    }
    if (n == 0)
        return 0;
    struct cand a = {.type = T_AGREEMENT, .op = o, .cls = -1, .dir = -1};
    finding_base(c, o, -1, &a.f);
    a.f.kind = AUDIT_POLICY_DISAGREEMENT;
    a.f.n = n;
    a.f.observed = A / (double)n;
    a.f.expected = E / (double)n;
    a.f.effect = a.f.observed - a.f.expected;
    double half = Z95 * sqrt(V) / (double)n;
    a.f.ci_lo = a.f.effect - half;
    a.f.ci_hi = a.f.effect + half;
    a.f.p_value = A < E ? audit_pbinom_tail(q, n, A, false, &a.f.test) : 1.0;
    a.z0 = V > 0 ? (A - E) / sqrt(V) : 0;
    a.obs = A;
    for (size_t i = 0; i < n; i++) {
        a.e_low += q[i];
        a.v_low += q[i] * (1 - q[i]);
    }
    if (A >= E)
        a.f.test = AUDIT_TEST_POISSON_BINOMIAL;
    return push_cand(c, &a);
}

/*
 * Overdispersion.  A reference is a model: where it fits the team's
 * behaviour less well for the states one operator manages than for
 * another's, every operator's count scatters around its expectation more
 * than the binomial variance says, and with enough decisions that scatter
 * alone would be "significant".  So, for each family of tests (one class's
 * whole-window rates, one class's sizes, policy agreement), the team's
 * scatter is measured robustly across the audited operators,
 *
 *     phi = max(1, median_o(z_o^2) / 0.4549),
 *
 * z_o the plain z score of operator o's test and 0.4549 the median of a
 * chi-square with one degree of freedom, over the operators without a
 * significant rate or size test before this step (all operators when
 * fewer than AUDIT_PHI_MIN_OPS remain), so biased operators do not inflate
 * it.  With phi > 1 (and at least
 * AUDIT_PHI_MIN_OPS operators) the family's tests become z tests with the
 * variance multiplied by phi, still at the tolerance's edges:
 *
 *     rates:     z = max(O - 0.5 - E_up, E_low - O - 0.5) / sqrt(phi V),
 *                p = min(1, 2 P(Z >= z))
 *     sizes:     z = (|d| - ln tau) / (se sqrt(phi)),  p = min(1, 2 P(Z >= z))
 *     agreement: z = (E_low - A - 0.5) / sqrt(phi V_low),  p = P(Z >= z)
 *
 * (E_up, V_up: mean and variance of the count with p_r * tau; E_low,
 * V_low: with p_r / tau.)  A region test of class k uses the class's rate
 * phi for both of its parts, one-sided in the direction searched:
 *
 *     z = min(s (O_in - O pi') - 0.5) / sqrt(phi O pi' (1 - pi')),
 *             (s (O_in - E'_in) - 0.5) / sqrt(phi V'_in)),   p = P(Z >= z)
 */
#define AUDIT_PHI_MIN_OPS 4
#define CHI2_1_MEDIAN     0.454936423119572

static void flag(const struct ctx *c, bool *flagged);

static void apply_overdispersion(struct ctx *c)
{
    double *z2 = util_calloc(c->n_ops ? c->n_ops : 1, sizeof *z2);
    bool *raw = util_calloc(c->n_ops ? c->n_ops : 1, sizeof *raw);
    double phi_rate[GBM_MAX_CLASSES];
    if (!z2 || !raw) {
        free(z2);
        free(raw);
        return; /* out of memory: the uninflated tests stand */
    }
    flag(c, raw);
    for (size_t k = 0; k < GBM_MAX_CLASSES; k++)
        phi_rate[k] = 1.0;
    for (int type = T_GLOBAL; type <= T_AGREEMENT; type++) {
        if (type == T_REGION)
            continue;
        for (int k = -1; k < (int)c->K; k++) {
            /* The operators that already stand out are left out of the
             * estimate when enough others remain. */
            size_t m = 0;
            for (int pass = 0; pass < 2 && m < AUDIT_PHI_MIN_OPS; pass++) {
                m = 0;
                for (size_t i = 0; i < c->n_cands; i++) {
                    const struct cand *x = &c->cands[i];
                    if ((int)x->type == type && x->cls == k && isfinite(x->z0) &&
                        (pass == 1 || !raw[x->op]))
                        z2[m++] = x->z0 * x->z0;
                }
            }
            if (m < AUDIT_PHI_MIN_OPS)
                continue;
            qsort(z2, m, sizeof *z2, dbl_cmp);
            double med = m % 2 ? z2[m / 2] : 0.5 * (z2[m / 2 - 1] + z2[m / 2]);
            double phi = med / CHI2_1_MEDIAN;
            if (!(phi > 1))
                continue;
            if (type == T_GLOBAL && k >= 0)
                phi_rate[k] = phi;
            for (size_t i = 0; i < c->n_cands; i++) {
                struct cand *x = &c->cands[i];
                if ((int)x->type != type || x->cls != k)
                    continue;
                double p = 1.0;
                if (type == T_GLOBAL) {
                    double zu = x->v_up > 0 ? (x->obs - 0.5 - x->e_up) / sqrt(phi * x->v_up) : 0;
                    double zl = x->v_low > 0 ? (x->e_low - x->obs - 0.5) / sqrt(phi * x->v_low) : 0;
                    double z = zu > zl ? zu : zl;
                    p = z > 0 ? 2 * audit_norm_upper(z) : 1.0;
                } else if (type == T_MAGNITUDE) {
                    double z = (fabs(x->d) - x->log_tol) / (x->se * sqrt(phi));
                    p = z > 0 ? 2 * audit_norm_upper(z) : 1.0;
                } else {
                    double z = x->v_low > 0 ? (x->e_low - x->obs - 0.5) / sqrt(phi * x->v_low) : 0;
                    p = z > 0 ? audit_norm_upper(z) : 1.0;
                }
                /* The inflation is a correction toward caution: it never
                 * makes a p-value smaller than the uninflated test's (for
                 * a small count the normal tail is thinner than the exact
                 * one). */
                x->f.overdispersion = phi;
                if (p > x->f.p_value) {
                    x->f.p_value = p > 1 ? 1 : p;
                    x->f.test = AUDIT_TEST_NORMAL_OVERDISPERSED;
                }
                if (type == T_MAGNITUDE) {
                    double h = Z95 * x->se * sqrt(phi);
                    x->f.ci_lo = exp(x->d - h);
                    x->f.ci_hi = exp(x->d + h);
                }
            }
        }
    }
    /* Regions: the class's rate overdispersion inflates both halves of the
     * intersection-union test (z tests in the direction searched). */
    for (size_t i = 0; i < c->n_cands; i++) {
        struct cand *x = &c->cands[i];
        if (x->type != T_REGION || x->cls < 0 || !(phi_rate[x->cls] > 1) || x->r_tot < 1)
            continue;
        double phi = phi_rate[x->cls], sgn = x->dir > 0 ? 1 : -1;
        double v1 = phi * x->r_tot * x->r_pi * (1 - x->r_pi), v2 = phi * x->r_vin;
        double z1 = v1 > 0 ? (sgn * (x->obs - x->r_tot * x->r_pi) - 0.5) / sqrt(v1) : 0;
        double z2v = v2 > 0 ? (sgn * (x->obs - x->r_ein) - 0.5) / sqrt(v2) : 0;
        double z = z1 < z2v ? z1 : z2v;
        double p = z > 0 ? audit_norm_upper(z) : 1.0;
        x->f.overdispersion = phi;
        if (p > x->f.p_value) {
            x->f.p_value = p;
            x->f.test = AUDIT_TEST_NORMAL_OVERDISPERSED;
        }
    }
    free(z2);
    free(raw);
}

/*
 * Benjamini-Hochberg over the tests of the operators asked for (the run's
 * family; the others' tests only inform the screen and the overdispersion,
 * and get q = 1) into q_value.  p is scratch room
 * for n_cands values.
 */
static void correct(struct ctx *c, double *p)
{
    size_t m = 0;
    for (size_t i = 0; i < c->n_cands; i++) {
        if (c->ops[c->cands[i].op].asked)
            p[m++] = c->cands[i].f.p_value;
    }
    audit_bh(p, m, p);
    m = 0;
    for (size_t i = 0; i < c->n_cands; i++) {
        struct cand *x = &c->cands[i];
        x->f.q_value = c->ops[x->op].asked ? p[m++] : 1.0;
    }
}

static int run_pass(struct ctx *c, const bool *flagged, char *err, size_t errlen)
{
    c->n_cands = 0;
    if (fit_and_score(c, flagged, err, errlen) != 0)
        return -1;
    for (size_t o = 0; o < c->n_ops; o++) {
        if (!c->ops[o].audited || (int64_t)c->ops[o].supported < c->p->min_support)
            continue;
        struct op_codes oc;
        int rc = codes_build(c, o, &oc);
        if (rc == 0)
            rc = rate_tests(c, o, &oc, flagged);
        codes_free(&oc, c->F);
        if (rc == 0)
            rc = magnitude_tests(c, o, flagged);
        if (rc == 0 && c->pprob)
            rc = agreement_test(c, o);
        if (rc != 0) {
            util_fmt(err, errlen, "out of memory");
            return -1;
        }
    }
    double *p = util_calloc(c->n_cands ? c->n_cands : 1, sizeof *p);
    if (!p) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    apply_overdispersion(c);
    correct(c, p);
    free(p);
    return 0;
}

static bool significant(const struct ctx *c, const struct cand *x)
{
    return x->f.q_value <= c->p->fdr_q && x->f.n >= (size_t)c->p->min_support;
}

/*
 * Operators to leave out of the next pass's references.  A biased operator
 * drags every other operator's reference: one who never raises bids makes
 * all the others look like raising bids too often.  So the screen is
 * recentred on the typical operator: for each class's rates (and sizes),
 * m is the median over the audited operators of r_o = ln((O + 0.5) /
 * (E + 0.5)) (of d_o for sizes), and o is screened out when
 * |r_o - m| > ln tolerance and |z| >= FLAG_Z, with z = (O - E e^m) /
 * sqrt(E e^m) (for sizes (d_o - m) / se_o).  (Region tests do not screen:
 * they are noisier, and a regional bias strong enough to move the
 * references shows in the operator's whole-window rate as well.)  At least
 * two operators always stay (those with the weakest
 * evidence).  Screening an unbiased operator out costs the
 * references data, not validity: the findings come from the tests of the
 * last pass.
 */
#define FLAG_Z 3.0

static void flag(const struct ctx *c, bool *flagged)
{
    double *score = util_calloc(c->n_ops ? c->n_ops : 1, sizeof *score);
    double *r = util_calloc(c->n_ops ? c->n_ops : 1, sizeof *r);
    memset(flagged, 0, c->n_ops * sizeof *flagged);
    if (!score || !r) {
        free(score);
        free(r);
        return; /* out of memory: nobody is screened out */
    }
    double ltol = log(c->p->tolerance);
    for (int type = T_GLOBAL; type <= T_MAGNITUDE; type++) {
        if (type == T_REGION)
            continue;
        for (int k = 0; k < (int)c->K; k++) {
            size_t m = 0;
            for (size_t i = 0; i < c->n_cands; i++) {
                const struct cand *x = &c->cands[i];
                if ((int)x->type != type || x->cls != k)
                    continue;
                r[m++] =
                    type == T_GLOBAL ? log((x->f.observed + 0.5) / (x->f.expected + 0.5)) : x->d;
            }
            if (m == 0)
                continue;
            qsort(r, m, sizeof *r, dbl_cmp);
            double med = m % 2 ? r[m / 2] : 0.5 * (r[m / 2 - 1] + r[m / 2]);
            for (size_t i = 0; i < c->n_cands; i++) {
                const struct cand *x = &c->cands[i];
                if ((int)x->type != type || x->cls != k || x->f.n < (size_t)c->p->min_support)
                    continue;
                double ro, z;
                if (type == T_GLOBAL) {
                    ro = log((x->f.observed + 0.5) / (x->f.expected + 0.5));
                    double e = x->f.expected * exp(med);
                    z = e > 0 ? (x->f.observed - e) / sqrt(e) : 0;
                } else {
                    ro = x->d;
                    z = x->se > 0 ? (x->d - med) / x->se : 0;
                }
                if (fabs(ro - med) > ltol && fabs(z) >= FLAG_Z) {
                    flagged[x->op] = true;
                    if (fabs(z) > score[x->op])
                        score[x->op] = fabs(z);
                }
            }
        }
    }
    size_t n = 0;
    for (size_t o = 0; o < c->n_ops; o++)
        n += flagged[o];
    while (n + 2 > c->n_ops) {
        size_t weakest = 0;
        double w = HUGE_VAL;
        for (size_t o = 0; o < c->n_ops; o++) {
            if (flagged[o] && score[o] < w) {
                w = score[o];
                weakest = o;
            }
        }
        flagged[weakest] = false;
        n--;
    }
    free(score);
    free(r);
}

/* ---- findings -------------------------------------------------------------- */

static const char *verb(const char *cls)
{
    static const struct {
        const char *cls, *verb;
    } v[] = {
        {"bid_up", "raises bids"},
        {"bid_down", "lowers bids"},
        {"budget_up", "raises budgets"},
        {"budget_down", "cuts budgets"},
        {"creative_pause", "pauses creatives"},
        {"creative_resume", "resumes creatives"},
        {"hold", "holds"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (strcmp(v[i].cls, cls) == 0)
            return v[i].verb;
    }
    return NULL;
}

static const char *size_noun(const char *cls)
{
    if (strcmp(cls, "bid_up") == 0)
        return "bid raises";
    if (strcmp(cls, "bid_down") == 0)
        return "bid cuts";
    if (strcmp(cls, "budget_up") == 0)
        return "budget raises";
    if (strcmp(cls, "budget_down") == 0)
        return "budget cuts";
    return NULL;
}

static void fmt_q(double q, char *out, size_t len)
{
    if (q < 0.001)
        util_fmt(out, len, "q < 0.001");
    else
        util_fmt(out, len, "q = %.2g", q);
}

static void fmt_count(double v, char *out, size_t len)
{
    if (fabs(v - round(v)) < 1e-9)
        util_fmt(out, len, "%.0f", v);
    else
        util_fmt(out, len, "%.1f", v);
}

static void summarize(const struct ctx *c, struct audit_finding *f)
{
    char region[2 * (2 * AUDIT_NAME_MAX + 48)], where[sizeof region + 8] = "", q[32], ob[32],
                                                                      act[160];
    audit_region_text(&f->region, region, sizeof region);
    /* A region finding's counts are those of the half it was tested on. */
    const char *half = region[0] ? " in the half of the decisions kept for the test" : "";
    if (region[0])
        util_fmt(where, sizeof where, " when %s", region);
    fmt_q(f->q_value, q, sizeof q);
    fmt_count(f->observed, ob, sizeof ob);
    const char *cls = f->action >= 0 ? c->class_names[f->action] : "";
    const char *vb = verb(cls);
    if (vb)
        util_fmt(act, sizeof act, "%s", vb);
    else
        util_fmt(act, sizeof act, "takes '%s'", cls);
    const char *who = f->operator_id;
    switch (f->kind) {
    case AUDIT_OVER_ACTING:
    case AUDIT_UNDER_ACTING:
        util_fmt(f->summary, sizeof f->summary,
                 "%s %s %.2fx as often as the team would in the same states%s: %s observed, %.1f "
                 "expected%s, %s",
                 who, act, f->effect, where, ob, f->expected, half, q);
        break;
    case AUDIT_BLIND_SPOT:
        util_fmt(f->summary, sizeof f->summary,
                 "%s %s %s%s, where the team would: %s observed, %.1f expected%s, %s", who,
                 f->observed < 0.5 ? "never" : "almost never", act, where, ob, f->expected, half,
                 q);
        break;
    case AUDIT_MAGNITUDE: {
        const char *noun = size_noun(cls);
        util_fmt(f->summary, sizeof f->summary,
                 "%s's %s%s%s are %.2fx the size the team would choose in the same states "
                 "(95%% interval %.2f to %.2f): %zu decisions, %s",
                 who, noun ? noun : "sizes of ", noun ? "" : cls, where, f->effect, f->ci_lo,
                 f->ci_hi, f->n, q);
        break;
    }
    case AUDIT_POLICY_DISAGREEMENT:
        util_fmt(f->summary, sizeof f->summary,
                 "the policy agrees with %s's decisions %.0f%% of the time, against %.0f%% for "
                 "the team in the same states: %zu decisions, %s",
                 who, 100 * f->observed, 100 * f->expected, f->n, q);
        break;
    case AUDIT_KIND_COUNT:
        break;
    }
}

static enum audit_severity severity_of(const struct audit_finding *f)
{
    double r = f->effect;
    if (f->kind == AUDIT_POLICY_DISAGREEMENT)
        r = f->observed > 0 ? f->expected / f->observed : HUGE_VAL;
    else if (r > 0 && r < 1)
        r = 1 / r;
    else if (!(r > 0))
        r = HUGE_VAL;
    if (f->kind == AUDIT_BLIND_SPOT)
        return f->q_value < 0.001 ? AUDIT_SEVERITY_HIGH : AUDIT_SEVERITY_MEDIUM;
    double medium = f->kind == AUDIT_POLICY_DISAGREEMENT ? 1.25 : 1.5;
    if (f->q_value < 0.001 && r >= 2)
        return AUDIT_SEVERITY_HIGH;
    if (f->q_value < 0.01 && r >= medium)
        return AUDIT_SEVERITY_MEDIUM;
    return AUDIT_SEVERITY_LOW;
}

static enum audit_kind rate_kind(const struct ctx *c, double o, double e, double material_e)
{
    if (e > 0 && o <= c->p->blind_spot_ratio * e && material_e >= c->p->blind_spot_min_expected)
        return AUDIT_BLIND_SPOT;
    return o >= e ? AUDIT_OVER_ACTING : AUDIT_UNDER_ACTING;
}

static int collect_findings(struct ctx *c, struct audit_result *res)
{
    res->findings = util_calloc(c->n_cands ? c->n_cands : 1, sizeof *res->findings);
    if (!res->findings)
        return -1;
    for (size_t i = 0; i < c->n_cands; i++) {
        struct cand *x = &c->cands[i];
        if (!significant(c, x))
            continue;
        if (x->type == T_GLOBAL) {
            /* A significant region of the same operator and class explains
             * it unless the deviation also holds outside the region. */
            bool replaced = false;
            for (size_t j = 0; j < c->n_cands; j++) {
                const struct cand *y = &c->cands[j];
                if (y->type == T_REGION && y->op == x->op && y->cls == x->cls &&
                    significant(c, y) && !(y->p_outside <= c->p->fdr_q))
                    replaced = true;
            }
            if (replaced)
                continue;
            x->f.kind = rate_kind(c, x->f.observed, x->f.expected, x->f.expected);
        } else if (x->type == T_REGION) {
            x->f.kind = rate_kind(c, x->f.observed, x->f.expected, x->full_in_expected);
            if ((x->dir > 0) != (x->f.kind == AUDIT_OVER_ACTING) && x->f.kind != AUDIT_BLIND_SPOT)
                x->f.kind = x->dir > 0 ? AUDIT_OVER_ACTING : AUDIT_UNDER_ACTING;
        }
        x->f.severity = severity_of(&x->f);
        summarize(c, &x->f);
        res->findings[res->n_findings++] = x->f;
    }
    return 0;
}

static int fill_operators(struct ctx *c, const bool *flagged, struct audit_result *res)
{
    res->operators = util_calloc(c->n_ops, sizeof *res->operators);
    if (!res->operators)
        return -1;
    res->n_operators = c->n_ops;
    for (size_t o = 0; o < c->n_ops; o++) {
        const struct op_info *op = &c->ops[o];
        struct audit_operator *ao = &res->operators[o];
        util_fmt(ao->operator_id, sizeof ao->operator_id, "%s", op->name);
        ao->decisions = op->n;
        ao->audited = op->asked && op->audited && (int64_t)op->supported >= c->p->min_support;
        ao->outside_support = op->n - op->supported;
        ao->in_reference = !flagged[o];
        ao->policy_agreement = NAN;
        ao->acceptance_rate = NAN;
        if (!(ao->cells = util_calloc(c->K, sizeof *ao->cells)))
            return -1;
        for (size_t k = 0; k < c->K; k++)
            ao->cells[k].expected_policy = c->pprob ? 0 : NAN;
        size_t *pairs = NULL;
        if (c->pprob && !(pairs = util_calloc(c->K * c->K, sizeof *pairs)))
            return -1;
        size_t agree = 0, scored = 0;
        for (size_t i = op->start; i < op->start + op->n; i++) {
            int y = c->label[i];
            ao->actions += y != c->hold;
            if (!c->sup[i])
                continue;
            for (size_t k = 0; k < c->K; k++) {
                double p = c->prob[i * c->K + k];
                ao->cells[k].expected += p;
                ao->cells[k].variance += p * (1 - p);
                if (c->pprob)
                    ao->cells[k].expected_policy += c->pprob[i * c->K + k];
            }
            ao->cells[y].observed += 1;
            if (pairs && c->pbest[i] >= 0) {
                scored++;
                if (c->pbest[i] == y)
                    agree++;
                else
                    pairs[(size_t)y * c->K + (size_t)c->pbest[i]]++;
            }
        }
        if (pairs && scored) {
            ao->policy_agreement = (double)agree / (double)scored;
            for (size_t t = 0; t < AUDIT_MAX_DISAGREE; t++) {
                size_t best = 0, at = 0;
                for (size_t j = 0; j < c->K * c->K; j++) {
                    if (pairs[j] > best) {
                        best = pairs[j];
                        at = j;
                    }
                }
                if (!best)
                    break;
                ao->disagreements[t].did = (int)(at / c->K);
                ao->disagreements[t].policy = (int)(at % c->K);
                ao->disagreements[t].n = best;
                ao->n_disagreements = t + 1;
                pairs[at] = 0;
            }
        }
        free(pairs);
    }
    return 0;
}

static void ctx_deinit(struct ctx *c)
{
    for (size_t f = 0; c->bins && f < c->F; f++)
        free(c->bins[f]);
    free(c->bins);
    ds_binned_free(c->binned);
    free(c->class_names);
    free(c->ops);
    free(c->perm);
    free(c->rhash);
    free(c->grp);
    free(c->label);
    free(c->logsize);
    free(c->half);
    free(c->prob);
    free(c->logpred);
    free(c->pprob);
    free(c->pbest);
    free(c->scratch);
    free(c->gather);
    free(c->inside);
    free(c->sup);
    free(c->sized);
    free(c->cands);
}

static int check_params(const struct audit_params *p, char *err, size_t errlen)
{
    if (!(p->fdr_q > 0 && p->fdr_q <= 0.5))
        return util_fmt(err, errlen, "fdr_q must be in (0, 0.5]"), -1;
    if (p->min_support < 1)
        return util_fmt(err, errlen, "min_support must be at least 1"), -1;
    if (!(p->tolerance >= 1 && p->tolerance <= 10))
        return util_fmt(err, errlen, "tolerance must be in [1, 10]"), -1;
    if (!(p->blind_spot_ratio >= 0 && p->blind_spot_ratio < 1))
        return util_fmt(err, errlen, "blind_spot_ratio must be in [0, 1)"), -1;
    if (!(p->blind_spot_min_expected >= 0))
        return util_fmt(err, errlen, "blind_spot_min_expected must be >= 0"), -1;
    if (p->rounds < 1 || p->rounds > GBM_MAX_ROUNDS || !(p->learning_rate > 0) ||
        p->learning_rate > 1)
        return util_fmt(err, errlen, "bad rounds or learning rate"), -1;
    if (p->max_bins < 2 || p->max_bins > GBM_MAX_BINS)
        return util_fmt(err, errlen, "max_bins must be in 2..255"), -1;
    if (p->reference_rows < 100)
        return util_fmt(err, errlen, "reference_rows must be at least 100"), -1;
    if (p->threads > GBM_MAX_THREADS)
        return util_fmt(err, errlen, "too many threads"), -1;
    return 0;
}

int audit_check(const struct ds *ds, const struct audit_params *p, char *err, size_t errlen)
{
    if (check_params(p, err, errlen) != 0)
        return -1;
    if (ds_n_rows(ds) == 0) {
        util_fmt(err, errlen, "no decisions in the window");
        return -1;
    }
    bool hold = false;
    for (size_t k = 0; k < ds_n_classes(ds); k++)
        hold |= strcmp(ds_class_name(ds, k), "hold") == 0;
    if (!hold) {
        util_fmt(err, errlen,
                 "the decisions have no 'hold' class: the audit compares actions with the "
                 "states where nobody acted");
        return -1;
    }
    size_t G = ds_n_groups(ds), n_ops = 0, audited = 0;
    size_t *count = util_calloc(G ? G : 1, sizeof *count);
    if (!count) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    for (size_t r = 0; r < ds_n_rows(ds); r++) {
        int32_t g = ds_row_group_index(ds, r);
        if (g >= 0)
            count[g]++;
    }
    const char *first = NULL;
    for (size_t g = 0; g < G; g++) {
        if (!count[g])
            continue;
        n_ops++;
        first = first ? first : ds_group_name(ds, g);
        bool chosen = p->n_only == 0;
        for (size_t j = 0; j < p->n_only; j++)
            chosen |= strcmp(ds_group_name(ds, g), p->only[j]) == 0;
        audited += chosen && (int64_t)count[g] >= p->min_support;
    }
    int rc = -1;
    if (n_ops == 0) {
        util_fmt(err, errlen, "no decisions with an operator in the window");
        goto out;
    }
    if (n_ops < 2) {
        util_fmt(err, errlen,
                 "only one operator (%s) has decisions: the audit compares each operator with "
                 "the rest of the team, so it needs at least two",
                 first);
        goto out;
    }
    for (size_t j = 0; j < p->n_only; j++) {
        size_t g = 0;
        while (g < G && !(count[g] && strcmp(ds_group_name(ds, g), p->only[j]) == 0))
            g++;
        if (g == G) {
            util_fmt(err, errlen, "operator %s has no decisions in the window", p->only[j]);
            goto out;
        }
    }
    if (audited == 0) {
        char list[512] = "";
        for (size_t g = 0; g < G && strlen(list) < 400; g++) {
            if (!count[g])
                continue;
            size_t l = strlen(list);
            util_fmt(list + l, sizeof list - l, "%s%s has %zu", l ? ", " : "", ds_group_name(ds, g),
                     count[g]);
        }
        util_fmt(err, errlen, "no operator has at least min_support (%lld) decisions: %s",
                 (long long)p->min_support, list);
        goto out;
    }
    rc = 0;
out:
    free(count);
    return rc;
}

int audit_run(const struct ds *ds, const struct gbm_model *policy, const struct audit_params *p,
              struct audit_result **out, char *err, size_t errlen)
{
    struct ctx c = {.ds = ds, .p = p, .policy = policy};
    struct audit_result *res = NULL;
    bool *flagged = NULL, *next = NULL;
    int rc = -1;
    int64_t t0 = util_now_mono_us();
    *out = NULL;
    if (audit_check(ds, p, err, errlen) != 0)
        return -1;
    if (prepare(&c, err, errlen) != 0)
        goto out;
    if (policy && score_policy(&c, err, errlen) != 0)
        goto out;
    res = util_calloc(1, sizeof *res);
    flagged = util_calloc(c.n_ops, sizeof *flagged);
    next = util_calloc(c.n_ops, sizeof *next);
    if (!res || !flagged || !next) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    unsigned pass = 0;
    for (;;) {
        if (run_pass(&c, flagged, err, errlen) != 0)
            goto out;
        pass++;
        flag(&c, next);
        size_t kept = 0;
        for (size_t o = 0; o < c.n_ops; o++)
            kept += !next[o];
        if (pass >= AUDIT_MAX_PASSES || memcmp(next, flagged, c.n_ops * sizeof *next) == 0 ||
            kept < 2)
            break;
        memcpy(flagged, next, c.n_ops * sizeof *next);
    }
    res->params = *p;
    res->passes = pass;
    for (size_t i = 0; i < c.n_cands; i++)
        res->n_tests += c.ops[c.cands[i].op].asked;
    res->have_policy = policy != NULL;
    res->hold_class = c.hold;
    res->n_classes = c.K;
    if (!(res->classes = util_calloc(c.K, sizeof *res->classes)))
        goto oom;
    for (size_t k = 0; k < c.K; k++) {
        if (!(res->classes[k] = util_strdup(c.class_names[k])))
            goto oom;
    }
    res->from_us = res->to_us = INT64_MIN;
    for (size_t i = 0; i < c.n; i++) {
        if (c.grp[i] < 0)
            continue;
        res->rows++;
        int64_t ts = ds_row_ts(ds, c.perm[i]);
        if (res->from_us == INT64_MIN || ts < res->from_us)
            res->from_us = ts;
        if (res->to_us == INT64_MIN || ts > res->to_us)
            res->to_us = ts;
    }
    if (collect_findings(&c, res) != 0 || fill_operators(&c, flagged, res) != 0)
        goto oom;
    audit_result_sort(res);
    res->seconds = (double)(util_now_mono_us() - t0) / 1e6;
    *out = res;
    res = NULL;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    audit_result_free(res);
    free(flagged);
    free(next);
    ctx_deinit(&c);
    return rc;
}
