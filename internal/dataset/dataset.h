/*
 * dataset: the labelled examples the trainer learns from, held in memory
 * column by column; a CSV reader; per-row weights; the time-ordered split
 * into training and validation rows; and the quantile binning that turns
 * the raw values into the binned matrix internal/gbm fits on.
 *
 * Storage.  A dataset has a fixed list of features, each numeric (a double
 * per row, NaN = missing) or categorical (an interned level per row, or
 * missing).  Every row also carries a class label (an index into the class
 * list), a timestamp in microseconds, an optional group (the operator id,
 * interned) and an optional regression target (delta_pct, NaN = none).
 * Strings handed out (feature, class, level and group names) live as long
 * as the dataset and never move.  At most 2^32 - 2 rows.
 *
 * Weights (ds_set_weights).  Row r of class c at time ts_r gets
 *
 *     w_r = 0.5 ^ ((ts_max - ts_r) / half_life) * cw_c
 *
 * where ts_max is the newest ts of the dataset (the recency factor is 1 when
 * half_life is 0) and cw_c is 1 (no class weighting), an explicit weight per
 * class name (classes left out weigh 1), or "balanced":
 *
 *     cw_c = n / (k * n_c)
 *
 * with n the number of rows, n_c the rows of class c and k the number of
 * classes that have rows, so every present class carries the same total
 * weight n / k.  Counts are over all rows, whatever the split.  Weights are
 * stored as float; a recency factor below float's range becomes 0.  Until
 * ds_set_weights is called every row weighs 1.
 *
 * Split (ds_split).  Rows are ordered by ts with a stable sort (equal ts keep
 * their insertion order) and the last round(valid_fraction * n) of that order
 * are the validation rows, so validation is always the newest data, never a
 * random draw.  With valid_fraction > 0 and at least two rows there is at
 * least one validation row and at least one training row.  Rows of equal ts
 * may fall on both sides of the boundary.  Until ds_split is called every row
 * is a training row.
 *
 * Binning (ds_bin).  Cuts and level bins are computed once, from the
 * training rows only, and applied to training and validation rows alike.
 *
 *  - Numeric, at most max_bins distinct training values u_0 < ... < u_{d-1}:
 *    one bin per value, cut i (1 <= i < d) at the midpoint of u_{i-1} and
 *    u_i (never equal to u_{i-1}).  A constant or all-missing column has one
 *    bin and no cuts.
 *  - Numeric, more distinct values: weighted quantiles.  The training rows
 *    are sampled deterministically (every k-th training row in row order,
 *    k = ceil(n_train / DS_BIN_SAMPLE)), the sampled non-missing values are
 *    sorted, and the distinct values u_i (weight w_i, summed over equal
 *    values) are walked in order with the cumulative weight C before u_i.
 *    With S the cumulative weight at the last cut (0 at first), W the total,
 *    b the bins still to fill (max_bins at first) and T = S + (W - S) / b
 *    the target of the current bin: while b > 1,
 *      - a cut goes just before u_i when the bin is not empty (C > S),
 *        C + w_i >= T and T - C <= C + w_i - T (stopping short of the
 *        target is nearer than going past it);
 *      - then, with C' = C + w_i and T recomputed, a cut goes just after u_i
 *        when C' >= T and u_i is not the largest value.
 *    Each cut sets S to the cumulative weight at it and decrements b; a cut
 *    between u_i and u_{i+1} is their midpoint.  A value heavier than a bin
 *    makes one large bin and the remaining weight is shared among the
 *    remaining bins, so a feature may get fewer than max_bins bins (but at
 *    least 2 when the sample has 2 distinct values of positive weight).
 *    Row weights are those of ds_set_weights (1 if never set; unit weights
 *    if every sampled weight is 0).
 *  - Either way the bin of a value v is the number of cuts <= v, as gbm.h
 *    defines it, and NaN goes to GBM_MISSING_BIN.
 *  - Categorical: the levels seen in training rows are ordered by their
 *    total training weight, heaviest first, ties by name (byte order).  With
 *    at most max_bins levels each has its own bin in that order; with more,
 *    the first max_bins - 1 have their own bins and the rest share the last
 *    (pooled) bin.  gbm_feature.levels lists the training levels only: a
 *    level seen only in validation rows, like a missing value, goes to
 *    GBM_MISSING_BIN.
 *
 * The result does not depend on the number of threads.  Nothing here is
 * thread-safe unless said otherwise; a ds may be read by several threads
 * when nobody modifies it.
 */
#ifndef UNDERSTUDY_DATASET_H
#define UNDERSTUDY_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event/event.h"
#include "gbm/gbm.h"

#define DS_WUR __attribute__((warn_unused_result))

/* Training rows sampled at most for numeric quantiles. */
#define DS_BIN_SAMPLE 200000

struct ds;
struct ds_binned;

/* ---- building ---------------------------------------------------------- */

/*
 * Creates an empty dataset with the given features (names copied, kinds
 * GBM_NUMERIC or GBM_CATEGORICAL) and class list (names copied, in that
 * order).  class_names NULL with n_classes 0 means that the classes are
 * discovered from the labels, in order of first appearance.  Returns 0 and
 * *out, or -1 with a reason (empty or duplicate name, bad kind, out of
 * memory).  n_features may be 0.
 */
int ds_new(const char *const *feature_names, const enum gbm_kind *kinds, size_t n_features,
           const char *const *class_names, size_t n_classes, struct ds **out, char *err,
           size_t errlen) DS_WUR;

/* Frees the dataset; NULL is a no-op.  Binned objects made from it must be
 * freed first. */
void ds_free(struct ds *d);

/*
 * Appends a row.  label is the class name; group the operator id (NULL =
 * none); target the regression target (NaN = none); values[n_features] the
 * features in the order of ds_new (borrowed): for a numeric feature .num is
 * used unless .missing (a non-finite number is stored as missing); for a
 * categorical one .cat unless .missing or NULL (the empty string is a level).
 *
 * Returns 0; -1 when out of memory; -2 when the label is NULL, empty, not in
 * a fixed class list, or the dataset is full.  On failure no row is added.
 * Adding a row discards the weights and the split set before.
 */
int ds_add_row(struct ds *d, const char *label, int64_t ts_us, const char *group, double target,
               const struct event_feature_value *values) DS_WUR;

/* ---- reading ----------------------------------------------------------- */

size_t ds_n_rows(const struct ds *d);
size_t ds_n_features(const struct ds *d);
const char *ds_feature_name(const struct ds *d, size_t f);
enum gbm_kind ds_feature_kind(const struct ds *d, size_t f);
/* Column index of a feature by name, or -1. */
long ds_feature_index(const struct ds *d, const char *name);

size_t ds_n_classes(const struct ds *d);
const char *ds_class_name(const struct ds *d, size_t c);
/* Rows labelled with class c. */
size_t ds_class_count(const struct ds *d, size_t c);

/* The interned groups (operator ids), in order of first appearance. */
size_t ds_n_groups(const struct ds *d);
const char *ds_group_name(const struct ds *d, size_t g);

/* Levels of a categorical feature, in order of interning (0 for numeric). */
size_t ds_n_levels(const struct ds *d, size_t f);
const char *ds_level_name(const struct ds *d, size_t f, size_t level);

/* Per row (r < ds_n_rows, f < ds_n_features; out of range is a bug). */
int32_t ds_row_label(const struct ds *d, size_t r);
int64_t ds_row_ts(const struct ds *d, size_t r);
/* Group index, or -1 when the row has none. */
int32_t ds_row_group_index(const struct ds *d, size_t r);
/* Group name, or NULL. */
const char *ds_row_group(const struct ds *d, size_t r);
double ds_row_target(const struct ds *d, size_t r);
/* 1 until ds_set_weights. */
float ds_row_weight(const struct ds *d, size_t r);
/* Numeric cell: the value, NaN when missing (and for a categorical feature). */
double ds_cell_num(const struct ds *d, size_t f, size_t r);
/* Categorical cell: the level name, NULL when missing (and for numeric). */
const char *ds_cell_level(const struct ds *d, size_t f, size_t r);

/* ---- a model's input from a row ---------------------------------------- */

/*
 * col[f] for each feature f of model m (col has gbm_model_n_features(m)
 * entries): the dataset column of the same name, or -1 when there is none.
 */
void ds_model_columns(const struct ds *d, const struct gbm_model *m, long *col);

/*
 * Fills x[gbm_model_n_features(m)] with row r's values for model m, through
 * the columns of ds_model_columns.  A feature without a column is missing;
 * a numeric feature read from a categorical column takes the level parsed
 * as a number (missing when it is not one); a categorical feature read
 * from a numeric column is missing (levels are never numbers).  Level
 * strings are borrowed from the dataset.
 */
void ds_model_input(const struct ds *d, const struct gbm_model *m, const long *col, size_t r,
                    struct gbm_input *x);

/* ---- CSV --------------------------------------------------------------- */

/*
 * What ds_read_csv does with the columns.  Names are header names; every
 * list may be NULL when its count is 0; all borrowed.
 */
struct ds_csv_options {
    const char *label;              /* required: the class column */
    const char *ts;                 /* NULL: ts = 0-based data row index */
    const char *group;              /* NULL: no groups; an empty cell = no group */
    const char *target;             /* NULL: no target; an empty cell = none (NaN) */
    const char *const *categorical; /* feature columns forced categorical */
    size_t n_categorical;
    const char *const *drop; /* columns ignored */
    size_t n_drop;
    const char *const *classes; /* fixed class list; NULL: discovered */
    size_t n_classes;
};

/*
 * Reads a CSV file into a new dataset (*out, caller frees with ds_free).
 *
 * Format: RFC 4180 with a header row; fields separated by ',', quoted
 * fields with "" for a quote (and may span lines); records end in LF or
 * CRLF, the last one may lack it; a UTF-8 byte order mark is skipped; empty
 * lines are skipped; the file must be valid UTF-8 without NUL bytes.  Header
 * names must be non-empty and unique.
 *
 * Every column that is not the label, ts, group or target column and not
 * dropped is a feature, in header order.  A feature column is numeric when
 * every non-empty cell is a number, otherwise categorical; empty cells are
 * missing.  A number is a field of the characters 0-9 + - . e E only (so no
 * spaces, hex, inf or nan), at most 100 bytes, that strtod reads completely
 * as a finite value.  Labels must be non-empty.  Discovered classes are
 * sorted by name (byte order), so that the class order does not depend on
 * the row order.  ts cells are RFC 3339 (event_parse_rfc3339) or epoch
 * seconds with an optional fraction (digits beyond microseconds truncated);
 * target cells are empty or numbers.  Rows stay in file order.
 *
 * Returns 0, or -1 with a one-line reason, "PATH:LINE: message" when a line
 * is at fault (the line where the record, or the unterminated quoted field,
 * starts; lines count from 1 and include the header), else "PATH: message".
 */
int ds_read_csv(const char *path, const struct ds_csv_options *o, struct ds **out, char *err,
                size_t errlen) DS_WUR;

/*
 * Whether the header row of the CSV file at path names the column name (a
 * quick look at the first line: the BOM and surrounding quotes are
 * ignored).  False when the file cannot be read.
 */
bool ds_csv_has_column(const char *path, const char *name);

/* ---- weights and split -------------------------------------------------- */

enum ds_class_weighting {
    DS_CLASS_WEIGHT_NONE = 0,
    DS_CLASS_WEIGHT_BALANCED,
    DS_CLASS_WEIGHT_MAP,
};

struct ds_weight_options {
    int64_t half_life_us; /* recency half-life in ts units (us); 0 = off */
    enum ds_class_weighting class_weighting;
    /* DS_CLASS_WEIGHT_MAP: class_weights[i] for class class_names[i]. */
    const char *const *class_names;
    const double *class_weights;
    size_t n_class_weights;
};

/*
 * Sets the weight of every row (formulas above).  Returns 0, or -1 with a
 * reason: negative half-life, a class name not in the dataset, a negative or
 * non-finite class weight, out of memory.  On failure the weights are
 * unchanged.
 */
int ds_set_weights(struct ds *d, const struct ds_weight_options *o, char *err,
                   size_t errlen) DS_WUR;

/* Time bounds of the split; the ts fields of an empty side are 0. */
struct ds_split_info {
    size_t n_train;
    size_t n_valid;
    int64_t train_ts_min, train_ts_max; /* the training window */
    int64_t valid_ts_min, valid_ts_max;
};

/*
 * Splits into training and validation rows (see above).  valid_fraction in
 * [0, 1); 0 makes every row a training row.  Returns 0, or -1 with a reason
 * (fraction out of range, out of memory; the split is then unchanged).
 */
int ds_split(struct ds *d, double valid_fraction, char *err, size_t errlen) DS_WUR;
void ds_split_get(const struct ds *d, struct ds_split_info *out);
bool ds_row_is_valid(const struct ds *d, size_t r);

/* ---- binning ----------------------------------------------------------- */

/*
 * Bins the dataset (see above) with max_bins value bins per feature (2..255)
 * using up to `threads` threads (0 = 1).  Returns 0 and *out (caller frees
 * with ds_binned_free; the dataset must outlive it and not change while it
 * exists, since names and rows are borrowed from it), or -1 with a reason
 * (bad max_bins, no training rows, out of memory).
 */
int ds_bin(const struct ds *d, unsigned max_bins, unsigned threads, struct ds_binned **out,
           char *err, size_t errlen) DS_WUR;

void ds_binned_free(struct ds_binned *b);

/* The features, as gbm_data.features points at them; *n gets the count. */
const struct gbm_feature *ds_binned_features(const struct ds_binned *b, size_t *n);

/*
 * The training rows (label and weight set, target NULL), in row order.
 * Never NULL.
 */
const struct gbm_data *ds_binned_train(const struct ds_binned *b);
/* The validation rows likewise; NULL when there are none. */
const struct gbm_data *ds_binned_valid(const struct ds_binned *b);

/* The dataset row of each row of the training (or validation) matrix. */
const uint32_t *ds_binned_rows(const struct ds_binned *b, bool valid, size_t *n);

/*
 * Fills *out with the training (or validation) rows of class class_idx whose
 * target is not NaN, with target and weight set and label NULL, for the
 * magnitude models.  The memory belongs to the binned object (ds_bin builds
 * these subsets for every class, from the rows that have a target).
 * Returns 0 (possibly with 0 rows), or -1 when class_idx is out of range.
 */
int ds_binned_class_subset(const struct ds_binned *b, int32_t class_idx, bool valid,
                           struct gbm_data *out) DS_WUR;

#endif
