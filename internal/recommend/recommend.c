/*
 * recommend: scores one state snapshot with the champion model and applies
 * the guardrails (the rules, their order and the out-of-distribution
 * formula are in recommend.h).  Assumptions: the model is read-only while a
 * scorer exists; the snapshot was decoded with its state tree; a result is
 * only reused by one thread at a time.  The jsonb builders are in
 * recommend_json.c.
 *
 * The per-feature training mass totals for the out-of-distribution score
 * are summed once when the scorer is built, so scoring allocates only the
 * result's arrays (once per result, reused after) and the explanation text.
 */
#include "recommend/recommend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

struct recommend_scorer {
    const struct gbm_model *m;
    size_t n_features;
    size_t n_classes;
    struct event_feature_spec *spec; /* [n_features], names owned */
    double *total_mass;              /* [n_features] */
    enum event_class cls[GBM_MAX_CLASSES];
};

/* Contract bounds of delta_pct: (-100, 1000]; sizes down stop at -99. */
#define DELTA_MAX 1000.0
#define DELTA_MIN (-99.0)

void recommend_guardrails_default(struct recommend_guardrails *g)
{
    memset(g, 0, sizeof *g);
    g->kill_switch = false;
    g->min_confidence = 0.5;
    g->ood_threshold = 2.0;
    g->cooldown_ms = INT64_C(21600000); /* 6 h */
    for (size_t i = 0; i < RECOMMEND_SIZED_COUNT; i++) {
        g->max_step_pct[i] = 20.0;
        g->deadband_pct[i] = 1.0;
    }
    uint32_t hold = RECOMMEND_CLASS_BIT(EVENT_CLASS_HOLD);
    uint32_t bid =
        RECOMMEND_CLASS_BIT(EVENT_CLASS_BID_UP) | RECOMMEND_CLASS_BIT(EVENT_CLASS_BID_DOWN);
    g->allowed[EVENT_ENTITY_CAMPAIGN] = hold | RECOMMEND_CLASS_BIT(EVENT_CLASS_BUDGET_UP) |
                                        RECOMMEND_CLASS_BIT(EVENT_CLASS_BUDGET_DOWN);
    g->allowed[EVENT_ENTITY_AD_GROUP] = hold | bid;
    g->allowed[EVENT_ENTITY_KEYWORD] = hold | bid;
    g->allowed[EVENT_ENTITY_CREATIVE] = hold | RECOMMEND_CLASS_BIT(EVENT_CLASS_CREATIVE_PAUSE) |
                                        RECOMMEND_CLASS_BIT(EVENT_CLASS_CREATIVE_RESUME);
}

/* ---- names -------------------------------------------------------------- */

const char *recommend_status_name(enum recommend_status s)
{
    switch (s) {
    case RECOMMEND_OPEN:
        return "open";
    case RECOMMEND_ABSTAIN:
        return "abstain";
    }
    return NULL;
}

const char *recommend_reason_name(enum recommend_reason r)
{
    static const char *const names[RECOMMEND_REASON_COUNT] = {
        "",
        "kill_switch",
        "out_of_distribution",
        "hold",
        "not_allowed_for_entity",
        "low_confidence",
        "cooldown",
        "deadband",
    };
    return (unsigned)r < RECOMMEND_REASON_COUNT ? names[r] : NULL;
}

const char *recommend_rule_name(enum recommend_rule r)
{
    static const char *const names[RECOMMEND_RULE_COUNT] = {
        "kill_switch", "ood_threshold", "entity_type", "min_confidence",
        "cooldown",    "sign_range",    "max_step",    "deadband",
    };
    return (unsigned)r < RECOMMEND_RULE_COUNT ? names[r] : NULL;
}

/* ---- scorer ------------------------------------------------------------- */

void recommend_scorer_free(struct recommend_scorer *s)
{
    if (!s)
        return;
    if (s->spec) {
        for (size_t f = 0; f < s->n_features; f++)
            free(s->spec[f].name);
    }
    free(s->spec);
    free(s->total_mass);
    free(s);
}

int recommend_scorer_new(const struct gbm_model *m, struct recommend_scorer **out, char *err,
                         size_t errlen)
{
    int rc = -1;
    struct recommend_scorer *s = NULL;
    *out = NULL;

    s = util_calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->m = m;
    s->n_classes = gbm_model_n_classes(m);
    s->n_features = gbm_model_n_features(m);
    for (size_t c = 0; c < s->n_classes; c++) {
        const char *name = gbm_model_class_name(m, c);
        if (event_class_parse(name, &s->cls[c]) != 0) {
            util_fmt(err, errlen, "model class '%s': not a decision class", name);
            goto out;
        }
    }
    size_t nf = s->n_features ? s->n_features : 1;
    s->spec = util_calloc(nf, sizeof *s->spec);
    s->total_mass = util_calloc(nf, sizeof *s->total_mass);
    if (!s->spec || !s->total_mass)
        goto oom;
    for (size_t f = 0; f < s->n_features; f++) {
        s->spec[f].name = util_strdup(gbm_model_feature_name(m, f));
        if (!s->spec[f].name)
            goto oom;
        s->spec[f].kind = gbm_model_feature_kind(m, f) == GBM_CATEGORICAL
                              ? EVENT_FEATURE_CATEGORICAL
                              : EVENT_FEATURE_NUMERIC;
        size_t nm = 0;
        const double *mass = gbm_model_feature_mass(m, f, &nm);
        double t = 0;
        for (size_t b = 0; mass && b < nm; b++)
            t += mass[b];
        s->total_mass[f] = t;
    }
    *out = s;
    s = NULL;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    recommend_scorer_free(s);
    return rc;
}

const struct gbm_model *recommend_scorer_model(const struct recommend_scorer *s)
{
    return s->m;
}

/* ---- result ------------------------------------------------------------- */

void recommend_result_init(struct recommend_result *r)
{
    memset(r, 0, sizeof *r);
    r->raw_delta_pct = NAN;
    r->delta_pct = NAN;
}

void recommend_result_deinit(struct recommend_result *r)
{
    free(r->contrib);
    free(r->steps);
    free(r->values);
    free(r->ood);
    free(r->explanation);
    recommend_result_init(r);
}

/* Sizes the result's arrays for n features (reusing them when they fit). */
static int result_prepare(struct recommend_result *r, size_t n)
{
    free(r->explanation);
    r->explanation = NULL;
    if (r->contrib && r->n_features == n)
        return 0;
    recommend_result_deinit(r);
    size_t k = n ? n : 1;
    r->contrib = util_calloc(k, sizeof *r->contrib);
    r->steps = util_calloc(k, sizeof *r->steps);
    r->values = util_calloc(k, sizeof *r->values);
    r->ood = util_calloc(k, sizeof *r->ood);
    if (!r->contrib || !r->steps || !r->values || !r->ood) {
        recommend_result_deinit(r);
        return -1;
    }
    r->n_features = n;
    return 0;
}

/* ---- out of distribution ------------------------------------------------ */

static void ood_add(struct recommend_result *r, size_t f, enum recommend_ood_why why,
                    double penalty, double lo, double hi, double share)
{
    struct recommend_ood_reason *o = &r->ood[r->n_ood++];
    o->feature = f;
    o->why = why;
    o->penalty = penalty;
    o->lo = lo;
    o->hi = hi;
    o->share = share;
    r->ood_score += penalty;
}

/* At most one reason per feature, so r->ood (n_features long) never overflows. */
static void ood_feature(const struct recommend_scorer *s, size_t f, const struct gbm_input *x,
                        struct recommend_result *r)
{
    const struct gbm_model *m = s->m;
    size_t nm = 0;
    const double *mass = gbm_model_feature_mass(m, f, &nm);
    double total = s->total_mass[f];
    bool numeric = gbm_model_feature_kind(m, f) == GBM_NUMERIC;

    if (x->missing) {
        if (mass && nm > 0 && total > 0 && !(mass[nm - 1] > 0))
            ood_add(r, f, RECOMMEND_OOD_MISSING, 0.5, NAN, NAN, 0);
        return;
    }
    if (numeric) {
        double lo, hi;
        if (gbm_model_feature_range(m, f, &lo, &hi) == 0) {
            double w = hi - lo;
            if (!(w > 0))
                w = fabs(lo) > 1 ? fabs(lo) : 1;
            if (x->num > hi) {
                ood_add(r, f, RECOMMEND_OOD_ABOVE_RANGE, 1 + (x->num - hi) / w, lo, hi, 0);
                return;
            }
            if (x->num < lo) {
                ood_add(r, f, RECOMMEND_OOD_BELOW_RANGE, 1 + (lo - x->num) / w, lo, hi, 0);
                return;
            }
        }
    }
    unsigned b = gbm_model_feature_bin(m, f, x);
    if (b == GBM_MISSING_BIN) {
        /* present but binned as missing: an unseen level */
        ood_add(r, f, RECOMMEND_OOD_UNSEEN_LEVEL, 1.0, NAN, NAN, 0);
        return;
    }
    if (mass && b < nm && total > 0) {
        /* Numeric: the bin and its two neighbours, since quantile binning
         * leaves single-row bins among dense ones; a level is its own bin.
         * The last mass entry is the missing bin, never a neighbour. */
        double in = mass[b];
        if (numeric && nm >= 2) {
            if (b > 0)
                in += mass[b - 1];
            if (b + 2 < nm)
                in += mass[b + 1];
        }
        double share = in / total;
        if (share < RECOMMEND_OOD_RARE_SHARE)
            ood_add(r, f, RECOMMEND_OOD_RARE_BIN, 0.5, NAN, NAN, share);
    }
}

char *recommend_ood_why_text(const struct recommend_ood_reason *o, char *buf, size_t size)
{
    switch (o->why) {
    case RECOMMEND_OOD_ABOVE_RANGE:
        return util_fmt(buf, size, "above the training range [%g, %g]", o->lo, o->hi);
    case RECOMMEND_OOD_BELOW_RANGE:
        return util_fmt(buf, size, "below the training range [%g, %g]", o->lo, o->hi);
    case RECOMMEND_OOD_RARE_BIN:
        return util_fmt(buf, size, "in a sparse region: %.3g %% of the training mass near it",
                        o->share * 100);
    case RECOMMEND_OOD_UNSEEN_LEVEL:
        return util_fmt(buf, size, "level not seen in training");
    case RECOMMEND_OOD_MISSING:
        return util_fmt(buf, size, "missing, never missing in training");
    }
    return util_fmt(buf, size, "unknown");
}

/* ---- guardrails --------------------------------------------------------- */

static void guard_add(struct recommend_result *r, enum recommend_rule rule, bool blocked,
                      double value, double limit, double before, double after)
{
    struct recommend_guard *gd = &r->guards[r->n_guards++];
    gd->rule = rule;
    gd->blocked = blocked;
    gd->value = value;
    gd->limit = limit;
    gd->before = before;
    gd->after = after;
}

static void abstain(struct recommend_result *r, enum recommend_reason why)
{
    r->status = RECOMMEND_ABSTAIN;
    r->reason = why;
    r->delta_pct = NAN;
}

static int sized_index(enum event_class c)
{
    switch (c) {
    case EVENT_CLASS_BID_UP:
        return RECOMMEND_SIZED_BID_UP;
    case EVENT_CLASS_BID_DOWN:
        return RECOMMEND_SIZED_BID_DOWN;
    case EVENT_CLASS_BUDGET_UP:
        return RECOMMEND_SIZED_BUDGET_UP;
    case EVENT_CLASS_BUDGET_DOWN:
        return RECOMMEND_SIZED_BUDGET_DOWN;
    default:
        return -1;
    }
}

/* The rules in the documented order; the first that blocks ends the run. */
static void apply_guardrails(const struct recommend_guardrails *g, const struct recommend_input *in,
                             struct recommend_result *r)
{
    double d = r->raw_delta_pct;
    r->status = RECOMMEND_OPEN;
    r->reason = RECOMMEND_REASON_NONE;
    r->delta_pct = d;

    if (g->kill_switch) {
        guard_add(r, RECOMMEND_RULE_KILL_SWITCH, true, NAN, NAN, d, NAN);
        abstain(r, RECOMMEND_REASON_KILL_SWITCH);
        return;
    }
    if (g->ood_threshold > 0 && r->ood_score >= g->ood_threshold) {
        guard_add(r, RECOMMEND_RULE_OOD_THRESHOLD, true, r->ood_score, g->ood_threshold, d, NAN);
        abstain(r, RECOMMEND_REASON_OUT_OF_DISTRIBUTION);
        return;
    }
    if (r->cls == EVENT_CLASS_HOLD) {
        abstain(r, RECOMMEND_REASON_HOLD);
        return;
    }
    unsigned et = (unsigned)in->snapshot->entity_type;
    if (et >= EVENT_ENTITY_COUNT || !(g->allowed[et] & RECOMMEND_CLASS_BIT(r->cls))) {
        guard_add(r, RECOMMEND_RULE_ENTITY_TYPE, true, NAN, NAN, d, NAN);
        abstain(r, RECOMMEND_REASON_NOT_ALLOWED_FOR_ENTITY);
        return;
    }
    if (r->confidence < g->min_confidence) {
        guard_add(r, RECOMMEND_RULE_MIN_CONFIDENCE, true, r->confidence, g->min_confidence, d, NAN);
        abstain(r, RECOMMEND_REASON_LOW_CONFIDENCE);
        return;
    }
    if (g->cooldown_ms > 0) {
        int64_t last = INT64_MIN;
        if (in->last_action_us != INT64_MIN)
            last = in->last_action_us;
        if (in->last_recommendation_us != INT64_MIN && in->last_recommendation_us > last)
            last = in->last_recommendation_us;
        /* in double: the difference of two far-apart int64 times may overflow */
        double since_ms = ((double)in->now_us - (double)last) / 1000.0;
        if (last != INT64_MIN && since_ms < (double)g->cooldown_ms) {
            guard_add(r, RECOMMEND_RULE_COOLDOWN, true, since_ms, (double)g->cooldown_ms, d, NAN);
            abstain(r, RECOMMEND_REASON_COOLDOWN);
            return;
        }
    }

    int si = sized_index(r->cls);
    if (si < 0 || !isfinite(d))
        return; /* nothing to size */

    bool up = r->cls == EVENT_CLASS_BID_UP || r->cls == EVENT_CLASS_BUDGET_UP;
    double nd = d;
    bool changed = false;
    if (up ? !(d > 0) : !(d < 0)) {
        nd = 0;
        changed = true;
    } else if (d > DELTA_MAX) {
        nd = DELTA_MAX;
        changed = true;
    } else if (d < DELTA_MIN) {
        nd = DELTA_MIN;
        changed = true;
    }
    if (changed) {
        guard_add(r, RECOMMEND_RULE_SIGN_RANGE, false, d, NAN, d, nd);
        d = nd;
    }

    double cap = g->max_step_pct[si];
    if (cap > 0 && fabs(d) > cap) {
        nd = copysign(cap, d);
        guard_add(r, RECOMMEND_RULE_MAX_STEP, false, fabs(d), cap, d, nd);
        d = nd;
    }
    r->delta_pct = d;

    double band = g->deadband_pct[si];
    if (!(fabs(d) > 0) || fabs(d) < band) {
        guard_add(r, RECOMMEND_RULE_DEADBAND, true, fabs(d), band, d, NAN);
        abstain(r, RECOMMEND_REASON_DEADBAND);
    }
}

/* ---- explanation -------------------------------------------------------- */

static int explain_one(const struct recommend_scorer *s, const struct recommend_result *r, size_t f,
                       struct util_buf *b)
{
    const char *name = s->spec[f].name;
    const struct event_feature_value *v = &r->values[f];
    const struct gbm_step *st = &r->steps[f];
    int rc;
    if (v->missing) {
        rc = util_buf_printf(b, "%s missing", name);
    } else if (s->spec[f].kind == EVENT_FEATURE_CATEGORICAL) {
        rc = util_buf_printf(b, "%s = %s%s", name, v->cat, st->unseen ? " (unseen)" : "");
    } else {
        bool lo = isfinite(st->lo), hi = isfinite(st->hi);
        if (lo && hi)
            rc = util_buf_printf(b, "%s = %g (between %g and %g)", name, v->num, st->lo, st->hi);
        else if (lo)
            rc = util_buf_printf(b, "%s = %g (above %g)", name, v->num, st->lo);
        else if (hi)
            rc = util_buf_printf(b, "%s = %g (below %g)", name, v->num, st->hi);
        else
            rc = util_buf_printf(b, "%s = %g", name, v->num);
    }
    if (rc != 0)
        return -1;
    return util_buf_printf(b, ": %+.2f toward %s", r->contrib[f],
                           gbm_model_class_name(s->m, r->class_idx));
}

static int explain(const struct recommend_scorer *s, struct recommend_result *r)
{
    int rc = -1;
    struct util_buf b;
    util_buf_init(&b);
    size_t chosen[RECOMMEND_EXPLAIN_TOP] = {0};
    size_t n_chosen = 0;
    while (n_chosen < RECOMMEND_EXPLAIN_TOP) {
        size_t best = SIZE_MAX;
        for (size_t f = 0; f < r->n_features; f++) {
            double a = fabs(r->contrib[f]);
            if (!(a > 0))
                continue;
            bool taken = false;
            for (size_t i = 0; i < n_chosen; i++)
                taken = taken || chosen[i] == f;
            if (!taken && (best == SIZE_MAX || a > fabs(r->contrib[best])))
                best = f;
        }
        if (best == SIZE_MAX)
            break;
        chosen[n_chosen++] = best;
    }
    if (n_chosen == 0 && util_buf_puts(&b, "no feature moved the score from its base value") != 0)
        goto out;
    for (size_t i = 0; i < n_chosen; i++) {
        if (i > 0 && util_buf_puts(&b, "; ") != 0)
            goto out;
        if (explain_one(s, r, chosen[i], &b) != 0)
            goto out;
    }
    r->explanation = util_buf_steal(&b);
    rc = r->explanation ? 0 : -1;
out:
    util_buf_deinit(&b);
    return rc;
}

/* ---- scoring ------------------------------------------------------------ */

int recommend_score(const struct recommend_scorer *s, const struct recommend_guardrails *g,
                    const struct recommend_input *in, struct recommend_result *out, char *err,
                    size_t errlen)
{
    int rc = -1;
    struct gbm_input *x = NULL;
    const struct gbm_model *m = s->m;
    size_t n = s->n_features;

    if (!in || !in->snapshot) {
        util_fmt(err, errlen, "no snapshot to score");
        return -1;
    }
    if (result_prepare(out, n) != 0)
        goto oom;
    x = util_calloc(n ? n : 1, sizeof *x);
    if (!x)
        goto oom;

    event_features(in->snapshot, s->spec, n, out->values);
    for (size_t f = 0; f < n; f++) {
        const struct event_feature_value *v = &out->values[f];
        x[f].missing = v->missing || (s->spec[f].kind == EVENT_FEATURE_NUMERIC && isnan(v->num)) ||
                       (s->spec[f].kind == EVENT_FEATURE_CATEGORICAL && !v->cat);
        x[f].num = v->num;
        x[f].cat = v->cat;
    }

    double margin[GBM_MAX_CLASSES];
    out->n_classes = s->n_classes;
    gbm_predict(m, x, margin, out->prob);
    size_t k = 0;
    for (size_t c = 1; c < s->n_classes; c++) {
        if (out->prob[c] > out->prob[k])
            k = c;
    }
    out->class_idx = k;
    out->cls = s->cls[k];
    out->confidence = out->prob[k];
    out->margin = margin[k];
    gbm_explain(m, x, k, &out->base, out->contrib, out->steps);

    out->ood_score = 0;
    out->n_ood = 0;
    for (size_t f = 0; f < n; f++)
        ood_feature(s, f, &x[f], out);

    out->raw_delta_pct = NAN;
    double mag;
    if (sized_index(out->cls) >= 0 && gbm_predict_magnitude(m, k, x, &mag) == 0 && isfinite(mag))
        out->raw_delta_pct = mag;

    out->n_guards = 0;
    apply_guardrails(g, in, out);

    if (explain(s, out) != 0)
        goto oom;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    free(x);
    return rc;
}
