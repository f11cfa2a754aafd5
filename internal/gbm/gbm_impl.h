/*
 * gbm internals shared by gbm.c (model, compiled step functions, prediction,
 * explanation, dump, split finding), gbm_fit.c (training) and gbm_json.c
 * (serialization).  Not for use outside internal/gbm (tests excepted).
 */
#ifndef UNDERSTUDY_GBM_IMPL_H
#define UNDERSTUDY_GBM_IMPL_H

#include "gbm/gbm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Probabilities are clipped to [GBM_PROB_MIN, 1] in log losses. */
#define GBM_PROB_MIN 1e-15

enum gbm_objective {
    GBM_SOFTMAX = 0, /* multiclass log loss, one stump per class per round */
    GBM_SQUARED,     /* squared error, one stump per round */
};

/* The model's own copy of a feature, plus its training distribution. */
struct gbm_feat {
    char *name;
    enum gbm_kind kind;
    unsigned n_bins;
    double *cuts; /* numeric: n_bins - 1 */
    size_t n_levels;
    char **levels;
    uint8_t *level_bin;
    size_t *level_order; /* level indices sorted by name, for lookups */
    double *mass;        /* n_bins + 1, the last one missing */
    bool has_range;
    double min, max;
};

/*
 * One stump.  feature < 0: a leaf, left_value == right_value.  Numeric:
 * values < threshold (bins 0..bin) go left.  Categorical: the bins set in
 * left go left.  Missing values go left when default_left.  Values are
 * already multiplied by the learning rate.
 */
struct gbm_stump {
    int32_t feature;
    bool default_left;
    uint8_t bin;
    double threshold;
    uint64_t left[4];
    double left_value, right_value;
    double gain;
};

/* A feature's step function for one booster (K values per step). */
struct gbm_steps {
    bool used;
    size_t n_thr;
    double *thr;           /* numeric: sorted distinct thresholds */
    uint64_t *thr_classes; /* numeric: per threshold, the classes splitting there */
    double *val;           /* numeric: (n_thr + 1) x K; step j is [thr[j-1], thr[j]) */
    double *bin_val;       /* (n_bins + 1) x K by bin, the last one missing */
    double *miss;          /* K: missing values and unseen levels */
};

struct gbm_booster {
    enum gbm_objective objective;
    size_t K; /* values per stump round: n_classes, or 1 */
    struct gbm_params params;
    double *base_margin; /* K: the starting margin */
    unsigned n_rounds, rounds_trained;
    struct gbm_stump *stumps;                      /* n_rounds x K */
    double train_loss, valid_loss, valid_accuracy; /* NaN when unknown */
    /* compiled */
    double *base;            /* K: base_margin plus the leaf stumps */
    struct gbm_steps *steps; /* [n_steps], one per model feature */
    size_t n_steps;
};

struct gbm_model {
    size_t F;
    struct gbm_feat *feat;
    size_t K;
    char **classes;
    struct gbm_booster cls;
    struct gbm_booster **mag; /* [K], NULL where a class has none */
    struct json_t *meta;
};

/* ---- gbm.c -------------------------------------------------------------- */

struct gbm_model *gbm_model_alloc(size_t n_features, size_t n_classes);
/* Copies a feature definition (and mass when not NULL) into the model. */
int gbm_feat_copy(struct gbm_feat *dst, const struct gbm_feature *src, const double *mass) GBM_WUR;
/* Builds level_order; 0 or -1 (out of memory). */
int gbm_feat_index_levels(struct gbm_feat *f) GBM_WUR;
void gbm_feat_deinit(struct gbm_feat *f);
void gbm_booster_deinit(struct gbm_booster *b);
void gbm_booster_free(struct gbm_booster *b);
/* (Re)builds base and steps from the stumps; 0 or -1 (out of memory). */
int gbm_booster_compile(const struct gbm_model *m, struct gbm_booster *b) GBM_WUR;
/* Bin of a level name, or -1 when unseen. */
int gbm_feat_level_bin(const struct gbm_feat *f, const char *name);
/* Whether d's features equal the model's; otherwise -1 and a reason. */
int gbm_model_check_features(const struct gbm_model *m, const struct gbm_data *d, char *err,
                             size_t errlen) GBM_WUR;
/* Margins of booster b for row r of d (binned, features checked). */
void gbm_booster_margin_binned(const struct gbm_model *m, const struct gbm_booster *b,
                               const struct gbm_data *d, size_t r, double *margin);
/* Weighted mean loss of b on d (log loss or squared error) and, for the
 * classifier, the weighted accuracy (else NaN), summed per block of
 * GBM_EVAL_BLOCK rows and then over blocks in order. */
#define GBM_EVAL_BLOCK 4096
void gbm_booster_evaluate(const struct gbm_model *m, const struct gbm_booster *b,
                          const struct gbm_data *d, double *loss, double *accuracy);
/* One block's sums: weighted loss, weighted hits, weight. */
void gbm_booster_eval_rows(const struct gbm_model *m, const struct gbm_booster *b,
                           const struct gbm_data *d, size_t r0, size_t r1, double sums[3]);
/* gbm_booster_evaluate's result from the blocks' sums. */
void gbm_eval_finish(const struct gbm_booster *b, const double *block_sums, size_t n_blocks,
                     double *loss, double *accuracy);

/* ---- gbm_fit.c ---------------------------------------------------------- */

/* exp and log in float with a relative error of about 2e-7 (exp for
 * x in [-87, 0], log for x > 0 normal); exposed for tests. */
float gbm_fast_expf(float x);
/* Whether fits may use the AVX-512 softmax where the CPU has it (default
 * true; tests turn it off to check that both paths give the same model). */
extern bool gbm_allow_avx512;
float gbm_fast_logf(float x);

#endif
