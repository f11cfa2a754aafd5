/*
 * recommend: the pure scoring core of the recommender.  One state snapshot
 * and the champion model in, one suggestion (or a reasoned abstention) out:
 * the most probable class, every class probability, the exact per-feature
 * explanation of the chosen class's margin, the suggested delta_pct, an
 * out-of-distribution score with its reasons, and the guardrails that
 * changed or blocked the suggestion.  No I/O, no clock, no database: the
 * caller passes the time and the entity's last action/recommendation times.
 *
 * Features are read from the snapshot's state object by the model's own
 * feature names and kinds (event_features), so a model trained on any
 * feature list scores any snapshot; a feature the state lacks is missing.
 *
 * Decision.  The class is the argmax of the probabilities (ties: lowest
 * class index); confidence is its probability.  For the four sized classes
 * with a magnitude model, the raw size is gbm_predict_magnitude; otherwise
 * there is no size (delta_pct NaN, stored as NULL).  Then the rules run in
 * this order; each one that fires is recorded, and the first one that
 * blocks ends the run (so the record is a trace of what happened):
 *
 *   kill_switch      blocks everything
 *   ood_threshold    blocks when ood_threshold > 0 and ood_score >= it
 *   (hold)           the model's choice is hold: abstain, reason hold
 *   entity_type      blocks an action not allowed for the entity type
 *   min_confidence   blocks when confidence < min_confidence
 *   cooldown         blocks when the entity had an action or a
 *                    recommendation less than cooldown_ms before now
 *   sign_range       changes a size whose sign contradicts the class to 0,
 *                    and clamps sizes into the contract's (-100, 1000]
 *                    (down classes to at least -99)
 *   max_step         changes |delta_pct| above max_step_pct to it
 *   deadband         blocks a size with |delta_pct| < deadband_pct, and
 *                    always a size of 0 (a sized class that moves nothing)
 *
 * A hold ends the run too, so the action rules never see it.  The status
 * is OPEN only when nothing blocked and the class is not hold; otherwise
 * ABSTAIN with the reason of the rule that blocked (or hold).  An open
 * sized suggestion without a magnitude model has no size.
 *
 * Out-of-distribution score: the sum over the model's features of
 *
 *   numeric value above the training max M (below the min m):
 *       1 + (v - M) / w   (1 + (m - v) / w),   w = M - m, or max(|m|, 1)
 *       when the range is a single value (needs gbm_model_feature_range)
 *   a present value (numeric inside the range or without a recorded
 *   range, or a seen categorical level) in a sparse region: less than
 *   RECOMMEND_OOD_RARE_SHARE of the feature's total training mass in its
 *   bin (a level) or in its bin and the two next to it (numeric: quantile
 *   binning leaves single-row bins among dense ones): 0.5
 *   a categorical level not seen in training: 1
 *   a missing value where training had no missing value: 0.5
 *
 * so 0 means every value looked like training data, and each reason adds
 * at least 0.5.  The rare-bin share is 0.01 %: with up to 255 quantile bins
 * a bin averages 0.4 % of the mass and a bin at a tail legitimately holds
 * a few rows, so only a nearly empty region of the training data counts.  Each term is one reason
 * naming the feature and the value.
 *
 * Entity types (recommend_guardrails_default), as internal/sim's team acts:
 * campaign: budget_up/down; ad_group and keyword: bid_up/down; creative:
 * creative_pause/resume.  Hold is allowed everywhere.
 *
 * A scorer is read-only once built and may be used from several threads.
 */
#ifndef UNDERSTUDY_RECOMMEND_H
#define UNDERSTUDY_RECOMMEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "event/event.h"
#include "gbm/gbm.h"

#define RECOMMEND_WUR __attribute__((warn_unused_result))

/* A bin holding less than this share of the training mass is rare. */
#define RECOMMEND_OOD_RARE_SHARE 0.0001
/* Contributions in the explanation text. */
#define RECOMMEND_EXPLAIN_TOP 3
/* At most one record per rule. */
#define RECOMMEND_MAX_GUARDS 9

/* The sized classes, in the order of max_step_pct and deadband_pct. */
enum recommend_sized {
    RECOMMEND_SIZED_BID_UP = 0,
    RECOMMEND_SIZED_BID_DOWN,
    RECOMMEND_SIZED_BUDGET_UP,
    RECOMMEND_SIZED_BUDGET_DOWN,
    RECOMMEND_SIZED_COUNT,
};

struct recommend_guardrails {
    bool kill_switch;      /* abstain on everything */
    double min_confidence; /* abstain below this probability; 0 = off */
    double ood_threshold;  /* abstain at or above this ood_score; 0 = off */
    int64_t cooldown_ms;   /* per entity, after an action or a recommendation; 0 = off */
    double max_step_pct[RECOMMEND_SIZED_COUNT]; /* cap on |delta_pct|; 0 = none */
    double deadband_pct[RECOMMEND_SIZED_COUNT]; /* abstain below this |delta_pct| */
    /* allowed[entity]: bit (1u << event_class) set when the class may be
     * recommended for that entity type. */
    uint32_t allowed[EVENT_ENTITY_COUNT];
};

/*
 * Defaults: no kill switch, min_confidence 0.5, ood_threshold 2 (two
 * features clearly outside training, or four softer reasons), cooldown 6 h,
 * max step 20 % for every sized class, deadband 1 %, entity types as above.
 */
void recommend_guardrails_default(struct recommend_guardrails *g);

/* The bit of class c in recommend_guardrails.allowed. */
#define RECOMMEND_CLASS_BIT(c) (1u << (unsigned)(c))

struct recommend_input {
    const struct event *snapshot; /* a decoded state (or action) event, with its
                                     state tree; borrowed */
    int64_t now_us;
    int64_t last_action_us;         /* INT64_MIN: none */
    int64_t last_recommendation_us; /* INT64_MIN: none */
};

enum recommend_status {
    RECOMMEND_OPEN = 0,
    RECOMMEND_ABSTAIN,
};

enum recommend_reason {
    RECOMMEND_REASON_NONE = 0, /* open */
    RECOMMEND_REASON_KILL_SWITCH,
    RECOMMEND_REASON_OUT_OF_DISTRIBUTION,
    RECOMMEND_REASON_HOLD,
    RECOMMEND_REASON_NOT_ALLOWED_FOR_ENTITY,
    RECOMMEND_REASON_LOW_CONFIDENCE,
    RECOMMEND_REASON_COOLDOWN,
    RECOMMEND_REASON_DEADBAND,
    RECOMMEND_REASON_COUNT,
};

enum recommend_rule {
    RECOMMEND_RULE_KILL_SWITCH = 0,
    RECOMMEND_RULE_OOD_THRESHOLD,
    RECOMMEND_RULE_ENTITY_TYPE,
    RECOMMEND_RULE_MIN_CONFIDENCE,
    RECOMMEND_RULE_COOLDOWN,
    RECOMMEND_RULE_SIGN_RANGE,
    RECOMMEND_RULE_MAX_STEP,
    RECOMMEND_RULE_DEADBAND,
    RECOMMEND_RULE_COUNT,
};

/*
 * One rule that fired.  value is what the rule looked at (confidence,
 * ood_score, ms since the last action or recommendation, the raw size,
 * |delta_pct|; NaN for kill_switch and entity_type) and limit its
 * threshold (NaN when none).  before/after: delta_pct before and after the
 * rule (NaN = no size; after is NaN when the rule blocked).
 */
struct recommend_guard {
    enum recommend_rule rule;
    bool blocked;
    double value, limit;
    double before, after;
};

enum recommend_ood_why {
    RECOMMEND_OOD_ABOVE_RANGE = 0,
    RECOMMEND_OOD_BELOW_RANGE,
    RECOMMEND_OOD_RARE_BIN,
    RECOMMEND_OOD_UNSEEN_LEVEL,
    RECOMMEND_OOD_MISSING,
};

struct recommend_ood_reason {
    size_t feature; /* model feature index */
    enum recommend_ood_why why;
    double penalty;
    double lo, hi; /* the training range (above/below) */
    double share;  /* share of the training mass near the value (rare bin) */
};

/*
 * A result, caller-owned: recommend_result_init before the first use and
 * recommend_result_deinit at the end; recommend_score may reuse one result
 * many times.  Arrays have one entry per model feature; values and level
 * strings are borrowed from the snapshot and the model.
 */
struct recommend_result {
    enum recommend_status status;
    enum recommend_reason reason;
    size_t class_idx;     /* model class index */
    enum event_class cls; /* the same as an event class */
    size_t n_classes;
    double prob[GBM_MAX_CLASSES];
    double confidence;
    double margin, base; /* of the chosen class: margin = base + sum contrib */
    size_t n_features;
    double *contrib;        /* toward the chosen class */
    struct gbm_step *steps; /* where each value fell in that class's step function */
    struct event_feature_value *values;
    double raw_delta_pct; /* the magnitude model's size; NaN when none */
    double delta_pct;     /* after the guardrails; NaN when none or blocked */
    double ood_score;
    size_t n_ood;
    struct recommend_ood_reason *ood; /* [n_ood] */
    size_t n_guards;
    struct recommend_guard guards[RECOMMEND_MAX_GUARDS];
    char *explanation; /* see recommend_score */
};

void recommend_result_init(struct recommend_result *r);
void recommend_result_deinit(struct recommend_result *r);

struct recommend_scorer;

/*
 * Builds a scorer for model m (borrowed: it must outlive the scorer and not
 * change).  Every class name of the model must be an event class name
 * (event_class_parse).  Returns 0 and *out (recommend_scorer_free), or -1
 * with a reason (a class the recommender does not know, out of memory).
 */
int recommend_scorer_new(const struct gbm_model *m, struct recommend_scorer **out, char *err,
                         size_t errlen) RECOMMEND_WUR;
void recommend_scorer_free(struct recommend_scorer *s);
const struct gbm_model *recommend_scorer_model(const struct recommend_scorer *s);

/*
 * Scores one snapshot under guardrails g (both borrowed) into out (see the
 * top of this file).  The explanation is the top RECOMMEND_EXPLAIN_TOP
 * non-zero contributions toward the chosen class by absolute value, joined
 * with "; ", each as
 *
 *   cpa_ratio = 1.42 (above 1.31): +0.84 toward bid_down
 *   cpa_ratio = 0.9 (between 0.8 and 1.31): -0.12 toward bid_down
 *   channel = social: +0.31 toward bid_up
 *   channel = tiktok (unseen): +0.02 toward bid_up
 *   cpa missing: -0.20 toward hold
 *
 * ("above lo" / "below hi" / "between lo and hi" from the value's step
 * interval), or "no feature moved the score from its base value" when none
 * is non-zero.  Returns 0, or -1 with a reason (no snapshot, out of memory);
 * on failure out holds nothing to rely on but may still be deinit'ed.
 */
int recommend_score(const struct recommend_scorer *s, const struct recommend_guardrails *g,
                    const struct recommend_input *in, struct recommend_result *out, char *err,
                    size_t errlen) RECOMMEND_WUR;

/* "open", "abstain"; reasons "hold", "low_confidence", "out_of_distribution",
 * "cooldown", "not_allowed_for_entity", "kill_switch", "deadband" ("" for
 * none); rules "kill_switch", "ood_threshold", "entity_type",
 * "min_confidence", "cooldown", "sign_range", "max_step", "deadband".
 * NULL when out of range. */
const char *recommend_status_name(enum recommend_status s);
const char *recommend_reason_name(enum recommend_reason r);
const char *recommend_rule_name(enum recommend_rule r);

/*
 * The jsonb columns, as new jansson values (caller json_decref's); NULL
 * when out of memory.  r must come from recommend_score with s.
 *
 * probabilities: {"hold": 0.12, "bid_up": 0.03, ...}
 * contributions: {"class": "bid_down", "base": b, "margin": m,
 *                 "features": {"cpa_ratio": {"value": 1.42, "contribution": 0.84,
 *                                            "lo": 1.31, "hi": null}, ...}}
 *                 (value: number, level string or null when missing; lo/hi:
 *                 the numeric step interval, null when unbounded or categorical)
 * ood reasons:   [{"feature": "cpa_ratio", "value": 9.3, "penalty": 3.1,
 *                  "why": "above the training range [0.2, 3.1]"}, ...]
 * guardrails:    [{"rule": "max_step", "blocked": false, "value": 35,
 *                  "limit": 20, "before": 35, "after": 20}, ...]
 *                 (NaN as null)
 */
struct json_t *recommend_probabilities_json(const struct recommend_scorer *s,
                                            const struct recommend_result *r);
struct json_t *recommend_contributions_json(const struct recommend_scorer *s,
                                            const struct recommend_result *r);
struct json_t *recommend_ood_json(const struct recommend_scorer *s,
                                  const struct recommend_result *r);
struct json_t *recommend_guardrails_json(const struct recommend_result *r);

/*
 * One scored snapshot as a row object: state_event_id, snapshot_ts (RFC
 * 3339, UTC), entity_type, entity_id, campaign_id, operator_id (null when
 * unknown), policy_version (null when version is 0: a model file), status
 * ("open" or "abstain"), reason (null when open), action, confidence,
 * delta_pct, explanation, probabilities, contributions, ood_score,
 * ood_reasons and guardrails (the shapes above).  delta_pct is the
 * suggested size of an open recommendation; for an abstention it is the
 * size the blocking rule saw (else the magnitude model's), null when none.
 * This is what `recommend --dry-run` prints and what store_recs_write
 * reads.  NULL when out of memory.
 */
struct json_t *recommend_result_json(const struct recommend_scorer *s, const struct event *ev,
                                     int version, const struct recommend_result *r);

/*
 * recommend_result_json as one compact line on f (what --dry-run prints).
 * Returns 0, -1 on a write error, -2 out of memory.
 */
int recommend_result_print(FILE *f, const struct recommend_scorer *s, const struct event *ev,
                           int version, const struct recommend_result *r) RECOMMEND_WUR;

/* The "why" text of one ood reason into buf (always terminated); returns buf. */
char *recommend_ood_why_text(const struct recommend_ood_reason *o, char *buf, size_t size);

#endif
