/*
 * recommend_json: the jsonb columns of a recommendation row (probabilities,
 * contributions, ood reasons, guardrails) built from a scored result, with
 * the shapes documented in recommend.h.  Non-finite numbers (NaN for "no
 * size", HUGE_VAL for an unbounded step) become JSON null, since jansson
 * refuses them and PostgreSQL's jsonb has no such numbers.  Every jansson
 * call is checked; any failure gives NULL and frees what was built.
 */
#include "recommend/recommend.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/util.h"

static json_t *num_or_null(double d)
{
    return isfinite(d) ? json_real(d) : json_null();
}

/* json_object_set_new takes the reference even on failure, and NULL fails. */
static int set(json_t *obj, const char *key, json_t *v)
{
    return json_object_set_new(obj, key, v);
}

json_t *recommend_probabilities_json(const struct recommend_scorer *s,
                                     const struct recommend_result *r)
{
    const struct gbm_model *m = recommend_scorer_model(s);
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (size_t c = 0; c < r->n_classes; c++) {
        if (set(o, gbm_model_class_name(m, c), json_real(r->prob[c])) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *value_json(const struct event_feature_value *v, bool categorical)
{
    if (v->missing)
        return json_null();
    if (categorical)
        return v->cat ? json_string(v->cat) : json_null();
    return num_or_null(v->num);
}

json_t *recommend_contributions_json(const struct recommend_scorer *s,
                                     const struct recommend_result *r)
{
    const struct gbm_model *m = recommend_scorer_model(s);
    json_t *o = json_object();
    json_t *feats = json_object();
    if (!o || !feats)
        goto fail;
    if (set(o, "class", json_string(gbm_model_class_name(m, r->class_idx))) != 0 ||
        set(o, "base", json_real(r->base)) != 0 || set(o, "margin", json_real(r->margin)) != 0)
        goto fail;
    for (size_t f = 0; f < r->n_features; f++) {
        bool cat = gbm_model_feature_kind(m, f) == GBM_CATEGORICAL;
        json_t *e = json_object();
        if (!e)
            goto fail;
        if (set(feats, gbm_model_feature_name(m, f), e) != 0)
            goto fail;
        if (set(e, "value", value_json(&r->values[f], cat)) != 0 ||
            set(e, "contribution", json_real(r->contrib[f])) != 0 ||
            set(e, "lo", cat ? json_null() : num_or_null(r->steps[f].lo)) != 0 ||
            set(e, "hi", cat ? json_null() : num_or_null(r->steps[f].hi)) != 0)
            goto fail;
    }
    int rc = set(o, "features", feats);
    feats = NULL;
    if (rc != 0)
        goto fail;
    return o;
fail:
    json_decref(feats);
    json_decref(o);
    return NULL;
}

json_t *recommend_ood_json(const struct recommend_scorer *s, const struct recommend_result *r)
{
    const struct gbm_model *m = recommend_scorer_model(s);
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < r->n_ood; i++) {
        const struct recommend_ood_reason *o = &r->ood[i];
        bool cat = gbm_model_feature_kind(m, o->feature) == GBM_CATEGORICAL;
        char why[160];
        json_t *e = json_object();
        if (json_array_append_new(a, e) != 0 ||
            set(e, "feature", json_string(gbm_model_feature_name(m, o->feature))) != 0 ||
            set(e, "value", value_json(&r->values[o->feature], cat)) != 0 ||
            set(e, "penalty", json_real(o->penalty)) != 0 ||
            set(e, "why", json_string(recommend_ood_why_text(o, why, sizeof why))) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *recommend_guardrails_json(const struct recommend_result *r)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < r->n_guards; i++) {
        const struct recommend_guard *g = &r->guards[i];
        json_t *e = json_object();
        if (json_array_append_new(a, e) != 0 ||
            set(e, "rule", json_string(recommend_rule_name(g->rule))) != 0 ||
            set(e, "blocked", json_boolean(g->blocked)) != 0 ||
            set(e, "value", num_or_null(g->value)) != 0 ||
            set(e, "limit", num_or_null(g->limit)) != 0 ||
            set(e, "before", num_or_null(g->before)) != 0 ||
            set(e, "after", num_or_null(g->after)) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* The size an abstention reports: what the blocking rule saw, else the
 * magnitude model's. */
static double abstained_size(const struct recommend_result *r)
{
    for (size_t i = r->n_guards; i-- > 0;) {
        if (r->guards[i].blocked)
            return r->guards[i].before;
    }
    return r->raw_delta_pct;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *recommend_result_json(const struct recommend_scorer *s, const struct event *ev, int version,
                              const struct recommend_result *r)
{
    char ts[40];
    bool open = r->status == RECOMMEND_OPEN;
    json_t *j = json_object();
    if (!j)
        return NULL;
    if (set(j, "state_event_id", json_string(ev->event_id)) != 0 ||
        set(j, "snapshot_ts", json_string(util_format_rfc3339(ev->ts_us, ts, sizeof ts))) != 0 ||
        set(j, "entity_type", json_string(event_entity_name(ev->entity_type))) != 0 ||
        set(j, "entity_id", json_string(ev->entity_id)) != 0 ||
        set(j, "campaign_id", json_string(ev->campaign_id)) != 0 ||
        set(j, "operator_id", str_or_null(ev->operator_id)) != 0 ||
        set(j, "policy_version", version > 0 ? json_integer(version) : json_null()) != 0 ||
        set(j, "status", json_string(recommend_status_name(r->status))) != 0 ||
        set(j, "reason", open ? json_null() : json_string(recommend_reason_name(r->reason))) != 0 ||
        set(j, "action", json_string(event_class_name(r->cls))) != 0 ||
        set(j, "confidence", json_real(r->confidence)) != 0 ||
        set(j, "delta_pct", num_or_null(open ? r->delta_pct : abstained_size(r))) != 0 ||
        set(j, "explanation", str_or_null(r->explanation)) != 0 ||
        set(j, "probabilities", recommend_probabilities_json(s, r)) != 0 ||
        set(j, "contributions", recommend_contributions_json(s, r)) != 0 ||
        set(j, "ood_score", json_real(r->ood_score)) != 0 ||
        set(j, "ood_reasons", recommend_ood_json(s, r)) != 0 ||
        set(j, "guardrails", recommend_guardrails_json(r)) != 0) {
        json_decref(j);
        return NULL;
    }
    return j;
}

int recommend_result_print(FILE *f, const struct recommend_scorer *s, const struct event *ev,
                           int version, const struct recommend_result *r)
{
    json_t *j = recommend_result_json(s, ev, version, r);
    char *line =
        j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(j);
    if (!line)
        return -2;
    int rc = fprintf(f, "%s\n", line) < 0 ? -1 : 0;
    free(line);
    return rc;
}
