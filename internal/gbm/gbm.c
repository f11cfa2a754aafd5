/*
 * gbm: the model of gradient-boosted stumps, its compiled step functions,
 * prediction, explanation, the text dump, and split finding.  Training is in
 * gbm_fit.c, serialization in gbm_json.c.
 *
 * Formulas (XGBoost's, for multi:softprob with max_depth=1):
 *
 *   softmax      p_k = exp(m_k) / sum_j exp(m_j), margins m start at 0
 *   gradients    g_k = (p_k - [y = k]) w,  h_k = max(2 p_k (1 - p_k), 1e-16) w
 *   squared loss g = (pred - y) w, h = w, pred starting at the weighted mean
 *   leaf value   -G / (H + lambda) * eta over the rows of the leaf
 *   split gain   G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)
 *
 * A split needs H >= min_child_weight on both sides and a gain above
 * GBM_MIN_GAIN; otherwise the class's stump for the round is a single leaf
 * with the Newton step of all rows.  Numeric splits are thresholds between
 * bins; categorical splits are partitions of the bins: the bins with
 * training mass are sorted by their Newton leaf value -G/(H+lambda) and
 * every prefix of that order is tried as the left side, as is "missing
 * values against all levels" (with lambda = 0 and no min_child_weight the
 * best of these is the best of all partitions).  Missing values, and bins
 * without training mass, go to a learned default side: both sides are tried
 * and the better kept; when training had no missing values the default side
 * is the one with more training mass.  Ties go to the first candidate in
 * scan order (features in order, thresholds or prefixes ascending, missing
 * right before missing left).
 *
 * Compiled form.  A model is a sum of stumps, and the stumps on one feature
 * add up to a step function of that feature: for a numeric feature the
 * thresholds of all its stumps, merged and sorted, cut the line into steps
 * with one value per class each (plus a value for missing); for a
 * categorical one there is a value per bin.  The leaf stumps fold into the
 * base.  So margin = base + sum over features of the step value, and each
 * step value is exactly that feature's contribution.
 */
#include "gbm/gbm_impl.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* numeric_gains passes no vector across calls; its clones agree on the ABI. */
#pragma GCC diagnostic ignored "-Wpsabi"

void gbm_params_default(struct gbm_params *p)
{
    p->rounds = 100;
    p->learning_rate = 0.3;
    p->lambda = 1.0;
    p->min_child_weight = 1.0;
    p->early_stop = 0;
    p->threads = 1;
    p->seed = 0;
}

/* ---- split finding ------------------------------------------------------ */

double gbm_leaf_value(double g, double h, double lambda, double eta)
{
    double d = h + lambda;
    if (!(d > 0.0))
        return 0.0;
    return -g / d * eta;
}

static double score(double g, double h, double lambda)
{
    double d = h + lambda;
    if (!(d > 0.0))
        return 0.0;
    return g * g / d;
}

double gbm_split_gain(double g_l, double h_l, double g_r, double h_r, double lambda)
{
    return score(g_l, h_l, lambda) + score(g_r, h_r, lambda) - score(g_l + g_r, h_l + h_r, lambda);
}

static bool has_rows(const double *g, const double *h, const double *mass, unsigned b)
{
    if (mass)
        return mass[b] > 0.0;
    return h[b] > 0.0 || g[b] > 0.0 || g[b] < 0.0;
}

struct cat_item {
    double key;
    unsigned bin;
};

static int cat_item_cmp(const void *pa, const void *pb)
{
    const struct cat_item *a = pa, *b = pb;
    if (a->key < b->key)
        return -1;
    if (a->key > b->key)
        return 1;
    return a->bin < b->bin ? -1 : a->bin > b->bin;
}

static void bit_set(uint64_t *bits, unsigned b)
{
    bits[b / 64] |= (uint64_t)1 << (b % 64);
}

static bool bit_get(const uint64_t *bits, unsigned b)
{
    return (bits[b / 64] >> (b % 64)) & 1;
}

/* Records a candidate when it satisfies min_child_weight and beats the best
 * (parent = score(G, H)). */
static bool consider(struct gbm_split *best, double gl, double hl, double G, double H,
                     double parent, double lambda, double mcw, bool default_left)
{
    double gr = G - gl, hr = H - hl;
    if (hl < mcw || hr < mcw)
        return false;
    double gain = score(gl, hl, lambda) + score(gr, hr, lambda) - parent;
    if (best->found && !(gain > best->gain))
        return false;
    best->found = true;
    best->gain = gain;
    best->default_left = default_left;
    best->g_left = gl;
    best->h_left = hl;
    best->g_right = gr;
    best->h_right = hr;
    return true;
}

typedef double v4df __attribute__((vector_size(32)));
typedef long long v4di __attribute__((vector_size(32)));

/* Thresholds scanned at once: enough for GBM_MAX_BINS - 1, a multiple of 4. */
#define NUM_SCAN_MAX 256

/*
 * The gain of every numeric threshold t (bins 0..t left) with missing
 * values right (gain[0]) and left (gain[1]), -inf where min_child_weight
 * rules it out; four thresholds per vector.  The same arithmetic as
 * consider(), element by element, in either clone.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
numeric_gains(unsigned n_bins, const double *g, const double *h, double G, double H, double parent,
              double lambda, double mcw, unsigned n_dirs, double (*gain)[NUM_SCAN_MAX])
{
    double pg[NUM_SCAN_MAX], ph[NUM_SCAN_MAX];
    double sg = 0.0, sh = 0.0;
    unsigned n = n_bins - 1, nv = (n + 3) / 4;
    for (unsigned t = 0; t < nv * 4; t++) {
        if (t < n) {
            sg += g[t];
            sh += h[t];
        }
        pg[t] = sg;
        ph[t] = sh;
    }
    const v4df zero = {0.0, 0.0, 0.0, 0.0}, ninf = zero - HUGE_VAL;
    for (unsigned d = 0; d < n_dirs; d++) {
        double ga = d ? g[n_bins] : 0.0, ha = d ? h[n_bins] : 0.0;
        for (unsigned i = 0; i < nv; i++) {
            v4df gl, hl;
            memcpy(&gl, pg + (size_t)4 * i, sizeof gl);
            memcpy(&hl, ph + (size_t)4 * i, sizeof hl);
            gl += ga;
            hl += ha;
            v4df gr = G - gl, hr = H - hl;
            v4df dl = hl + lambda, dr = hr + lambda;
            v4di okl = dl > zero, okr = dr > zero;
            v4df sl = gl * gl / dl, sr = gr * gr / dr;
            sl = (v4df)((v4di)sl & okl);
            sr = (v4df)((v4di)sr & okr);
            v4df v = sl + sr - parent;
            v4di ok = (hl >= mcw) & (hr >= mcw);
            v = (v4df)(((v4di)v & ok) | ((v4di)ninf & ~ok));
            memcpy(gain[d] + (size_t)4 * i, &v, sizeof v);
        }
    }
}

void gbm_split_find(enum gbm_kind kind, unsigned n_bins, const double *g, const double *h,
                    const double *mass, double lambda, double min_child_weight,
                    struct gbm_split *out)
{
    memset(out, 0, sizeof *out);
    if (n_bins < 2 || n_bins > GBM_MAX_BINS)
        return;
    double G = 0.0, H = 0.0;
    for (unsigned b = 0; b <= n_bins; b++) {
        G += g[b];
        H += h[b];
    }
    double parent = score(G, H, lambda);
    bool miss = has_rows(g, h, mass, n_bins);
    unsigned n_dirs = miss ? 2 : 1; /* d = 0: missing right, d = 1: missing left */
    double gm = g[n_bins], hm = h[n_bins];

    if (kind == GBM_NUMERIC) {
        double gain[2][NUM_SCAN_MAX];
        numeric_gains(n_bins, g, h, G, H, parent, lambda, min_child_weight, n_dirs, gain);
        double best = -HUGE_VAL;
        for (unsigned t = 0; t + 1 < n_bins; t++) {
            for (unsigned d = 0; d < n_dirs; d++) {
                if (gain[d][t] > best) {
                    best = gain[d][t];
                    out->threshold_bin = t;
                    out->default_left = d == 1;
                }
            }
        }
        if (best > -HUGE_VAL) {
            /* The sums of the chosen split, as consider() would record them. */
            double gl = 0.0, hl = 0.0;
            for (unsigned b = 0; b <= out->threshold_bin; b++) {
                gl += g[b];
                hl += h[b];
            }
            if (out->default_left) {
                gl += gm;
                hl += hm;
            }
            out->found = true;
            out->gain = best;
            out->g_left = gl;
            out->h_left = hl;
            out->g_right = G - gl;
            out->h_right = H - hl;
            memset(out->left_bins, 0, sizeof out->left_bins);
            for (unsigned b = 0; b <= out->threshold_bin; b++)
                bit_set(out->left_bins, b);
        }
    } else {
        struct cat_item items[GBM_MAX_BINS];
        unsigned m = 0;
        double gd = G, hd = H; /* missing and bins without rows: the default side */
        for (unsigned b = 0; b < n_bins; b++) {
            if (!has_rows(g, h, mass, b))
                continue;
            double den = h[b] + lambda;
            double key;
            if (den > 0.0)
                key = -g[b] / den;
            else
                key = g[b] > 0.0 ? -HUGE_VAL : g[b] < 0.0 ? HUGE_VAL : 0.0;
            items[m].key = key;
            items[m].bin = b;
            m++;
            gd -= g[b];
            hd -= h[b];
        }
        if (m < 1 || (m < 2 && !miss))
            return;
        qsort(items, m, sizeof items[0], cat_item_cmp);
        unsigned best_j = 0;
        double gl = 0.0, hl = 0.0;
        /* Missing values alone against every level (missingness as the
         * signal), then the prefixes. */
        if (miss)
            consider(out, gd, hd, G, H, parent, lambda, min_child_weight, true);
        for (unsigned j = 1; j < m; j++) {
            gl += g[items[j - 1].bin];
            hl += h[items[j - 1].bin];
            for (unsigned d = 0; d < n_dirs; d++) {
                if (consider(out, gl + (d ? gd : 0.0), hl + (d ? hd : 0.0), G, H, parent, lambda,
                             min_child_weight, d == 1))
                    best_j = j;
            }
        }
        if (out->found) {
            for (unsigned j = 0; j < best_j; j++)
                bit_set(out->left_bins, items[j].bin);
        }
    }
    if (!out->found || miss)
        goto sides;
    /* No missing values in training: default to the side with more mass. */
    {
        double ml = 0.0, mr = 0.0;
        for (unsigned b = 0; b < n_bins; b++) {
            double w = mass ? mass[b] : h[b];
            if (bit_get(out->left_bins, b))
                ml += w;
            else
                mr += w;
        }
        out->default_left = !(mr > ml);
    }
sides:
    if (out->found && kind == GBM_CATEGORICAL && out->default_left) {
        /* Bins without training rows follow missing values. */
        for (unsigned b = 0; b < n_bins; b++) {
            if (!has_rows(g, h, mass, b))
                bit_set(out->left_bins, b);
        }
    }
}

/* ---- model lifecycle ---------------------------------------------------- */

struct gbm_model *gbm_model_alloc(size_t n_features, size_t n_classes)
{
    struct gbm_model *m = util_calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->F = n_features;
    m->K = n_classes;
    m->feat = util_calloc(n_features ? n_features : 1, sizeof *m->feat);
    m->classes = util_calloc(n_classes ? n_classes : 1, sizeof *m->classes);
    /* an array of pointers, one per class */
    m->mag = util_calloc(n_classes ? n_classes : 1,
                         sizeof *m->mag); /* NOLINT(bugprone-sizeof-expression) */
    m->cls.train_loss = m->cls.valid_loss = m->cls.valid_accuracy = NAN;
    if (!m->feat || !m->classes || !m->mag) {
        gbm_model_free(m);
        return NULL;
    }
    return m;
}

void gbm_feat_deinit(struct gbm_feat *f)
{
    free(f->name);
    free(f->cuts);
    if (f->levels) {
        for (size_t i = 0; i < f->n_levels; i++)
            free(f->levels[i]);
    }
    free(f->levels);
    free(f->level_bin);
    free(f->level_order);
    free(f->mass);
    memset(f, 0, sizeof *f);
}

static void steps_deinit(struct gbm_steps *s)
{
    free(s->thr);
    free(s->thr_classes);
    free(s->val);
    free(s->bin_val);
    free(s->miss);
    memset(s, 0, sizeof *s);
}

static void booster_uncompile(struct gbm_booster *b)
{
    if (b->steps) {
        for (size_t f = 0; f < b->n_steps; f++)
            steps_deinit(&b->steps[f]);
    }
    free(b->steps);
    b->steps = NULL;
    b->n_steps = 0;
    free(b->base);
    b->base = NULL;
}

void gbm_booster_deinit(struct gbm_booster *b)
{
    booster_uncompile(b);
    free(b->base_margin);
    free(b->stumps);
    memset(b, 0, sizeof *b);
}

void gbm_booster_free(struct gbm_booster *b)
{
    if (!b)
        return;
    gbm_booster_deinit(b);
    free(b);
}

void gbm_model_free(struct gbm_model *m)
{
    if (!m)
        return;
    gbm_booster_deinit(&m->cls);
    if (m->mag) {
        for (size_t k = 0; k < m->K; k++)
            gbm_booster_free(m->mag[k]);
    }
    if (m->feat) {
        for (size_t f = 0; f < m->F; f++)
            gbm_feat_deinit(&m->feat[f]);
    }
    if (m->classes) {
        for (size_t k = 0; k < m->K; k++)
            free(m->classes[k]);
    }
    free(m->classes);
    free(m->mag);
    free(m->feat);
    json_decref(m->meta);
    free(m);
}

struct level_ref {
    const char *name;
    size_t idx;
};

static int cmp_level_ref(const void *pa, const void *pb)
{
    const struct level_ref *a = pa, *b = pb;
    return strcmp(a->name, b->name);
}

int gbm_feat_index_levels(struct gbm_feat *f)
{
    size_t n = f->n_levels;
    struct level_ref *refs = util_calloc(n ? n : 1, sizeof *refs);
    size_t *order = util_calloc(n ? n : 1, sizeof *order);
    if (!refs || !order) {
        free(refs);
        free(order);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        refs[i].name = f->levels[i];
        refs[i].idx = i;
    }
    if (n > 1)
        qsort(refs, n, sizeof *refs, cmp_level_ref);
    for (size_t i = 0; i < n; i++)
        order[i] = refs[i].idx;
    free(refs);
    free(f->level_order);
    f->level_order = order;
    return 0;
}

int gbm_feat_level_bin(const struct gbm_feat *f, const char *name)
{
    size_t lo = 0, hi = f->n_levels;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->levels[f->level_order[mid]], name);
        if (c == 0)
            return f->level_bin[f->level_order[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int gbm_feat_copy(struct gbm_feat *dst, const struct gbm_feature *src, const double *mass)
{
    memset(dst, 0, sizeof *dst);
    dst->kind = src->kind;
    dst->n_bins = src->n_bins;
    dst->name = util_strdup(src->name);
    dst->mass = util_calloc(src->n_bins + 1, sizeof *dst->mass);
    if (!dst->name || !dst->mass)
        goto fail;
    if (mass)
        memcpy(dst->mass, mass, (src->n_bins + 1) * sizeof *mass);
    if (src->kind == GBM_NUMERIC) {
        dst->cuts = util_calloc(src->n_bins, sizeof *dst->cuts);
        if (!dst->cuts)
            goto fail;
        if (src->n_bins > 1)
            memcpy(dst->cuts, src->cuts, (src->n_bins - 1) * sizeof *dst->cuts);
    } else {
        size_t n = src->n_levels;
        dst->levels = util_calloc(n ? n : 1, sizeof *dst->levels);
        dst->level_bin = util_calloc(n ? n : 1, 1);
        if (!dst->levels || !dst->level_bin)
            goto fail;
        dst->n_levels = n;
        for (size_t i = 0; i < n; i++) {
            dst->levels[i] = util_strdup(src->levels[i]);
            if (!dst->levels[i])
                goto fail;
            dst->level_bin[i] = src->level_bin[i];
        }
        if (gbm_feat_index_levels(dst) < 0)
            goto fail;
    }
    return 0;
fail:
    gbm_feat_deinit(dst);
    return -1;
}

/* ---- compiling ---------------------------------------------------------- */

static int cmp_double(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b;
}

/* Index of the first element > v (the number of elements <= v). */
/*
 * The number of a[0..n) that are <= v (a ascending).  Branch-free: the
 * answer stays in [base - a, base - a + len] while len halves, and the
 * compiler turns the step into a conditional move, so scoring does not pay
 * a mispredicted branch per comparison.
 */
static size_t upper_bound(const double *a, size_t n, double v)
{
    if (n == 0)
        return 0;
    const double *base = a;
    size_t len = n;
    while (len > 1) {
        size_t half = len / 2;
        base += base[half] <= v ? half : 0;
        len -= half;
    }
    return (size_t)(base - a) + (*base <= v);
}

static int compile_feature(const struct gbm_model *m, const struct gbm_booster *b, size_t f,
                           struct gbm_steps *s)
{
    const struct gbm_feat *ft = &m->feat[f];
    size_t K = b->K, total = (size_t)b->n_rounds * K, n = 0;
    for (size_t i = 0; i < total; i++) {
        if (b->stumps[i].feature == (int32_t)f)
            n++;
    }
    if (n == 0)
        return 0;
    s->used = true;
    s->bin_val = util_calloc((ft->n_bins + 1) * K, sizeof *s->bin_val);
    s->miss = util_calloc(K, sizeof *s->miss);
    if (!s->bin_val || !s->miss)
        return -1;
    if (ft->kind == GBM_NUMERIC) {
        s->thr = util_calloc(n, sizeof *s->thr);
        s->thr_classes = util_calloc(n, sizeof *s->thr_classes);
        if (!s->thr || !s->thr_classes)
            return -1;
        size_t j = 0;
        for (size_t i = 0; i < total; i++) {
            if (b->stumps[i].feature == (int32_t)f)
                s->thr[j++] = b->stumps[i].threshold;
        }
        qsort(s->thr, n, sizeof *s->thr, cmp_double);
        size_t u = 0;
        for (size_t i = 0; i < n; i++) {
            if (u == 0 || s->thr[u - 1] < s->thr[i])
                s->thr[u++] = s->thr[i];
        }
        s->n_thr = u;
        s->val = util_calloc((u + 1) * K, sizeof *s->val);
        if (!s->val)
            return -1;
    }
    for (size_t i = 0; i < total; i++) {
        const struct gbm_stump *st = &b->stumps[i];
        if (st->feature != (int32_t)f)
            continue;
        size_t k = i % K;
        double lv = st->left_value, rv = st->right_value;
        for (unsigned bin = 0; bin < ft->n_bins; bin++) {
            bool left = ft->kind == GBM_NUMERIC ? bin <= st->bin : bit_get(st->left, bin);
            s->bin_val[bin * K + k] += left ? lv : rv;
        }
        s->bin_val[ft->n_bins * K + k] += st->default_left ? lv : rv;
        s->miss[k] += st->default_left ? lv : rv;
        if (ft->kind == GBM_NUMERIC) {
            /* Step j holds the values with j thresholds <= v: left iff v < thr. */
            size_t t = upper_bound(s->thr, s->n_thr, st->threshold) - 1;
            s->thr_classes[t] |= (uint64_t)1 << k;
            for (size_t step = 0; step <= s->n_thr; step++)
                s->val[step * K + k] += step <= t ? lv : rv;
        }
    }
    return 0;
}

int gbm_booster_compile(const struct gbm_model *m, struct gbm_booster *b)
{
    booster_uncompile(b);
    b->base = util_calloc(b->K, sizeof *b->base);
    b->steps = util_calloc(m->F ? m->F : 1, sizeof *b->steps);
    if (!b->base || !b->steps)
        goto fail;
    b->n_steps = m->F;
    for (size_t k = 0; k < b->K; k++)
        b->base[k] = b->base_margin[k];
    for (size_t i = 0; i < (size_t)b->n_rounds * b->K; i++) {
        if (b->stumps[i].feature < 0)
            b->base[i % b->K] += b->stumps[i].left_value;
    }
    for (size_t f = 0; f < m->F; f++) {
        if (compile_feature(m, b, f, &b->steps[f]) < 0)
            goto fail;
    }
    return 0;
fail:
    booster_uncompile(b);
    return -1;
}

/* ---- getters ------------------------------------------------------------ */

size_t gbm_model_n_classes(const struct gbm_model *m)
{
    return m->K;
}

const char *gbm_model_class_name(const struct gbm_model *m, size_t i)
{
    return i < m->K ? m->classes[i] : NULL;
}

int gbm_model_class_index(const struct gbm_model *m, const char *name)
{
    for (size_t k = 0; name && k < m->K; k++) {
        if (strcmp(m->classes[k], name) == 0)
            return (int)k;
    }
    return -1;
}

size_t gbm_model_n_features(const struct gbm_model *m)
{
    return m->F;
}

const char *gbm_model_feature_name(const struct gbm_model *m, size_t f)
{
    return f < m->F ? m->feat[f].name : NULL;
}

enum gbm_kind gbm_model_feature_kind(const struct gbm_model *m, size_t f)
{
    return f < m->F ? m->feat[f].kind : GBM_NUMERIC;
}

int gbm_feature_index(const struct gbm_model *m, const char *name)
{
    for (size_t f = 0; name && f < m->F; f++) {
        if (strcmp(m->feat[f].name, name) == 0)
            return (int)f;
    }
    return -1;
}

unsigned gbm_model_rounds(const struct gbm_model *m)
{
    return m->cls.n_rounds;
}

unsigned gbm_model_rounds_trained(const struct gbm_model *m)
{
    return m->cls.rounds_trained;
}

const struct gbm_params *gbm_model_params(const struct gbm_model *m)
{
    return &m->cls.params;
}

double gbm_model_train_logloss(const struct gbm_model *m)
{
    return m->cls.train_loss;
}

double gbm_model_valid_logloss(const struct gbm_model *m)
{
    return m->cls.valid_loss;
}

double gbm_model_valid_accuracy(const struct gbm_model *m)
{
    return m->cls.valid_accuracy;
}

void gbm_model_importance(const struct gbm_model *m, double *gain)
{
    for (size_t f = 0; f < m->F; f++)
        gain[f] = 0.0;
    for (size_t i = 0; i < (size_t)m->cls.n_rounds * m->cls.K; i++) {
        const struct gbm_stump *s = &m->cls.stumps[i];
        if (s->feature >= 0)
            gain[s->feature] += s->gain;
    }
}

const double *gbm_model_feature_mass(const struct gbm_model *m, size_t f, size_t *n)
{
    if (f >= m->F) {
        *n = 0;
        return NULL;
    }
    *n = m->feat[f].n_bins + 1;
    return m->feat[f].mass;
}

const double *gbm_model_feature_cuts(const struct gbm_model *m, size_t f, size_t *n)
{
    if (f >= m->F || m->feat[f].kind != GBM_NUMERIC) {
        *n = 0;
        return NULL;
    }
    *n = m->feat[f].n_bins - 1;
    return m->feat[f].cuts;
}

size_t gbm_model_feature_n_levels(const struct gbm_model *m, size_t f)
{
    return f < m->F ? m->feat[f].n_levels : 0;
}

const char *gbm_model_feature_level(const struct gbm_model *m, size_t f, size_t i, unsigned *bin)
{
    if (f >= m->F || i >= m->feat[f].n_levels)
        return NULL;
    if (bin)
        *bin = m->feat[f].level_bin[i];
    return m->feat[f].levels[i];
}

int gbm_model_set_feature_range(struct gbm_model *m, size_t f, double min, double max)
{
    if (f >= m->F || m->feat[f].kind != GBM_NUMERIC || !isfinite(min) || !isfinite(max) ||
        min > max)
        return -1;
    m->feat[f].has_range = true;
    m->feat[f].min = min;
    m->feat[f].max = max;
    return 0;
}

int gbm_model_feature_range(const struct gbm_model *m, size_t f, double *min, double *max)
{
    if (f >= m->F || !m->feat[f].has_range)
        return -1;
    *min = m->feat[f].min;
    *max = m->feat[f].max;
    return 0;
}

int gbm_model_set_metadata(struct gbm_model *m, const struct json_t *meta)
{
    json_t *copy = NULL;
    if (meta) {
        if (!json_is_object(meta))
            return -1;
        copy = json_deep_copy(meta);
        if (!copy)
            return -1;
    }
    json_decref(m->meta);
    m->meta = copy;
    return 0;
}

const struct json_t *gbm_model_metadata(const struct gbm_model *m)
{
    return m->meta;
}

bool gbm_model_has_magnitude(const struct gbm_model *m, size_t class_idx)
{
    return class_idx < m->K && m->mag[class_idx] != NULL;
}

/* ---- prediction --------------------------------------------------------- */

unsigned gbm_model_feature_bin(const struct gbm_model *m, size_t f, const struct gbm_input *x)
{
    const struct gbm_feat *ft = &m->feat[f];
    if (ft->kind == GBM_NUMERIC) {
        if (x->missing || isnan(x->num))
            return GBM_MISSING_BIN;
        return (unsigned)upper_bound(ft->cuts, ft->n_bins - 1, x->num);
    }
    if (x->missing || !x->cat)
        return GBM_MISSING_BIN;
    int b = gbm_feat_level_bin(ft, x->cat);
    return b < 0 ? GBM_MISSING_BIN : (unsigned)b;
}

/*
 * The K values of feature f's step for x, and where x fell (for class c)
 * when st is not NULL.  NULL when no stump uses the feature.
 */
static const double *step_of(const struct gbm_model *m, const struct gbm_booster *b, size_t f,
                             const struct gbm_input *x, size_t c, struct gbm_step *st)
{
    const struct gbm_feat *ft = &m->feat[f];
    const struct gbm_steps *s = &b->steps[f];
    if (st) {
        st->missing = st->unseen = false;
        st->lo = -HUGE_VAL;
        st->hi = HUGE_VAL;
        st->bin = GBM_MISSING_BIN;
    }
    if (ft->kind == GBM_NUMERIC) {
        if (x->missing || isnan(x->num)) {
            if (st)
                st->missing = true;
            return s->used ? s->miss : NULL;
        }
        if (st)
            st->bin = (unsigned)upper_bound(ft->cuts, ft->n_bins - 1, x->num);
        if (!s->used)
            return NULL;
        size_t j = upper_bound(s->thr, s->n_thr, x->num);
        if (st) {
            uint64_t bit = (uint64_t)1 << c;
            for (size_t i = j; i > 0; i--) {
                if (s->thr_classes[i - 1] & bit) {
                    st->lo = s->thr[i - 1];
                    break;
                }
            }
            for (size_t i = j; i < s->n_thr; i++) {
                if (s->thr_classes[i] & bit) {
                    st->hi = s->thr[i];
                    break;
                }
            }
        }
        return s->val + j * b->K;
    }
    int bin = (x->missing || !x->cat) ? -1 : gbm_feat_level_bin(ft, x->cat);
    if (bin < 0) {
        if (st) {
            st->missing = true;
            st->unseen = !x->missing && x->cat;
        }
        return s->used ? s->miss : NULL;
    }
    if (st)
        st->bin = (unsigned)bin;
    return s->used ? s->bin_val + (size_t)bin * b->K : NULL;
}

static void booster_margin(const struct gbm_model *m, const struct gbm_booster *b,
                           const struct gbm_input *x, double *margin)
{
    for (size_t k = 0; k < b->K; k++)
        margin[k] = b->base[k];
    for (size_t f = 0; f < m->F; f++) {
        const double *v = step_of(m, b, f, &x[f], 0, NULL);
        if (!v)
            continue;
        for (size_t k = 0; k < b->K; k++)
            margin[k] += v[k];
    }
}

static void softmax(const double *margin, size_t K, double *prob)
{
    if (K == 0)
        return;
    double mx = margin[0], s = 0.0;
    for (size_t k = 1; k < K; k++)
        mx = margin[k] > mx ? margin[k] : mx;
    for (size_t k = 0; k < K; k++) {
        prob[k] = exp(margin[k] - mx);
        s += prob[k];
    }
    for (size_t k = 0; k < K; k++)
        prob[k] /= s;
}

void gbm_predict(const struct gbm_model *m, const struct gbm_input *x, double *margin, double *prob)
{
    double local[GBM_MAX_CLASSES];
    double *mg = margin ? margin : local;
    booster_margin(m, &m->cls, x, mg);
    if (prob)
        softmax(mg, m->K, prob);
}

static void booster_explain(const struct gbm_model *m, const struct gbm_booster *b,
                            const struct gbm_input *x, size_t c, double *base, double *contrib,
                            struct gbm_step *steps)
{
    *base = b->base[c];
    for (size_t f = 0; f < m->F; f++) {
        const double *v = step_of(m, b, f, &x[f], c, steps ? &steps[f] : NULL);
        contrib[f] = v ? v[c] : 0.0;
    }
}

void gbm_explain(const struct gbm_model *m, const struct gbm_input *x, size_t class_idx,
                 double *base, double *contrib, struct gbm_step *steps)
{
    booster_explain(m, &m->cls, x, class_idx < m->K ? class_idx : 0, base, contrib, steps);
}

int gbm_predict_magnitude(const struct gbm_model *m, size_t class_idx, const struct gbm_input *x,
                          double *out)
{
    if (!gbm_model_has_magnitude(m, class_idx))
        return -1;
    booster_margin(m, m->mag[class_idx], x, out);
    return 0;
}

int gbm_explain_magnitude(const struct gbm_model *m, size_t class_idx, const struct gbm_input *x,
                          double *base, double *contrib, struct gbm_step *steps)
{
    if (!gbm_model_has_magnitude(m, class_idx))
        return -1;
    booster_explain(m, m->mag[class_idx], x, 0, base, contrib, steps);
    return 0;
}

/* ---- binned data -------------------------------------------------------- */

int gbm_model_check_features(const struct gbm_model *m, const struct gbm_data *d, char *err,
                             size_t errlen)
{
    if (!d->features || !d->bins || d->n_features != m->F) {
        util_fmt(err, errlen, "data has %zu features, the model %zu",
                 d->features && d->bins ? d->n_features : 0, m->F);
        return -1;
    }
    for (size_t f = 0; f < m->F; f++) {
        const struct gbm_feat *a = &m->feat[f];
        const struct gbm_feature *b = &d->features[f];
        const char *why = NULL;
        if (!b->name || strcmp(a->name, b->name) != 0)
            why = "name";
        else if (a->kind != b->kind)
            why = "kind";
        else if (a->n_bins != b->n_bins)
            why = "number of bins";
        else if (a->kind == GBM_NUMERIC && a->n_bins > 1 &&
                 (!b->cuts || memcmp(a->cuts, b->cuts, (a->n_bins - 1) * sizeof *a->cuts) != 0))
            why = "cuts";
        else if (a->kind == GBM_CATEGORICAL) {
            if (a->n_levels != b->n_levels)
                why = "levels";
            for (size_t i = 0; !why && i < a->n_levels; i++) {
                if (!b->levels[i] || strcmp(a->levels[i], b->levels[i]) != 0 ||
                    a->level_bin[i] != b->level_bin[i])
                    why = "levels";
            }
        }
        if (why) {
            util_fmt(err, errlen, "feature %zu (%s): %s differ from the model's", f, a->name, why);
            return -1;
        }
    }
    return 0;
}

void gbm_booster_margin_binned(const struct gbm_model *m, const struct gbm_booster *b,
                               const struct gbm_data *d, size_t r, double *margin)
{
    for (size_t k = 0; k < b->K; k++)
        margin[k] = b->base[k];
    for (size_t f = 0; f < m->F; f++) {
        const struct gbm_steps *s = &b->steps[f];
        if (!s->used)
            continue;
        unsigned bin = d->bins[f][r];
        if (bin >= m->feat[f].n_bins)
            bin = m->feat[f].n_bins;
        const double *v = s->bin_val + (size_t)bin * b->K;
        for (size_t k = 0; k < b->K; k++)
            margin[k] += v[k];
    }
}

void gbm_booster_eval_rows(const struct gbm_model *m, const struct gbm_booster *b,
                           const struct gbm_data *d, size_t r0, size_t r1, double sums[3])
{
    double margin[GBM_MAX_CLASSES] = {0}, prob[GBM_MAX_CLASSES];
    double sw = 0.0, sl = 0.0, sa = 0.0;
    for (size_t r = r0; r < r1; r++) {
        double w = d->weight ? d->weight[r] : 1.0;
        gbm_booster_margin_binned(m, b, d, r, margin);
        if (b->objective == GBM_SQUARED) {
            double e = margin[0] - (double)d->target[r];
            sl += w * e * e;
        } else {
            int32_t y = d->label[r];
            softmax(margin, b->K, prob);
            double py = prob[y] > GBM_PROB_MIN ? prob[y] : GBM_PROB_MIN;
            sl -= w * log(py);
            size_t am = 0;
            for (size_t k = 1; k < b->K; k++) {
                if (margin[k] > margin[am])
                    am = k;
            }
            if (am == (size_t)y)
                sa += w;
        }
        sw += w;
    }
    sums[0] = sl;
    sums[1] = sa;
    sums[2] = sw;
}

void gbm_eval_finish(const struct gbm_booster *b, const double *block_sums, size_t n_blocks,
                     double *loss, double *accuracy)
{
    double sl = 0.0, sa = 0.0, sw = 0.0;
    for (size_t i = 0; i < n_blocks; i++) {
        sl += block_sums[3 * i];
        sa += block_sums[3 * i + 1];
        sw += block_sums[3 * i + 2];
    }
    *loss = sw > 0.0 ? sl / sw : NAN;
    *accuracy = (sw > 0.0 && b->objective == GBM_SOFTMAX) ? sa / sw : NAN;
}

void gbm_booster_evaluate(const struct gbm_model *m, const struct gbm_booster *b,
                          const struct gbm_data *d, double *loss, double *accuracy)
{
    /* Block by block, summed in order: the fit computes the same numbers
     * with its threads. */
    double sl = 0.0, sa = 0.0, sw = 0.0, sums[3];
    for (size_t r0 = 0; r0 < d->n_rows; r0 += GBM_EVAL_BLOCK) {
        size_t r1 = d->n_rows - r0 < GBM_EVAL_BLOCK ? d->n_rows : r0 + GBM_EVAL_BLOCK;
        gbm_booster_eval_rows(m, b, d, r0, r1, sums);
        sl += sums[0];
        sa += sums[1];
        sw += sums[2];
    }
    *loss = sw > 0.0 ? sl / sw : NAN;
    *accuracy = (sw > 0.0 && b->objective == GBM_SOFTMAX) ? sa / sw : NAN;
}

int gbm_predict_data(const struct gbm_model *m, const struct gbm_data *d, double *prob, char *err,
                     size_t errlen)
{
    double margin[GBM_MAX_CLASSES];
    if (gbm_model_check_features(m, d, err, errlen) < 0)
        return -1;
    for (size_t r = 0; r < d->n_rows; r++) {
        gbm_booster_margin_binned(m, &m->cls, d, r, margin);
        softmax(margin, m->K, prob + r * m->K);
    }
    return 0;
}

int gbm_predict_magnitude_data(const struct gbm_model *m, size_t class_idx,
                               const struct gbm_data *d, double *out, char *err, size_t errlen)
{
    if (!gbm_model_has_magnitude(m, class_idx)) {
        util_fmt(err, errlen, "class %zu has no magnitude model", class_idx);
        return -1;
    }
    if (gbm_model_check_features(m, d, err, errlen) < 0)
        return -1;
    for (size_t r = 0; r < d->n_rows; r++)
        gbm_booster_margin_binned(m, m->mag[class_idx], d, r, out + r);
    return 0;
}

int gbm_evaluate(const struct gbm_model *m, const struct gbm_data *d, double *logloss,
                 double *accuracy, char *err, size_t errlen)
{
    if (gbm_model_check_features(m, d, err, errlen) < 0)
        return -1;
    if (!d->label) {
        util_fmt(err, errlen, "data has no labels");
        return -1;
    }
    for (size_t r = 0; r < d->n_rows; r++) {
        if (d->label[r] < 0 || (size_t)d->label[r] >= m->K) {
            util_fmt(err, errlen, "row %zu: label %d out of range", r, (int)d->label[r]);
            return -1;
        }
    }
    gbm_booster_evaluate(m, &m->cls, d, logloss, accuracy);
    return 0;
}

/* ---- text dump ---------------------------------------------------------- */

static int dump_values(FILE *out, const struct gbm_model *m, const struct gbm_booster *b,
                       const double *v)
{
    for (size_t k = 0; k < b->K; k++) {
        if (b->objective == GBM_SOFTMAX) {
            if (fprintf(out, " %s=%+.6g", m->classes[k], v[k]) < 0)
                return -1;
        } else if (fprintf(out, " %+.6g", v[k]) < 0) {
            return -1;
        }
    }
    return fputc('\n', out) == EOF ? -1 : 0;
}

static int dump_booster(FILE *out, const struct gbm_model *m, const struct gbm_booster *b,
                        const char *indent)
{
    if (fprintf(out, "%sbase:", indent) < 0 || dump_values(out, m, b, b->base) < 0)
        return -1;
    for (size_t f = 0; f < m->F; f++) {
        const struct gbm_feat *ft = &m->feat[f];
        const struct gbm_steps *s = &b->steps[f];
        if (!s->used)
            continue;
        double gain = 0.0;
        for (size_t i = 0; i < (size_t)b->n_rounds * b->K; i++) {
            if (b->stumps[i].feature == (int32_t)f)
                gain += b->stumps[i].gain;
        }
        if (fprintf(out, "%sfeature %s (%s), gain %.6g:\n", indent, ft->name,
                    ft->kind == GBM_NUMERIC ? "numeric" : "categorical", gain) < 0)
            return -1;
        if (ft->kind == GBM_NUMERIC) {
            for (size_t j = 0; j <= s->n_thr; j++) {
                char lo[40], hi[40];
                if (j == 0)
                    util_fmt(lo, sizeof lo, "-inf");
                else
                    util_fmt(lo, sizeof lo, "%.10g", s->thr[j - 1]);
                if (j == s->n_thr)
                    util_fmt(hi, sizeof hi, "inf");
                else
                    util_fmt(hi, sizeof hi, "%.10g", s->thr[j]);
                if (fprintf(out, "%s  [%s, %s):", indent, lo, hi) < 0 ||
                    dump_values(out, m, b, s->val + j * b->K) < 0)
                    return -1;
            }
        } else {
            for (unsigned bin = 0; bin < ft->n_bins; bin++) {
                if (fprintf(out, "%s  {", indent) < 0)
                    return -1;
                size_t shown = 0;
                for (size_t i = 0; i < ft->n_levels; i++) {
                    if (ft->level_bin[i] != bin)
                        continue;
                    if (shown == 8) {
                        if (fputs(", ...", out) == EOF)
                            return -1;
                        break;
                    }
                    if (fprintf(out, "%s\"%s\"", shown ? ", " : "", ft->levels[i]) < 0)
                        return -1;
                    shown++;
                }
                if (fputs("}:", out) == EOF ||
                    dump_values(out, m, b, s->bin_val + (size_t)bin * b->K) < 0)
                    return -1;
            }
        }
        if (fprintf(out, "%s  missing:", indent) < 0 || dump_values(out, m, b, s->miss) < 0)
            return -1;
    }
    return 0;
}

int gbm_model_dump(const struct gbm_model *m, FILE *out)
{
    const struct gbm_booster *b = &m->cls;
    if (fprintf(out,
                "classifier: %zu classes, %zu features, %u rounds kept of %u trained "
                "(learning rate %g, lambda %g, min_child_weight %g)\n",
                m->K, m->F, b->n_rounds, b->rounds_trained, b->params.learning_rate,
                b->params.lambda, b->params.min_child_weight) < 0)
        return -1;
    if (fprintf(out, "train log loss %.6g, valid log loss %.6g, valid accuracy %.6g\n",
                b->train_loss, b->valid_loss, b->valid_accuracy) < 0)
        return -1;
    if (dump_booster(out, m, b, "") < 0)
        return -1;
    for (size_t k = 0; k < m->K; k++) {
        const struct gbm_booster *g = m->mag[k];
        if (!g)
            continue;
        if (fprintf(out,
                    "magnitude %s: %u rounds kept of %u trained, train mse %.6g, valid mse "
                    "%.6g\n",
                    m->classes[k], g->n_rounds, g->rounds_trained, g->train_loss,
                    g->valid_loss) < 0 ||
            dump_booster(out, m, g, "  ") < 0)
            return -1;
    }
    return fflush(out) == EOF ? -1 : 0;
}
