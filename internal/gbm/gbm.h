/*
 * gbm: gradient-boosted decision stumps (depth-1 trees) for the policy.
 *
 * No I/O.  The input is a binned, column-major matrix that internal/dataset
 * builds; the output is a model that predicts from raw feature values
 * (numbers and category names), so it can score events without the
 * training data.  (The formulas and the rest of the API are documented in
 * gbm.c and below.)
 *
 * A fitted or loaded model is read-only to gbm_predict, gbm_explain, the
 * getters and gbm_model_to_json, which may run on one model from several
 * threads at once; gbm_fit_magnitude and the setters modify it.
 */
#ifndef UNDERSTUDY_GBM_H
#define UNDERSTUDY_GBM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- input: a binned matrix ------------------------------------------- */

/* Every feature has at most 255 value bins (0..n_bins-1); bin 255 is missing. */
#define GBM_MAX_BINS    255
#define GBM_MISSING_BIN 255

enum gbm_kind {
    GBM_NUMERIC = 0,
    GBM_CATEGORICAL,
};

/*
 * How one feature was binned.  All pointers are borrowed (owned by the
 * dataset) and must outlive gbm_fit; the fitted model keeps its own copies.
 *
 * Numeric: cuts[0..n_bins-1) ascending, strictly increasing; a value v falls
 * in bin b = the number of cuts <= v (so bin 0 is v < cuts[0] and the last
 * bin is v >= cuts[n_bins-2]).  A stump on this feature at bin t sends
 * "v < cuts[t]" (bins 0..t) left.  NaN is missing.
 *
 * Categorical: levels[0..n_levels) are the level names seen in training and
 * level_bin[i] is the bin of levels[i]; several rare levels may share one
 * (pooled) bin.  A level not in the list is unseen and falls in the missing
 * bin.
 */
struct gbm_feature {
    const char *name;
    enum gbm_kind kind;
    unsigned n_bins; /* 1..GBM_MAX_BINS value bins */
    const double *cuts;
    size_t n_levels;
    const char *const *levels;
    const uint8_t *level_bin;
};

/*
 * The rows: bins[f][r] is the bin of row r for feature f (column-major).
 * label[r] is the class index (classification) and target[r] the value to
 * predict (regression); the one not used may be NULL.  weight NULL means
 * every row weighs 1.  All borrowed.
 */
struct gbm_data {
    size_t n_rows;
    size_t n_features;
    const struct gbm_feature *features; /* [n_features] */
    const uint8_t *const *bins;         /* [n_features][n_rows] */
    const int32_t *label;               /* [n_rows] or NULL */
    const float *target;                /* [n_rows] or NULL */
    const float *weight;                /* [n_rows] or NULL */
};

/* ---- limits and parameters --------------------------------------------- */

#define GBM_WUR __attribute__((warn_unused_result))

/* Classes of a classifier (explanations keep a 64-bit class mask). */
#define GBM_MAX_CLASSES  64
#define GBM_MAX_FEATURES 65535
#define GBM_MAX_ROUNDS   100000
#define GBM_MAX_THREADS  256
/* A split must gain more than this (XGBoost's kRtEps) or the stump is a leaf. */
#define GBM_MIN_GAIN 1e-6

struct gbm_params {
    unsigned rounds;         /* boosting rounds, 1..GBM_MAX_ROUNDS (at most, with early_stop) */
    double learning_rate;    /* eta, in (0, 1] */
    double lambda;           /* L2 penalty on leaf values, >= 0 */
    double min_child_weight; /* least hessian sum on each side of a split, >= 0 */
    unsigned early_stop;     /* stop after this many rounds without a better
                                validation loss; 0 = off (ignored without validation) */
    unsigned threads;        /* 1..GBM_MAX_THREADS; the model does not depend on it */
    uint64_t seed;           /* seeds the dither of gradient quantization */
};

/* 100 rounds, learning rate 0.3, lambda 1, min_child_weight 1, no early
 * stopping, 1 thread, seed 0 (XGBoost's defaults where it has them). */
void gbm_params_default(struct gbm_params *p);

/* ---- fitting ------------------------------------------------------------ */

struct gbm_model;
struct json_t; /* jansson's json_t */

/*
 * Called after each round with the 1-based round, the weighted mean loss of
 * the model so far on the training rows and on the validation rows (NaN
 * without validation): log loss for gbm_fit, squared error for
 * gbm_fit_magnitude.  Returning non-zero ends training after this round, as
 * if early stopping had fired (the best round is still kept).
 */
typedef int (*gbm_progress_fn)(void *arg, unsigned round, double train_loss, double valid_loss);

/*
 * Fits the classifier: softmax boosting of one stump per class per round on
 * train->label (0..n_classes-1).  valid (NULL: none) must have the same
 * features (names, kinds, cuts, levels) and drives early stopping.
 * class_names[n_classes] are copied; 2 <= n_classes <= GBM_MAX_CLASSES.
 * progress may be NULL.  Everything passed is borrowed.
 *
 * Returns 0 and a new model in *out (caller frees with gbm_model_free), or
 * -1 with a reason (bad parameters, inconsistent or invalid data such as a
 * bin out of range, a label out of range, a negative or non-finite weight,
 * zero total weight; out of memory) and *out NULL.
 */
int gbm_fit(const struct gbm_data *train, const struct gbm_data *valid, size_t n_classes,
            const char *const *class_names, const struct gbm_params *p, gbm_progress_fn progress,
            void *progress_arg, struct gbm_model **out, char *err, size_t errlen) GBM_WUR;

/*
 * Fits (or replaces) the magnitude model of one class: squared-loss stump
 * boosting of data->target, with the model's own features, starting from the
 * weighted mean of the target.  train holds the rows of that class (all
 * borrowed); valid may be NULL and drives early stopping.  Returns 0, or -1
 * with a reason (unknown class, features that differ from the model's, a
 * non-finite target, the errors of gbm_fit); on failure the model keeps its
 * previous magnitude model for the class.
 */
int gbm_fit_magnitude(struct gbm_model *m, const char *class_name, const struct gbm_data *train,
                      const struct gbm_data *valid, const struct gbm_params *p, char *err,
                      size_t errlen) GBM_WUR;

/* Frees the model; NULL is a no-op. */
void gbm_model_free(struct gbm_model *m);

/* ---- the model ---------------------------------------------------------- */

size_t gbm_model_n_classes(const struct gbm_model *m);
/* Class name, borrowed from the model (i < n_classes). */
const char *gbm_model_class_name(const struct gbm_model *m, size_t i);
/* Class index by name, or -1. */
int gbm_model_class_index(const struct gbm_model *m, const char *name);
size_t gbm_model_n_features(const struct gbm_model *m);
const char *gbm_model_feature_name(const struct gbm_model *m, size_t f);
enum gbm_kind gbm_model_feature_kind(const struct gbm_model *m, size_t f);
/* Feature index by name, or -1. */
int gbm_feature_index(const struct gbm_model *m, const char *name);

/* Rounds kept (the best round with early stopping) and rounds trained. */
unsigned gbm_model_rounds(const struct gbm_model *m);
unsigned gbm_model_rounds_trained(const struct gbm_model *m);
/* The training parameters (threads as given at fit; 1 after loading). */
const struct gbm_params *gbm_model_params(const struct gbm_model *m);
/* Log loss at the kept round on the training and the validation rows and the
 * validation accuracy (weighted share of rows whose most probable class is
 * the label); NaN when there was no validation. */
double gbm_model_train_logloss(const struct gbm_model *m);
double gbm_model_valid_logloss(const struct gbm_model *m);
double gbm_model_valid_accuracy(const struct gbm_model *m);
/* Total split gain per feature over all kept stumps of the classifier. */
void gbm_model_importance(const struct gbm_model *m, double *gain /* [n_features] */);

/*
 * Training distribution of feature f: the weighted training mass per bin,
 * *n = n_bins + 1 values, the last one the missing bin (borrowed).
 */
const double *gbm_model_feature_mass(const struct gbm_model *m, size_t f, size_t *n);
/* Numeric cuts (*n = n_bins - 1, borrowed; NULL and 0 for categorical). */
const double *gbm_model_feature_cuts(const struct gbm_model *m, size_t f, size_t *n);
/* Categorical levels seen in training and their bins (borrowed). */
size_t gbm_model_feature_n_levels(const struct gbm_model *m, size_t f);
const char *gbm_model_feature_level(const struct gbm_model *m, size_t f, size_t i, unsigned *bin);
/*
 * The smallest and largest training value of a numeric feature.  The binned
 * matrix does not carry raw values, so the caller that has them records them
 * with gbm_model_set_feature_range (finite, min <= max, numeric features
 * only; returns 0 or -1).  gbm_model_feature_range returns 0 and the pair,
 * or -1 when none was recorded.
 */
int gbm_model_set_feature_range(struct gbm_model *m, size_t f, double min, double max) GBM_WUR;
int gbm_model_feature_range(const struct gbm_model *m, size_t f, double *min, double *max);

/*
 * Caller metadata kept with the model and serialized with it (training
 * window, row counts, metrics...).  set deep-copies meta, which must be a
 * JSON object (NULL clears); returns 0 or -1 (not an object, out of memory;
 * the old metadata stays).  get returns the model's copy (borrowed; NULL
 * when none).
 */
int gbm_model_set_metadata(struct gbm_model *m, const struct json_t *meta) GBM_WUR;
const struct json_t *gbm_model_metadata(const struct gbm_model *m);

/* ---- prediction and explanation ----------------------------------------- */

/* One raw value per model feature, in model feature order. */
struct gbm_input {
    bool missing;    /* also: a NaN number or a NULL level */
    double num;      /* numeric features */
    const char *cat; /* categorical features; a level not seen in training counts as missing */
};

/* The bin a raw value falls in: 0..n_bins-1, or GBM_MISSING_BIN for a
 * missing value or an unseen level (for out-of-distribution scoring). */
unsigned gbm_model_feature_bin(const struct gbm_model *m, size_t f, const struct gbm_input *x);

/* Margins (log-odds up to a constant) and probabilities of every class;
 * either output may be NULL.  x has n_features entries. */
void gbm_predict(const struct gbm_model *m, const struct gbm_input *x, double *margin,
                 double *prob);

/*
 * Where one feature's value fell in that feature's step function for one
 * class.  Numeric: the value lies in [lo, hi), the widest interval over
 * which the class's contribution does not change (-HUGE_VAL / HUGE_VAL when
 * unbounded).  Categorical: the level's bin.  missing: the value was missing
 * (or an unseen level, then unseen is set too) and took the default sides.
 */
struct gbm_step {
    bool missing;
    bool unseen;
    double lo, hi;
    unsigned bin;
};

/*
 * The exact per-feature decomposition of class class_idx's margin:
 * margin = *base + sum of contrib[f].  steps (NULL: not wanted) gets one
 * gbm_step per feature.
 */
void gbm_explain(const struct gbm_model *m, const struct gbm_input *x, size_t class_idx,
                 double *base, double *contrib /* [n_features] */, struct gbm_step *steps);

/* Whether class class_idx has a magnitude model. */
bool gbm_model_has_magnitude(const struct gbm_model *m, size_t class_idx);
/* The magnitude model's prediction; -1 when the class has none. */
int gbm_predict_magnitude(const struct gbm_model *m, size_t class_idx, const struct gbm_input *x,
                          double *out) GBM_WUR;
/* gbm_explain for a magnitude model; -1 when the class has none. */
int gbm_explain_magnitude(const struct gbm_model *m, size_t class_idx, const struct gbm_input *x,
                          double *base, double *contrib, struct gbm_step *steps) GBM_WUR;

/*
 * Batch prediction over a binned matrix with the model's features (same
 * names, kinds, cuts and levels, as gbm_fit's validation data).  prob gets
 * n_rows * n_classes probabilities, row-major.  Returns 0 or -1 with a
 * reason (features differ).
 */
int gbm_predict_data(const struct gbm_model *m, const struct gbm_data *d, double *prob, char *err,
                     size_t errlen) GBM_WUR;
/*
 * Magnitude predictions of class class_idx for every row of a binned matrix
 * with the model's features (as gbm_predict_data): out gets n_rows values.
 * Returns 0, or -1 with a reason (the class has no magnitude model, the
 * features differ).
 */
int gbm_predict_magnitude_data(const struct gbm_model *m, size_t class_idx,
                               const struct gbm_data *d, double *out, char *err,
                               size_t errlen) GBM_WUR;
/* Weighted log loss (probabilities clipped to [1e-15, 1]) and weighted
 * accuracy of the classifier on d (with labels).  0 or -1 with a reason. */
int gbm_evaluate(const struct gbm_model *m, const struct gbm_data *d, double *logloss,
                 double *accuracy, char *err, size_t errlen) GBM_WUR;

/* ---- serialization ------------------------------------------------------ */

/*
 * The model as JSON text ("format": "understudy-gbm", "version": 1; layout
 * in gbm_json.c), NUL-terminated, caller frees with free(); NULL when out
 * of memory.  Doubles are written with 17 significant digits, so they load
 * back exactly, and the same model always gives the same text.
 */
char *gbm_model_to_json(const struct gbm_model *m);

/*
 * Loads a model from text[0..len).  Everything is validated; a malformed
 * model is refused with a reason that names the place, e.g.
 * "stumps[3][2].feature: out of range".  Returns 0 and *out (caller frees),
 * or -1 with the reason and *out NULL.
 */
int gbm_model_from_json(const char *text, size_t len, struct gbm_model **out, char *err,
                        size_t errlen) GBM_WUR;

/*
 * Writes the step functions (and magnitude models) as text for people to
 * read.  Returns 0, or -1 on a write error.
 */
int gbm_model_dump(const struct gbm_model *m, FILE *out) GBM_WUR;

/* ---- split finding (exposed for tests and tools) ------------------------ */

/*
 * The best stump on one feature from its gradient histogram.  g and h have
 * n_bins + 1 entries, the last one the missing bin; mass (NULL: derived from
 * h) tells which bins hold training rows.  Numeric: bins 0..threshold_bin go
 * left.  Categorical: left_bins is the set of bins going left (bit b of
 * left_bins[b / 64]); "missing values alone against all levels" is one of
 * the candidates.  Bins without training mass and missing values go to the
 * default side.  found is false when no split satisfies min_child_weight on
 * both sides (the caller also wants gain > GBM_MIN_GAIN).  Gains and sums
 * (both sides, missing values included) are in the units of g and h.
 */
struct gbm_split {
    bool found;
    bool default_left;
    unsigned threshold_bin;
    uint64_t left_bins[4];
    double gain;
    double g_left, h_left, g_right, h_right;
};

void gbm_split_find(enum gbm_kind kind, unsigned n_bins, const double *g, const double *h,
                    const double *mass, double lambda, double min_child_weight,
                    struct gbm_split *out);

/* Newton step -g / (h + lambda) * eta (0 when h + lambda <= 0). */
double gbm_leaf_value(double g, double h, double lambda, double eta);
/* g_l^2/(h_l+lambda) + g_r^2/(h_r+lambda) - (g_l+g_r)^2/(h_l+h_r+lambda). */
double gbm_split_gain(double g_l, double h_l, double g_r, double h_r, double lambda);

#endif
