/*
 * Unit tests for internal/recommend: the exact explanation of the chosen
 * class's margin, every guardrail changing or blocking a suggestion and
 * being recorded, the out-of-distribution score and its reasons, the
 * explanation text, the JSON column shapes and out-of-memory paths.
 *
 * The model is trained in-process once (group setup) on synthetic rows with
 * a known rule: campaigns change budgets by pacing, ad groups and keywords
 * change bids by cpa_ratio, creatives pause on a high cpa_ratio and resume
 * on a low pacing; 5 % of the labels are replaced by hold.  Magnitude
 * models are fitted for the four sized classes.
 *
 * jansson is routed through util_malloc (power-of-two growth buffers
 * excepted, as in test_event.c) so util_alloc_fail_after reaches it.
 */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dataset/dataset.h"
#include "event/event.h"
#include "gbm/gbm.h"
#include "recommend/recommend.h"
#include "util/util.h"

/* ---- helpers ------------------------------------------------------------- */

static void *json_alloc_via_util(size_t n)
{
    if (n >= 32 && (n & (n - 1)) == 0)
        return malloc(n);
    return util_malloc(n);
}

/* xorshift64*: the tests' own seeded randomness. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

enum { F_CPA_RATIO = 0, F_PACING, F_CHANNEL, F_ENTITY_TYPE, F_CPA, N_FEATURES };

static const char *const feature_names[N_FEATURES] = {"cpa_ratio", "pacing", "channel",
                                                      "entity_type", "cpa"};
static const enum gbm_kind feature_kinds[N_FEATURES] = {GBM_NUMERIC, GBM_NUMERIC, GBM_CATEGORICAL,
                                                        GBM_CATEGORICAL, GBM_NUMERIC};
static const char *const channels[] = {"search", "social", "display"};
static const char *const entities[] = {"campaign", "ad_group", "keyword", "creative"};

#define N_ROWS 3000

struct fixture {
    struct ds *ds;
    struct ds_binned *bin;
    struct gbm_model *model;
    struct recommend_scorer *scorer;
    double range_lo[N_FEATURES], range_hi[N_FEATURES];
};

static struct fixture fx;

/* The labelling rule; *target gets the size of sized classes (NaN else). */
static const char *label_of(const char *entity, double cpa_ratio, double pacing, double *target)
{
    *target = NAN;
    if (strcmp(entity, "campaign") == 0) {
        if (pacing < 0.75) {
            *target = (1.0 - pacing) * 80;
            return "budget_up";
        }
        if (pacing > 1.25) {
            *target = -(pacing - 1.0) * 60;
            return "budget_down";
        }
        return "hold";
    }
    if (strcmp(entity, "creative") == 0) {
        if (!isnan(cpa_ratio) && cpa_ratio > 2.0)
            return "creative_pause";
        if (pacing < 0.6)
            return "creative_resume";
        return "hold";
    }
    if (isnan(cpa_ratio))
        return "hold";
    if (cpa_ratio > 1.4) {
        *target = -(cpa_ratio - 1.0) * 30;
        return "bid_down";
    }
    if (cpa_ratio < 0.7) {
        *target = (1.0 - cpa_ratio) * 60;
        return "bid_up";
    }
    return "hold";
}

static int setup_model(void **state)
{
    (void)state;
    char err[256] = "";
    const char *classes[EVENT_CLASS_COUNT];
    for (size_t c = 0; c < EVENT_CLASS_COUNT; c++)
        classes[c] = event_class_name((enum event_class)c);
    if (ds_new(feature_names, feature_kinds, N_FEATURES, classes, EVENT_CLASS_COUNT, &fx.ds, err,
               sizeof err) != 0)
        return -1;
    uint64_t seed = 0x5eed5eedULL;
    for (size_t r = 0; r < N_ROWS; r++) {
        const char *entity = entities[rng_next(&seed) % 4];
        const char *channel = channels[rng_next(&seed) % 3];
        double cpa_ratio = 0.3 + 2.2 * rng_unit(&seed);
        if (rng_unit(&seed) < 0.1)
            cpa_ratio = NAN;
        double pacing = 0.5 + rng_unit(&seed);
        double target;
        const char *label = label_of(entity, cpa_ratio, pacing, &target);
        if (rng_unit(&seed) < 0.05) {
            label = "hold";
            target = NAN;
        }
        struct event_feature_value v[N_FEATURES] = {
            {.missing = isnan(cpa_ratio), .num = cpa_ratio},
            {.num = pacing},
            {.cat = channel},
            {.cat = entity},
            {.missing = isnan(cpa_ratio), .num = cpa_ratio * 20},
        };
        if (ds_add_row(fx.ds, label, (int64_t)r * 1000000, NULL, target, v) != 0)
            return -1;
    }
    if (ds_split(fx.ds, 0.2, err, sizeof err) != 0 ||
        ds_bin(fx.ds, 64, 1, &fx.bin, err, sizeof err))
        return -1;
    struct gbm_params p;
    gbm_params_default(&p);
    p.rounds = 40;
    if (gbm_fit(ds_binned_train(fx.bin), ds_binned_valid(fx.bin), EVENT_CLASS_COUNT, classes, &p,
                NULL, NULL, &fx.model, err, sizeof err) != 0) {
        fprintf(stderr, "gbm_fit: %s\n", err);
        return -1;
    }
    for (size_t c = EVENT_CLASS_BID_UP; c <= EVENT_CLASS_BUDGET_DOWN; c++) {
        struct gbm_data sub;
        if (ds_binned_class_subset(fx.bin, (int32_t)c, false, &sub) != 0 ||
            gbm_fit_magnitude(fx.model, classes[c], &sub, NULL, &p, err, sizeof err) != 0) {
            fprintf(stderr, "magnitude %s: %s\n", classes[c], err);
            return -1;
        }
    }
    /* training ranges, as the trainer records them */
    for (size_t f = 0; f < N_FEATURES; f++) {
        fx.range_lo[f] = HUGE_VAL;
        fx.range_hi[f] = -HUGE_VAL;
        if (feature_kinds[f] != GBM_NUMERIC)
            continue;
        for (size_t r = 0; r < ds_n_rows(fx.ds); r++) {
            double v = ds_cell_num(fx.ds, f, r);
            if (ds_row_is_valid(fx.ds, r) || isnan(v))
                continue;
            fx.range_lo[f] = fmin(fx.range_lo[f], v);
            fx.range_hi[f] = fmax(fx.range_hi[f], v);
        }
        if (gbm_model_set_feature_range(fx.model, f, fx.range_lo[f], fx.range_hi[f]) != 0)
            return -1;
    }
    if (recommend_scorer_new(fx.model, &fx.scorer, err, sizeof err) != 0)
        return -1;
    return 0;
}

static int teardown_model(void **state)
{
    (void)state;
    recommend_scorer_free(fx.scorer);
    gbm_model_free(fx.model);
    ds_binned_free(fx.bin);
    ds_free(fx.ds);
    return 0;
}

/*
 * A decoded state snapshot; state is the inner object's text (a non-empty
 * object), to which the entity type is added unless it names one itself.
 */
static void snapshot(struct event *ev, const char *entity_type, const char *state)
{
    char buf[2048];
    char reason[EVENT_REASON_MAX];
    if (strstr(state, "\"entity_type\""))
        snprintf(buf, sizeof buf,
                 "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T14:00:00Z\",\"campaign_id\":"
                 "\"cmp-1\",\"entity_type\":\"%s\",\"entity_id\":\"e-1\",\"state\":%s}",
                 entity_type, state);
    else
        snprintf(buf, sizeof buf,
                 "{\"event_id\":\"s-1\",\"ts\":\"2026-11-02T14:00:00Z\",\"campaign_id\":"
                 "\"cmp-1\",\"entity_type\":\"%s\",\"entity_id\":\"e-1\",\"state\":"
                 "{\"entity_type\":\"%s\",%s}",
                 entity_type, entity_type, state + 1);
    int rc = event_decode(EVENT_KIND_STATE, buf, strlen(buf), NULL, ev, reason, sizeof reason);
    if (rc != 0)
        fail_msg("snapshot refused: %s (%s)", reason, buf);
}

/* Guardrails that let everything through, to switch one rule on at a time. */
static void open_guardrails(struct recommend_guardrails *g)
{
    recommend_guardrails_default(g);
    g->min_confidence = 0;
    g->ood_threshold = 0;
    g->cooldown_ms = 0;
    for (size_t i = 0; i < RECOMMEND_SIZED_COUNT; i++) {
        g->max_step_pct[i] = 0;
        g->deadband_pct[i] = 0;
    }
}

static const int64_t NOW_US = 1793700000000000LL;

static void input_for(struct recommend_input *in, const struct event *ev)
{
    in->snapshot = ev;
    in->now_us = NOW_US;
    in->last_action_us = INT64_MIN;
    in->last_recommendation_us = INT64_MIN;
}

/* Scores a snapshot (entity, state) into r with guardrails g. */
static void score(const char *entity, const char *state, const struct recommend_guardrails *g,
                  struct event *ev, struct recommend_input *in, struct recommend_result *r)
{
    char err[256] = "";
    snapshot(ev, entity, state);
    input_for(in, ev);
    int rc = recommend_score(fx.scorer, g, in, r, err, sizeof err);
    if (rc != 0)
        fail_msg("recommend_score: %s", err);
}

static const struct recommend_guard *find_guard(const struct recommend_result *r,
                                                enum recommend_rule rule)
{
    for (size_t i = 0; i < r->n_guards; i++) {
        if (r->guards[i].rule == rule)
            return &r->guards[i];
    }
    return NULL;
}

static const struct recommend_ood_reason *find_ood(const struct recommend_result *r, size_t f)
{
    for (size_t i = 0; i < r->n_ood; i++) {
        if (r->ood[i].feature == f)
            return &r->ood[i];
    }
    return NULL;
}

#define HIGH_CPA_KEYWORD "{\"cpa_ratio\":2.4,\"pacing\":1.0,\"channel\":\"search\",\"cpa\":48}"

/* ---- exactness ------------------------------------------------------------ */

static void test_recommend_score_contributions_exact(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    struct recommend_result r;
    recommend_result_init(&r);
    uint64_t seed = 42;
    size_t seen[EVENT_CLASS_COUNT] = {0};
    for (int i = 0; i < 400; i++) {
        char st[512];
        double cr = -1 + 5 * rng_unit(&seed), pacing = 0.2 + 1.6 * rng_unit(&seed);
        const char *chan = rng_unit(&seed) < 0.1 ? "tiktok" : channels[rng_next(&seed) % 3];
        if (rng_unit(&seed) < 0.15)
            snprintf(st, sizeof st, "{\"pacing\":%.6f,\"channel\":\"%s\"}", pacing, chan);
        else
            snprintf(st, sizeof st,
                     "{\"cpa_ratio\":%.6f,\"pacing\":%.6f,\"channel\":\"%s\",\"cpa\":%.6f}", cr,
                     pacing, chan, cr * 20);
        const char *entity = entities[rng_next(&seed) % 4];
        struct event ev;
        struct recommend_input in;
        score(entity, st, &g, &ev, &in, &r);

        /* the chosen class: base + contributions == margin of gbm_predict */
        struct gbm_input x[N_FEATURES];
        for (size_t f = 0; f < N_FEATURES; f++) {
            x[f].missing = r.values[f].missing;
            x[f].num = r.values[f].num;
            x[f].cat = r.values[f].cat;
        }
        double margin[GBM_MAX_CLASSES], prob[GBM_MAX_CLASSES];
        gbm_predict(fx.model, x, margin, prob);
        double sum = r.base;
        for (size_t f = 0; f < N_FEATURES; f++)
            sum += r.contrib[f];
        assert_true(fabs(sum - r.margin) <= 1e-9);
        assert_true(fabs(sum - margin[r.class_idx]) <= 1e-9);
        assert_true(fabs(r.confidence - prob[r.class_idx]) <= 1e-12);
        for (size_t c = 0; c < r.n_classes; c++)
            assert_true(r.prob[c] <= r.confidence);
        seen[r.cls]++;

        /* and every other class through the same explanation path */
        for (size_t c = 0; c < gbm_model_n_classes(fx.model); c++) {
            double base, contrib[N_FEATURES];
            gbm_explain(fx.model, x, c, &base, contrib, NULL);
            double s = base;
            for (size_t f = 0; f < N_FEATURES; f++)
                s += contrib[f];
            assert_true(fabs(s - margin[c]) <= 1e-9);
        }
        event_deinit(&ev);
    }
    /* the random states reached several classes, not one */
    size_t kinds = 0;
    for (size_t c = 0; c < EVENT_CLASS_COUNT; c++)
        kinds += seen[c] > 0;
    assert_true(kinds >= 5);
    recommend_result_deinit(&r);
}

/* ---- guardrails ----------------------------------------------------------- */

static void test_recommend_score_open_without_guardrails(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_int_equal(r.cls, EVENT_CLASS_BID_DOWN);
    assert_int_equal(r.status, RECOMMEND_OPEN);
    assert_int_equal(r.reason, RECOMMEND_REASON_NONE);
    assert_true(r.raw_delta_pct < 0);
    assert_true(fabs(r.delta_pct - r.raw_delta_pct) <= 0);
    assert_int_equal(r.n_guards, 0);
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_score_max_step_clamps_and_records(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    g.max_step_pct[RECOMMEND_SIZED_BID_DOWN] = 5;
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_int_equal(r.cls, EVENT_CLASS_BID_DOWN);
    assert_true(r.raw_delta_pct < -5); /* the rule has something to clamp */
    assert_int_equal(r.status, RECOMMEND_OPEN);
    assert_true(fabs(r.delta_pct - -5.0) <= 1e-12);
    const struct recommend_guard *gd = find_guard(&r, RECOMMEND_RULE_MAX_STEP);
    assert_non_null(gd);
    assert_false(gd->blocked);
    assert_true(fabs(gd->before - r.raw_delta_pct) <= 0);
    assert_true(fabs(gd->after - -5.0) <= 0);
    assert_true(fabs(gd->limit - 5.0) <= 0);
    /* a cap on another class changes nothing here */
    open_guardrails(&g);
    g.max_step_pct[RECOMMEND_SIZED_BID_UP] = 1;
    event_deinit(&ev);
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_null(find_guard(&r, RECOMMEND_RULE_MAX_STEP));
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_score_deadband_abstains(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    g.deadband_pct[RECOMMEND_SIZED_BID_DOWN] = 1000;
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_int_equal(r.status, RECOMMEND_ABSTAIN);
    assert_int_equal(r.reason, RECOMMEND_REASON_DEADBAND);
    assert_true(isnan(r.delta_pct));
    const struct recommend_guard *gd = find_guard(&r, RECOMMEND_RULE_DEADBAND);
    assert_non_null(gd);
    assert_true(gd->blocked);
    assert_true(fabs(gd->value - fabs(r.raw_delta_pct)) <= 1e-12);
    assert_true(isnan(gd->after));
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_score_cooldown_abstains(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    g.cooldown_ms = 6 * 3600 * 1000LL;
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    char err[256];
    snapshot(&ev, "keyword", HIGH_CPA_KEYWORD);
    struct recommend_input in;
    input_for(&in, &ev);

    /* an action one hour ago */
    in.last_action_us = NOW_US - 3600 * 1000000LL;
    assert_int_equal(recommend_score(fx.scorer, &g, &in, &r, err, sizeof err), 0);
    assert_int_equal(r.status, RECOMMEND_ABSTAIN);
    assert_int_equal(r.reason, RECOMMEND_REASON_COOLDOWN);
    const struct recommend_guard *gd = find_guard(&r, RECOMMEND_RULE_COOLDOWN);
    assert_non_null(gd);
    assert_true(gd->blocked);
    assert_true(fabs(gd->value - 3600000.0) <= 1e-6);
    assert_true(fabs(gd->limit - 21600000.0) <= 0);

    /* a recommendation two hours ago, the action long past */
    in.last_action_us = NOW_US - 48 * 3600 * 1000000LL;
    in.last_recommendation_us = NOW_US - 2 * 3600 * 1000000LL;
    assert_int_equal(recommend_score(fx.scorer, &g, &in, &r, err, sizeof err), 0);
    assert_int_equal(r.reason, RECOMMEND_REASON_COOLDOWN);
    assert_true(fabs(find_guard(&r, RECOMMEND_RULE_COOLDOWN)->value - 7200000.0) <= 1e-6);

    /* both older than the cooldown: open */
    in.last_recommendation_us = NOW_US - 7 * 3600 * 1000000LL;
    assert_int_equal(recommend_score(fx.scorer, &g, &in, &r, err, sizeof err), 0);
    assert_int_equal(r.status, RECOMMEND_OPEN);
    assert_null(find_guard(&r, RECOMMEND_RULE_COOLDOWN));
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_score_min_confidence_abstains(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    double conf = r.confidence;
    assert_true(conf < 1.0);
    event_deinit(&ev);

    g.min_confidence = conf + (1.0 - conf) / 2;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_int_equal(r.status, RECOMMEND_ABSTAIN);
    assert_int_equal(r.reason, RECOMMEND_REASON_LOW_CONFIDENCE);
    const struct recommend_guard *gd = find_guard(&r, RECOMMEND_RULE_MIN_CONFIDENCE);
    assert_non_null(gd);
    assert_true(gd->blocked);
    assert_true(fabs(gd->value - conf) <= 1e-15);
    assert_true(fabs(gd->limit - g.min_confidence) <= 0);
    event_deinit(&ev);

    g.min_confidence = conf / 2;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_int_equal(r.status, RECOMMEND_OPEN);
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_score_entity_type_abstains(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    g.allowed[EVENT_ENTITY_KEYWORD] &= ~RECOMMEND_CLASS_BIT(EVENT_CLASS_BID_DOWN);
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_int_equal(r.cls, EVENT_CLASS_BID_DOWN);
    assert_int_equal(r.status, RECOMMEND_ABSTAIN);
    assert_int_equal(r.reason, RECOMMEND_REASON_NOT_ALLOWED_FOR_ENTITY);
    const struct recommend_guard *gd = find_guard(&r, RECOMMEND_RULE_ENTITY_TYPE);
    assert_non_null(gd);
    assert_true(gd->blocked);
    assert_true(fabs(gd->before - r.raw_delta_pct) <= 0);
    event_deinit(&ev);

    /* the defaults: creative actions only on creatives, budgets only on
     * campaigns, bids on ad groups and keywords */
    recommend_guardrails_default(&g);
    uint32_t creative = RECOMMEND_CLASS_BIT(EVENT_CLASS_CREATIVE_PAUSE) |
                        RECOMMEND_CLASS_BIT(EVENT_CLASS_CREATIVE_RESUME);
    uint32_t budget =
        RECOMMEND_CLASS_BIT(EVENT_CLASS_BUDGET_UP) | RECOMMEND_CLASS_BIT(EVENT_CLASS_BUDGET_DOWN);
    uint32_t bid =
        RECOMMEND_CLASS_BIT(EVENT_CLASS_BID_UP) | RECOMMEND_CLASS_BIT(EVENT_CLASS_BID_DOWN);
    for (size_t e = 0; e < EVENT_ENTITY_COUNT; e++) {
        assert_true(g.allowed[e] & RECOMMEND_CLASS_BIT(EVENT_CLASS_HOLD));
        assert_int_equal((g.allowed[e] & creative) != 0, e == EVENT_ENTITY_CREATIVE);
        assert_int_equal((g.allowed[e] & budget) != 0, e == EVENT_ENTITY_CAMPAIGN);
        assert_int_equal((g.allowed[e] & bid) != 0,
                         e == EVENT_ENTITY_AD_GROUP || e == EVENT_ENTITY_KEYWORD);
    }
    /* and with them a bid change on a creative is refused (the model reads
     * entity_type, so the state claims keyword while the event says creative) */
    g.min_confidence = 0;
    g.ood_threshold = 0;
    snapshot(&ev, "creative",
             "{\"cpa_ratio\":2.4,\"pacing\":1.0,\"channel\":\"search\",\"cpa\":48,"
             "\"entity_type\":\"keyword\"}");
    input_for(&in, &ev);
    char err[256];
    assert_int_equal(recommend_score(fx.scorer, &g, &in, &r, err, sizeof err), 0);
    assert_int_equal(r.cls, EVENT_CLASS_BID_DOWN);
    assert_int_equal(r.reason, RECOMMEND_REASON_NOT_ALLOWED_FOR_ENTITY);
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_score_kill_switch_abstains(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    g.kill_switch = true;
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_int_equal(r.status, RECOMMEND_ABSTAIN);
    assert_int_equal(r.reason, RECOMMEND_REASON_KILL_SWITCH);
    assert_int_equal(r.n_guards, 1);
    assert_int_equal(r.guards[0].rule, RECOMMEND_RULE_KILL_SWITCH);
    assert_true(r.guards[0].blocked);
    /* still scored and explained: the row keeps the model's view */
    assert_int_equal(r.cls, EVENT_CLASS_BID_DOWN);
    assert_non_null(r.explanation);
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

/*
 * A one-feature model whose bid_down rows carry the size target: above
 * x = 10 every row is bid_down.  For the sign and range rule.
 */
static void sized_model(double target, struct ds **d, struct ds_binned **b, struct gbm_model **m,
                        struct recommend_scorer **s)
{
    const char *names[1] = {"x"};
    const enum gbm_kind kinds[1] = {GBM_NUMERIC};
    const char *classes[2] = {"hold", "bid_down"};
    char err[256] = "";
    assert_int_equal(ds_new(names, kinds, 1, classes, 2, d, err, sizeof err), 0);
    for (int i = 0; i < 200; i++) {
        struct event_feature_value v = {.num = i % 20};
        bool down = i % 20 >= 10;
        assert_int_equal(ds_add_row(*d, classes[down], i, NULL, down ? target : NAN, &v), 0);
    }
    assert_int_equal(ds_bin(*d, 32, 1, b, err, sizeof err), 0);
    struct gbm_params p;
    gbm_params_default(&p);
    p.rounds = 20;
    assert_int_equal(
        gbm_fit(ds_binned_train(*b), NULL, 2, classes, &p, NULL, NULL, m, err, sizeof err), 0);
    struct gbm_data sub;
    assert_int_equal(ds_binned_class_subset(*b, 1, false, &sub), 0);
    assert_int_equal(gbm_fit_magnitude(*m, "bid_down", &sub, NULL, &p, err, sizeof err), 0);
    assert_int_equal(recommend_scorer_new(*m, s, err, sizeof err), 0);
}

static void test_recommend_score_sign_range_clamps(void **state)
{
    (void)state;
    const double targets[2] = {15.0, -150.0};
    for (size_t t = 0; t < 2; t++) {
        struct ds *d = NULL;
        struct ds_binned *b = NULL;
        struct gbm_model *m = NULL;
        struct recommend_scorer *s = NULL;
        sized_model(targets[t], &d, &b, &m, &s);
        struct recommend_guardrails g;
        open_guardrails(&g);
        struct event ev;
        snapshot(&ev, "keyword", "{\"x\":15}");
        struct recommend_input in;
        input_for(&in, &ev);
        struct recommend_result r;
        recommend_result_init(&r);
        char err[256];
        assert_int_equal(recommend_score(s, &g, &in, &r, err, sizeof err), 0);
        assert_int_equal(r.cls, EVENT_CLASS_BID_DOWN);
        const struct recommend_guard *gd = find_guard(&r, RECOMMEND_RULE_SIGN_RANGE);
        assert_non_null(gd);
        assert_false(gd->blocked);
        assert_true(fabs(gd->before - r.raw_delta_pct) <= 0);
        if (t == 0) {
            /* a bid_down of +15 % contradicts its class: sized to 0, which
             * the deadband always blocks */
            assert_true(r.raw_delta_pct > 10);
            assert_true(fabs(gd->after) <= 0);
            assert_int_equal(r.reason, RECOMMEND_REASON_DEADBAND);
            assert_non_null(find_guard(&r, RECOMMEND_RULE_DEADBAND));
        } else {
            /* -150 % is beyond the contract's range: -99 */
            assert_true(r.raw_delta_pct < -100);
            assert_true(fabs(gd->after - -99.0) <= 0);
            assert_int_equal(r.status, RECOMMEND_OPEN);
            assert_true(fabs(r.delta_pct - -99.0) <= 0);
        }
        recommend_result_deinit(&r);
        event_deinit(&ev);
        recommend_scorer_free(s);
        gbm_model_free(m);
        ds_binned_free(b);
        ds_free(d);
    }
}

static void test_recommend_score_hold_abstains(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", "{\"cpa_ratio\":1.0,\"pacing\":1.0,\"channel\":\"search\",\"cpa\":20}", &g,
          &ev, &in, &r);
    assert_int_equal(r.cls, EVENT_CLASS_HOLD);
    assert_int_equal(r.status, RECOMMEND_ABSTAIN);
    assert_int_equal(r.reason, RECOMMEND_REASON_HOLD);
    assert_int_equal(r.n_guards, 0);
    assert_true(isnan(r.delta_pct));
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

/* ---- out of distribution --------------------------------------------------- */

static void test_recommend_score_ood_in_distribution_is_zero(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    recommend_guardrails_default(&g);
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_int_equal(r.n_ood, 0);
    assert_true(fabs(r.ood_score) <= 0);
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_score_ood_far_numeric_abstains(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    recommend_guardrails_default(&g);
    g.min_confidence = 0;
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", "{\"cpa_ratio\":50,\"pacing\":1.0,\"channel\":\"search\",\"cpa\":1000}", &g,
          &ev, &in, &r);
    const struct recommend_ood_reason *o = find_ood(&r, F_CPA_RATIO);
    assert_non_null(o);
    assert_int_equal(o->why, RECOMMEND_OOD_ABOVE_RANGE);
    double lo = fx.range_lo[F_CPA_RATIO], hi = fx.range_hi[F_CPA_RATIO];
    assert_true(fabs(o->penalty - (1 + (50 - hi) / (hi - lo))) <= 1e-9);
    assert_non_null(find_ood(&r, F_CPA));
    assert_null(find_ood(&r, F_PACING));
    assert_true(r.ood_score > 20);
    assert_int_equal(r.status, RECOMMEND_ABSTAIN);
    assert_int_equal(r.reason, RECOMMEND_REASON_OUT_OF_DISTRIBUTION);
    const struct recommend_guard *gd = find_guard(&r, RECOMMEND_RULE_OOD_THRESHOLD);
    assert_non_null(gd);
    assert_true(fabs(gd->value - r.ood_score) <= 0);
    char why[160];
    char want[160];
    snprintf(want, sizeof want, "above the training range [%g, %g]", lo, hi);
    assert_string_equal(recommend_ood_why_text(o, why, sizeof why), want);
    event_deinit(&ev);

    /* below the range too; and with the threshold off it is not abstained */
    g.ood_threshold = 0;
    score("campaign", "{\"cpa_ratio\":1.0,\"pacing\":-4.0,\"channel\":\"search\",\"cpa\":20}", &g,
          &ev, &in, &r);
    o = find_ood(&r, F_PACING);
    assert_non_null(o);
    assert_int_equal(o->why, RECOMMEND_OOD_BELOW_RANGE);
    assert_true(o->penalty > 4);
    assert_null(find_guard(&r, RECOMMEND_RULE_OOD_THRESHOLD));
    assert_true(r.reason != RECOMMEND_REASON_OUT_OF_DISTRIBUTION);
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_score_ood_unseen_level_and_missing(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    recommend_guardrails_default(&g);
    g.min_confidence = 0;
    g.ood_threshold = 1.5;
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    /* unseen channel alone: 1, below the threshold */
    score("keyword", "{\"cpa_ratio\":2.4,\"pacing\":1.0,\"channel\":\"tiktok\",\"cpa\":48}", &g,
          &ev, &in, &r);
    const struct recommend_ood_reason *o = find_ood(&r, F_CHANNEL);
    assert_non_null(o);
    assert_int_equal(o->why, RECOMMEND_OOD_UNSEEN_LEVEL);
    assert_int_equal(r.n_ood, 1);
    assert_true(fabs(r.ood_score - 1.0) <= 1e-12);
    assert_true(r.reason != RECOMMEND_REASON_OUT_OF_DISTRIBUTION);
    event_deinit(&ev);

    /* plus pacing missing (never missing in training): 1.5, abstained;
     * cpa_ratio missing is fine (10 % of training rows) */
    score("keyword", "{\"channel\":\"tiktok\"}", &g, &ev, &in, &r);
    assert_non_null(find_ood(&r, F_CHANNEL));
    o = find_ood(&r, F_PACING);
    assert_non_null(o);
    assert_int_equal(o->why, RECOMMEND_OOD_MISSING);
    assert_null(find_ood(&r, F_CPA_RATIO));
    assert_true(fabs(r.ood_score - 1.5) <= 1e-12);
    assert_int_equal(r.reason, RECOMMEND_REASON_OUT_OF_DISTRIBUTION);

    /* the reasons as JSON name the feature and the value */
    json_t *a = recommend_ood_json(fx.scorer, &r);
    assert_non_null(a);
    assert_int_equal(json_array_size(a), 2);
    bool saw_channel = false;
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        const char *feat = json_string_value(json_object_get(e, "feature"));
        assert_non_null(feat);
        assert_non_null(json_string_value(json_object_get(e, "why")));
        assert_true(json_is_number(json_object_get(e, "penalty")));
        if (strcmp(feat, "channel") == 0) {
            saw_channel = true;
            assert_string_equal(json_string_value(json_object_get(e, "value")), "tiktok");
            assert_string_equal(json_string_value(json_object_get(e, "why")),
                                "level not seen in training");
        } else {
            assert_string_equal(feat, "pacing");
            assert_true(json_is_null(json_object_get(e, "value")));
        }
    }
    assert_true(saw_channel);
    json_decref(a);
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

/* ---- explanation ---------------------------------------------------------- */

static void test_recommend_score_explanation_format(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    assert_non_null(r.explanation);

    /* the segments: at most 3, in decreasing |contribution|, each ending in
     * the signed contribution and the class */
    size_t top = 0;
    for (size_t f = 1; f < N_FEATURES; f++) {
        if (fabs(r.contrib[f]) > fabs(r.contrib[top]))
            top = f;
    }
    char *copy = strdup(r.explanation);
    assert_non_null(copy);
    size_t n_seg = 0;
    double prev = HUGE_VAL;
    for (char *save = NULL, *seg = strtok_r(copy, ";", &save); seg;
         seg = strtok_r(NULL, ";", &save)) {
        if (n_seg > 0) {
            assert_int_equal(seg[0], ' ');
            seg++;
        }
        const char *colon = strrchr(seg, ':');
        assert_non_null(colon);
        double c;
        char cls[32];
        assert_int_equal(sscanf(colon, ": %lf toward %31s", &c, cls), 2);
        assert_string_equal(cls, "bid_down");
        assert_true(fabs(c) <= prev + 0.005);
        prev = fabs(c);
        if (n_seg == 0) {
            /* the top feature, its value and its step interval */
            char want[256];
            const struct gbm_step *st = &r.steps[top];
            assert_int_equal(top, F_CPA_RATIO);
            if (isfinite(st->lo) && isfinite(st->hi))
                snprintf(want, sizeof want,
                         "cpa_ratio = 2.4 (between %g and %g): %+.2f toward bid_down", st->lo,
                         st->hi, r.contrib[top]);
            else if (isfinite(st->lo))
                snprintf(want, sizeof want, "cpa_ratio = 2.4 (above %g): %+.2f toward bid_down",
                         st->lo, r.contrib[top]);
            else
                snprintf(want, sizeof want, "cpa_ratio = 2.4 (below %g): %+.2f toward bid_down",
                         st->hi, r.contrib[top]);
            assert_string_equal(seg, want);
            assert_true(st->lo <= 2.4 && 2.4 < st->hi);
        }
        n_seg++;
    }
    assert_true(n_seg >= 1 && n_seg <= RECOMMEND_EXPLAIN_TOP);
    free(copy);
    event_deinit(&ev);

    /* missing and categorical forms: a keyword without cpa_ratio holds, and
     * the missing value is what moves it */
    score("keyword", "{\"pacing\":1.0,\"channel\":\"social\"}", &g, &ev, &in, &r);
    assert_int_equal(r.cls, EVENT_CLASS_HOLD);
    assert_true(strstr(r.explanation, "cpa_ratio missing: ") ||
                strstr(r.explanation, "cpa missing: "));
    event_deinit(&ev);
    score("keyword",
          "{\"cpa_ratio\":1.0,\"pacing\":1.0,\"channel\":\"social\",\"entity_type\":\"keyword\"}",
          &g, &ev, &in, &r);
    assert_non_null(strstr(r.explanation, "entity_type = keyword: "));
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

/* ---- JSON ----------------------------------------------------------------- */

static void test_recommend_json_shapes(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    g.max_step_pct[RECOMMEND_SIZED_BID_DOWN] = 5;
    struct recommend_result r;
    recommend_result_init(&r);
    struct event ev;
    struct recommend_input in;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);

    json_t *p = recommend_probabilities_json(fx.scorer, &r);
    assert_non_null(p);
    assert_int_equal(json_object_size(p), EVENT_CLASS_COUNT);
    double sum = 0;
    for (size_t c = 0; c < EVENT_CLASS_COUNT; c++) {
        json_t *v = json_object_get(p, event_class_name((enum event_class)c));
        assert_true(json_is_real(v));
        sum += json_real_value(v);
    }
    assert_true(fabs(sum - 1) <= 1e-9);
    assert_true(fabs(json_real_value(json_object_get(p, "bid_down")) - r.confidence) <= 0);
    json_decref(p);

    json_t *c = recommend_contributions_json(fx.scorer, &r);
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "class")), "bid_down");
    json_t *feats = json_object_get(c, "features");
    assert_true(json_is_object(feats));
    assert_int_equal(json_object_size(feats), N_FEATURES);
    double s = json_real_value(json_object_get(c, "base"));
    for (size_t f = 0; f < N_FEATURES; f++) {
        json_t *e = json_object_get(feats, feature_names[f]);
        assert_true(json_is_object(e));
        assert_int_equal(json_object_size(e), 4);
        s += json_real_value(json_object_get(e, "contribution"));
        json_t *lo = json_object_get(e, "lo"), *hi = json_object_get(e, "hi");
        assert_true(json_is_null(lo) || json_is_real(lo));
        assert_true(json_is_null(hi) || json_is_real(hi));
        if (feature_kinds[f] == GBM_CATEGORICAL) {
            assert_true(json_is_null(lo) && json_is_null(hi));
        }
    }
    assert_true(fabs(s - json_real_value(json_object_get(c, "margin"))) <= 1e-9);
    assert_true(
        fabs(json_real_value(json_object_get(json_object_get(feats, "cpa_ratio"), "value")) -
             2.4) <= 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(feats, "channel"), "value")), "search");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(feats, "entity_type"), "value")),
        "keyword");
    json_decref(c);

    json_t *gj = recommend_guardrails_json(&r);
    assert_non_null(gj);
    assert_int_equal(json_array_size(gj), 1);
    json_t *e = json_array_get(gj, 0);
    assert_string_equal(json_string_value(json_object_get(e, "rule")), "max_step");
    assert_true(json_is_false(json_object_get(e, "blocked")));
    assert_true(fabs(json_real_value(json_object_get(e, "after")) - -5.0) <= 0);
    assert_true(fabs(json_real_value(json_object_get(e, "before")) - r.raw_delta_pct) <= 0);
    assert_true(fabs(json_real_value(json_object_get(e, "limit")) - 5.0) <= 0);
    json_decref(gj);
    event_deinit(&ev);

    /* a blocking rule without a value: nulls */
    g.kill_switch = true;
    score("keyword", HIGH_CPA_KEYWORD, &g, &ev, &in, &r);
    gj = recommend_guardrails_json(&r);
    assert_non_null(gj);
    e = json_array_get(gj, 0);
    assert_string_equal(json_string_value(json_object_get(e, "rule")), "kill_switch");
    assert_true(json_is_true(json_object_get(e, "blocked")));
    assert_true(json_is_null(json_object_get(e, "value")));
    assert_true(json_is_null(json_object_get(e, "after")));
    json_decref(gj);
    event_deinit(&ev);
    recommend_result_deinit(&r);
}

static void test_recommend_names(void **state)
{
    (void)state;
    assert_string_equal(recommend_status_name(RECOMMEND_OPEN), "open");
    assert_string_equal(recommend_status_name(RECOMMEND_ABSTAIN), "abstain");
    assert_string_equal(recommend_reason_name(RECOMMEND_REASON_LOW_CONFIDENCE), "low_confidence");
    assert_string_equal(recommend_reason_name(RECOMMEND_REASON_NOT_ALLOWED_FOR_ENTITY),
                        "not_allowed_for_entity");
    assert_null(recommend_reason_name(RECOMMEND_REASON_COUNT));
    assert_string_equal(recommend_rule_name(RECOMMEND_RULE_MAX_STEP), "max_step");
    assert_null(recommend_rule_name(RECOMMEND_RULE_COUNT));
}

/* ---- errors and out of memory --------------------------------------------- */

static void test_recommend_score_no_snapshot_refused(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    recommend_guardrails_default(&g);
    struct recommend_result r;
    recommend_result_init(&r);
    struct recommend_input in = {.snapshot = NULL, .now_us = NOW_US};
    char err[256] = "";
    assert_int_equal(recommend_score(fx.scorer, &g, &in, &r, err, sizeof err), -1);
    assert_string_equal(err, "no snapshot to score");
    recommend_result_deinit(&r);
}

static void test_recommend_scorer_new_unknown_class_refused(void **state)
{
    (void)state;
    const char *names[1] = {"x"};
    const enum gbm_kind kinds[1] = {GBM_NUMERIC};
    const char *classes[2] = {"hold", "raise_everything"};
    struct ds *d = NULL;
    struct ds_binned *b = NULL;
    struct gbm_model *m = NULL;
    struct recommend_scorer *s = NULL;
    char err[256] = "";
    assert_int_equal(ds_new(names, kinds, 1, classes, 2, &d, err, sizeof err), 0);
    for (int i = 0; i < 20; i++) {
        struct event_feature_value v = {.num = i};
        assert_int_equal(ds_add_row(d, classes[i % 2], i, NULL, NAN, &v), 0);
    }
    assert_int_equal(ds_bin(d, 8, 1, &b, err, sizeof err), 0);
    struct gbm_params p;
    gbm_params_default(&p);
    p.rounds = 2;
    assert_int_equal(
        gbm_fit(ds_binned_train(b), NULL, 2, classes, &p, NULL, NULL, &m, err, sizeof err), 0);
    assert_int_equal(recommend_scorer_new(m, &s, err, sizeof err), -1);
    assert_null(s);
    assert_non_null(strstr(err, "raise_everything"));
    gbm_model_free(m);
    ds_binned_free(b);
    ds_free(d);
}

static void test_recommend_alloc_failures(void **state)
{
    (void)state;
    struct recommend_guardrails g;
    open_guardrails(&g);
    g.max_step_pct[RECOMMEND_SIZED_BID_DOWN] = 5;
    struct event ev;
    snapshot(&ev, "keyword", "{\"cpa_ratio\":50,\"pacing\":1.0,\"channel\":\"tiktok\",\"cpa\":48}");
    struct recommend_input in;
    input_for(&in, &ev);
    char err[256];
    bool done[3] = {false, false, false};
    for (long i = 0; i < 2000 && !(done[0] && done[1] && done[2]); i++) {
        /* scorer */
        struct recommend_scorer *s = NULL;
        util_alloc_fail_after(i);
        int rc = recommend_scorer_new(fx.model, &s, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc != 0) {
            assert_null(s);
            assert_string_equal(err, "out of memory");
        } else {
            done[0] = true;
        }
        recommend_scorer_free(s);

        /* scoring into a fresh result */
        struct recommend_result r;
        recommend_result_init(&r);
        util_alloc_fail_after(i);
        rc = recommend_score(fx.scorer, &g, &in, &r, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc != 0) {
            assert_string_equal(err, "out of memory");
            recommend_result_deinit(&r);
            continue;
        }
        done[1] = true;
        assert_non_null(r.explanation);

        /* the JSON builders on a complete result */
        util_alloc_fail_after(i);
        json_t *a = recommend_probabilities_json(fx.scorer, &r);
        json_t *b = recommend_contributions_json(fx.scorer, &r);
        json_t *c = recommend_ood_json(fx.scorer, &r);
        json_t *d = recommend_guardrails_json(&r);
        util_alloc_fail_after(-1);
        if (a && b && c && d)
            done[2] = true;
        json_decref(a);
        json_decref(b);
        json_decref(c);
        json_decref(d);
        recommend_result_deinit(&r);
    }
    assert_true(done[0] && done[1] && done[2]);
    event_deinit(&ev);
}

int main(void)
{
    json_set_alloc_funcs(json_alloc_via_util, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recommend_score_contributions_exact),
        cmocka_unit_test(test_recommend_score_open_without_guardrails),
        cmocka_unit_test(test_recommend_score_max_step_clamps_and_records),
        cmocka_unit_test(test_recommend_score_deadband_abstains),
        cmocka_unit_test(test_recommend_score_cooldown_abstains),
        cmocka_unit_test(test_recommend_score_min_confidence_abstains),
        cmocka_unit_test(test_recommend_score_entity_type_abstains),
        cmocka_unit_test(test_recommend_score_kill_switch_abstains),
        cmocka_unit_test(test_recommend_score_sign_range_clamps),
        cmocka_unit_test(test_recommend_score_hold_abstains),
        cmocka_unit_test(test_recommend_score_ood_in_distribution_is_zero),
        cmocka_unit_test(test_recommend_score_ood_far_numeric_abstains),
        cmocka_unit_test(test_recommend_score_ood_unseen_level_and_missing),
        cmocka_unit_test(test_recommend_score_explanation_format),
        cmocka_unit_test(test_recommend_json_shapes),
        cmocka_unit_test(test_recommend_names),
        cmocka_unit_test(test_recommend_score_no_snapshot_refused),
        cmocka_unit_test(test_recommend_scorer_new_unknown_class_refused),
        cmocka_unit_test(test_recommend_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup_model, teardown_model);
}
