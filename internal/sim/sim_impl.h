/*
 * sim internals shared by sim.c (the world and the writers), sim_model.c
 * (the feature table and the team policy as data) and sim_bias.c (bias
 * specs).  Not part of the public API.
 */
#ifndef UNDERSTUDY_SIM_IMPL_H
#define UNDERSTUDY_SIM_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event/event.h"
#include "sim/sim.h"

/* State features, in examples.csv column order: the configured defaults first. */
enum sim_feat {
    SF_CPA = 0,
    SF_TARGET_CPA,
    SF_CPA_RATIO,
    SF_PACING,
    SF_HOUR_OF_DAY,
    SF_CHANNEL,
    SF_VERTICAL,
    SF_SPEND,
    SF_BUDGET,
    SF_BUDGET_UTILIZATION,
    SF_IMPRESSIONS,
    SF_CLICKS,
    SF_CTR,
    SF_CVR,
    SF_CONVERSIONS,
    SF_CPC,
    SF_BID,
    SF_ROAS,
    SF_TARGET_ROAS,
    SF_ROAS_RATIO,
    SF_IMPRESSION_SHARE,
    SF_LOST_IS_BUDGET,
    SF_LOST_IS_RANK,
    SF_DAY_OF_WEEK,
    SF_DAYS_SINCE_CHANGE,
    SF_FREQUENCY,
    SF_QUALITY_SCORE,
    SF_DEVICE,
    SF_STATUS,
    SF_ENTITY_TYPE,
    SF_COUNT,
};

/* A policy input: a numeric feature, or ctr divided by its channel's reference. */
#define SIM_IN_CTR_REL SF_COUNT
#define SIM_IN_COUNT   (SF_COUNT + 1)

struct sim_feat_def {
    const char *name;
    bool categorical;
    int decimals; /* numeric values are written rounded to this many decimals */
};
extern const struct sim_feat_def sim_feats[SF_COUNT];

/* Shapes of a score or magnitude term, applied to an input x with threshold t. */
enum sim_shape {
    SIM_SHAPE_LIN = 0, /* x - t */
    SIM_SHAPE_ABOVE,   /* max(0, x - t) */
    SIM_SHAPE_BELOW,   /* max(0, t - x) */
    SIM_SHAPE_LT,      /* 1 when x < t, else 0 */
    SIM_SHAPE_GE,      /* 1 when x >= t, else 0 */
};

/* weight * min(cap, shape(x, t)); cap <= 0 means no cap. */
struct sim_term {
    int in; /* enum sim_feat or SIM_IN_CTR_REL */
    enum sim_shape shape;
    double t;
    double weight;
    double cap;
};

/* The team's score (logit before the temperature) of one action class. */
struct sim_score_rule {
    enum event_class cls;
    double base;
    const struct sim_term *terms;
    size_t n_terms;
};

/*
 * The magnitude of a bid or budget change: sign * max(min_abs, base + terms)
 * * exp(noise_sd * N(0,1)).
 */
struct sim_delta_rule {
    enum event_class cls;
    double sign;
    double base;
    double min_abs;
    double noise_sd;
    const struct sim_term *terms;
    size_t n_terms;
};

/* Indexed by enum event_class; the hold entry has no terms and base 0. */
extern const struct sim_score_rule sim_score_rules[EVENT_CLASS_COUNT];
/* Indexed by enum event_class; entries without magnitude have sign 0. */
extern const struct sim_delta_rule sim_delta_rules[EVENT_CLASS_COUNT];

#define SIM_DEFAULT_TEMPERATURE 1.0

/* Channels and their click-through references (ctr_rel = ctr / reference). */
#define SIM_N_CHANNELS 4
extern const char *const sim_channels[SIM_N_CHANNELS];
extern const double sim_ctr_reference[SIM_N_CHANNELS];

#define SIM_N_VERTICALS 8
#define SIM_N_DEVICES   4
extern const char *const sim_verticals[SIM_N_VERTICALS];
extern const char *const sim_devices[SIM_N_DEVICES];

/* The levels of categorical feature f (count in *n), or NULL for a numeric one. */
const char *const *sim_levels(size_t f, size_t *n);

/* Value a policy input takes when its feature is missing (NAN: not substituted). */
extern const double sim_missing_default[SIM_IN_COUNT];

/* 9999-12-31T23:59:59Z: no event may be later. */
#define SIM_MAX_END_S INT64_C(253402300799)

/* The number of campaigns a run uses (o->campaigns, or chosen from o->rows). */
unsigned sim_auto_campaigns(const struct sim_options *o);

/* A bound on the time (s) of the last event a run writes. */
int64_t sim_last_event_s(const struct sim_options *o);

/* Evaluates one term at input value x. */
double sim_term_value(const struct sim_term *term, double x);

/* 1 when the score rule of cls reads numeric feature f (ctr through ctr_rel). */
bool sim_rule_uses_feature(enum event_class cls, size_t f);

/* Names of the features the score of cls reads, ", "-separated, into dst. */
void sim_rule_feature_list(enum event_class cls, char *dst, size_t size);

/* Shape names for truth.json. */
const char *sim_shape_name(enum sim_shape s);
const char *sim_input_name(int in);

#endif
