/*
 * policy: training runs and the policy registry on top of dataset, gbm and
 * store.
 *
 * A training run loads labelled examples (from PostgreSQL with the
 * contract's hold rule, or from a CSV file), weights them, splits them by
 * time (the newest valid_fraction is the validation set: a cloned policy
 * must generalise forward in time), bins them, fits the softmax stump
 * booster and, for the four sized classes, a magnitude model of delta_pct.
 * The model carries its own metadata: parameters, training window, row
 * counts and metrics.
 *
 * Registration stores the model as a challenger; with promotion asked for,
 * it becomes champion when its validation log loss is not worse than the
 * current champion's on the same validation rows (the champion is scored
 * on them here), or when there is no champion.  Promotion sends NOTIFY
 * understudy_policy (store_policy_promote).
 */
#ifndef UNDERSTUDY_POLICY_H
#define UNDERSTUDY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "dataset/dataset.h"
#include "gbm/gbm.h"
#include "store/store.h"

struct policy_train_options {
    /* Source: a CSV file (csv_path set) or the database (store set). */
    const char *csv_path;
    struct ds_csv_options csv;
    struct store *store;
    struct store_example_query query;

    double valid_fraction;
    unsigned max_bins;
    int64_t half_life_ms; /* 0 = off */
    enum cfg_class_weight_mode class_weight;
    double class_weights[CFG_N_CLASSES]; /* CFG_CLASS_WEIGHT_MAP, cfg_class_names order */
    struct gbm_params gbm;
    bool magnitude; /* fit delta_pct models for the sized classes that have targets */

    /* Called after every boosting round (may be NULL). */
    gbm_progress_fn progress;
    void *progress_arg;
};

/* Fills o from the configuration's train and labels sections (no source). */
void policy_train_options_from_cfg(struct policy_train_options *o, const struct cfg *cfg);

struct policy_train_result {
    size_t rows, train_rows, valid_rows;
    size_t n_features, n_classes;
    unsigned rounds, best_round;
    double load_seconds;                                 /* reading the examples */
    double train_seconds;                                /* weights, split, binning and boosting */
    double train_logloss, valid_logloss, valid_accuracy; /* NaN when not computed */
    int64_t train_from_us, train_to_us;                  /* INT64_MIN when empty */
};

/*
 * Loads the labelled examples of q (the contract's labelling rule, in ts
 * order) into a new dataset with q's features and the seven decision
 * classes; each row's group is its operator and its target delta_pct.
 * Returns 0 and *out (caller frees with ds_free), or -1 with a reason.
 */
int policy_load_dataset(struct store *st, const struct store_example_query *q, struct ds **out,
                        char *err, size_t errlen) __attribute__((warn_unused_result));

struct policy_run;

/*
 * Runs one training run.  On success *out owns the run (policy_run_free):
 * its dataset (kept to score a champion on the same validation rows), its
 * model and its result.  Returns 0, or -1 with a reason.
 */
int policy_train(const struct policy_train_options *o, struct policy_run **out, char *err,
                 size_t errlen) __attribute__((warn_unused_result));

void policy_run_free(struct policy_run *run);
const struct policy_train_result *policy_run_result(const struct policy_run *run);
const struct gbm_model *policy_run_model(const struct policy_run *run);

/*
 * Scores model on the run's validation rows (features matched by name;
 * a feature the run lacks is missing for every row).  *logloss and
 * *accuracy get NaN when there are no validation rows.  Returns 0 or -1.
 */
int policy_run_evaluate(const struct policy_run *run, const struct gbm_model *model,
                        double *logloss, double *accuracy, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The result as one JSON object line (no newline); caller frees.  NULL on OOM. */
char *policy_run_metrics_json(const struct policy_run *run);

/* Writes the model JSON to path (atomically: temp file + rename).  0 or -1. */
int policy_run_write_model(const struct policy_run *run, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

struct policy_registration {
    int version;             /* the version stored */
    bool promoted;           /* it is now the champion */
    int champion_before;     /* 0 = there was none */
    double champion_logloss; /* of champion_before on this run's validation rows; NaN if none */
    char why[160];           /* one line: why it was (not) promoted */
};

/*
 * Stores the run's model as a challenger and, when promote is true,
 * promotes it if it is not worse than the champion (see above).  A
 * champion whose model cannot be loaded any more is replaced.  Returns 0
 * (see reg for what happened) or -1 with a reason.
 */
int policy_register(struct store *st, const struct policy_run *run, bool promote,
                    struct policy_registration *reg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- retraining inside the daemon (trainer.c) ------------------------- */

struct policy_trainer;
struct util_buf;

/*
 * Starts the trainer thread (see trainer.c): it connects on its own,
 * competes for the training lock and trains when due.  Returns 0 and the
 * handle, or -1 with a reason.
 */
int policy_trainer_start(const struct cfg *cfg, struct policy_trainer **out, char *err,
                         size_t errlen) __attribute__((warn_unused_result));

/* Applies the reloadable train.* and labels.* keys of cfg (borrowed). */
void policy_trainer_apply_config(struct policy_trainer *t, const struct cfg *cfg);

/* Stops the thread (interrupting a run at its next round) and frees t.
 * NULL is a no-op. */
void policy_trainer_stop(struct policy_trainer *t);

/* Appends the trainer's metrics (Prometheus text).  0 or -1 (OOM). */
int policy_trainer_render_metrics(struct util_buf *b, void *ud);

#endif
