/*
 * gbm_json: the model as JSON text and back.
 *
 * Layout (version 1; every key required unless marked optional):
 *
 *   {"format": "understudy-gbm", "version": 1,
 *    "classes": ["hold", ...],
 *    "features": [{"name": "cpa_ratio", "kind": "numeric", "cuts": [...],
 *                  "mass": [...], "min": 0.1, "max": 9.5},          min/max optional
 *                 {"name": "channel", "kind": "categorical", "n_bins": 4,
 *                  "levels": ["search", ...], "level_bins": [0, ...], "mass": [...]}],
 *    "params": {"rounds": 200, "learning_rate": 0.3, "lambda": 1,
 *               "min_child_weight": 1, "early_stop": 20, "seed": "0"},
 *    "base_margin": [0, ...],
 *    "rounds_trained": 180, "best_round": 160,
 *    "metrics": {"train_loss": .., "valid_loss": .. or null, "valid_accuracy": .. or null},
 *    "stumps": [[stump per class] per kept round],
 *    "magnitude": {"bid_up": {"params": {..}, "base_margin": [..], "rounds_trained": ..,
 *                             "best_round": .., "metrics": {..}, "stumps": [[stump]...]}},
 *    "metadata": {...} or null}
 *
 * A stump is {"leaf": v}, or {"feature": i, "threshold": x (numeric) or
 * "left_bins": [sorted bins] (categorical), "default_left": b, "left": v,
 * "right": v, "gain": g}.  mass has n_bins + 1 entries, the last for
 * missing values; a numeric feature has n_bins = len(cuts) + 1.  The seed
 * is a decimal string because it is 64 bits wide.  Losses are log losses
 * for the classifier and mean squared errors for magnitude models.
 *
 * Doubles are written with jansson's default of 17 significant digits and
 * so read back to the same bits.  The loader checks everything (types,
 * ranges, indices, counts, order, finiteness; unknown keys are errors) and
 * names the place of the first problem: "stumps[3][2].feature: out of
 * range".  The compiled step functions are rebuilt, never stored.
 */
#include "gbm/gbm_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define GBM_FORMAT  "understudy-gbm"
#define GBM_VERSION 1

/* ---- writing ------------------------------------------------------------ */

/* jansson steals the value; a NULL value (out of memory) fails the set. */
static int put(json_t *obj, const char *key, json_t *v)
{
    return v ? json_object_set_new(obj, key, v) : -1;
}

static int append(json_t *arr, json_t *v)
{
    return v ? json_array_append_new(arr, v) : -1;
}

static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *reals(const double *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if (append(a, json_real(v[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *params_json(const struct gbm_params *p)
{
    char seed[32];
    json_t *o = json_object();
    util_fmt(seed, sizeof seed, "%" PRIu64, p->seed);
    if (!o || put(o, "rounds", json_integer(p->rounds)) < 0 ||
        put(o, "learning_rate", json_real(p->learning_rate)) < 0 ||
        put(o, "lambda", json_real(p->lambda)) < 0 ||
        put(o, "min_child_weight", json_real(p->min_child_weight)) < 0 ||
        put(o, "early_stop", json_integer(p->early_stop)) < 0 ||
        put(o, "seed", json_string(seed)) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *feature_json(const struct gbm_feat *f)
{
    json_t *o = json_object();
    if (!o || put(o, "name", json_string(f->name)) < 0)
        goto fail;
    if (f->kind == GBM_NUMERIC) {
        if (put(o, "kind", json_string("numeric")) < 0 ||
            put(o, "cuts", reals(f->cuts, f->n_bins - 1)) < 0)
            goto fail;
    } else {
        json_t *lv, *lb;
        if (put(o, "kind", json_string("categorical")) < 0 ||
            put(o, "n_bins", json_integer(f->n_bins)) < 0 ||
            put(o, "levels", lv = json_array()) < 0)
            goto fail;
        if (put(o, "level_bins", lb = json_array()) < 0)
            goto fail;
        for (size_t i = 0; i < f->n_levels; i++) {
            if (append(lv, json_string(f->levels[i])) < 0 ||
                append(lb, json_integer(f->level_bin[i])) < 0)
                goto fail;
        }
    }
    if (put(o, "mass", reals(f->mass, f->n_bins + 1)) < 0)
        goto fail;
    if (f->has_range &&
        (put(o, "min", json_real(f->min)) < 0 || put(o, "max", json_real(f->max)) < 0))
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

static json_t *stump_json(const struct gbm_model *m, const struct gbm_stump *s)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (s->feature < 0) {
        if (put(o, "leaf", json_real(s->left_value)) < 0)
            goto fail;
        return o;
    }
    const struct gbm_feat *f = &m->feat[s->feature];
    if (put(o, "feature", json_integer(s->feature)) < 0)
        goto fail;
    if (f->kind == GBM_NUMERIC) {
        if (put(o, "threshold", json_real(s->threshold)) < 0)
            goto fail;
    } else {
        json_t *lb = json_array();
        if (put(o, "left_bins", lb) < 0)
            goto fail;
        for (unsigned b = 0; b < f->n_bins; b++) {
            if (((s->left[b / 64] >> (b % 64)) & 1) && append(lb, json_integer(b)) < 0)
                goto fail;
        }
    }
    if (put(o, "default_left", json_boolean(s->default_left)) < 0 ||
        put(o, "left", json_real(s->left_value)) < 0 ||
        put(o, "right", json_real(s->right_value)) < 0 || put(o, "gain", json_real(s->gain)) < 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

/* Fills the keys a classifier and a magnitude model share. */
static int booster_json(const struct gbm_model *m, const struct gbm_booster *b, json_t *o)
{
    json_t *metrics = NULL, *stumps = NULL;
    if (put(o, "params", params_json(&b->params)) < 0 ||
        put(o, "base_margin", reals(b->base_margin, b->K)) < 0 ||
        put(o, "rounds_trained", json_integer(b->rounds_trained)) < 0 ||
        put(o, "best_round", json_integer(b->n_rounds)) < 0 ||
        put(o, "metrics", metrics = json_object()) < 0 ||
        put(o, "stumps", stumps = json_array()) < 0)
        return -1;
    if (put(metrics, "train_loss", real_or_null(b->train_loss)) < 0 ||
        put(metrics, "valid_loss", real_or_null(b->valid_loss)) < 0 ||
        (b->objective == GBM_SOFTMAX &&
         put(metrics, "valid_accuracy", real_or_null(b->valid_accuracy)) < 0))
        return -1;
    for (unsigned r = 0; r < b->n_rounds; r++) {
        json_t *round = json_array();
        if (append(stumps, round) < 0)
            return -1;
        for (size_t k = 0; k < b->K; k++) {
            if (append(round, stump_json(m, &b->stumps[(size_t)r * b->K + k])) < 0)
                return -1;
        }
    }
    return 0;
}

static json_t *model_json(const struct gbm_model *m)
{
    json_t *o = json_object(), *classes, *features, *mag;
    if (!o || put(o, "format", json_string(GBM_FORMAT)) < 0 ||
        put(o, "version", json_integer(GBM_VERSION)) < 0 ||
        put(o, "classes", classes = json_array()) < 0 ||
        put(o, "features", features = json_array()) < 0)
        goto fail;
    for (size_t k = 0; k < m->K; k++) {
        if (append(classes, json_string(m->classes[k])) < 0)
            goto fail;
    }
    for (size_t f = 0; f < m->F; f++) {
        if (append(features, feature_json(&m->feat[f])) < 0)
            goto fail;
    }
    if (booster_json(m, &m->cls, o) < 0 || put(o, "magnitude", mag = json_object()) < 0)
        goto fail;
    for (size_t k = 0; k < m->K; k++) {
        if (!m->mag[k])
            continue;
        json_t *b = json_object();
        if (put(mag, m->classes[k], b) < 0 || booster_json(m, m->mag[k], b) < 0)
            goto fail;
    }
    if (put(o, "metadata", m->meta ? json_incref(m->meta) : json_null()) < 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return util_buf_append(data, buffer, size);
}

char *gbm_model_to_json(const struct gbm_model *m)
{
    struct util_buf b;
    util_buf_init(&b);
    json_t *o = model_json(m);
    if (!o)
        return NULL;
    int rc = json_dump_callback(o, dump_cb, &b, JSON_COMPACT);
    json_decref(o);
    if (rc != 0 || !b.data) {
        util_buf_deinit(&b);
        return NULL;
    }
    return util_buf_steal(&b);
}

/* ---- reading ------------------------------------------------------------ */

struct ld {
    char *err;
    size_t errlen;
};

static int bad(struct ld *l, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "path: message" and returns -1. */
static int bad(struct ld *l, const char *path, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    util_fmt(l->err, l->errlen, "%s: %s", path, msg);
    return -1;
}

static int oom(struct ld *l)
{
    util_fmt(l->err, l->errlen, "out of memory");
    return -1;
}

/* path + "." + key (or "[i]"), cut to the buffer. */
static const char *sub(char *buf, size_t size, const char *path, const char *key)
{
    return util_fmt(buf, size, "%s%s%s", path, path[0] ? "." : "", key);
}

static const char *idx(char *buf, size_t size, const char *path, size_t i)
{
    return util_fmt(buf, size, "%s[%zu]", path, i);
}

/* Refuses keys outside allowed (the smallest in byte order, so the reason
 * does not depend on iteration order). */
static int only_keys(struct ld *l, json_t *o, const char *path, const char *const *allowed)
{
    const char *key, *worst = NULL;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        (void)v;
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok && (!worst || strcmp(key, worst) < 0))
            worst = key;
    }
    if (worst) {
        char p[256] = "";
        return bad(l, sub(p, sizeof p, path, worst), "unknown key");
    }
    return 0;
}

static json_t *need(struct ld *l, json_t *o, const char *path, const char *key, char *p,
                    size_t psize)
{
    sub(p, psize, path, key);
    json_t *v = json_object_get(o, key);
    if (!v)
        bad(l, p, "missing");
    return v;
}

static int get_object(struct ld *l, json_t *o, const char *path, const char *key, json_t **out)
{
    char p[256] = "";
    json_t *v = need(l, o, path, key, p, sizeof p);
    if (!v)
        return -1;
    if (!json_is_object(v))
        return bad(l, p, "not an object");
    *out = v;
    return 0;
}

static int get_array(struct ld *l, json_t *o, const char *path, const char *key, size_t min,
                     size_t max, json_t **out)
{
    char p[256] = "";
    json_t *v = need(l, o, path, key, p, sizeof p);
    if (!v)
        return -1;
    if (!json_is_array(v))
        return bad(l, p, "not an array");
    if (json_array_size(v) < min || json_array_size(v) > max)
        return bad(l, p, "%zu elements, not in %zu..%zu", json_array_size(v), min, max);
    *out = v;
    return 0;
}

static int as_int(struct ld *l, json_t *v, const char *p, long long min, long long max,
                  long long *out)
{
    if (!json_is_integer(v))
        return bad(l, p, "not an integer");
    long long x = json_integer_value(v);
    if (x < min || x > max)
        return bad(l, p, "out of range");
    *out = x;
    return 0;
}

static int get_int(struct ld *l, json_t *o, const char *path, const char *key, long long min,
                   long long max, long long *out)
{
    char p[256] = "";
    json_t *v = need(l, o, path, key, p, sizeof p);
    return v ? as_int(l, v, p, min, max, out) : -1;
}

static int as_real(struct ld *l, json_t *v, const char *p, double *out)
{
    if (!json_is_number(v))
        return bad(l, p, "not a number");
    double x = json_number_value(v);
    if (!isfinite(x))
        return bad(l, p, "not finite");
    *out = x;
    return 0;
}

static int get_real(struct ld *l, json_t *o, const char *path, const char *key, double *out)
{
    char p[256] = "";
    json_t *v = need(l, o, path, key, p, sizeof p);
    return v ? as_real(l, v, p, out) : -1;
}

/* A finite number or null (NaN). */
static int get_real_or_null(struct ld *l, json_t *o, const char *path, const char *key, double *out)
{
    char p[256] = "";
    json_t *v = need(l, o, path, key, p, sizeof p);
    if (!v)
        return -1;
    if (json_is_null(v)) {
        *out = NAN;
        return 0;
    }
    return as_real(l, v, p, out);
}

static int get_string(struct ld *l, json_t *o, const char *path, const char *key, const char **out)
{
    char p[256] = "";
    *out = "";
    json_t *v = need(l, o, path, key, p, sizeof p);
    if (!v)
        return -1;
    const char *sv = json_string_value(v);
    if (!sv)
        return bad(l, p, "not a string");
    if (strlen(sv) != json_string_length(v))
        return bad(l, p, "contains NUL");
    *out = sv;
    return 0;
}

/* n finite numbers into out[n]. */
static int get_reals(struct ld *l, json_t *o, const char *path, const char *key, size_t n,
                     double *out)
{
    char p[256] = "", q[256] = "";
    json_t *a = NULL;
    if (get_array(l, o, path, key, n, n, &a) < 0)
        return -1;
    sub(p, sizeof p, path, key);
    for (size_t i = 0; i < n; i++) {
        if (as_real(l, json_array_get(a, i), idx(q, sizeof q, p, i), &out[i]) < 0)
            return -1;
    }
    return 0;
}

static int load_params(struct ld *l, json_t *o, const char *path, struct gbm_params *p)
{
    static const char *const keys[] = {"rounds",     "learning_rate", "lambda", "min_child_weight",
                                       "early_stop", "seed",          NULL};
    char q[256] = "";
    long long v = 0;
    const char *seed = NULL;
    gbm_params_default(p);
    if (only_keys(l, o, path, keys) < 0 || get_int(l, o, path, "rounds", 1, GBM_MAX_ROUNDS, &v) < 0)
        return -1;
    p->rounds = (unsigned)v;
    if (get_real(l, o, path, "learning_rate", &p->learning_rate) < 0)
        return -1;
    if (!(p->learning_rate > 0.0 && p->learning_rate <= 1.0))
        return bad(l, sub(q, sizeof q, path, "learning_rate"), "not in (0, 1]");
    if (get_real(l, o, path, "lambda", &p->lambda) < 0)
        return -1;
    if (p->lambda < 0.0)
        return bad(l, sub(q, sizeof q, path, "lambda"), "negative");
    if (get_real(l, o, path, "min_child_weight", &p->min_child_weight) < 0)
        return -1;
    if (p->min_child_weight < 0.0)
        return bad(l, sub(q, sizeof q, path, "min_child_weight"), "negative");
    if (get_int(l, o, path, "early_stop", 0, GBM_MAX_ROUNDS, &v) < 0)
        return -1;
    p->early_stop = (unsigned)v;
    if (get_string(l, o, path, "seed", &seed) < 0)
        return -1;
    char *end;
    errno = 0;
    unsigned long long s = strtoull(seed, &end, 10);
    if (!seed[0] || *end || errno || seed[0] < '0' || seed[0] > '9')
        return bad(l, sub(q, sizeof q, path, "seed"), "not a decimal 64-bit unsigned integer");
    p->seed = s;
    return 0;
}

static int load_feature(struct ld *l, json_t *o, const char *path, struct gbm_feat *f)
{
    static const char *const num_keys[] = {"name", "kind", "cuts", "mass", "min", "max", NULL};
    static const char *const cat_keys[] = {"name",       "kind", "n_bins", "levels",
                                           "level_bins", "mass", NULL};
    char p[256] = "", q[256] = "";
    const char *name = NULL, *kind = NULL;
    json_t *a = NULL, *b = NULL;
    long long v = 0;
    if (!json_is_object(o))
        return bad(l, path, "not an object");
    if (get_string(l, o, path, "name", &name) < 0)
        return -1;
    if (!name[0])
        return bad(l, sub(p, sizeof p, path, "name"), "empty");
    if (get_string(l, o, path, "kind", &kind) < 0)
        return -1;
    if (strcmp(kind, "numeric") == 0)
        f->kind = GBM_NUMERIC;
    else if (strcmp(kind, "categorical") == 0)
        f->kind = GBM_CATEGORICAL;
    else
        return bad(l, sub(p, sizeof p, path, "kind"), "not \"numeric\" or \"categorical\"");
    if (only_keys(l, o, path, f->kind == GBM_NUMERIC ? num_keys : cat_keys) < 0)
        return -1;
    f->name = util_strdup(name);
    if (!f->name)
        return oom(l);
    if (f->kind == GBM_NUMERIC) {
        if (get_array(l, o, path, "cuts", 0, GBM_MAX_BINS - 1, &a) < 0)
            return -1;
        f->n_bins = (unsigned)json_array_size(a) + 1;
        f->cuts = util_calloc(f->n_bins, sizeof *f->cuts);
        if (!f->cuts)
            return oom(l);
        if (get_reals(l, o, path, "cuts", f->n_bins - 1, f->cuts) < 0)
            return -1;
        for (unsigned i = 1; i + 1 < f->n_bins; i++) {
            if (!(f->cuts[i - 1] < f->cuts[i]))
                return bad(l, idx(q, sizeof q, sub(p, sizeof p, path, "cuts"), i),
                           "not above the cut before");
        }
        json_t *mn = json_object_get(o, "min"), *mx = json_object_get(o, "max");
        if (!mn != !mx)
            return bad(l, sub(p, sizeof p, path, mn ? "max" : "min"),
                       "missing (min and max go "
                       "together)");
        if (mn) {
            if (get_real(l, o, path, "min", &f->min) < 0 ||
                get_real(l, o, path, "max", &f->max) < 0)
                return -1;
            if (f->min > f->max)
                return bad(l, sub(p, sizeof p, path, "max"), "below min");
            f->has_range = true;
        }
    } else {
        if (get_int(l, o, path, "n_bins", 1, GBM_MAX_BINS, &v) < 0)
            return -1;
        f->n_bins = (unsigned)v;
        if (get_array(l, o, path, "levels", 0, SIZE_MAX, &a) < 0)
            return -1;
        size_t n = json_array_size(a);
        if (get_array(l, o, path, "level_bins", n, n, &b) < 0)
            return -1;
        f->levels = util_calloc(n ? n : 1, sizeof *f->levels);
        f->level_bin = util_calloc(n ? n : 1, 1);
        if (!f->levels || !f->level_bin)
            return oom(l);
        sub(p, sizeof p, path, "levels");
        for (size_t i = 0; i < n; i++) {
            json_t *s = json_array_get(a, i);
            idx(q, sizeof q, p, i);
            if (!json_is_string(s))
                return bad(l, q, "not a string");
            if (strlen(json_string_value(s)) != json_string_length(s))
                return bad(l, q, "contains NUL");
            f->levels[i] = util_strdup(json_string_value(s));
            if (!f->levels[i])
                return oom(l);
            f->n_levels = i + 1;
        }
        sub(p, sizeof p, path, "level_bins");
        for (size_t i = 0; i < n; i++) {
            if (as_int(l, json_array_get(b, i), idx(q, sizeof q, p, i), 0, f->n_bins - 1, &v) < 0)
                return -1;
            f->level_bin[i] = (uint8_t)v;
        }
        if (gbm_feat_index_levels(f) < 0)
            return oom(l);
        for (size_t i = 1; i < n; i++) {
            size_t i0 = f->level_order[i - 1], i1 = f->level_order[i];
            if (strcmp(f->levels[i0], f->levels[i1]) == 0)
                return bad(l, idx(q, sizeof q, sub(p, sizeof p, path, "levels"), i0 > i1 ? i0 : i1),
                           "duplicate level");
        }
    }
    f->mass = util_calloc(f->n_bins + 1, sizeof *f->mass);
    if (!f->mass)
        return oom(l);
    if (get_reals(l, o, path, "mass", f->n_bins + 1, f->mass) < 0)
        return -1;
    for (unsigned i = 0; i <= f->n_bins; i++) {
        if (f->mass[i] < 0.0)
            return bad(l, idx(q, sizeof q, sub(p, sizeof p, path, "mass"), i), "negative");
    }
    return 0;
}

static int load_stump(struct ld *l, const struct gbm_model *m, json_t *o, const char *path,
                      struct gbm_stump *s)
{
    static const char *const leaf_keys[] = {"leaf", NULL};
    static const char *const num_keys[] = {"feature", "threshold", "default_left", "left", "right",
                                           "gain",    NULL};
    static const char *const cat_keys[] = {"feature", "left_bins", "default_left", "left", "right",
                                           "gain",    NULL};
    char p[256] = "", q[256] = "";
    long long v = 0;
    memset(s, 0, sizeof *s);
    if (!json_is_object(o))
        return bad(l, path, "not an object");
    if (json_object_get(o, "leaf")) {
        if (only_keys(l, o, path, leaf_keys) < 0 ||
            get_real(l, o, path, "leaf", &s->left_value) < 0)
            return -1;
        s->feature = -1;
        s->right_value = s->left_value;
        return 0;
    }
    if (get_int(l, o, path, "feature", 0, LLONG_MAX, &v) < 0)
        return -1;
    if ((size_t)v >= m->F)
        return bad(l, sub(p, sizeof p, path, "feature"), "out of range");
    s->feature = (int32_t)v;
    const struct gbm_feat *f = &m->feat[v];
    if (only_keys(l, o, path, f->kind == GBM_NUMERIC ? num_keys : cat_keys) < 0)
        return -1;
    if (f->kind == GBM_NUMERIC) {
        if (get_real(l, o, path, "threshold", &s->threshold) < 0)
            return -1;
        unsigned t = 0;
        while (t + 1 < f->n_bins && f->cuts[t] < s->threshold)
            t++;
        if (t + 1 >= f->n_bins || f->cuts[t] > s->threshold)
            return bad(l, sub(p, sizeof p, path, "threshold"), "not one of the feature's cuts");
        s->bin = (uint8_t)t;
        for (unsigned b = 0; b <= t; b++)
            s->left[b / 64] |= (uint64_t)1 << (b % 64);
    } else {
        json_t *a = NULL;
        if (get_array(l, o, path, "left_bins", 0, f->n_bins, &a) < 0)
            return -1;
        sub(p, sizeof p, path, "left_bins");
        long long prev = -1;
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (as_int(l, json_array_get(a, i), idx(q, sizeof q, p, i), 0, f->n_bins - 1, &v) < 0)
                return -1;
            if (v <= prev)
                return bad(l, q, "not above the bin before");
            prev = v;
            s->left[v / 64] |= (uint64_t)1 << (v % 64);
        }
    }
    json_t *dl = json_object_get(o, "default_left");
    if (!dl)
        return bad(l, sub(p, sizeof p, path, "default_left"), "missing");
    if (!json_is_boolean(dl))
        return bad(l, sub(p, sizeof p, path, "default_left"), "not a boolean");
    s->default_left = json_is_true(dl);
    if (get_real(l, o, path, "left", &s->left_value) < 0 ||
        get_real(l, o, path, "right", &s->right_value) < 0 ||
        get_real(l, o, path, "gain", &s->gain) < 0)
        return -1;
    if (s->gain < 0.0)
        return bad(l, sub(p, sizeof p, path, "gain"), "negative");
    return 0;
}

/* The keys a classifier and a magnitude model share, into b (K set). */
static int load_booster(struct ld *l, struct gbm_model *m, json_t *o, const char *path,
                        struct gbm_booster *b)
{
    char p[256] = "", q[256] = "", r[256] = "";
    long long v = 0;
    json_t *metrics = NULL, *stumps = NULL;
    if (get_object(l, o, path, "params", &metrics) < 0 ||
        load_params(l, metrics, sub(p, sizeof p, path, "params"), &b->params) < 0)
        return -1;
    b->params.threads = 1;
    b->base_margin = util_calloc(b->K, sizeof *b->base_margin);
    if (!b->base_margin)
        return oom(l);
    if (get_reals(l, o, path, "base_margin", b->K, b->base_margin) < 0)
        return -1;
    if (get_int(l, o, path, "rounds_trained", 1, b->params.rounds, &v) < 0)
        return -1;
    b->rounds_trained = (unsigned)v;
    if (get_int(l, o, path, "best_round", 1, b->rounds_trained, &v) < 0)
        return -1;
    b->n_rounds = (unsigned)v;
    if (get_object(l, o, path, "metrics", &metrics) < 0)
        return -1;
    sub(p, sizeof p, path, "metrics");
    static const char *const cls_keys[] = {"train_loss", "valid_loss", "valid_accuracy", NULL};
    static const char *const mag_keys[] = {"train_loss", "valid_loss", NULL};
    if (only_keys(l, metrics, p, b->objective == GBM_SOFTMAX ? cls_keys : mag_keys) < 0 ||
        get_real_or_null(l, metrics, p, "train_loss", &b->train_loss) < 0 ||
        get_real_or_null(l, metrics, p, "valid_loss", &b->valid_loss) < 0)
        return -1;
    if (b->objective == GBM_SOFTMAX &&
        get_real_or_null(l, metrics, p, "valid_accuracy", &b->valid_accuracy) < 0)
        return -1;
    if (get_array(l, o, path, "stumps", b->n_rounds, b->n_rounds, &stumps) < 0)
        return -1;
    b->stumps = util_calloc((size_t)b->n_rounds * b->K, sizeof *b->stumps);
    if (!b->stumps)
        return oom(l);
    sub(p, sizeof p, path, "stumps");
    for (size_t t = 0; t < b->n_rounds; t++) {
        json_t *round = json_array_get(stumps, t);
        idx(q, sizeof q, p, t);
        if (!json_is_array(round))
            return bad(l, q, "not an array");
        if (json_array_size(round) != b->K)
            return bad(l, q, "%zu stumps, not %zu", json_array_size(round), b->K);
        for (size_t k = 0; k < b->K; k++) {
            if (load_stump(l, m, json_array_get(round, k), idx(r, sizeof r, q, k),
                           &b->stumps[t * b->K + k]) < 0)
                return -1;
        }
    }
    return gbm_booster_compile(m, b) < 0 ? oom(l) : 0;
}

static int load_model(struct ld *l, json_t *root, struct gbm_model **out)
{
    static const char *const keys[] = {"format",  "version",     "classes",        "features",
                                       "params",  "base_margin", "rounds_trained", "best_round",
                                       "metrics", "stumps",      "magnitude",      "metadata",
                                       NULL};
    static const char *const mag_keys[] = {
        "params", "base_margin", "rounds_trained", "best_round", "metrics", "stumps", NULL};
    char p[256] = "", q[256] = "";
    const char *s = NULL;
    long long v = 0;
    json_t *classes = NULL, *features = NULL, *mag = NULL, *meta = NULL;
    struct gbm_model *m = NULL;
    if (!json_is_object(root))
        return bad(l, "model", "not a JSON object");
    if (get_string(l, root, "", "format", &s) < 0)
        return -1;
    if (strcmp(s, GBM_FORMAT) != 0)
        return bad(l, "format", "not \"" GBM_FORMAT "\"");
    if (get_int(l, root, "", "version", LLONG_MIN, LLONG_MAX, &v) < 0)
        return -1;
    if (v != GBM_VERSION)
        return bad(l, "version", "unsupported version %lld (this build reads %d)", v, GBM_VERSION);
    if (only_keys(l, root, "", keys) < 0 ||
        get_array(l, root, "", "classes", 2, GBM_MAX_CLASSES, &classes) < 0 ||
        get_array(l, root, "", "features", 1, GBM_MAX_FEATURES, &features) < 0)
        return -1;
    m = gbm_model_alloc(json_array_size(features), json_array_size(classes));
    if (!m)
        return oom(l);
    for (size_t k = 0; k < m->K; k++) {
        json_t *c = json_array_get(classes, k);
        idx(p, sizeof p, "classes", k);
        if (!json_is_string(c) || !json_string_value(c)[0] ||
            strlen(json_string_value(c)) != json_string_length(c)) {
            bad(l, p, "not a non-empty string");
            goto fail;
        }
        for (size_t j = 0; j < k; j++) {
            if (strcmp(m->classes[j], json_string_value(c)) == 0) {
                bad(l, p, "duplicate class");
                goto fail;
            }
        }
        m->classes[k] = util_strdup(json_string_value(c));
        if (!m->classes[k]) {
            oom(l);
            goto fail;
        }
    }
    for (size_t f = 0; f < m->F; f++) {
        idx(p, sizeof p, "features", f);
        if (load_feature(l, json_array_get(features, f), p, &m->feat[f]) < 0)
            goto fail;
        for (size_t g = 0; g < f; g++) {
            if (strcmp(m->feat[g].name, m->feat[f].name) == 0) {
                bad(l, sub(q, sizeof q, p, "name"), "duplicate feature");
                goto fail;
            }
        }
    }
    m->cls.objective = GBM_SOFTMAX;
    m->cls.K = m->K;
    if (load_booster(l, m, root, "", &m->cls) < 0 || get_object(l, root, "", "magnitude", &mag) < 0)
        goto fail;
    const char *key;
    json_t *val;
    json_object_foreach(mag, key, val)
    {
        sub(p, sizeof p, "magnitude", key);
        int k = gbm_model_class_index(m, key);
        if (k < 0) {
            bad(l, p, "not a class");
            goto fail;
        }
        if (!json_is_object(val)) {
            bad(l, p, "not an object");
            goto fail;
        }
        if (only_keys(l, val, p, mag_keys) < 0)
            goto fail;
        struct gbm_booster *b = util_calloc(1, sizeof *b);
        if (!b) {
            oom(l);
            goto fail;
        }
        m->mag[k] = b;
        b->objective = GBM_SQUARED;
        b->K = 1;
        b->train_loss = b->valid_loss = b->valid_accuracy = NAN;
        if (load_booster(l, m, val, p, b) < 0)
            goto fail;
    }
    meta = json_object_get(root, "metadata");
    if (!meta) {
        bad(l, "metadata", "missing");
        goto fail;
    }
    if (!json_is_null(meta) && !json_is_object(meta)) {
        bad(l, "metadata", "not an object or null");
        goto fail;
    }
    if (json_is_object(meta))
        m->meta = json_incref(meta);
    *out = m;
    return 0;
fail:
    gbm_model_free(m);
    return -1;
}

int gbm_model_from_json(const char *text, size_t len, struct gbm_model **out, char *err,
                        size_t errlen)
{
    struct ld l = {err, errlen};
    json_error_t jerr;
    *out = NULL;
    /* jansson leaves the error unset on some allocation failures. */
    memset(&jerr, 0, sizeof jerr);
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_out_of_memory || !jerr.text[0])
            return oom(&l);
        util_fmt(err, errlen, "json: line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return -1;
    }
    int rc = load_model(&l, root, out);
    json_decref(root);
    return rc;
}
