/*
 * policy: one training run (load, weight, split, bin, fit) and its
 * evaluation.  See policy.h for the flow.
 *
 * Validation log loss is computed here from raw feature values through the
 * model's own prediction path, for the new model and for a champion alike,
 * so the two numbers compared at promotion come from the same rows and the
 * same code: mean over validation rows of -log(max(p_label, 1e-15)),
 * weighted by nothing (every validation row counts once, whatever the
 * training weights), which is also how scripts/xgb-reference.py scores.
 */
#include "policy/policy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "util/util.h"

#define LOGLOSS_EPS 1e-15
/* A magnitude model needs at least this many training rows of its class. */
#define MAGNITUDE_MIN_ROWS 20

static const char *const sized_classes[] = {"bid_up", "bid_down", "budget_up", "budget_down"};

struct policy_run {
    struct ds *ds;
    struct ds_binned *binned;
    struct gbm_model *model;
    struct policy_train_result res;
    struct gbm_params params;
    unsigned max_bins;
    double valid_fraction;
    int64_t half_life_ms;
    enum cfg_class_weight_mode class_weight;
    double class_weights[CFG_N_CLASSES];
    const char *source; /* "database" or "csv" */
    char *csv_path;
    int64_t settle_ms, hold_ms;
};

void policy_train_options_from_cfg(struct policy_train_options *o, const struct cfg *cfg)
{
    memset(o, 0, sizeof *o);
    gbm_params_default(&o->gbm);
    o->gbm.rounds = (unsigned)cfg->train.rounds;
    o->gbm.learning_rate = cfg->train.learning_rate;
    o->gbm.lambda = cfg->train.lambda;
    o->gbm.min_child_weight = cfg->train.min_child_weight;
    o->gbm.early_stop = (unsigned)cfg->train.early_stop;
    o->gbm.threads = (unsigned)cfg->train.threads;
    o->gbm.seed = (uint64_t)cfg->train.seed;
    o->max_bins = (unsigned)cfg->train.max_bins;
    o->valid_fraction = cfg->train.valid_fraction;
    o->half_life_ms = cfg->train.half_life_ms;
    if (cfg_parse_class_weight(cfg->train.class_weight, &o->class_weight, o->class_weights, NULL,
                               0) != 0)
        o->class_weight = CFG_CLASS_WEIGHT_NONE; /* cannot happen: the config checked it */
    o->magnitude = true;
    o->query.features = cfg->features;
    o->query.n_features = cfg->n_features;
    o->query.settle_ms = cfg->labels.settle_window_ms;
    o->query.hold_ms = cfg->labels.hold_window_ms;
    o->query.since_us = INT64_MIN;
    o->query.until_us = INT64_MAX;
}

static int add_example(void *arg, const struct store_example *ex, char *err, size_t errlen)
{
    struct ds *ds = arg;
    int rc = ds_add_row(ds, ex->label, ex->ts_us, ex->operator_id, ex->delta_pct, ex->values);
    if (rc == -1)
        util_fmt(err, errlen, "out of memory");
    else if (rc != 0)
        util_fmt(err, errlen, "event %s: label %s is not a decision class", ex->event_id,
                 ex->label);
    if (rc != 0)
        return -1;
    return 0;
}

int policy_load_dataset(struct store *st, const struct store_example_query *q, struct ds **out,
                        char *err, size_t errlen)
{
    const char **names = util_calloc(q->n_features ? q->n_features : 1, sizeof *names);
    enum gbm_kind *kinds = util_calloc(q->n_features ? q->n_features : 1, sizeof *kinds);
    struct ds *ds = NULL;
    int rc = -1;
    if (!names || !kinds) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    for (size_t f = 0; f < q->n_features; f++) {
        names[f] = q->features[f].name;
        kinds[f] = q->features[f].kind == EVENT_FEATURE_NUMERIC ? GBM_NUMERIC : GBM_CATEGORICAL;
    }
    if (ds_new(names, kinds, q->n_features, cfg_class_names, CFG_N_CLASSES, &ds, err, errlen) != 0)
        goto out;
    if (store_load_examples(st, q, add_example, ds, NULL, err, errlen) != 0)
        goto out;
    *out = ds;
    ds = NULL;
    rc = 0;
out:
    ds_free(ds);
    free(names);
    free(kinds);
    return rc;
}

static int apply_weights(const struct policy_train_options *o, struct ds *ds, char *err,
                         size_t errlen)
{
    const char *names[CFG_N_CLASSES];
    double weights[CFG_N_CLASSES];
    size_t n = 0;
    struct ds_weight_options w = {.half_life_us = o->half_life_ms * 1000};

    switch (o->class_weight) {
    case CFG_CLASS_WEIGHT_NONE:
        w.class_weighting = DS_CLASS_WEIGHT_NONE;
        break;
    case CFG_CLASS_WEIGHT_BALANCED:
        w.class_weighting = DS_CLASS_WEIGHT_BALANCED;
        break;
    case CFG_CLASS_WEIGHT_MAP:
        /* Only the classes this dataset has: a CSV may use a subset. */
        w.class_weighting = DS_CLASS_WEIGHT_MAP;
        for (size_t c = 0; c < CFG_N_CLASSES; c++) {
            for (size_t k = 0; k < ds_n_classes(ds); k++) {
                if (strcmp(ds_class_name(ds, k), cfg_class_names[c]) == 0) {
                    names[n] = cfg_class_names[c];
                    weights[n++] = o->class_weights[c];
                }
            }
        }
        w.class_names = names;
        w.class_weights = weights;
        w.n_class_weights = n;
        break;
    }
    return ds_set_weights(ds, &w, err, errlen);
}

static int fit_magnitudes(struct policy_run *run, char *err, size_t errlen)
{
    struct gbm_params p = run->params;
    /* delta_pct is a noisy target: at most 100 rounds, early stopping on
     * the class's validation rows when there are any. */
    p.rounds = p.rounds < 100 ? p.rounds : 100;
    p.early_stop = p.early_stop ? p.early_stop : 10;
    for (size_t i = 0; i < sizeof sized_classes / sizeof sized_classes[0]; i++) {
        long c = -1;
        for (size_t k = 0; k < ds_n_classes(run->ds); k++) {
            if (strcmp(ds_class_name(run->ds, k), sized_classes[i]) == 0)
                c = (long)k;
        }
        if (c < 0)
            continue;
        struct gbm_data sub;
        if (ds_binned_class_subset(run->binned, (int32_t)c, false, &sub) != 0) {
            util_fmt(err, errlen, "out of memory");
            return -1;
        }
        if (sub.n_rows < MAGNITUDE_MIN_ROWS)
            continue;
        struct gbm_data vsub, *valid = NULL;
        if (ds_binned_valid(run->binned)) {
            if (ds_binned_class_subset(run->binned, (int32_t)c, true, &vsub) != 0) {
                util_fmt(err, errlen, "out of memory");
                return -1;
            }
            valid = vsub.n_rows ? &vsub : NULL;
        }
        if (gbm_fit_magnitude(run->model, sized_classes[i], &sub, valid, &p, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* The model keeps each numeric feature's training range (for the
 * out-of-distribution score); only the dataset has the raw values. */
static int record_ranges(struct policy_run *run, char *err, size_t errlen)
{
    const struct gbm_model *m = run->model;
    for (size_t f = 0; f < gbm_model_n_features(m); f++) {
        if (gbm_model_feature_kind(m, f) != GBM_NUMERIC)
            continue;
        long col = ds_feature_index(run->ds, gbm_model_feature_name(m, f));
        double lo = HUGE_VAL, hi = -HUGE_VAL;
        for (size_t r = 0; col >= 0 && r < ds_n_rows(run->ds); r++) {
            double v = ds_cell_num(run->ds, (size_t)col, r);
            if (ds_row_is_valid(run->ds, r) || !isfinite(v))
                continue;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (lo <= hi && gbm_model_set_feature_range(run->model, f, lo, hi) != 0) {
            util_fmt(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

int policy_run_evaluate(const struct policy_run *run, const struct gbm_model *model,
                        double *logloss, double *accuracy, char *err, size_t errlen)
{
    const struct ds *ds = run->ds;
    size_t nf = gbm_model_n_features(model), nc = gbm_model_n_classes(model);
    long *col = util_calloc(nf ? nf : 1, sizeof *col);
    long *cls = util_calloc(ds_n_classes(ds) ? ds_n_classes(ds) : 1, sizeof *cls);
    struct gbm_input *x = util_calloc(nf ? nf : 1, sizeof *x);
    double *margin = util_calloc(nc ? nc : 1, sizeof *margin);
    double *prob = util_calloc(nc ? nc : 1, sizeof *prob);
    int rc = -1;

    *logloss = NAN;
    *accuracy = NAN;
    if (!col || !cls || !x || !margin || !prob) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    ds_model_columns(ds, model, col);
    for (size_t k = 0; k < ds_n_classes(ds); k++) {
        cls[k] = -1;
        for (size_t c = 0; c < nc; c++) {
            if (strcmp(ds_class_name(ds, k), gbm_model_class_name(model, c)) == 0)
                cls[k] = (long)c;
        }
    }
    double sum = 0;
    size_t n = 0, hits = 0;
    for (size_t r = 0; r < ds_n_rows(ds); r++) {
        if (!ds_row_is_valid(ds, r))
            continue;
        ds_model_input(ds, model, col, r, x);
        gbm_predict(model, x, margin, prob);
        long y = cls[ds_row_label(ds, r)];
        double p = y >= 0 ? prob[y] : 0.0;
        sum += -log(p > LOGLOSS_EPS ? p : LOGLOSS_EPS);
        size_t best = 0;
        for (size_t c = 1; c < nc; c++) {
            if (prob[c] > prob[best])
                best = c;
        }
        hits += y >= 0 && (long)best == y;
        n++;
    }
    if (n) {
        *logloss = sum / (double)n;
        *accuracy = (double)hits / (double)n;
    }
    rc = 0;
out:
    free(col);
    free(cls);
    free(x);
    free(margin);
    free(prob);
    return rc;
}

static json_t *params_json(const struct policy_run *run)
{
    const char *cw = run->class_weight == CFG_CLASS_WEIGHT_NONE       ? "none"
                     : run->class_weight == CFG_CLASS_WEIGHT_BALANCED ? "balanced"
                                                                      : "map";
    json_t *p = json_pack(
        "{s:I, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:f, s:I, s:s}", "rounds",
        (json_int_t)run->params.rounds, "learning_rate", run->params.learning_rate, "lambda",
        run->params.lambda, "min_child_weight", run->params.min_child_weight, "early_stop",
        (json_int_t)run->params.early_stop, "threads", (json_int_t)run->params.threads, "seed",
        (json_int_t)run->params.seed, "max_bins", (json_int_t)run->max_bins, "valid_fraction",
        run->valid_fraction, "half_life_ms", (json_int_t)run->half_life_ms, "class_weight", cw);
    if (p && run->class_weight == CFG_CLASS_WEIGHT_MAP) {
        json_t *m = json_object();
        for (size_t c = 0; c < CFG_N_CLASSES; c++)
            json_object_set_new(m, cfg_class_names[c], json_real(run->class_weights[c]));
        json_object_set_new(p, "class_weights", m);
    }
    return p;
}

static json_t *real_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *ts_or_null(int64_t us)
{
    char buf[40];
    return us == INT64_MIN ? json_null() : json_string(util_format_rfc3339(us, buf, sizeof buf));
}

static json_t *metrics_json(const struct policy_run *run)
{
    const struct policy_train_result *r = &run->res;
    json_t *counts = json_object();
    for (size_t c = 0; counts && c < ds_n_classes(run->ds); c++)
        json_object_set_new(counts, ds_class_name(run->ds, c),
                            json_integer((json_int_t)ds_class_count(run->ds, c)));
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "rows", (json_int_t)r->rows, "train_rows", (json_int_t)r->train_rows,
                     "valid_rows", (json_int_t)r->valid_rows, "features", (json_int_t)r->n_features,
                     "classes", (json_int_t)r->n_classes, "rounds", (json_int_t)r->rounds,
                     "best_round", (json_int_t)r->best_round, "load_seconds", r->load_seconds,
                     "train_seconds", r->train_seconds, "train_logloss",
                     real_or_null(r->train_logloss), "valid_logloss",
                     real_or_null(r->valid_logloss), "valid_accuracy",
                     real_or_null(r->valid_accuracy), "train_from", ts_or_null(r->train_from_us),
                     "train_to", ts_or_null(r->train_to_us), "class_counts", counts);
}

static int set_metadata(struct policy_run *run, char *err, size_t errlen)
{
    json_t *meta = json_pack("{s:s, s:o, s:o}", "source", run->source, "parameters",
                             params_json(run), "metrics", metrics_json(run));
    if (meta && run->csv_path)
        json_object_set_new(meta, "csv", json_string(run->csv_path));
    if (meta && !run->csv_path)
        json_object_set_new(meta, "labels",
                            json_pack("{s:I, s:I}", "settle_window_ms", (json_int_t)run->settle_ms,
                                      "hold_window_ms", (json_int_t)run->hold_ms));
    if (!meta) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    int rc = gbm_model_set_metadata(run->model, meta);
    json_decref(meta);
    if (rc != 0)
        util_fmt(err, errlen, "out of memory");
    return rc;
}

int policy_train(const struct policy_train_options *o, struct policy_run **out, char *err,
                 size_t errlen)
{
    struct policy_run *run = util_calloc(1, sizeof *run);
    int rc = -1;
    *out = NULL;
    if (!run) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    run->params = o->gbm;
    run->max_bins = o->max_bins;
    run->valid_fraction = o->valid_fraction;
    run->half_life_ms = o->half_life_ms;
    run->class_weight = o->class_weight;
    memcpy(run->class_weights, o->class_weights, sizeof run->class_weights);
    run->settle_ms = o->query.settle_ms;
    run->hold_ms = o->query.hold_ms;
    run->source = o->csv_path ? "csv" : "database";
    run->res.train_logloss = run->res.valid_logloss = run->res.valid_accuracy = NAN;
    run->res.train_from_us = run->res.train_to_us = INT64_MIN;

    int64_t t0 = util_now_mono_us();
    if (o->csv_path) {
        if (!(run->csv_path = util_strdup(o->csv_path))) {
            util_fmt(err, errlen, "out of memory");
            goto out;
        }
        if (ds_read_csv(o->csv_path, &o->csv, &run->ds, err, errlen) != 0)
            goto out;
    } else if (policy_load_dataset(o->store, &o->query, &run->ds, err, errlen) != 0) {
        goto out;
    }
    int64_t t1 = util_now_mono_us();
    run->res.load_seconds = (double)(t1 - t0) / 1e6;
    run->res.rows = ds_n_rows(run->ds);
    run->res.n_features = ds_n_features(run->ds);
    run->res.n_classes = ds_n_classes(run->ds);
    if (run->res.rows < 2) {
        util_fmt(err, errlen, "%zu example%s: training needs at least 2", run->res.rows,
                 run->res.rows == 1 ? "" : "s");
        goto out;
    }
    if (run->res.n_features == 0) {
        util_fmt(err, errlen, "no features to train on");
        goto out;
    }
    if (apply_weights(o, run->ds, err, errlen) != 0 ||
        ds_split(run->ds, o->valid_fraction, err, errlen) != 0)
        goto out;
    struct ds_split_info split;
    ds_split_get(run->ds, &split);
    run->res.train_rows = split.n_train;
    run->res.valid_rows = split.n_valid;
    /* A CSV without a ts column orders by row number: no time window then. */
    if (split.n_train && (!o->csv_path || o->csv.ts)) {
        run->res.train_from_us = split.train_ts_min;
        run->res.train_to_us = split.train_ts_max;
    }
    if (ds_bin(run->ds, o->max_bins, o->gbm.threads, &run->binned, err, errlen) != 0)
        goto out;
    const char **classes = util_calloc(run->res.n_classes, sizeof *classes);
    if (!classes) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    for (size_t c = 0; c < run->res.n_classes; c++)
        classes[c] = ds_class_name(run->ds, c);
    int fit =
        gbm_fit(ds_binned_train(run->binned), ds_binned_valid(run->binned), run->res.n_classes,
                classes, &o->gbm, o->progress, o->progress_arg, &run->model, err, errlen);
    free(classes);
    if (fit != 0)
        goto out;
    if (record_ranges(run, err, errlen) != 0)
        goto out;
    if (o->magnitude && fit_magnitudes(run, err, errlen) != 0)
        goto out;
    run->res.train_seconds = (double)(util_now_mono_us() - t1) / 1e6;
    run->res.rounds = gbm_model_rounds_trained(run->model);
    run->res.best_round = gbm_model_rounds(run->model);
    run->res.train_logloss = gbm_model_train_logloss(run->model);
    if (policy_run_evaluate(run, run->model, &run->res.valid_logloss, &run->res.valid_accuracy, err,
                            errlen) != 0 ||
        set_metadata(run, err, errlen) != 0)
        goto out;
    *out = run;
    run = NULL;
    rc = 0;
out:
    policy_run_free(run);
    return rc;
}

void policy_run_free(struct policy_run *run)
{
    if (!run)
        return;
    gbm_model_free(run->model);
    ds_binned_free(run->binned);
    ds_free(run->ds);
    free(run->csv_path);
    free(run);
}

const struct policy_train_result *policy_run_result(const struct policy_run *run)
{
    return &run->res;
}

const struct gbm_model *policy_run_model(const struct policy_run *run)
{
    return run->model;
}

char *policy_run_metrics_json(const struct policy_run *run)
{
    json_t *m = metrics_json(run);
    char *s =
        m ? json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(m);
    return s;
}

int policy_run_write_model(const struct policy_run *run, const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    char *text = gbm_model_to_json(run->model);
    FILE *f = NULL;
    int rc = -1;
    if (!text) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    if (strlen(path) + 16 > sizeof tmp) {
        util_fmt(err, errlen, "%s: path too long", path);
        goto out;
    }
    util_fmt(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (!(f = fopen(tmp, "w"))) {
        util_fmt(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t len = strlen(text);
    int bad = fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (fclose(f) != 0 || bad) {
        util_fmt(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        util_fmt(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(text);
    return rc;
}
