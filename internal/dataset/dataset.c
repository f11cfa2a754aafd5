/*
 * dataset: storage, interning, weights and the time-ordered split (see
 * dataset.h for the formulas).
 *
 * Columns are growable arrays that double when full, so ds_add_row costs
 * amortised O(n_features) with no allocation per row; a categorical cell is
 * a 32-bit index into the feature's interned levels.  The split sorts row
 * indices by ts with a bottom-up merge sort (stable, O(n log n), one
 * scratch array) after an O(n) check that skips it when rows already come in
 * time order, which is the usual case.
 */
#include "dataset/dataset.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset/dataset_impl.h"
#include "util/util.h"

#define ARENA_CHUNK 65536

/* ---- arena and interning ------------------------------------------------- */

const char *ds_arena_put(struct ds_arena *a, const char *s, size_t len)
{
    struct ds_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < len + 1) {
        size_t cap = len + 1 > ARENA_CHUNK ? len + 1 : ARENA_CHUNK;
        c = util_malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->used = 0;
        c->cap = cap;
        /* A big string gets a chunk of its own behind the current one, so the
         * room left in the current chunk is not wasted. */
        if (a->head && cap > ARENA_CHUNK) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    char *p = c->data + c->used;
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    c->used += len + 1;
    return p;
}

static void arena_deinit(struct ds_arena *a)
{
    struct ds_arena_chunk *c = a->head;
    while (c) {
        struct ds_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

uint32_t ds_hash(const char *s, size_t len)
{
    /* FNV-1a */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

long ds_intern_find(const struct ds_intern *t, const char *s, size_t len, uint32_t hash)
{
    if (t->cap == 0)
        return -1;
    size_t mask = t->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        uint32_t v = t->slots[i];
        if (v == 0)
            return -1;
        v--;
        if (t->hashes[v] == hash && t->lens[v] == len && memcmp(t->names[v], s, len) == 0)
            return (long)v;
    }
}

static int intern_grow_slots(struct ds_intern *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16;
    uint32_t *slots = util_calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t k = 0; k < t->n; k++) {
        size_t i = t->hashes[k] & (cap - 1);
        while (slots[i] != 0)
            i = (i + 1) & (cap - 1);
        slots[i] = (uint32_t)k + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

static int intern_grow_names(struct ds_intern *t)
{
    size_t cap = t->names_cap ? t->names_cap * 2 : 8;
    const char **names = util_realloc(t->names, cap * sizeof *names);
    if (!names)
        return -1;
    t->names = names;
    uint32_t *lens = util_realloc(t->lens, cap * sizeof *lens);
    if (!lens)
        return -1;
    t->lens = lens;
    uint32_t *hashes = util_realloc(t->hashes, cap * sizeof *hashes);
    if (!hashes)
        return -1;
    t->hashes = hashes;
    t->names_cap = cap;
    return 0;
}

int ds_intern_add(struct ds_intern *t, struct ds_arena *a, const char *s, size_t len, uint32_t *idx,
                  bool *added)
{
    uint32_t h = ds_hash(s, len);
    long found = ds_intern_find(t, s, len, h);
    if (found >= 0) {
        *idx = (uint32_t)found;
        if (added)
            *added = false;
        return 0;
    }
    if (t->n >= (size_t)UINT32_MAX - 2 || len > UINT32_MAX)
        return -1;
    if ((t->n + 1) * 2 > t->cap && intern_grow_slots(t) != 0)
        return -1;
    if (t->n == t->names_cap && intern_grow_names(t) != 0)
        return -1;
    const char *copy = ds_arena_put(a, s, len);
    if (!copy)
        return -1;
    size_t mask = t->cap - 1;
    size_t i = h & mask;
    while (t->slots[i] != 0)
        i = (i + 1) & mask;
    t->names[t->n] = copy;
    t->lens[t->n] = (uint32_t)len;
    t->hashes[t->n] = h;
    t->slots[i] = (uint32_t)t->n + 1;
    *idx = (uint32_t)t->n;
    t->n++;
    if (added)
        *added = true;
    return 0;
}

void ds_intern_deinit(struct ds_intern *t)
{
    free(t->slots);
    free(t->names);
    free(t->lens);
    free(t->hashes);
    memset(t, 0, sizeof *t);
}

/* ---- lifecycle ----------------------------------------------------------- */

int ds_class_add(struct ds *d, const char *s, size_t len, int32_t *idx)
{
    uint32_t i;
    bool added;
    long found = ds_intern_find(&d->classes, s, len, ds_hash(s, len));
    if (found >= 0) {
        *idx = (int32_t)found;
        return 0;
    }
    if (d->classes.n >= (size_t)INT32_MAX)
        return -1;
    if (d->classes.n == d->classes.names_cap) {
        /* Grow the counts alongside the names, before the names grow. */
        size_t cap = d->classes.names_cap ? d->classes.names_cap * 2 : 8;
        size_t *cc = util_realloc(d->class_count, cap * sizeof *cc);
        if (!cc)
            return -1;
        d->class_count = cc;
        memset(cc + d->classes.names_cap, 0, (cap - d->classes.names_cap) * sizeof *cc);
    }
    if (ds_intern_add(&d->classes, &d->arena, s, len, &i, &added) != 0)
        return -1;
    *idx = (int32_t)i;
    return 0;
}

int ds_new(const char *const *feature_names, const enum gbm_kind *kinds, size_t n_features,
           const char *const *class_names, size_t n_classes, struct ds **out, char *err,
           size_t errlen)
{
    int rc = -1;
    struct ds *d = NULL;
    struct ds_intern seen = {0};
    *out = NULL;
    if (n_features > 0 && (!feature_names || !kinds)) {
        util_fmt(err, errlen, "feature names and kinds are required");
        goto out;
    }
    if (n_classes > 0 && !class_names) {
        util_fmt(err, errlen, "class names are required");
        goto out;
    }
    d = util_calloc(1, sizeof *d);
    if (!d)
        goto oom;
    d->n_features = n_features;
    if (n_features > 0) {
        d->cols = util_calloc(n_features, sizeof *d->cols);
        if (!d->cols)
            goto oom;
    }
    for (size_t f = 0; f < n_features; f++) {
        const char *name = feature_names[f];
        if (!name || !*name) {
            util_fmt(err, errlen, "feature %zu: empty name", f);
            goto out;
        }
        if (kinds[f] != GBM_NUMERIC && kinds[f] != GBM_CATEGORICAL) {
            util_fmt(err, errlen, "feature \"%s\": unknown kind %d", name, (int)kinds[f]);
            goto out;
        }
        uint32_t idx;
        bool added;
        if (ds_intern_add(&seen, &d->arena, name, strlen(name), &idx, &added) != 0)
            goto oom;
        if (!added) {
            util_fmt(err, errlen, "duplicate feature name \"%s\"", name);
            goto out;
        }
        d->cols[f].name = seen.names[idx];
        d->cols[f].kind = kinds[f];
    }
    for (size_t c = 0; c < n_classes; c++) {
        const char *name = class_names[c];
        if (!name || !*name) {
            util_fmt(err, errlen, "class %zu: empty name", c);
            goto out;
        }
        size_t before = d->classes.n;
        int32_t idx;
        if (ds_class_add(d, name, strlen(name), &idx) != 0)
            goto oom;
        if (d->classes.n == before) {
            util_fmt(err, errlen, "duplicate class name \"%s\"", name);
            goto out;
        }
    }
    d->fixed_classes = n_classes > 0;
    *out = d;
    d = NULL;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    ds_intern_deinit(&seen);
    ds_free(d);
    return rc;
}

void ds_free(struct ds *d)
{
    if (!d)
        return;
    for (size_t f = 0; f < d->n_features && d->cols; f++) {
        free(d->cols[f].num);
        free(d->cols[f].lvl);
        ds_intern_deinit(&d->cols[f].levels);
    }
    free(d->cols);
    free(d->label);
    free(d->ts);
    free(d->group);
    free(d->target);
    free(d->weight);
    free(d->valid);
    free(d->class_count);
    ds_intern_deinit(&d->classes);
    ds_intern_deinit(&d->groups);
    arena_deinit(&d->arena);
    free(d);
}

/* Grows *p to n elements of size sz; the old block stays valid on failure. */
static int grow(void *pp, size_t n, size_t sz)
{
    void **p = pp;
    if (n > SIZE_MAX / sz)
        return -1;
    void *q = util_realloc(*p, n * sz);
    if (!q)
        return -1;
    *p = q;
    return 0;
}

int ds_reserve(struct ds *d, size_t n)
{
    if (n <= d->cap)
        return 0;
    /* An array grown here before a later one fails is merely larger than
     * d->cap, which the next attempt grows again. */
    if (grow(&d->label, n, sizeof *d->label) != 0 || grow(&d->ts, n, sizeof *d->ts) != 0 ||
        grow(&d->group, n, sizeof *d->group) != 0 || grow(&d->target, n, sizeof *d->target) != 0)
        return -1;
    for (size_t f = 0; f < d->n_features; f++) {
        struct ds_col *c = &d->cols[f];
        int r = c->kind == GBM_NUMERIC ? grow(&c->num, n, sizeof *c->num)
                                       : grow(&c->lvl, n, sizeof *c->lvl);
        if (r != 0)
            return -1;
    }
    d->cap = n;
    return 0;
}

void ds_forget_derived(struct ds *d)
{
    free(d->weight);
    d->weight = NULL;
    free(d->valid);
    d->valid = NULL;
    memset(&d->split, 0, sizeof d->split);
}

int ds_add_row(struct ds *d, const char *label, int64_t ts_us, const char *group, double target,
               const struct event_feature_value *values)
{
    if (!label || !*label || d->n_rows >= DS_MAX_ROWS)
        return -2;
    if (d->n_features > 0 && !values)
        return -2;
    int32_t cls = -1;
    size_t llen = strlen(label);
    if (d->fixed_classes) {
        long c = ds_intern_find(&d->classes, label, llen, ds_hash(label, llen));
        if (c < 0)
            return -2;
        cls = (int32_t)c;
    }
    if (d->n_rows == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        if (cap > DS_MAX_ROWS)
            cap = DS_MAX_ROWS;
        if (ds_reserve(d, cap) != 0)
            return -1;
    }
    /* Interning before any cell is written: a failure must leave no
     * half-written row.  A class, group or level interned before a later
     * failure stays, unused (count 0), which is harmless: binning lists only
     * the levels that rows use and balanced weights count present classes. */
    if (!d->fixed_classes && ds_class_add(d, label, llen, &cls) != 0)
        return -1;
    int32_t gidx = -1;
    if (group) {
        uint32_t g;
        if (ds_intern_add(&d->groups, &d->arena, group, strlen(group), &g, NULL) != 0)
            return -1;
        gidx = (int32_t)g;
    }
    size_t r = d->n_rows;
    for (size_t f = 0; f < d->n_features; f++) {
        struct ds_col *c = &d->cols[f];
        const struct event_feature_value *v = &values[f];
        if (c->kind == GBM_NUMERIC) {
            c->num[r] = (!v->missing && isfinite(v->num)) ? v->num : NAN;
        } else if (v->missing || !v->cat) {
            c->lvl[r] = DS_NO_LEVEL;
        } else {
            uint32_t l;
            if (ds_intern_add(&c->levels, &d->arena, v->cat, strlen(v->cat), &l, NULL) != 0)
                return -1;
            c->lvl[r] = l;
        }
    }
    d->label[r] = cls;
    d->ts[r] = ts_us;
    d->group[r] = gidx;
    d->target[r] = target;
    d->class_count[cls]++;
    d->n_rows++;
    if (d->weight || d->valid)
        ds_forget_derived(d);
    return 0;
}

/* ---- accessors ----------------------------------------------------------- */

size_t ds_n_rows(const struct ds *d)
{
    return d->n_rows;
}

size_t ds_n_features(const struct ds *d)
{
    return d->n_features;
}

const char *ds_feature_name(const struct ds *d, size_t f)
{
    return d->cols[f].name;
}

enum gbm_kind ds_feature_kind(const struct ds *d, size_t f)
{
    return d->cols[f].kind;
}

long ds_feature_index(const struct ds *d, const char *name)
{
    for (size_t f = 0; f < d->n_features; f++)
        if (strcmp(d->cols[f].name, name) == 0)
            return (long)f;
    return -1;
}

size_t ds_n_classes(const struct ds *d)
{
    return d->classes.n;
}

const char *ds_class_name(const struct ds *d, size_t c)
{
    return d->classes.names[c];
}

size_t ds_class_count(const struct ds *d, size_t c)
{
    return d->class_count[c];
}

size_t ds_n_groups(const struct ds *d)
{
    return d->groups.n;
}

const char *ds_group_name(const struct ds *d, size_t g)
{
    return d->groups.names[g];
}

size_t ds_n_levels(const struct ds *d, size_t f)
{
    return d->cols[f].levels.n;
}

const char *ds_level_name(const struct ds *d, size_t f, size_t level)
{
    return d->cols[f].levels.names[level];
}

int32_t ds_row_label(const struct ds *d, size_t r)
{
    return d->label[r];
}

int64_t ds_row_ts(const struct ds *d, size_t r)
{
    return d->ts[r];
}

int32_t ds_row_group_index(const struct ds *d, size_t r)
{
    return d->group[r];
}

const char *ds_row_group(const struct ds *d, size_t r)
{
    return d->group[r] < 0 ? NULL : d->groups.names[d->group[r]];
}

double ds_row_target(const struct ds *d, size_t r)
{
    return d->target[r];
}

float ds_row_weight(const struct ds *d, size_t r)
{
    return d->weight ? d->weight[r] : 1.0f;
}

double ds_cell_num(const struct ds *d, size_t f, size_t r)
{
    return d->cols[f].kind == GBM_NUMERIC ? d->cols[f].num[r] : NAN;
}

const char *ds_cell_level(const struct ds *d, size_t f, size_t r)
{
    const struct ds_col *c = &d->cols[f];
    if (c->kind != GBM_CATEGORICAL || c->lvl[r] == DS_NO_LEVEL)
        return NULL;
    return c->levels.names[c->lvl[r]];
}

/* ---- weights ------------------------------------------------------------- */

int ds_set_weights(struct ds *d, const struct ds_weight_options *o, char *err, size_t errlen)
{
    int rc = -1;
    double *cw = NULL;
    float *w = NULL;
    size_t nc = d->classes.n;
    if (o->half_life_us < 0) {
        util_fmt(err, errlen, "half-life must not be negative");
        goto out;
    }
    cw = util_calloc(nc ? nc : 1, sizeof *cw);
    if (!cw)
        goto oom;
    for (size_t c = 0; c < nc; c++)
        cw[c] = 1.0;
    switch (o->class_weighting) {
    case DS_CLASS_WEIGHT_NONE:
        break;
    case DS_CLASS_WEIGHT_BALANCED: {
        size_t present = 0;
        for (size_t c = 0; c < nc; c++)
            present += d->class_count[c] > 0;
        for (size_t c = 0; c < nc; c++)
            if (d->class_count[c] > 0)
                cw[c] = (double)d->n_rows / ((double)present * (double)d->class_count[c]);
        break;
    }
    case DS_CLASS_WEIGHT_MAP:
        if (o->n_class_weights > 0 && (!o->class_names || !o->class_weights)) {
            util_fmt(err, errlen, "class weights: names and weights are required");
            goto out;
        }
        for (size_t i = 0; i < o->n_class_weights; i++) {
            const char *name = o->class_names[i] ? o->class_names[i] : "";
            size_t len = strlen(name);
            long c = ds_intern_find(&d->classes, name, len, ds_hash(name, len));
            if (c < 0) {
                util_fmt(err, errlen, "class weights: unknown class \"%s\"", name);
                goto out;
            }
            double v = o->class_weights[i];
            if (!isfinite(v) || v < 0) {
                util_fmt(err, errlen, "class weights: \"%s\": weight must be finite and >= 0",
                         name);
                goto out;
            }
            cw[c] = v;
        }
        break;
    default:
        util_fmt(err, errlen, "unknown class weighting %d", (int)o->class_weighting);
        goto out;
    }
    w = util_malloc((d->n_rows ? d->n_rows : 1) * sizeof *w);
    if (!w)
        goto oom;
    int64_t ts_max = INT64_MIN;
    for (size_t r = 0; r < d->n_rows; r++)
        if (d->ts[r] > ts_max)
            ts_max = d->ts[r];
    for (size_t r = 0; r < d->n_rows; r++) {
        double v = cw[d->label[r]];
        if (o->half_life_us > 0) {
            /* ts_max - ts in double: the difference may not fit in int64. */
            double age = (double)ts_max - (double)d->ts[r];
            v *= exp2(-age / (double)o->half_life_us);
        }
        w[r] = (float)v;
    }
    free(d->weight);
    d->weight = w;
    w = NULL;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    free(cw);
    free(w);
    return rc;
}

/* ---- split --------------------------------------------------------------- */

/* Stable merge sort of idx[0..n) by ts[idx]; tmp has room for n. */
static void sort_by_ts(uint32_t *idx, uint32_t *tmp, size_t n, const int64_t *ts)
{
    uint32_t *src = idx, *dst = tmp;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                dst[k++] = ts[src[j]] < ts[src[i]] ? src[j++] : src[i++];
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != idx)
        memcpy(idx, src, n * sizeof *idx);
}

int ds_split(struct ds *d, double valid_fraction, char *err, size_t errlen)
{
    int rc = -1;
    uint32_t *idx = NULL, *tmp = NULL;
    uint8_t *valid = NULL;
    size_t n = d->n_rows;
    if (!(valid_fraction >= 0.0 && valid_fraction < 1.0)) {
        util_fmt(err, errlen, "validation fraction must be in [0, 1)");
        goto out;
    }
    size_t n_valid = (size_t)floor(valid_fraction * (double)n + 0.5);
    if (valid_fraction > 0.0 && n >= 2) {
        if (n_valid < 1)
            n_valid = 1;
        if (n_valid > n - 1)
            n_valid = n - 1;
    } else {
        n_valid = 0;
    }
    struct ds_split_info info = {.n_train = n - n_valid, .n_valid = n_valid};
    valid = util_calloc(n ? n : 1, 1);
    if (!valid)
        goto oom;
    if (n_valid > 0) {
        idx = util_malloc(n * sizeof *idx);
        if (!idx)
            goto oom;
        bool sorted = true;
        for (size_t r = 0; r < n; r++) {
            idx[r] = (uint32_t)r;
            if (r > 0 && d->ts[r] < d->ts[r - 1])
                sorted = false;
        }
        if (!sorted) {
            tmp = util_malloc(n * sizeof *tmp);
            if (!tmp)
                goto oom;
            sort_by_ts(idx, tmp, n, d->ts);
        }
        for (size_t k = n - n_valid; k < n; k++)
            valid[idx[k]] = 1;
        info.train_ts_min = d->ts[idx[0]];
        info.train_ts_max = d->ts[idx[n - n_valid - 1]];
        info.valid_ts_min = d->ts[idx[n - n_valid]];
        info.valid_ts_max = d->ts[idx[n - 1]];
    } else if (n > 0) {
        info.train_ts_min = INT64_MAX;
        info.train_ts_max = INT64_MIN;
        for (size_t r = 0; r < n; r++) {
            if (d->ts[r] < info.train_ts_min)
                info.train_ts_min = d->ts[r];
            if (d->ts[r] > info.train_ts_max)
                info.train_ts_max = d->ts[r];
        }
    }
    free(d->valid);
    d->valid = valid;
    valid = NULL;
    d->split = info;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    free(idx);
    free(tmp);
    free(valid);
    return rc;
}

void ds_split_get(const struct ds *d, struct ds_split_info *out)
{
    if (d->valid) {
        *out = d->split;
        return;
    }
    /* No split yet: everything trains. */
    memset(out, 0, sizeof *out);
    out->n_train = d->n_rows;
    if (d->n_rows > 0) {
        out->train_ts_min = INT64_MAX;
        out->train_ts_max = INT64_MIN;
        for (size_t r = 0; r < d->n_rows; r++) {
            if (d->ts[r] < out->train_ts_min)
                out->train_ts_min = d->ts[r];
            if (d->ts[r] > out->train_ts_max)
                out->train_ts_max = d->ts[r];
        }
    }
}

bool ds_row_is_valid(const struct ds *d, size_t r)
{
    return d->valid && d->valid[r];
}

void ds_model_columns(const struct ds *d, const struct gbm_model *m, long *col)
{
    for (size_t f = 0; f < gbm_model_n_features(m); f++)
        col[f] = ds_feature_index(d, gbm_model_feature_name(m, f));
}

void ds_model_input(const struct ds *d, const struct gbm_model *m, const long *col, size_t r,
                    struct gbm_input *x)
{
    for (size_t f = 0; f < gbm_model_n_features(m); f++) {
        struct gbm_input *in = &x[f];
        in->missing = true;
        in->num = NAN;
        in->cat = NULL;
        if (col[f] < 0)
            continue;
        size_t k = (size_t)col[f];
        bool num_col = ds_feature_kind(d, k) == GBM_NUMERIC;
        if (gbm_model_feature_kind(m, f) == GBM_NUMERIC) {
            if (num_col) {
                in->num = ds_cell_num(d, k, r);
            } else {
                const char *lv = ds_cell_level(d, k, r);
                char *end = NULL;
                in->num = lv ? strtod(lv, &end) : NAN;
                if (!lv || *end || !isfinite(in->num))
                    in->num = NAN;
            }
            in->missing = isnan(in->num);
        } else if (!num_col) {
            in->cat = ds_cell_level(d, k, r);
            in->missing = in->cat == NULL;
        }
    }
}
