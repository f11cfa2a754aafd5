/*
 * sim_model: the simulated state features and the team policy, as data.
 *
 * The team scores each action class allowed for an entity with
 *
 *     s_k(x) = base_k + sum_j w_kj * min(cap_kj, shape_kj(x_in(kj), t_kj))
 *
 * over the rule tables below (shapes in sim_impl.h), and decides with
 * p_k = softmax(s_k / T) over hold (s = 0) and the allowed classes.  A
 * magnitude is sign * max(min_abs, base + sum of terms) * exp(sd * N(0,1)).
 * The tables are what truth.json prints as the policy; docs/simulate.md
 * explains each term.  Inputs are the written (rounded) state values, with
 * the substitutes of sim_missing_default for missing ones.
 */
#include "sim/sim_impl.h"

#include <stdio.h>

const struct sim_feat_def sim_feats[SF_COUNT] = {
    [SF_CPA] = {"cpa", false, 2},
    [SF_TARGET_CPA] = {"target_cpa", false, 2},
    [SF_CPA_RATIO] = {"cpa_ratio", false, 4},
    [SF_PACING] = {"pacing", false, 4},
    [SF_HOUR_OF_DAY] = {"hour_of_day", false, 0},
    [SF_CHANNEL] = {"channel", true, 0},
    [SF_VERTICAL] = {"vertical", true, 0},
    [SF_SPEND] = {"spend", false, 2},
    [SF_BUDGET] = {"budget", false, 2},
    [SF_BUDGET_UTILIZATION] = {"budget_utilization", false, 4},
    [SF_IMPRESSIONS] = {"impressions", false, 0},
    [SF_CLICKS] = {"clicks", false, 0},
    [SF_CTR] = {"ctr", false, 6},
    [SF_CVR] = {"cvr", false, 6},
    [SF_CONVERSIONS] = {"conversions", false, 0},
    [SF_CPC] = {"cpc", false, 3},
    [SF_BID] = {"bid", false, 2},
    [SF_ROAS] = {"roas", false, 3},
    [SF_TARGET_ROAS] = {"target_roas", false, 2},
    [SF_ROAS_RATIO] = {"roas_ratio", false, 4},
    [SF_IMPRESSION_SHARE] = {"impression_share", false, 4},
    [SF_LOST_IS_BUDGET] = {"lost_is_budget", false, 4},
    [SF_LOST_IS_RANK] = {"lost_is_rank", false, 4},
    [SF_DAY_OF_WEEK] = {"day_of_week", false, 0},
    [SF_DAYS_SINCE_CHANGE] = {"days_since_change", false, 2},
    [SF_FREQUENCY] = {"frequency", false, 2},
    [SF_QUALITY_SCORE] = {"quality_score", false, 0},
    [SF_DEVICE] = {"device", true, 0},
    [SF_STATUS] = {"status", true, 0},
    [SF_ENTITY_TYPE] = {"entity_type", true, 0},
};

const char *const sim_channels[SIM_N_CHANNELS] = {"search", "social", "display", "video"};
const double sim_ctr_reference[SIM_N_CHANNELS] = {0.035, 0.009, 0.004, 0.008};

/*
 * Substitutes for missing inputs.  cpa_ratio has a rule of its own in sim.c
 * (spend / target_cpa when there was spend but no conversion; 1 otherwise);
 * its entry here is the value without spend.
 */
const double sim_missing_default[SIM_IN_COUNT] = {
    [SF_CPA_RATIO] = 1.0,        [SF_PACING] = 1.0,         [SF_ROAS_RATIO] = 1.0,
    [SF_IMPRESSION_SHARE] = 0.6, [SF_LOST_IS_BUDGET] = 0.0, [SF_FREQUENCY] = 2.0,
    [SF_QUALITY_SCORE] = 6.0,    [SIM_IN_CTR_REL] = 1.0,
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- scores ------------------------------------------------------------ */

static const struct sim_term bid_up_terms[] = {
    {SF_CPA_RATIO, SIM_SHAPE_BELOW, 0.9, 5.0, 0},
    {SF_CPA_RATIO, SIM_SHAPE_ABOVE, 1.1, -4.0, 0},
    {SF_IMPRESSION_SHARE, SIM_SHAPE_BELOW, 0.6, 4.0, 0},
    {SF_QUALITY_SCORE, SIM_SHAPE_BELOW, 5.0, -0.4, 0},
    {SF_DAYS_SINCE_CHANGE, SIM_SHAPE_BELOW, 0.5, -2.0, 0},
    {SF_HOUR_OF_DAY, SIM_SHAPE_LT, 7.0, -1.0, 0},
};
static const struct sim_term bid_down_terms[] = {
    {SF_CPA_RATIO, SIM_SHAPE_LIN, 1.25, 6.0, 0},
    {SF_IMPRESSION_SHARE, SIM_SHAPE_BELOW, 0.2, -4.0, 0},
    {SF_DAYS_SINCE_CHANGE, SIM_SHAPE_BELOW, 0.5, -2.0, 0},
    {SF_HOUR_OF_DAY, SIM_SHAPE_LT, 7.0, -1.0, 0},
};
static const struct sim_term budget_up_terms[] = {
    {SF_PACING, SIM_SHAPE_BELOW, 0.9, 5.0, 0},
    {SF_ROAS_RATIO, SIM_SHAPE_ABOVE, 1.0, 2.0, 1.0},
    {SF_ROAS_RATIO, SIM_SHAPE_BELOW, 0.9, -4.0, 0},
    {SF_LOST_IS_BUDGET, SIM_SHAPE_ABOVE, 0.1, 4.0, 0},
    {SF_DAY_OF_WEEK, SIM_SHAPE_GE, 5.0, -0.8, 0},
    {SF_DAYS_SINCE_CHANGE, SIM_SHAPE_BELOW, 0.5, -2.0, 0},
};
static const struct sim_term budget_down_terms[] = {
    {SF_PACING, SIM_SHAPE_ABOVE, 1.1, 8.0, 0},
    {SF_ROAS_RATIO, SIM_SHAPE_BELOW, 0.8, 5.0, 0},
    {SF_DAY_OF_WEEK, SIM_SHAPE_GE, 5.0, -0.8, 0},
    {SF_DAYS_SINCE_CHANGE, SIM_SHAPE_BELOW, 0.5, -2.0, 0},
};
static const struct sim_term pause_terms[] = {
    {SIM_IN_CTR_REL, SIM_SHAPE_BELOW, 0.75, 8.0, 0},
    {SF_FREQUENCY, SIM_SHAPE_ABOVE, 3.0, 0.8, 4.0},
    {SF_CPA_RATIO, SIM_SHAPE_ABOVE, 1.5, 1.5, 1.0},
};
static const struct sim_term resume_terms[] = {
    {SF_DAYS_SINCE_CHANGE, SIM_SHAPE_BELOW, 1.5, -4.0, 0},
    {SF_FREQUENCY, SIM_SHAPE_BELOW, 2.5, 1.0, 0},
};

const struct sim_score_rule sim_score_rules[EVENT_CLASS_COUNT] = {
    [EVENT_CLASS_HOLD] = {EVENT_CLASS_HOLD, 0.0, NULL, 0},
    [EVENT_CLASS_BID_UP] = {EVENT_CLASS_BID_UP, -1.0, bid_up_terms, N_OF(bid_up_terms)},
    [EVENT_CLASS_BID_DOWN] = {EVENT_CLASS_BID_DOWN, 0.0, bid_down_terms, N_OF(bid_down_terms)},
    [EVENT_CLASS_BUDGET_UP] = {EVENT_CLASS_BUDGET_UP, -0.7, budget_up_terms, N_OF(budget_up_terms)},
    [EVENT_CLASS_BUDGET_DOWN] = {EVENT_CLASS_BUDGET_DOWN, -1.0, budget_down_terms,
                                 N_OF(budget_down_terms)},
    [EVENT_CLASS_CREATIVE_PAUSE] = {EVENT_CLASS_CREATIVE_PAUSE, -2.0, pause_terms,
                                    N_OF(pause_terms)},
    [EVENT_CLASS_CREATIVE_RESUME] = {EVENT_CLASS_CREATIVE_RESUME, 3.0, resume_terms,
                                     N_OF(resume_terms)},
};

/* ---- magnitudes -------------------------------------------------------- */

static const struct sim_term bid_up_delta[] = {
    {SF_CPA_RATIO, SIM_SHAPE_BELOW, 0.9, 20.0, 0.5},
    {SF_IMPRESSION_SHARE, SIM_SHAPE_BELOW, 0.6, 15.0, 0.5},
};
static const struct sim_term bid_down_delta[] = {
    {SF_CPA_RATIO, SIM_SHAPE_ABOVE, 1.2, 20.0, 1.0},
};
static const struct sim_term budget_up_delta[] = {
    {SF_PACING, SIM_SHAPE_BELOW, 0.9, 50.0, 0.6},
    {SF_LOST_IS_BUDGET, SIM_SHAPE_ABOVE, 0.0, 30.0, 0.5},
};
static const struct sim_term budget_down_delta[] = {
    {SF_PACING, SIM_SHAPE_ABOVE, 1.1, 30.0, 0.6},
    {SF_ROAS_RATIO, SIM_SHAPE_BELOW, 0.8, 25.0, 0.6},
};

const struct sim_delta_rule sim_delta_rules[EVENT_CLASS_COUNT] = {
    [EVENT_CLASS_BID_UP] = {EVENT_CLASS_BID_UP, 1.0, 5.0, 2.0, 0.2, bid_up_delta,
                            N_OF(bid_up_delta)},
    [EVENT_CLASS_BID_DOWN] = {EVENT_CLASS_BID_DOWN, -1.0, 6.0, 2.0, 0.2, bid_down_delta,
                              N_OF(bid_down_delta)},
    [EVENT_CLASS_BUDGET_UP] = {EVENT_CLASS_BUDGET_UP, 1.0, 10.0, 3.0, 0.2, budget_up_delta,
                               N_OF(budget_up_delta)},
    [EVENT_CLASS_BUDGET_DOWN] = {EVENT_CLASS_BUDGET_DOWN, -1.0, 10.0, 3.0, 0.2, budget_down_delta,
                                 N_OF(budget_down_delta)},
};

double sim_term_value(const struct sim_term *term, double x)
{
    double v;
    switch (term->shape) {
    case SIM_SHAPE_LIN:
        v = x - term->t;
        break;
    case SIM_SHAPE_ABOVE:
        v = x > term->t ? x - term->t : 0.0;
        break;
    case SIM_SHAPE_BELOW:
        v = x < term->t ? term->t - x : 0.0;
        break;
    case SIM_SHAPE_LT:
        v = x < term->t ? 1.0 : 0.0;
        break;
    case SIM_SHAPE_GE:
        v = x >= term->t ? 1.0 : 0.0;
        break;
    default:
        v = 0.0;
        break;
    }
    if (term->cap > 0.0 && v > term->cap)
        v = term->cap;
    return term->weight * v;
}

bool sim_rule_uses_feature(enum event_class cls, size_t f)
{
    if ((unsigned)cls >= EVENT_CLASS_COUNT || f >= SF_COUNT)
        return false;
    const struct sim_score_rule *r = &sim_score_rules[cls];
    for (size_t i = 0; i < r->n_terms; i++) {
        int in = r->terms[i].in;
        if ((size_t)in == f || (in == SIM_IN_CTR_REL && f == SF_CTR))
            return true;
    }
    return false;
}

void sim_rule_feature_list(enum event_class cls, char *dst, size_t size)
{
    size_t len = 0;
    if (size == 0)
        return;
    dst[0] = '\0';
    for (size_t f = 0; f < SF_COUNT; f++) {
        if (!sim_rule_uses_feature(cls, f))
            continue;
        int n = snprintf(dst + len, size - len, "%s%s", len ? ", " : "", sim_feats[f].name);
        if (n < 0 || (size_t)n >= size - len)
            return;
        len += (size_t)n;
    }
}

const char *sim_shape_name(enum sim_shape s)
{
    static const char *const names[] = {"linear", "above", "below", "lt", "ge"};
    return (unsigned)s < N_OF(names) ? names[s] : NULL;
}

const char *sim_input_name(int in)
{
    if (in == SIM_IN_CTR_REL)
        return "ctr_rel";
    return in >= 0 && in < SF_COUNT ? sim_feats[in].name : NULL;
}

size_t sim_feature_count(void)
{
    return SF_COUNT;
}

const char *sim_feature_name(size_t i)
{
    return i < SF_COUNT ? sim_feats[i].name : NULL;
}

int sim_feature_is_categorical(size_t i)
{
    return i < SF_COUNT ? (int)sim_feats[i].categorical : -1;
}

/* ---- categorical levels ------------------------------------------------ */

const char *const sim_verticals[SIM_N_VERTICALS] = {"retail", "travel", "finance",   "auto",
                                                    "gaming", "health", "education", "b2b"};
const char *const sim_devices[SIM_N_DEVICES] = {"all", "mobile", "desktop", "tablet"};
static const char *const statuses[] = {"active", "paused"};
static const char *const entity_types[] = {"campaign", "ad_group", "creative", "keyword"};

const char *const *sim_levels(size_t f, size_t *n)
{
    switch (f) {
    case SF_CHANNEL:
        *n = SIM_N_CHANNELS;
        return sim_channels;
    case SF_VERTICAL:
        *n = SIM_N_VERTICALS;
        return sim_verticals;
    case SF_DEVICE:
        *n = SIM_N_DEVICES;
        return sim_devices;
    case SF_STATUS:
        *n = N_OF(statuses);
        return statuses;
    case SF_ENTITY_TYPE:
        *n = N_OF(entity_types);
        return entity_types;
    default:
        *n = 0;
        return NULL;
    }
}
