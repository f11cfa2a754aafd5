/*
 * sim: the simulated world, the timeline and the writers (see sim.h and
 * docs/simulate.md).
 *
 * World: campaigns of 6 entities (search: campaign, ad group, 2 keywords,
 * 2 creatives; other channels: campaign, 2 ad groups, 3 creatives), each
 * campaign owned by one operator, op-(c mod N)+1.  Every entity carries a few
 * latent log-scale quantities that follow mean-reverting random walks,
 *
 *     l <- l + k * (mu - l) + sd * N(0,1)     once per snapshot (2 h),
 *
 * and the state is read from them with sampling noise over a trailing 24 h
 * window: true cpa = target_cpa * exp(lcpa), impression share =
 * logistic(lis), campaign pacing = exp(lpace), share of lost impressions due
 * to budget = logistic(lbt), creative ctr falls with frequency as
 * exp(-0.15 * (frequency - 1)), counts are Poisson.  An action moves the
 * latents when its time comes: with g = ln(1 + d/100), a bid change adds
 * 0.7 g to lcpa and 2 g to lis; a budget change adds 0.6 g to lpace and
 * subtracts 1.5 g from lbt; pause and resume flip the creative's status.
 * docs/simulate.md lists every constant.
 *
 * Timeline: entity e (at position j of a seeded shuffle of the N entities)
 * is snapshotted at start + r * 2 h + floor(j * 7200 / N) s, r = 0, 1, ...,
 * so snapshots come out in time order and rows = the first `rows` of them.
 * A non-hold decision emits its action 60..1200 s after the snapshot, with
 * the snapshot's state.  Because snapshots of one entity are 2 h apart, the
 * contract's labelling rule (settle 30 min, hold 60 min) puts that action in
 * the window of its own snapshot only, and no action in the window of any
 * hold snapshot: examples.csv row i is the example of states.jsonl line i.
 *
 * Numbers are kept as integers scaled by 10^decimals of their feature and
 * written from that integer, so the JSON and CSV texts are the same, and the
 * policy reads n / 10^d, which is the double that parsing the text gives
 * (both are the correctly rounded value of the same decimal).
 *
 * Two generators: one for the world (walks, counts, shuffles), one for
 * decisions (class, magnitude, delay).  Each decision draws the same number
 * of values whatever it decides.
 */
#include "sim/sim.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sim/sim_impl.h"
#include "util/rng.h"
#include "util/util.h"

#define INTERVAL_S            7200
#define DELAY_MIN_S           60
#define DELAY_MAX_S           1200
#define SETTLE_WINDOW_S       1800
#define HOLD_WINDOW_S         3600
#define ENTITIES_PER_CAMPAIGN 6
#define AUTO_DAYS             14
#define DEFAULT_START_S       INT64_C(1791158400) /* 2026-10-05T00:00:00Z, a Monday */
#define LINE_MAX_BYTES        8192
#define IO_BUFFER_BYTES       (1 << 20)

static const char *const file_names[4] = {"states.jsonl", "actions.jsonl", "examples.csv",
                                          "truth.json"};
enum { OUT_STATES = 0, OUT_ACTIONS, OUT_CSV, OUT_TRUTH, OUT_COUNT };

/* ---- the world ---------------------------------------------------------- */

static const double channel_weight[SIM_N_CHANNELS] = {0.40, 0.25, 0.20, 0.15};
static const double channel_volume[SIM_N_CHANNELS] = {1.0, 3.0, 6.0, 4.0};
static const double vertical_cpa[SIM_N_VERTICALS] = {25, 60, 110, 85, 12, 55, 70, 140};
static const double vertical_cvr[SIM_N_VERTICALS] = {0.035, 0.025, 0.018, 0.02,
                                                     0.05,  0.025, 0.022, 0.015};
static const double vertical_roas[SIM_N_VERTICALS] = {4, 6, 8, 5, 3, 5, 4, 6};
static const double device_cvr[SIM_N_DEVICES] = {1.0, 0.85, 1.25, 1.0};
static const double device_weight[SIM_N_DEVICES] = {0.0, 0.5, 0.35, 0.15};
/* Impressions per 24 h at full share (auction entities) or when active (creatives). */
static const double type_volume[EVENT_ENTITY_COUNT] = {
    [EVENT_ENTITY_CAMPAIGN] = 40000,
    [EVENT_ENTITY_AD_GROUP] = 18000,
    [EVENT_ENTITY_CREATIVE] = 16000,
    [EVENT_ENTITY_KEYWORD] = 10000,
};

struct campaign {
    char id[24];
    unsigned op; /* 1-based */
    int channel, vertical;
    double target_cpa, target_roas, budget; /* as written (rounded) */
    double lpace, mu_pace;                  /* log month-to-date pacing */
    double lbt, mu_bt; /* budget tightness: logit of the share of loss due to budget */
};

struct entity {
    char id[40];
    enum event_entity type;
    unsigned campaign;
    int device;
    double lcpa, mu_cpa; /* log true cpa / target_cpa */
    double lis, mu_is;   /* logit impression share (auction entities) */
    double lr;           /* log roas / (target_roas / true cpa ratio) */
    double lctr, mu_ctr; /* log ctr / channel reference (before fatigue) */
    double vol, cvr_mult, bid_u, freq;
    int qs;
    bool paused;
    int64_t last_change_s;
};

/* The state of one snapshot. */
enum { V_ABSENT = 0, V_NULL, V_NUM, V_CAT };
struct obs {
    unsigned char kind[SF_COUNT];
    int64_t n[SF_COUNT]; /* numeric, scaled by 10^decimals */
    double x[SF_COUNT];  /* n / 10^decimals; NAN when not V_NUM */
    const char *cat[SF_COUNT];
};

struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
    bool overflow;
};

struct pending {
    int64_t ts_s;
    uint64_t seq;
    size_t entity;
    enum event_class cls;
    bool has_delta;
    double delta;
    char delta_text[24];
    struct util_buf state;
};

struct world {
    const struct sim_options *o;
    size_t n_campaigns, n_entities;
    struct campaign *campaigns;
    struct entity *entities;
    size_t *order; /* position in the round -> entity */
    struct util_rng rw, rp;
    int64_t start_s;
    FILE *f[OUT_COUNT];
    char *iobuf[OUT_COUNT];
    /* pending actions: a binary min-heap of slot numbers on (ts_s, seq) */
    struct pending **slots;
    size_t n_slots, *free_slots, n_free;
    size_t *heap, heap_len;
    uint64_t decisions, actions_written;
    double entropy_sum;
    struct sim_summary sum;
    struct line state, out;
};

static const double pow10_table[] = {1, 10, 100, 1000, 10000, 100000, 1000000};

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static double logistic(double v)
{
    return 1.0 / (1.0 + exp(-v));
}

/* Poisson draw: inversion from one uniform below mean 40, normal above. */
static int64_t poisson(struct util_rng *r, double mean)
{
    double u = util_rng_uniform(r);
    double z = util_rng_normal(r);
    if (!(mean > 0.0))
        return 0;
    if (mean >= 40.0) {
        double v = floor(mean + sqrt(mean) * z + 0.5);
        return v < 0.0 ? 0 : (int64_t)v;
    }
    double p = exp(-mean), cdf = p;
    int64_t k = 0;
    while (u > cdf && k < 400) {
        k++;
        p *= mean / (double)k;
        cdf += p;
    }
    return k;
}

static int pick_weighted(struct util_rng *r, const double *w, int n)
{
    double total = 0.0, u;
    for (int i = 0; i < n; i++)
        total += w[i];
    u = util_rng_uniform(r) * total;
    for (int i = 0; i < n; i++) {
        if (u < w[i])
            return i;
        u -= w[i];
    }
    return n - 1;
}

static double round_to(double v, int decimals)
{
    return floor(v * pow10_table[decimals] + 0.5) / pow10_table[decimals];
}

unsigned sim_auto_campaigns(const struct sim_options *o)
{
    if (o->campaigns)
        return o->campaigns;
    uint64_t per_campaign = (uint64_t)ENTITIES_PER_CAMPAIGN * (86400 / INTERVAL_S) * AUTO_DAYS;
    uint64_t c = (o->rows + per_campaign - 1) / per_campaign;
    if (c < o->operators)
        c = o->operators;
    if (c > 1000000)
        c = 1000000;
    return (unsigned)c;
}

int64_t sim_last_event_s(const struct sim_options *o)
{
    uint64_t n = (uint64_t)sim_auto_campaigns(o) * ENTITIES_PER_CAMPAIGN;
    uint64_t rounds = (o->rows - 1) / n;
    int64_t start_s = o->start_us / 1000000;
    if (rounds > (uint64_t)(SIM_MAX_END_S / INTERVAL_S))
        return SIM_MAX_END_S + 1;
    return start_s + (int64_t)rounds * INTERVAL_S + INTERVAL_S + DELAY_MAX_S;
}

static void world_build(struct world *w)
{
    const struct sim_options *o = w->o;
    struct util_rng *r = &w->rw;
    size_t e = 0;
    for (size_t c = 0; c < w->n_campaigns; c++) {
        struct campaign *cp = &w->campaigns[c];
        util_fmt(cp->id, sizeof cp->id, "cmp-%04zu", c + 1);
        cp->op = (unsigned)(c % o->operators) + 1;
        cp->channel = pick_weighted(r, channel_weight, SIM_N_CHANNELS);
        cp->vertical = (int)util_rng_range(r, 0, SIM_N_VERTICALS - 1);
        cp->target_cpa = round_to(vertical_cpa[cp->vertical] * exp(0.3 * util_rng_normal(r)), 2);
        cp->target_roas = round_to(vertical_roas[cp->vertical] * exp(0.2 * util_rng_normal(r)), 2);
        cp->budget = round_to(cp->target_cpa * 30.0 * exp(0.5 * util_rng_normal(r)), 2);
        cp->mu_pace = 0.12 * util_rng_normal(r);
        cp->lpace = cp->mu_pace + 0.15 * util_rng_normal(r);
        cp->mu_bt = -1.0 + 0.8 * util_rng_normal(r);
        cp->lbt = cp->mu_bt + 0.5 * util_rng_normal(r);

        static const enum event_entity search_mix[ENTITIES_PER_CAMPAIGN] = {
            EVENT_ENTITY_CAMPAIGN, EVENT_ENTITY_AD_GROUP, EVENT_ENTITY_KEYWORD,
            EVENT_ENTITY_KEYWORD,  EVENT_ENTITY_CREATIVE, EVENT_ENTITY_CREATIVE};
        static const enum event_entity other_mix[ENTITIES_PER_CAMPAIGN] = {
            EVENT_ENTITY_CAMPAIGN, EVENT_ENTITY_AD_GROUP, EVENT_ENTITY_AD_GROUP,
            EVENT_ENTITY_CREATIVE, EVENT_ENTITY_CREATIVE, EVENT_ENTITY_CREATIVE};
        const enum event_entity *mix = cp->channel == 0 ? search_mix : other_mix;
        unsigned ordinal[EVENT_ENTITY_COUNT] = {0};
        for (size_t i = 0; i < ENTITIES_PER_CAMPAIGN; i++, e++) {
            struct entity *en = &w->entities[e];
            en->type = mix[i];
            en->campaign = (unsigned)c;
            unsigned k = ++ordinal[en->type];
            switch (en->type) {
            case EVENT_ENTITY_CAMPAIGN:
                util_fmt(en->id, sizeof en->id, "%s", cp->id);
                break;
            case EVENT_ENTITY_AD_GROUP:
                util_fmt(en->id, sizeof en->id, "ag-%04zu-%u", c + 1, k);
                break;
            case EVENT_ENTITY_KEYWORD:
                util_fmt(en->id, sizeof en->id, "kw-%04zu-%u", c + 1, k);
                break;
            default:
                util_fmt(en->id, sizeof en->id, "cr-%04zu-%u", c + 1, k);
                break;
            }
            en->device = en->type == EVENT_ENTITY_CAMPAIGN
                             ? 0
                             : pick_weighted(r, device_weight, SIM_N_DEVICES);
            en->mu_cpa = 0.05 + 0.15 * util_rng_normal(r);
            en->lcpa = en->mu_cpa + 0.25 * util_rng_normal(r);
            en->mu_is = 0.3 + 0.8 * util_rng_normal(r);
            en->lis = en->mu_is + 0.4 * util_rng_normal(r);
            en->lr = 0.1 * util_rng_normal(r);
            en->mu_ctr = 0.3 * util_rng_normal(r);
            en->lctr = en->mu_ctr;
            en->vol =
                type_volume[en->type] * channel_volume[cp->channel] * exp(0.5 * util_rng_normal(r));
            en->cvr_mult = exp(0.25 * util_rng_normal(r));
            en->bid_u = 0.6 + 0.3 * util_rng_uniform(r);
            en->freq = 1.0 + 4.0 * util_rng_uniform(r);
            en->qs = (int)util_rng_range(r, 3, 9);
            en->paused = en->type == EVENT_ENTITY_CREATIVE && util_rng_uniform(r) < 0.3;
            double days_ago =
                en->paused ? 0.1 + 1.0 * util_rng_uniform(r) : 0.5 + 9.5 * util_rng_uniform(r);
            en->last_change_s = w->start_s - (int64_t)(days_ago * 86400.0);
        }
    }
    for (size_t i = 0; i < w->n_entities; i++)
        w->order[i] = i;
    for (size_t i = w->n_entities; i > 1; i--) {
        size_t j = (size_t)util_rng_range(r, 0, (int64_t)i - 1);
        size_t t = w->order[i - 1];
        w->order[i - 1] = w->order[j];
        w->order[j] = t;
    }
}

/* One 2 h step of the latent walks. */
static void entity_step(struct world *w, struct entity *en)
{
    struct util_rng *r = &w->rw;
    en->lcpa += 0.05 * (en->mu_cpa - en->lcpa) + 0.10 * util_rng_normal(r);
    en->lis += 0.06 * (en->mu_is - en->lis) + 0.15 * util_rng_normal(r);
    en->lr += 0.05 * (0.0 - en->lr) + 0.04 * util_rng_normal(r);
    en->lctr += 0.03 * (en->mu_ctr - en->lctr) + 0.05 * util_rng_normal(r);
    double zf = util_rng_normal(r);
    double uq = util_rng_uniform(r);
    if (en->type == EVENT_ENTITY_CAMPAIGN) {
        struct campaign *cp = &w->campaigns[en->campaign];
        cp->lpace += 0.06 * (cp->mu_pace - cp->lpace) + 0.08 * util_rng_normal(r);
        cp->lbt += 0.05 * (cp->mu_bt - cp->lbt) + 0.15 * util_rng_normal(r);
    }
    if (en->type == EVENT_ENTITY_CREATIVE) {
        if (en->paused)
            en->freq = 1.0 + (en->freq - 1.0) * 0.75;
        else
            en->freq = fmin(15.0, en->freq + 0.15 * exp(0.3 * zf));
    }
    if (en->type == EVENT_ENTITY_KEYWORD && uq < 0.02)
        en->qs = uq < 0.01 ? (en->qs > 1 ? en->qs - 1 : 1) : (en->qs < 10 ? en->qs + 1 : 10);
}

/* ---- the observed state ------------------------------------------------ */

static void set_num(struct obs *s, int f, double v)
{
    int d = sim_feats[f].decimals;
    double scaled = floor(v * pow10_table[d] + 0.5);
    s->kind[f] = V_NUM;
    s->n[f] = (int64_t)scaled;
    s->x[f] = (double)s->n[f] / pow10_table[d];
}

static void set_null(struct obs *s, int f)
{
    s->kind[f] = V_NULL;
    s->x[f] = NAN;
}

static void set_cat(struct obs *s, int f, const char *level)
{
    s->kind[f] = V_CAT;
    s->cat[f] = level;
    s->x[f] = NAN;
}

static void observe(struct world *w, const struct entity *en, int64_t ts_s, struct obs *s)
{
    struct util_rng *r = &w->rw;
    const struct campaign *cp = &w->campaigns[en->campaign];
    bool auction = en->type != EVENT_ENTITY_CREATIVE;
    bool active = !en->paused;

    for (int f = 0; f < SF_COUNT; f++) {
        s->kind[f] = V_ABSENT;
        s->x[f] = NAN;
    }
    int64_t days = ts_s >= 0 ? ts_s / 86400 : -((-ts_s + 86399) / 86400);
    int hour = (int)((ts_s - days * 86400) / 3600);
    int dow = (int)(((days + 3) % 7 + 7) % 7); /* 1970-01-01 was a Thursday; Monday = 0 */

    double z_imp = util_rng_normal(r), z_cpc = util_rng_normal(r), z_val = util_rng_normal(r);
    double z_is = util_rng_normal(r), u_gap = util_rng_uniform(r);

    double is_true = logistic(en->lis);
    double imp_mean = auction ? en->vol * is_true : (active ? en->vol : 0.0);
    int64_t impressions = imp_mean > 0.0 ? (int64_t)floor(imp_mean * exp(0.08 * z_imp) + 0.5) : 0;
    double ctr_true = sim_ctr_reference[cp->channel] * exp(en->lctr);
    if (en->type == EVENT_ENTITY_CREATIVE)
        ctr_true *= exp(-0.15 * (en->freq - 1.0));
    ctr_true = fmin(ctr_true, 0.5);
    int64_t clicks = poisson(r, (double)impressions * ctr_true);
    if (clicks > impressions)
        clicks = impressions;
    double cvr_true = fmin(0.5, vertical_cvr[cp->vertical] * en->cvr_mult * device_cvr[en->device]);
    int64_t conversions = poisson(r, (double)clicks * cvr_true);
    if (conversions > clicks)
        conversions = clicks;
    double cpc_true = cp->target_cpa * exp(en->lcpa) * cvr_true;

    set_num(s, SF_TARGET_CPA, cp->target_cpa);
    set_num(s, SF_TARGET_ROAS, cp->target_roas);
    set_num(s, SF_IMPRESSIONS, (double)impressions);
    set_num(s, SF_CLICKS, (double)clicks);
    set_num(s, SF_CONVERSIONS, (double)conversions);
    set_num(s, SF_SPEND, (double)clicks * cpc_true * exp(0.04 * z_cpc));
    double spend = s->x[SF_SPEND];
    if (impressions > 0)
        set_num(s, SF_CTR, (double)clicks / (double)impressions);
    else
        set_null(s, SF_CTR);
    if (clicks > 0) {
        set_num(s, SF_CVR, (double)conversions / (double)clicks);
        set_num(s, SF_CPC, spend / (double)clicks);
    } else {
        set_null(s, SF_CVR);
        set_null(s, SF_CPC);
    }
    if (conversions > 0) {
        set_num(s, SF_CPA, spend / (double)conversions);
        set_num(s, SF_CPA_RATIO, s->x[SF_CPA] / cp->target_cpa);
    } else {
        set_null(s, SF_CPA);
        set_null(s, SF_CPA_RATIO);
    }
    if (spend > 0.0) {
        double revenue =
            (double)conversions * cp->target_cpa * cp->target_roas * exp(en->lr) * exp(0.1 * z_val);
        set_num(s, SF_ROAS, revenue / spend);
        set_num(s, SF_ROAS_RATIO, s->x[SF_ROAS] / cp->target_roas);
    } else {
        set_null(s, SF_ROAS);
        set_null(s, SF_ROAS_RATIO);
    }
    double pacing = exp(cp->lpace);
    set_num(s, SF_PACING, pacing);
    set_num(s, SF_BUDGET, cp->budget);
    set_num(s, SF_BUDGET_UTILIZATION,
            fmin(1.0, (double)(hour + 1) / 24.0 * (0.5 + logistic(cp->lbt))));
    if (auction && u_gap >= 0.03) {
        double is = clampd(is_true * (1.0 + 0.03 * z_is), 0.0, 1.0);
        set_num(s, SF_IMPRESSION_SHARE, is);
        double lost = 1.0 - s->x[SF_IMPRESSION_SHARE];
        set_num(s, SF_LOST_IS_BUDGET, lost * logistic(cp->lbt));
        set_num(s, SF_LOST_IS_RANK, fmax(0.0, lost - s->x[SF_LOST_IS_BUDGET]));
    }
    if (en->type == EVENT_ENTITY_AD_GROUP || en->type == EVENT_ENTITY_KEYWORD)
        set_num(s, SF_BID, cpc_true / en->bid_u);
    if (en->type == EVENT_ENTITY_KEYWORD)
        set_num(s, SF_QUALITY_SCORE, en->qs);
    if (en->type == EVENT_ENTITY_CREATIVE)
        set_num(s, SF_FREQUENCY, en->freq);
    set_num(s, SF_HOUR_OF_DAY, hour);
    set_num(s, SF_DAY_OF_WEEK, dow);
    set_num(s, SF_DAYS_SINCE_CHANGE, (double)(ts_s - en->last_change_s) / 86400.0);
    set_cat(s, SF_CHANNEL, sim_channels[cp->channel]);
    set_cat(s, SF_VERTICAL, sim_verticals[cp->vertical]);
    set_cat(s, SF_DEVICE, sim_devices[en->device]);
    set_cat(s, SF_STATUS, en->paused ? "paused" : "active");
    set_cat(s, SF_ENTITY_TYPE, event_entity_name(en->type));
}

/* ---- the decision ------------------------------------------------------- */

/* The policy inputs of a state: written values, substitutes for missing ones. */
static void policy_inputs(const struct obs *s, int channel, double *in)
{
    for (int f = 0; f < SF_COUNT; f++)
        in[f] = s->kind[f] == V_NUM ? s->x[f] : sim_missing_default[f];
    if (s->kind[SF_CPA_RATIO] != V_NUM && s->x[SF_SPEND] > 0.0)
        in[SF_CPA_RATIO] = s->x[SF_SPEND] / s->x[SF_TARGET_CPA];
    if (s->kind[SF_CTR] != V_NUM)
        in[SF_CTR] = sim_ctr_reference[channel];
    in[SIM_IN_CTR_REL] = in[SF_CTR] / sim_ctr_reference[channel];
}

static double rule_score(const struct sim_score_rule *rule, const double *in)
{
    double s = rule->base;
    for (size_t i = 0; i < rule->n_terms; i++)
        s += sim_term_value(&rule->terms[i], in[rule->terms[i].in]);
    return s;
}

static bool in_region(const struct sim_bias *b, const struct obs *s)
{
    size_t f = b->region_feature;
    switch (b->region_op) {
    case SIM_REGION_ALL:
        return true;
    case SIM_REGION_EQ:
        return s->kind[f] == V_CAT && strcmp(s->cat[f], b->region_level) == 0;
    case SIM_REGION_LT:
        return s->kind[f] == V_NUM && s->x[f] < b->region_value;
    case SIM_REGION_GT:
        return s->kind[f] == V_NUM && s->x[f] > b->region_value;
    default:
        return false;
    }
}

/* The inputs operator op reads when scoring cls: shifted by its shift biases. */
static void class_inputs(const struct sim_options *o, unsigned op, enum event_class cls,
                         const struct obs *s, int channel, const double *base, double *in)
{
    memcpy(in, base, sizeof(double) * SIM_IN_COUNT);
    bool shifted = false;
    for (size_t i = 0; i < o->n_biases; i++) {
        const struct sim_bias *b = &o->biases[i];
        if (b->op == op && b->kind == SIM_BIAS_SHIFT && b->cls == cls && in_region(b, s)) {
            in[b->feature] += b->amount;
            shifted = true;
        }
    }
    if (shifted)
        in[SIM_IN_CTR_REL] = in[SF_CTR] / sim_ctr_reference[channel];
}

struct decision {
    enum event_class cls;
    bool has_delta;
    double delta; /* rounded to 0.1 */
    int64_t delay_s;
    double entropy;
};

static void decide(struct world *w, const struct entity *en, const struct obs *s,
                   struct decision *d)
{
    const struct sim_options *o = w->o;
    const struct campaign *cp = &w->campaigns[en->campaign];
    unsigned op = cp->op;
    double base[SIM_IN_COUNT], in[EVENT_CLASS_COUNT][SIM_IN_COUNT];
    double logit[EVENT_CLASS_COUNT], p[EVENT_CLASS_COUNT];
    bool allowed[EVENT_CLASS_COUNT] = {false};

    double u = util_rng_uniform(&w->rp);
    double z = util_rng_normal(&w->rp);
    d->delay_s = util_rng_range(&w->rp, DELAY_MIN_S, DELAY_MAX_S);

    switch (en->type) {
    case EVENT_ENTITY_CAMPAIGN:
        allowed[EVENT_CLASS_BUDGET_UP] = allowed[EVENT_CLASS_BUDGET_DOWN] = true;
        break;
    case EVENT_ENTITY_AD_GROUP:
    case EVENT_ENTITY_KEYWORD:
        allowed[EVENT_CLASS_BID_UP] = allowed[EVENT_CLASS_BID_DOWN] = true;
        break;
    default:
        allowed[en->paused ? EVENT_CLASS_CREATIVE_RESUME : EVENT_CLASS_CREATIVE_PAUSE] = true;
        break;
    }
    allowed[EVENT_CLASS_HOLD] = true;

    policy_inputs(s, cp->channel, base);
    double top = 0.0;
    for (int k = 0; k < EVENT_CLASS_COUNT; k++) {
        logit[k] = 0.0;
        if (!allowed[k] || k == EVENT_CLASS_HOLD)
            continue;
        class_inputs(o, op, (enum event_class)k, s, cp->channel, base, in[k]);
        logit[k] = rule_score(&sim_score_rules[k], in[k]) / o->temperature;
        for (size_t i = 0; i < o->n_biases; i++) {
            const struct sim_bias *b = &o->biases[i];
            if (b->op == op && b->kind == SIM_BIAS_FAVOR && (int)b->cls == k && in_region(b, s))
                logit[k] += log(b->amount);
        }
        if (logit[k] > top)
            top = logit[k];
    }
    double total = 0.0;
    for (int k = 0; k < EVENT_CLASS_COUNT; k++) {
        p[k] = allowed[k] ? exp(logit[k] - top) : 0.0;
        total += p[k];
    }
    for (int k = 0; k < EVENT_CLASS_COUNT; k++)
        p[k] /= total;
    for (size_t i = 0; i < o->n_biases; i++) {
        const struct sim_bias *b = &o->biases[i];
        if (b->op == op && b->kind == SIM_BIAS_NEVER && in_region(b, s)) {
            p[EVENT_CLASS_HOLD] += p[b->cls];
            p[b->cls] = 0.0;
        }
    }
    d->entropy = 0.0;
    d->cls = EVENT_CLASS_HOLD;
    double cdf = 0.0;
    bool chosen = false;
    for (int k = 0; k < EVENT_CLASS_COUNT; k++) {
        if (p[k] > 0.0)
            d->entropy -= p[k] * log(p[k]);
        cdf += p[k];
        if (!chosen && p[k] > 0.0 && u < cdf) {
            d->cls = (enum event_class)k;
            chosen = true;
        }
    }
    /* u close to 1 with a cdf rounded below it: the last class drawable. */
    if (!chosen)
        for (int k = 0; k < EVENT_CLASS_COUNT; k++)
            if (p[k] > 0.0)
                d->cls = (enum event_class)k;

    const struct sim_delta_rule *dr = &sim_delta_rules[d->cls];
    d->has_delta = dr->sign > 0.0 || dr->sign < 0.0;
    d->delta = 0.0;
    if (!d->has_delta)
        return;
    double mag = dr->base;
    for (size_t i = 0; i < dr->n_terms; i++)
        mag += sim_term_value(&dr->terms[i], in[d->cls][dr->terms[i].in]);
    mag = fmax(dr->min_abs, mag) * exp(dr->noise_sd * z);
    for (size_t i = 0; i < o->n_biases; i++) {
        const struct sim_bias *b = &o->biases[i];
        if (b->op == op && b->kind == SIM_BIAS_SCALE && b->cls == d->cls && in_region(b, s))
            mag *= b->amount;
    }
    double v = dr->sign * mag;
    v = clampd(v, -95.0, 1000.0);
    v = floor(v * 10.0 + 0.5) / 10.0;
    if (fabs(v) < 0.1)
        v = dr->sign * 0.1;
    d->delta = v;
}

static void apply_action(struct world *w, struct entity *en, const struct decision *d,
                         int64_t action_ts_s)
{
    double g = d->has_delta ? log1p(d->delta / 100.0) : 0.0;
    struct campaign *cp = &w->campaigns[en->campaign];
    switch (d->cls) {
    case EVENT_CLASS_BID_UP:
    case EVENT_CLASS_BID_DOWN:
        en->lcpa += 0.7 * g;
        en->lis += 2.0 * g;
        break;
    case EVENT_CLASS_BUDGET_UP:
    case EVENT_CLASS_BUDGET_DOWN:
        cp->budget = fmax(1.0, round_to(cp->budget * (1.0 + d->delta / 100.0), 2));
        cp->lpace += 0.6 * g;
        cp->lbt -= 1.5 * g;
        en->lcpa += 0.1 * g;
        break;
    case EVENT_CLASS_CREATIVE_PAUSE:
        en->paused = true;
        break;
    case EVENT_CLASS_CREATIVE_RESUME:
        en->paused = false;
        break;
    default:
        return;
    }
    en->last_change_s = action_ts_s;
}

/* ---- text --------------------------------------------------------------- */

static void line_reset(struct line *l)
{
    l->len = 0;
    l->overflow = false;
}

static void line_put(struct line *l, const char *p, size_t n)
{
    if (n > sizeof l->buf - l->len) {
        l->overflow = true;
        return;
    }
    memcpy(l->buf + l->len, p, n);
    l->len += n;
}

static void line_str(struct line *l, const char *s)
{
    line_put(l, s, strlen(s));
}

static void line_char(struct line *l, char c)
{
    line_put(l, &c, 1);
}

/* Decimal text of n / 10^d without trailing zeros ("12.5", "3", "-0.25"). */
static size_t fmt_scaled(char *dst, int64_t n, int d)
{
    char tmp[32];
    size_t len = 0, i = 0;
    uint64_t u = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    uint64_t p = 1;
    for (int k = 0; k < d; k++)
        p *= 10;
    uint64_t ip = u / p, fp = u % p;
    if (n < 0)
        dst[len++] = '-';
    do {
        tmp[i++] = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip);
    while (i)
        dst[len++] = tmp[--i];
    if (fp) {
        int digits = d;
        while (fp % 10 == 0) {
            fp /= 10;
            digits--;
        }
        dst[len++] = '.';
        for (int k = digits - 1; k >= 0; k--) {
            tmp[k] = (char)('0' + fp % 10);
            fp /= 10;
        }
        memcpy(dst + len, tmp, (size_t)digits);
        len += (size_t)digits;
    }
    dst[len] = '\0';
    return len;
}

/* RFC 3339 UTC with whole seconds ("2026-10-05T00:00:00Z"); the options
 * keep every time within years 1970..9999, so the layout is fixed. */
static void fmt_time(char *dst, size_t size, int64_t ts_s)
{
    char full[40];
    util_format_rfc3339(ts_s * 1000000, full, sizeof full);
    full[19] = 'Z';
    full[20] = '\0';
    util_fmt(dst, size, "%s", full);
}

/* Value text of feature f: "null", a number, or a bare level. */
static size_t value_text(const struct obs *s, int f, char *dst)
{
    switch (s->kind[f]) {
    case V_NUM:
        return fmt_scaled(dst, s->n[f], sim_feats[f].decimals);
    case V_CAT: {
        size_t n = strlen(s->cat[f]);
        memcpy(dst, s->cat[f], n + 1);
        return n;
    }
    default:
        dst[0] = '\0';
        return 0;
    }
}

/* The state object and the CSV feature cells of one snapshot. */
static void state_texts(const struct obs *s, struct line *json, struct line *csv)
{
    char v[64];
    bool first = true;
    line_char(json, '{');
    for (int f = 0; f < SF_COUNT; f++) {
        size_t n = value_text(s, f, v);
        if (f)
            line_char(csv, ',');
        line_put(csv, v, n);
        if (s->kind[f] == V_ABSENT)
            continue;
        if (!first)
            line_char(json, ',');
        first = false;
        line_char(json, '"');
        line_str(json, sim_feats[f].name);
        line_str(json, "\":");
        if (s->kind[f] == V_NULL) {
            line_str(json, "null");
        } else if (s->kind[f] == V_CAT) {
            line_char(json, '"');
            line_put(json, v, n);
            line_char(json, '"');
        } else {
            line_put(json, v, n);
        }
    }
    line_char(json, '}');
}

/* The fields every event of an entity starts with, after event_id. */
static void event_head(struct line *l, const char *event_id, const char *ts, const char *op,
                       const struct campaign *cp, const struct entity *en)
{
    line_str(l, "{\"event_id\":\"");
    line_str(l, event_id);
    line_str(l, "\",\"ts\":\"");
    line_str(l, ts);
    line_str(l, "\",\"operator_id\":\"");
    line_str(l, op);
    line_str(l, "\",\"campaign_id\":\"");
    line_str(l, cp->id);
    line_str(l, "\",\"entity_type\":\"");
    line_str(l, event_entity_name(en->type));
    line_str(l, "\",\"entity_id\":\"");
    line_str(l, en->id);
    line_str(l, "\",");
}

static const char *wire_action(enum event_class c)
{
    switch (c) {
    case EVENT_CLASS_BID_UP:
    case EVENT_CLASS_BID_DOWN:
        return "bid_change";
    case EVENT_CLASS_BUDGET_UP:
    case EVENT_CLASS_BUDGET_DOWN:
        return "budget_change";
    case EVENT_CLASS_CREATIVE_PAUSE:
        return "creative_pause";
    default:
        return "creative_resume";
    }
}

static int write_line(struct world *w, int which, const struct line *l, char *err, size_t errlen)
{
    if (l->overflow) {
        util_fmt(err, errlen, "simulate: a %s line exceeds %d bytes", file_names[which],
                 LINE_MAX_BYTES);
        return -1;
    }
    if (fwrite(l->buf, 1, l->len, w->f[which]) != l->len) {
        util_fmt(err, errlen, "simulate: writing %s: %s", file_names[which], strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- pending actions ---------------------------------------------------- */

static bool heap_less(const struct world *w, size_t a, size_t b)
{
    const struct pending *x = w->slots[a], *y = w->slots[b];
    return x->ts_s < y->ts_s || (x->ts_s == y->ts_s && x->seq < y->seq);
}

static void heap_push(struct world *w, size_t slot)
{
    size_t i = w->heap_len++;
    w->heap[i] = slot;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(w, w->heap[i], w->heap[parent]))
            break;
        size_t t = w->heap[i];
        w->heap[i] = w->heap[parent];
        w->heap[parent] = t;
        i = parent;
    }
}

static size_t heap_pop(struct world *w)
{
    size_t top = w->heap[0];
    w->heap[0] = w->heap[--w->heap_len];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->heap_len && heap_less(w, w->heap[l], w->heap[m]))
            m = l;
        if (r < w->heap_len && heap_less(w, w->heap[r], w->heap[m]))
            m = r;
        if (m == i)
            break;
        size_t t = w->heap[i];
        w->heap[i] = w->heap[m];
        w->heap[m] = t;
        i = m;
    }
    return top;
}

/* A free slot, allocating one when none is free.  Returns SIZE_MAX when out of memory. */
static size_t slot_get(struct world *w)
{
    if (w->n_free)
        return w->free_slots[--w->n_free];
    if (w->n_slots == w->n_entities)
        return SIZE_MAX; /* cannot happen: one pending action per entity at most */
    struct pending *p = util_calloc(1, sizeof *p);
    if (!p)
        return SIZE_MAX;
    util_buf_init(&p->state);
    w->slots[w->n_slots] = p;
    return w->n_slots++;
}

static int flush_actions(struct world *w, int64_t until_s, char *err, size_t errlen)
{
    char id[32], ts[32], op[16];
    while (w->heap_len && w->slots[w->heap[0]]->ts_s <= until_s) {
        size_t slot = heap_pop(w);
        struct pending *p = w->slots[slot];
        const struct entity *en = &w->entities[p->entity];
        const struct campaign *cp = &w->campaigns[en->campaign];
        util_fmt(id, sizeof id, "chg-%010llu", (unsigned long long)++w->actions_written);
        fmt_time(ts, sizeof ts, p->ts_s);
        util_fmt(op, sizeof op, "op-%02u", cp->op);
        line_reset(&w->out);
        event_head(&w->out, id, ts, op, cp, en);
        line_str(&w->out, "\"action\":\"");
        line_str(&w->out, wire_action(p->cls));
        line_str(&w->out, "\",\"delta_pct\":");
        line_str(&w->out, p->delta_text);
        line_str(&w->out, ",\"state\":");
        line_put(&w->out, p->state.data, p->state.len);
        line_str(&w->out, "}\n");
        if (write_line(w, OUT_ACTIONS, &w->out, err, errlen) != 0)
            return -1;
        /* The action takes effect at its own time, so no snapshot before it shows it. */
        struct decision d = {.cls = p->cls, .has_delta = p->has_delta, .delta = p->delta};
        apply_action(w, &w->entities[p->entity], &d, p->ts_s);
        w->free_slots[w->n_free++] = slot;
    }
    return 0;
}

/* ---- the run ------------------------------------------------------------ */

static int simulate(struct world *w, char *err, size_t errlen)
{
    const struct sim_options *o = w->o;
    struct obs s;
    struct decision d;
    struct line csv;
    char id[32], ts[32], op[16], delta[24];
    size_t n = w->n_entities;

    for (uint64_t row = 0; row < o->rows; row++) {
        uint64_t round = row / n;
        size_t j = (size_t)(row % n);
        struct entity *en = &w->entities[w->order[j]];
        const struct campaign *cp = &w->campaigns[en->campaign];
        int64_t ts_s = w->start_s + (int64_t)round * INTERVAL_S +
                       (int64_t)((uint64_t)j * INTERVAL_S / (uint64_t)n);
        if (flush_actions(w, ts_s, err, errlen) != 0)
            return -1;
        if (round > 0)
            entity_step(w, en);
        observe(w, en, ts_s, &s);
        decide(w, en, &s, &d);

        line_reset(&w->state);
        line_reset(&csv);
        state_texts(&s, &w->state, &csv);
        if (w->state.overflow) {
            util_fmt(err, errlen, "simulate: a state exceeds %d bytes", LINE_MAX_BYTES);
            return -1;
        }

        util_fmt(id, sizeof id, "st-%010llu", (unsigned long long)row + 1);
        fmt_time(ts, sizeof ts, ts_s);
        util_fmt(op, sizeof op, "op-%02u", cp->op);
        line_reset(&w->out);
        event_head(&w->out, id, ts, op, cp, en);
        line_str(&w->out, "\"state\":");
        line_put(&w->out, w->state.buf, w->state.len);
        line_str(&w->out, "}\n");
        if (write_line(w, OUT_STATES, &w->out, err, errlen) != 0)
            return -1;

        delta[0] = '\0';
        if (d.has_delta)
            fmt_scaled(delta, (int64_t)floor(d.delta * 10.0 + 0.5), 1);
        line_char(&csv, ',');
        line_str(&csv, event_class_name(d.cls));
        line_char(&csv, ',');
        line_str(&csv, delta);
        line_char(&csv, '\n');
        if (write_line(w, OUT_CSV, &csv, err, errlen) != 0)
            return -1;

        w->entropy_sum += d.entropy;
        w->sum.by_class[d.cls]++;
        w->sum.by_operator[cp->op - 1][d.cls]++;
        if (row == 0)
            w->sum.first_ts_us = ts_s * 1000000;
        w->sum.last_ts_us = ts_s * 1000000;
        if (d.cls == EVENT_CLASS_HOLD)
            continue;

        size_t slot = slot_get(w);
        if (slot == SIZE_MAX) {
            util_fmt(err, errlen, "simulate: out of memory");
            return -1;
        }
        struct pending *p = w->slots[slot];
        p->ts_s = ts_s + d.delay_s;
        p->seq = ++w->decisions;
        p->entity = w->order[j];
        p->cls = d.cls;
        p->has_delta = d.has_delta;
        p->delta = d.delta;
        util_fmt(p->delta_text, sizeof p->delta_text, "%s", d.has_delta ? delta : "null");
        util_buf_reset(&p->state);
        if (util_buf_append(&p->state, w->state.buf, w->state.len) != 0) {
            w->free_slots[w->n_free++] = slot;
            util_fmt(err, errlen, "simulate: out of memory");
            return -1;
        }
        heap_push(w, slot);
        w->sum.actions++;
    }
    return flush_actions(w, INT64_MAX, err, errlen);
}

/* ---- truth.json --------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_terms(FILE *f, const struct sim_term *t, size_t n)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f,
                "%s{\"input\": \"%s\", \"shape\": \"%s\", \"threshold\": %.10g, \"weight\": "
                "%.10g",
                i ? ", " : "", sim_input_name(t[i].in), sim_shape_name(t[i].shape), t[i].t,
                t[i].weight);
        if (t[i].cap > 0.0)
            fprintf(f, ", \"cap\": %.10g", t[i].cap);
        fputc('}', f);
    }
    fputc(']', f);
}

static void json_region(FILE *f, const struct sim_bias *b)
{
    const char *name = sim_feats[b->region_feature].name;
    switch (b->region_op) {
    case SIM_REGION_EQ:
        fprintf(f, "\"%s=%s\"", name, b->region_level);
        break;
    case SIM_REGION_LT:
    case SIM_REGION_GT:
        fprintf(f, "\"%s%c%.10g\"", name, b->region_op == SIM_REGION_LT ? '<' : '>',
                b->region_value);
        break;
    default:
        fputs("null", f);
        break;
    }
}

static void json_counts(FILE *f, const uint64_t *c)
{
    fputc('{', f);
    for (int k = 0; k < EVENT_CLASS_COUNT; k++)
        fprintf(f, "%s\"%s\": %llu", k ? ", " : "", event_class_name((enum event_class)k),
                (unsigned long long)c[k]);
    fputc('}', f);
}

static void write_truth(struct world *w)
{
    const struct sim_options *o = w->o;
    FILE *f = w->f[OUT_TRUTH];
    char start[32], first[32], last[32];
    fmt_time(start, sizeof start, w->start_s);
    fmt_time(first, sizeof first, w->sum.first_ts_us / 1000000);
    fmt_time(last, sizeof last, w->sum.last_ts_us / 1000000);

    fprintf(f, "{\n  \"format\": 1,\n  \"seed\": %llu,\n", (unsigned long long)o->seed);
    fprintf(f,
            "  \"options\": {\"rows\": %llu, \"operators\": %u, \"campaigns\": %zu, "
            "\"entities\": %zu, \"start\": \"%s\", \"temperature\": %.10g},\n",
            (unsigned long long)o->rows, o->operators, w->n_campaigns, w->n_entities, start,
            o->temperature);
    fprintf(f,
            "  \"timeline\": {\"snapshot_interval_s\": %d, \"action_delay_s\": [%d, %d], "
            "\"settle_window_s\": %d, \"hold_window_s\": %d, \"first_snapshot\": \"%s\", "
            "\"last_snapshot\": \"%s\"},\n",
            INTERVAL_S, DELAY_MIN_S, DELAY_MAX_S, SETTLE_WINDOW_S, HOLD_WINDOW_S, first, last);
    fputs("  \"features\": [", f);
    for (int i = 0; i < SF_COUNT; i++)
        fprintf(f, "%s{\"name\": \"%s\", \"type\": \"%s\"}", i ? ", " : "", sim_feats[i].name,
                sim_feats[i].categorical ? "categorical" : "numeric");
    fputs("],\n", f);

    fputs("  \"policy\": {\n", f);
    fprintf(f, "    \"temperature\": %.10g,\n", o->temperature);
    fputs("    \"classes\": {\"campaign\": [\"hold\", \"budget_up\", \"budget_down\"], "
          "\"ad_group\": [\"hold\", \"bid_up\", \"bid_down\"], \"keyword\": [\"hold\", "
          "\"bid_up\", \"bid_down\"], \"creative\": {\"active\": [\"hold\", "
          "\"creative_pause\"], \"paused\": [\"hold\", \"creative_resume\"]}},\n",
          f);
    fputs("    \"ctr_reference\": {", f);
    for (int c = 0; c < SIM_N_CHANNELS; c++)
        fprintf(f, "%s\"%s\": %.10g", c ? ", " : "", sim_channels[c], sim_ctr_reference[c]);
    fputs("},\n    \"ctr_rel\": \"ctr / ctr_reference[channel]\",\n", f);
    /* The inputs a score or magnitude reads that a state may lack. */
    static const int missable[] = {SF_ROAS_RATIO, SF_IMPRESSION_SHARE, SF_LOST_IS_BUDGET,
                                   SF_FREQUENCY,  SF_QUALITY_SCORE,    SIM_IN_CTR_REL};
    fputs("    \"missing\": {\"cpa_ratio\": \"spend / target_cpa when spend > 0, else 1\"", f);
    for (size_t i = 0; i < sizeof missable / sizeof missable[0]; i++)
        fprintf(f, ", \"%s\": %.10g", sim_input_name(missable[i]),
                sim_missing_default[missable[i]]);
    fputs("},\n    \"scores\": {", f);
    for (int k = 1; k < EVENT_CLASS_COUNT; k++) {
        const struct sim_score_rule *r = &sim_score_rules[k];
        fprintf(f, "%s\n      \"%s\": {\"base\": %.10g, \"terms\": ", k > 1 ? "," : "",
                event_class_name((enum event_class)k), r->base);
        json_terms(f, r->terms, r->n_terms);
        fputc('}', f);
    }
    fputs("\n    },\n    \"magnitudes\": {", f);
    bool first_d = true;
    for (int k = 1; k < EVENT_CLASS_COUNT; k++) {
        const struct sim_delta_rule *r = &sim_delta_rules[k];
        if (!(r->sign > 0.0 || r->sign < 0.0))
            continue;
        fprintf(f,
                "%s\n      \"%s\": {\"sign\": %.10g, \"base\": %.10g, \"min_abs\": %.10g, "
                "\"noise_sd_log\": %.10g, \"terms\": ",
                first_d ? "" : ",", event_class_name((enum event_class)k), r->sign, r->base,
                r->min_abs, r->noise_sd);
        json_terms(f, r->terms, r->n_terms);
        fputc('}', f);
        first_d = false;
    }
    fputs("\n    }\n  },\n", f);

    fputs("  \"biases\": [", f);
    for (size_t i = 0; i < o->n_biases; i++) {
        const struct sim_bias *b = &o->biases[i];
        fprintf(f, "%s\n    {\"spec\": ", i ? "," : "");
        json_string(f, b->spec);
        fprintf(f, ", \"operator_id\": \"op-%02u\", \"kind\": \"%s\", \"action\": \"%s\", ", b->op,
                sim_bias_kind_name(b->kind), event_class_name(b->cls));
        if (b->kind == SIM_BIAS_SHIFT)
            fprintf(f, "\"feature\": \"%s\", \"amount\": %.10g, ", sim_feats[b->feature].name,
                    b->amount);
        else if (b->kind != SIM_BIAS_NEVER)
            fprintf(f, "\"factor\": %.10g, ", b->amount);
        fputs("\"region\": ", f);
        json_region(f, b);
        fputc('}', f);
    }
    fputs(o->n_biases ? "\n  ],\n" : "],\n", f);

    fprintf(f, "  \"summary\": {\"rows\": %llu, \"actions\": %llu, \"mean_entropy\": %.6f, ",
            (unsigned long long)w->sum.rows, (unsigned long long)w->sum.actions,
            w->sum.mean_entropy);
    fputs("\"by_class\": ", f);
    json_counts(f, w->sum.by_class);
    fputs(", \"by_operator\": {", f);
    for (unsigned i = 0; i < o->operators; i++) {
        fprintf(f, "%s\n    \"op-%02u\": ", i ? "," : "", i + 1);
        json_counts(f, w->sum.by_operator[i]);
    }
    fputs("\n  }}\n}\n", f);
}

/* ---- files -------------------------------------------------------------- */

/* mkdir -p. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char *path = util_strdup(dir);
    int rc = -1;
    if (!path) {
        util_fmt(err, errlen, "simulate: out of memory");
        goto out;
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            util_fmt(err, errlen, "simulate: cannot create %s: %s", path, strerror(errno));
            goto out;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        util_fmt(err, errlen, "simulate: %s is not a directory", dir);
        goto out;
    }
    rc = 0;
out:
    free(path);
    return rc;
}

static void file_path(char *dst, size_t size, const char *dir, int which, bool tmp)
{
    util_fmt(dst, size, "%s/%s%s", dir, file_names[which], tmp ? ".tmp" : "");
}

void sim_options_default(struct sim_options *o)
{
    memset(o, 0, sizeof *o);
    o->rows = 20000;
    o->operators = 8;
    o->campaigns = 0;
    o->seed = 1;
    o->start_us = DEFAULT_START_S * 1000000;
    o->temperature = SIM_DEFAULT_TEMPERATURE;
}

int sim_run(const struct sim_options *o, const char *out_dir, struct sim_summary *summary,
            char *err, size_t errlen)
{
    struct world *w = NULL;
    char path[4096], final_path[4096];
    bool opened = false;
    int rc = -1;

    if (sim_check_options(o, err, errlen) != 0)
        goto out;
    if (!out_dir || !*out_dir) {
        util_fmt(err, errlen, "simulate: no output directory");
        goto out;
    }
    if (strlen(out_dir) > sizeof path - 32) {
        util_fmt(err, errlen, "simulate: output directory name too long");
        goto out;
    }
    if (make_dirs(out_dir, err, errlen) != 0)
        goto out;

    w = util_calloc(1, sizeof *w);
    if (!w)
        goto oom;
    w->o = o;
    w->n_campaigns = sim_auto_campaigns(o);
    w->n_entities = w->n_campaigns * ENTITIES_PER_CAMPAIGN;
    w->start_s = o->start_us / 1000000;
    w->campaigns = util_calloc(w->n_campaigns, sizeof *w->campaigns);
    w->entities = util_calloc(w->n_entities, sizeof *w->entities);
    w->order = util_calloc(w->n_entities, sizeof *w->order);
    w->slots = util_calloc(w->n_entities, sizeof(struct pending *));
    w->free_slots = util_calloc(w->n_entities, sizeof *w->free_slots);
    w->heap = util_calloc(w->n_entities, sizeof *w->heap);
    if (!w->campaigns || !w->entities || !w->order || !w->slots || !w->free_slots || !w->heap)
        goto oom;
    uint64_t seeder = o->seed;
    util_rng_init(&w->rw, util_rng_splitmix64(&seeder));
    util_rng_init(&w->rp, util_rng_splitmix64(&seeder));

    opened = true;
    for (int i = 0; i < OUT_COUNT; i++) {
        file_path(path, sizeof path, out_dir, i, true);
        w->f[i] = fopen(path, "w");
        if (!w->f[i]) {
            util_fmt(err, errlen, "simulate: cannot create %s: %s", path, strerror(errno));
            goto out;
        }
        w->iobuf[i] = util_malloc(IO_BUFFER_BYTES);
        if (!w->iobuf[i])
            goto oom;
        if (setvbuf(w->f[i], w->iobuf[i], _IOFBF, IO_BUFFER_BYTES) != 0) {
            util_fmt(err, errlen, "simulate: cannot buffer %s", path);
            goto out;
        }
    }

    world_build(w);
    w->sum.operators = o->operators;
    w->sum.campaigns = (unsigned)w->n_campaigns;
    w->sum.entities = (unsigned)w->n_entities;
    {
        struct line csv;
        line_reset(&csv);
        for (int f = 0; f < SF_COUNT; f++) {
            line_str(&csv, sim_feats[f].name);
            line_char(&csv, ',');
        }
        line_str(&csv, "label,delta_pct\n");
        if (write_line(w, OUT_CSV, &csv, err, errlen) != 0)
            goto out;
    }
    if (simulate(w, err, errlen) != 0)
        goto out;
    w->sum.rows = o->rows;
    w->sum.mean_entropy = w->entropy_sum / (double)o->rows;
    write_truth(w);

    for (int i = 0; i < OUT_COUNT; i++) {
        int bad = ferror(w->f[i]);
        if (fclose(w->f[i]) != 0)
            bad = 1;
        w->f[i] = NULL;
        if (bad) {
            util_fmt(err, errlen, "simulate: writing %s/%s failed", out_dir, file_names[i]);
            goto out;
        }
    }
    for (int i = 0; i < OUT_COUNT; i++) {
        file_path(path, sizeof path, out_dir, i, true);
        file_path(final_path, sizeof final_path, out_dir, i, false);
        if (rename(path, final_path) != 0) {
            util_fmt(err, errlen, "simulate: cannot rename %s: %s", path, strerror(errno));
            goto out;
        }
    }
    opened = false;
    if (summary)
        *summary = w->sum;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "simulate: out of memory");
out:
    if (w) {
        for (int i = 0; i < OUT_COUNT; i++) {
            if (w->f[i])
                fclose(w->f[i]);
            free(w->iobuf[i]);
            if (opened) {
                file_path(path, sizeof path, out_dir, i, true);
                unlink(path);
            }
        }
        for (size_t i = 0; i < w->n_slots; i++) {
            util_buf_deinit(&w->slots[i]->state);
            free(w->slots[i]);
        }
        free(w->campaigns);
        free(w->entities);
        free(w->order);
        free(w->slots);
        free(w->free_slots);
        free(w->heap);
        free(w);
    }
    return rc;
}
