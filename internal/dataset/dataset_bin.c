/*
 * dataset_bin: quantile binning of a dataset into the column-major uint8
 * matrices internal/gbm fits on (the rules and formulas are in dataset.h).
 *
 * Features are independent, so threads take whole features from a shared
 * counter; what a feature gets depends only on the data, never on which
 * thread did it or in which order, so the result is the same for any thread
 * count.  Per numeric feature: one pass over the training rows counts
 * distinct values in a small hash set and stops at max_bins + 1; only then
 * is a deterministic sample sorted (LSD radix sort on the order-preserving
 * integer image of the doubles).  A value's bin is found by a branch-light
 * binary search over the cuts padded with +inf to 2^k - 1 entries.
 *
 * The class subsets for the magnitude models are built here too, once, from
 * the rows that have a target; they copy their rows' bins.
 */
#include "dataset/dataset.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dataset/dataset_impl.h"
#include "util/util.h"

enum { TRAIN = 0, VALID = 1 };

struct subset {
    struct gbm_data data;
    uint8_t *block;
    const uint8_t **cols;
    float *target;
    float *weight;
};

struct ds_binned {
    const struct ds *ds;
    size_t n_features;
    struct gbm_feature *features;
    double **cuts;        /* [n_features], owned */
    const char ***levels; /* [n_features], owned arrays of borrowed names */
    uint8_t **level_bin;  /* [n_features], owned */

    uint32_t *rows[2];
    size_t n[2];
    uint8_t *block[2]; /* [n_features * n] */
    const uint8_t **cols[2];
    int32_t *label[2];
    float *weight[2]; /* NULL when the dataset has no weights */
    struct gbm_data data[2];

    size_t n_classes;
    struct subset *subsets; /* [n_classes * 2], class-major */
};

struct job {
    struct ds_binned *b;
    const struct ds *d;
    unsigned max_bins;
    atomic_size_t next;
    atomic_int failed;
};

/* ---- numeric ------------------------------------------------------------- */

struct kw {
    uint64_t k;
    float w;
};

/* Order-preserving map of a (non-NaN, non -0) double to uint64 and back. */
static uint64_t key_of(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return (u >> 63) ? ~u : u | (UINT64_C(1) << 63);
}

static double value_of(uint64_t k)
{
    uint64_t u = (k >> 63) ? k & ~(UINT64_C(1) << 63) : ~k;
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* LSD radix sort by key, 8 bits a pass; passes where every key has the same
 * byte are skipped.  Stable; tmp has room for n. */
static void radix_sort(struct kw *a, struct kw *tmp, size_t n)
{
    static const int passes = 8;
    size_t hist[8][256];
    memset(hist, 0, sizeof hist);
    for (size_t i = 0; i < n; i++)
        for (int p = 0; p < passes; p++)
            hist[p][(a[i].k >> (8 * p)) & 0xFF]++;
    struct kw *src = a, *dst = tmp;
    for (int p = 0; p < passes; p++) {
        size_t *h = hist[p];
        if (h[(src[0].k >> (8 * p)) & 0xFF] == n)
            continue;
        size_t sum = 0;
        for (int c = 0; c < 256; c++) {
            size_t t = h[c];
            h[c] = sum;
            sum += t;
        }
        for (size_t i = 0; i < n; i++)
            dst[h[(src[i].k >> (8 * p)) & 0xFF]++] = src[i];
        struct kw *t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof *a);
}

/* A cut in (a, b]: the midpoint unless rounding puts it outside. */
static double midpoint(double a, double b)
{
    double m = a / 2 + b / 2;
    if (!(m > a) || m > b)
        m = b;
    return m;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/*
 * Exact distinct training values when there are at most max_bins of them:
 * fills u[0..*nu) sorted and returns true; false when there are more.
 */
static bool few_distinct(const double *x, const uint32_t *rows, size_t n, unsigned max_bins,
                         double *u, size_t *nu)
{
    enum { SLOTS = 512 }; /* > 2 * 256: the probe always ends */
    uint64_t slot[SLOTS];
    const uint64_t empty = UINT64_MAX; /* a NaN pattern: never a key */
    for (size_t i = 0; i < SLOTS; i++)
        slot[i] = empty;
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[rows[i]];
        if (isnan(v))
            continue;
        v += 0.0; /* -0 becomes +0: one value, one key */
        uint64_t k;
        memcpy(&k, &v, sizeof k);
        size_t h = (size_t)((k * UINT64_C(0x9E3779B97F4A7C15)) >> 55);
        while (slot[h] != empty && slot[h] != k)
            h = (h + 1) & (SLOTS - 1);
        if (slot[h] == k)
            continue;
        if (count == max_bins)
            return false;
        slot[h] = k;
        u[count++] = v;
    }
    if (count > 1)
        qsort(u, count, sizeof *u, cmp_double);
    *nu = count;
    return true;
}

/* Cuts from weighted quantiles of a sample of the training rows. */
static int quantile_cuts(const double *x, const uint32_t *rows, size_t n, const float *w,
                         unsigned max_bins, double *cuts, size_t *n_cuts)
{
    size_t stride = (n + DS_BIN_SAMPLE - 1) / DS_BIN_SAMPLE;
    size_t cap = (n + stride - 1) / stride;
    struct kw *s = util_malloc(cap * sizeof *s);
    struct kw *tmp = util_malloc(cap * sizeof *tmp);
    if (!s || !tmp) {
        free(s);
        free(tmp);
        return -1;
    }
    size_t m = 0;
    double total = 0;
    for (size_t i = 0; i < n; i += stride) {
        double v = x[rows[i]];
        if (isnan(v))
            continue;
        s[m].k = key_of(v + 0.0);
        s[m].w = w ? w[rows[i]] : 1.0f;
        total += s[m].w;
        m++;
    }
    if (!(total > 0)) {
        for (size_t i = 0; i < m; i++)
            s[i].w = 1.0f;
        total = (double)m;
    }
    *n_cuts = 0;
    if (m > 0) {
        radix_sort(s, tmp, m);
        double last = 0, cum = 0;
        unsigned left = max_bins;
        size_t i = 0;
        uint64_t prev = 0;
        while (i < m) {
            uint64_t k = s[i].k;
            double wsum = 0;
            size_t j = i;
            for (; j < m && s[j].k == k; j++)
                wsum += s[j].w;
            /* Cut before this value when that lands nearer the bin's
             * target than taking the value in. */
            if (left > 1 && cum > last) {
                double target = last + (total - last) / left;
                if (cum + wsum >= target && target - cum <= cum + wsum - target) {
                    cuts[(*n_cuts)++] = midpoint(value_of(prev), value_of(k));
                    last = cum;
                    left--;
                }
            }
            cum += wsum;
            if (left > 1 && j < m && cum >= last + (total - last) / left) {
                cuts[(*n_cuts)++] = midpoint(value_of(k), value_of(s[j].k));
                last = cum;
                left--;
            }
            prev = k;
            i = j;
        }
    }
    free(s);
    free(tmp);
    return 0;
}

static int bin_numeric(struct job *j, size_t f)
{
    struct ds_binned *b = j->b;
    const struct ds *d = j->d;
    const double *x = d->cols[f].num;
    double cuts[GBM_MAX_BINS];
    size_t n_cuts = 0;
    double u[GBM_MAX_BINS];
    size_t nu;
    if (few_distinct(x, b->rows[TRAIN], b->n[TRAIN], j->max_bins, u, &nu)) {
        for (size_t i = 1; i < nu; i++)
            cuts[n_cuts++] = midpoint(u[i - 1], u[i]);
    } else if (quantile_cuts(x, b->rows[TRAIN], b->n[TRAIN], d->weight, j->max_bins, cuts,
                             &n_cuts) != 0) {
        return -1;
    }
    if (n_cuts > 0) {
        b->cuts[f] = util_malloc(n_cuts * sizeof *cuts);
        if (!b->cuts[f])
            return -1;
        memcpy(b->cuts[f], cuts, n_cuts * sizeof *cuts);
    }
    struct gbm_feature *gf = &b->features[f];
    gf->n_bins = (unsigned)n_cuts + 1;
    gf->cuts = b->cuts[f];

    /* pad[0..2^k - 1): the cuts then +inf; the search below adds the steps
     * 2^(k-1), ..., 1 and so counts the entries <= v. */
    double pad[GBM_MAX_BINS];
    size_t top = 1;
    while (top * 2 - 1 < n_cuts)
        top *= 2;
    for (size_t i = 0; i < top * 2 - 1; i++)
        pad[i] = i < n_cuts ? cuts[i] : INFINITY;
    for (int s = TRAIN; s <= VALID; s++) {
        uint8_t *out = b->block[s] + f * b->n[s];
        const uint32_t *rows = b->rows[s];
        for (size_t i = 0; i < b->n[s]; i++) {
            double v = x[rows[i]];
            if (isnan(v)) {
                out[i] = GBM_MISSING_BIN;
                continue;
            }
            size_t pos = 0;
            for (size_t step = top; step; step >>= 1)
                pos += pad[pos + step - 1] <= v ? step : 0;
            out[i] = (uint8_t)(pos < n_cuts ? pos : n_cuts);
        }
    }
    return 0;
}

/* ---- categorical --------------------------------------------------------- */

struct lv {
    double w;
    const char *name;
    uint32_t idx;
};

static int cmp_level(const void *x, const void *y)
{
    const struct lv *a = x, *b = y;
    if (a->w > b->w)
        return -1;
    if (a->w < b->w)
        return 1;
    return strcmp(a->name, b->name);
}

static int bin_categorical(struct job *j, size_t f)
{
    int rc = -1;
    struct ds_binned *b = j->b;
    const struct ds *d = j->d;
    const struct ds_col *c = &d->cols[f];
    size_t nl = c->levels.n;
    double *lw = util_calloc(nl ? nl : 1, sizeof *lw);
    uint8_t *seen = util_calloc(nl ? nl : 1, 1);
    uint8_t *map = util_malloc(nl ? nl : 1);
    struct lv *order = util_malloc((nl ? nl : 1) * sizeof *order);
    if (!lw || !seen || !map || !order)
        goto out;
    const uint32_t *rows = b->rows[TRAIN];
    for (size_t i = 0; i < b->n[TRAIN]; i++) {
        uint32_t l = c->lvl[rows[i]];
        if (l == DS_NO_LEVEL)
            continue;
        lw[l] += d->weight ? d->weight[rows[i]] : 1.0;
        seen[l] = 1;
    }
    size_t n_seen = 0;
    for (size_t l = 0; l < nl; l++)
        if (seen[l])
            order[n_seen++] = (struct lv){lw[l], c->levels.names[l], (uint32_t)l};
    qsort(order, n_seen, sizeof *order, cmp_level);
    memset(map, GBM_MISSING_BIN, nl ? nl : 1);
    if (n_seen > 0) {
        b->levels[f] = util_malloc(n_seen * sizeof *b->levels[f]);
        b->level_bin[f] = util_malloc(n_seen);
        if (!b->levels[f] || !b->level_bin[f])
            goto out;
    }
    unsigned pooled = j->max_bins - 1;
    for (size_t i = 0; i < n_seen; i++) {
        uint8_t bin = (uint8_t)(n_seen <= j->max_bins || i < pooled ? i : pooled);
        b->levels[f][i] = order[i].name;
        b->level_bin[f][i] = bin;
        map[order[i].idx] = bin;
    }
    struct gbm_feature *gf = &b->features[f];
    gf->n_bins = n_seen == 0 ? 1 : (n_seen <= j->max_bins ? (unsigned)n_seen : j->max_bins);
    gf->n_levels = n_seen;
    gf->levels = b->levels[f];
    gf->level_bin = b->level_bin[f];
    for (int s = TRAIN; s <= VALID; s++) {
        uint8_t *o = b->block[s] + f * b->n[s];
        const uint32_t *rs = b->rows[s];
        for (size_t i = 0; i < b->n[s]; i++) {
            uint32_t l = c->lvl[rs[i]];
            o[i] = l == DS_NO_LEVEL ? GBM_MISSING_BIN : map[l];
        }
    }
    rc = 0;
out:
    free(lw);
    free(seen);
    free(map);
    free(order);
    return rc;
}

/* ---- driver -------------------------------------------------------------- */

static void *worker(void *arg)
{
    struct job *j = arg;
    for (;;) {
        size_t f = atomic_fetch_add(&j->next, 1);
        if (f >= j->b->n_features)
            break;
        if (atomic_load(&j->failed))
            continue;
        int r = j->d->cols[f].kind == GBM_NUMERIC ? bin_numeric(j, f) : bin_categorical(j, f);
        if (r != 0)
            atomic_store(&j->failed, 1);
    }
    return NULL;
}

static int run_jobs(struct job *j, unsigned threads)
{
    pthread_t tid[64];
    unsigned started = 0;
    if (threads > 64)
        threads = 64;
    if (threads > j->b->n_features)
        threads = (unsigned)j->b->n_features;
    /* The calling thread is one of the workers; a thread that cannot be
     * started just leaves more work to the others. */
    for (unsigned t = 1; t < threads; t++) {
        if (pthread_create(&tid[started], NULL, worker, j) != 0)
            break;
        started++;
    }
    worker(j);
    for (unsigned t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    return atomic_load(&j->failed) ? -1 : 0;
}

static int build_subsets(struct ds_binned *b)
{
    const struct ds *d = b->ds;
    size_t nc = b->n_classes;
    size_t nf = b->n_features;
    b->subsets = util_calloc(nc ? nc * 2 : 1, sizeof *b->subsets);
    if (!b->subsets)
        return -1;
    for (int s = TRAIN; s <= VALID; s++) {
        for (size_t c = 0; c < nc; c++) {
            struct subset *sub = &b->subsets[c * 2 + (size_t)s];
            size_t cnt = 0;
            for (size_t i = 0; i < b->n[s]; i++) {
                uint32_t r = b->rows[s][i];
                cnt += (size_t)d->label[r] == c && !isnan(d->target[r]);
            }
            sub->data.n_features = nf;
            sub->data.features = b->features;
            if (cnt == 0)
                continue;
            sub->block = util_malloc(nf ? nf * cnt : 1);
            sub->cols = util_calloc(nf ? nf : 1, sizeof *sub->cols);
            sub->target = util_malloc(cnt * sizeof *sub->target);
            if (!sub->block || !sub->cols || !sub->target)
                return -1;
            if (d->weight) {
                sub->weight = util_malloc(cnt * sizeof *sub->weight);
                if (!sub->weight)
                    return -1;
            }
            size_t k = 0;
            for (size_t i = 0; i < b->n[s]; i++) {
                uint32_t r = b->rows[s][i];
                if ((size_t)d->label[r] != c || isnan(d->target[r]))
                    continue;
                for (size_t f = 0; f < nf; f++)
                    sub->block[f * cnt + k] = b->cols[s][f][i];
                sub->target[k] = (float)d->target[r];
                if (sub->weight && d->weight)
                    sub->weight[k] = d->weight[r];
                k++;
            }
            for (size_t f = 0; f < nf; f++)
                sub->cols[f] = sub->block + f * cnt;
            sub->data.n_rows = cnt;
            sub->data.bins = sub->cols;
            sub->data.target = sub->target;
            sub->data.weight = sub->weight;
        }
    }
    return 0;
}

int ds_bin(const struct ds *d, unsigned max_bins, unsigned threads, struct ds_binned **out,
           char *err, size_t errlen)
{
    int rc = -1;
    struct ds_binned *b = NULL;
    *out = NULL;
    if (max_bins < 2 || max_bins > GBM_MAX_BINS) {
        util_fmt(err, errlen, "max_bins must be in 2..%d", GBM_MAX_BINS);
        goto out;
    }
    size_t n_valid = 0;
    for (size_t r = 0; r < d->n_rows; r++)
        n_valid += ds_row_is_valid(d, r);
    if (d->n_rows - n_valid == 0) {
        util_fmt(err, errlen, "no training rows");
        goto out;
    }
    b = util_calloc(1, sizeof *b);
    if (!b)
        goto oom;
    b->ds = d;
    size_t nf = d->n_features;
    b->n_features = nf;
    b->n_classes = d->classes.n;
    b->n[TRAIN] = d->n_rows - n_valid;
    b->n[VALID] = n_valid;
    b->features = util_calloc(nf ? nf : 1, sizeof *b->features);
    b->cuts = util_calloc(nf ? nf : 1, sizeof *b->cuts);
    b->levels = util_calloc(nf ? nf : 1, sizeof *b->levels);
    b->level_bin = util_calloc(nf ? nf : 1, sizeof *b->level_bin);
    if (!b->features || !b->cuts || !b->levels || !b->level_bin)
        goto oom;
    for (int s = TRAIN; s <= VALID; s++) {
        size_t n = b->n[s];
        b->rows[s] = util_malloc((n ? n : 1) * sizeof *b->rows[s]);
        b->block[s] = util_malloc(nf && n ? nf * n : 1);
        b->cols[s] = util_calloc(nf ? nf : 1, sizeof *b->cols[s]);
        b->label[s] = util_malloc((n ? n : 1) * sizeof *b->label[s]);
        if (!b->rows[s] || !b->block[s] || !b->cols[s] || !b->label[s])
            goto oom;
        if (d->weight) {
            b->weight[s] = util_malloc((n ? n : 1) * sizeof *b->weight[s]);
            if (!b->weight[s])
                goto oom;
        }
    }
    size_t k[2] = {0, 0};
    for (size_t r = 0; r < d->n_rows; r++) {
        int s = ds_row_is_valid(d, r) ? VALID : TRAIN;
        b->rows[s][k[s]] = (uint32_t)r;
        b->label[s][k[s]] = d->label[r];
        if (b->weight[s] && d->weight)
            b->weight[s][k[s]] = d->weight[r];
        k[s]++;
    }
    for (size_t f = 0; f < nf; f++) {
        b->features[f].name = d->cols[f].name;
        b->features[f].kind = d->cols[f].kind;
        b->features[f].n_bins = 1;
        for (int s = TRAIN; s <= VALID; s++)
            b->cols[s][f] = b->block[s] + f * b->n[s];
    }
    struct job j = {.b = b, .d = d, .max_bins = max_bins};
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    if (run_jobs(&j, threads ? threads : 1) != 0)
        goto oom;
    for (int s = TRAIN; s <= VALID; s++) {
        b->data[s] = (struct gbm_data){
            .n_rows = b->n[s],
            .n_features = nf,
            .features = b->features,
            .bins = b->cols[s],
            .label = b->label[s],
            .weight = b->weight[s],
        };
    }
    if (build_subsets(b) != 0)
        goto oom;
    *out = b;
    b = NULL;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    ds_binned_free(b);
    return rc;
}

void ds_binned_free(struct ds_binned *b)
{
    if (!b)
        return;
    for (size_t f = 0; f < b->n_features; f++) {
        if (b->cuts)
            free(b->cuts[f]);
        if (b->levels)
            free(b->levels[f]);
        if (b->level_bin)
            free(b->level_bin[f]);
    }
    free(b->cuts);
    free(b->levels);
    free(b->level_bin);
    free(b->features);
    for (int s = TRAIN; s <= VALID; s++) {
        free(b->rows[s]);
        free(b->block[s]);
        free(b->cols[s]);
        free(b->label[s]);
        free(b->weight[s]);
    }
    if (b->subsets) {
        for (size_t i = 0; i < b->n_classes * 2; i++) {
            free(b->subsets[i].block);
            free(b->subsets[i].cols);
            free(b->subsets[i].target);
            free(b->subsets[i].weight);
        }
        free(b->subsets);
    }
    free(b);
}

const struct gbm_feature *ds_binned_features(const struct ds_binned *b, size_t *n)
{
    if (n)
        *n = b->n_features;
    return b->features;
}

const struct gbm_data *ds_binned_train(const struct ds_binned *b)
{
    return &b->data[TRAIN];
}

const struct gbm_data *ds_binned_valid(const struct ds_binned *b)
{
    return b->n[VALID] > 0 ? &b->data[VALID] : NULL;
}

const uint32_t *ds_binned_rows(const struct ds_binned *b, bool valid, size_t *n)
{
    int s = valid ? VALID : TRAIN;
    if (n)
        *n = b->n[s];
    return b->rows[s];
}

int ds_binned_class_subset(const struct ds_binned *b, int32_t class_idx, bool valid,
                           struct gbm_data *out)
{
    if (class_idx < 0 || (size_t)class_idx >= b->n_classes)
        return -1;
    *out = b->subsets[(size_t)class_idx * 2 + (valid ? VALID : TRAIN)].data;
    return 0;
}
