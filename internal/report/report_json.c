/*
 * report_json: the machine-readable audit document, {"format":
 * "understudy-audit", "version": 1, ...}, field by field as in
 * docs/audit.md.  The store keeps its "parameters", "findings" and
 * "operators" as they are, so their keys are a contract: add keys, never
 * rename or drop one without a new version.
 *
 * Every value is built and attached with a checked call; json_object_set_new
 * takes its value's reference even when it fails (and a NULL value fails),
 * so an allocation failure anywhere frees what was built and gives NULL.
 * Non-finite numbers are null (jansson refuses them; so would jsonb).  Text
 * that is not valid UTF-8 (an operator id from a CSV file, say) has each bad
 * byte replaced by '?' rather than failing the report.
 */
#include "report/report.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static json_t *num(double d)
{
    return isfinite(d) ? json_real(d) : json_null();
}

static json_t *count(size_t n)
{
    return json_integer((json_int_t)n);
}

static json_t *text(const char *s)
{
    if (!s)
        return json_null();
    size_t len = strlen(s), bad;
    if (util_utf8_valid((const unsigned char *)s, len, &bad))
        return json_stringn(s, len);
    char *copy = util_strndup(s, len);
    if (!copy)
        return NULL;
    size_t at = bad;
    for (;;) {
        copy[at] = '?';
        if (util_utf8_valid((const unsigned char *)copy, len, &bad))
            break;
        at = bad;
    }
    json_t *v = json_stringn(copy, len);
    free(copy);
    return v;
}

static json_t *time_or_null(int64_t us)
{
    char b[40];
    if (us == INT64_MIN)
        return json_null();
    return json_string(util_format_rfc3339(us, b, sizeof b));
}

static json_t *class_or_null(const struct audit_result *r, int k)
{
    if (k < 0 || (size_t)k >= r->n_classes)
        return json_null();
    return text(r->classes[k]);
}

static int set(json_t *o, const char *key, json_t *v)
{
    return json_object_set_new(o, key, v);
}

static int push(json_t *a, json_t *v)
{
    return json_array_append_new(a, v);
}

static json_t *window_json(int64_t from, int64_t to)
{
    json_t *o = json_object();
    if (!o || set(o, "from", time_or_null(from)) != 0 || set(o, "to", time_or_null(to)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *parameters_json(const struct audit_result *r, const struct report_meta *m)
{
    const struct audit_params *p = &r->params;
    json_t *o = json_object(), *feats = json_array();
    if (!o || !feats)
        goto fail;
    for (size_t i = 0; m->features && i < m->n_features; i++) {
        if (push(feats, text(m->features[i])) != 0)
            goto fail;
    }
    if (set(o, "fdr_q", num(p->fdr_q)) != 0 ||
        set(o, "min_support", json_integer((json_int_t)p->min_support)) != 0 ||
        set(o, "tolerance", num(p->tolerance)) != 0 ||
        set(o, "blind_spot_ratio", num(p->blind_spot_ratio)) != 0 ||
        set(o, "blind_spot_min_expected", num(p->blind_spot_min_expected)) != 0 ||
        set(o, "rounds", json_integer(p->rounds)) != 0 ||
        set(o, "learning_rate", num(p->learning_rate)) != 0 ||
        set(o, "max_bins", json_integer(p->max_bins)) != 0 ||
        set(o, "reference_rows", count(p->reference_rows)) != 0 ||
        set(o, "threads", json_integer(p->threads)) != 0)
        goto fail;
    /* json_int_t is signed: a seed above its range is written as text. */
    json_t *seed;
    if (p->seed <= (uint64_t)INT64_MAX) {
        seed = json_integer((json_int_t)p->seed);
    } else {
        char b[32];
        seed = json_string(util_fmt(b, sizeof b, "%llu", (unsigned long long)p->seed));
    }
    if (set(o, "seed", seed) != 0 || set(o, "passes", json_integer(r->passes)) != 0 ||
        set(o, "tests", count(r->n_tests)) != 0 ||
        set(o, "have_policy", json_boolean(r->have_policy)) != 0)
        goto fail;
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

static json_t *severity_counts_json(const size_t by[AUDIT_SEVERITY_COUNT])
{
    json_t *o = json_object();
    if (!o || set(o, "high", count(by[AUDIT_SEVERITY_HIGH])) != 0 ||
        set(o, "medium", count(by[AUDIT_SEVERITY_MEDIUM])) != 0 ||
        set(o, "low", count(by[AUDIT_SEVERITY_LOW])) != 0 ||
        set(o, "info", count(by[AUDIT_SEVERITY_INFO])) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *operator_json(const struct audit_result *r, const struct audit_operator *op)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (set(o, "operator_id", text(op->operator_id)) != 0 ||
        set(o, "decisions", count(op->decisions)) != 0 ||
        set(o, "actions", count(op->actions)) != 0 ||
        set(o, "audited", json_boolean(op->audited)) != 0 ||
        set(o, "in_reference", json_boolean(op->in_reference)) != 0 ||
        set(o, "outside_support", count(op->outside_support)) != 0 ||
        set(o, "policy_agreement", num(op->policy_agreement)) != 0 ||
        set(o, "acceptance_rate", num(op->acceptance_rate)) != 0 ||
        set(o, "verdicts", count(op->verdicts)) != 0 ||
        set(o, "findings", severity_counts_json(op->findings_by_severity)) != 0)
        goto fail;
    json_t *dis = json_array();
    if (set(o, "disagreements", dis) != 0)
        goto fail;
    for (size_t i = 0; i < op->n_disagreements && i < AUDIT_MAX_DISAGREE; i++) {
        const struct audit_disagreement *d = &op->disagreements[i];
        json_t *e = json_object();
        if (push(dis, e) != 0 || set(e, "did", class_or_null(r, d->did)) != 0 ||
            set(e, "policy", class_or_null(r, d->policy)) != 0 || set(e, "n", count(d->n)) != 0)
            goto fail;
    }
    json_t *cells = json_object();
    if (set(o, "cells", cells) != 0)
        goto fail;
    for (size_t k = 0; op->cells && k < r->n_classes; k++) {
        const struct audit_cell *c = &op->cells[k];
        json_t *e = json_object();
        if (set(cells, report_class_name(r, (int)k), e) != 0 ||
            set(e, "observed", num(c->observed)) != 0 ||
            set(e, "expected", num(c->expected)) != 0 ||
            set(e, "variance", num(c->variance)) != 0 ||
            set(e, "expected_policy", num(c->expected_policy)) != 0)
            goto fail;
    }
    return o;
fail:
    json_decref(o);
    return NULL;
}

static const char *cond_op(enum audit_cond_op op)
{
    switch (op) {
    case AUDIT_COND_EQ:
        return "=";
    case AUDIT_COND_LT:
        return "<";
    case AUDIT_COND_GE:
        return ">=";
    }
    return "?";
}

static json_t *finding_json(const struct audit_result *r, const struct audit_finding *f)
{
    char region[AUDIT_MAX_CONDS * (2 * AUDIT_NAME_MAX + 48)];
    const char *kind = audit_kind_name(f->kind), *sev = audit_severity_name(f->severity);
    const char *test = audit_test_name(f->test);
    bool in_region = f->region.n_conds > 0;
    json_t *o = json_object();
    if (!o)
        return NULL;
    audit_region_text(&f->region, region, sizeof region);
    /* An empty id is a finding about the team or the policy: null, as the
     * store's operator_id column has it. */
    if (set(o, "operator_id", text(f->operator_id[0] ? f->operator_id : NULL)) != 0 ||
        set(o, "kind", json_string(kind ? kind : "unknown")) != 0 ||
        set(o, "action", class_or_null(r, f->action)) != 0 || set(o, "region", text(region)) != 0)
        goto fail;
    json_t *conds = json_array();
    if (set(o, "conditions", conds) != 0)
        goto fail;
    for (size_t i = 0; i < f->region.n_conds && i < AUDIT_MAX_CONDS; i++) {
        const struct audit_cond *c = &f->region.conds[i];
        json_t *e = json_object();
        if (push(conds, e) != 0 || set(e, "feature", text(c->feature)) != 0 ||
            set(e, "op", json_string(cond_op(c->op))) != 0)
            goto fail;
        if (c->op == AUDIT_COND_EQ ? set(e, "level", text(c->level)) != 0
                                   : set(e, "value", num(c->value)) != 0)
            goto fail;
    }
    if (set(o, "n", count(f->n)) != 0 || set(o, "observed", num(f->observed)) != 0 ||
        set(o, "expected", num(f->expected)) != 0 || set(o, "effect", num(f->effect)) != 0 ||
        set(o, "ci_low", num(f->ci_lo)) != 0 || set(o, "ci_high", num(f->ci_hi)) != 0 ||
        set(o, "p_value", num(f->p_value)) != 0 || set(o, "q_value", num(f->q_value)) != 0 ||
        set(o, "test", json_string(test ? test : "unknown")) != 0 ||
        set(o, "severity", json_string(sev ? sev : "unknown")) != 0 ||
        set(o, "summary", text(f->summary)) != 0)
        goto fail;
    json_t *d = json_object();
    if (set(o, "details", d) != 0 ||
        set(d, "inside_observed", in_region ? num(f->inside_observed) : json_null()) != 0 ||
        set(d, "inside_expected", in_region ? num(f->inside_expected) : json_null()) != 0 ||
        set(d, "outside_observed", in_region ? num(f->outside_observed) : json_null()) != 0 ||
        set(d, "outside_expected", in_region ? num(f->outside_expected) : json_null()) != 0 ||
        set(d, "expected_policy", num(f->expected_policy)) != 0 ||
        set(d, "discovery_z", num(f->discovery_z)) != 0 ||
        set(d, "overdispersion", num(f->overdispersion)) != 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

char *report_json(const struct audit_result *r, const struct report_meta *m)
{
    char *out = NULL;
    json_t *root = json_object();
    if (!root)
        return NULL;
    if (set(root, "format", json_string("understudy-audit")) != 0 ||
        set(root, "version", json_integer(1)) != 0 ||
        set(root, "generated_at", time_or_null(m->generated_us)) != 0 ||
        set(root, "source", text(m->source)) != 0 || set(root, "csv", text(m->csv_path)) != 0 ||
        set(root, "run_id", m->run_id > 0 ? json_integer(m->run_id) : json_null()) != 0 ||
        set(root, "policy_version",
            m->policy_version > 0 ? json_integer(m->policy_version) : json_null()) != 0 ||
        set(root, "window", window_json(m->window_from_us, m->window_to_us)) != 0)
        goto out;
    json_t *dec = window_json(r->from_us, r->to_us);
    if (set(root, "decisions", dec) != 0 || set(dec, "rows", count(r->rows)) != 0)
        goto out;
    json_t *classes = json_array();
    if (set(root, "classes", classes) != 0)
        goto out;
    for (size_t k = 0; k < r->n_classes; k++) {
        if (push(classes, text(r->classes[k])) != 0)
            goto out;
    }
    if (set(root, "parameters", parameters_json(r, m)) != 0 ||
        set(root, "seconds", num(r->seconds)) != 0)
        goto out;
    json_t *ops = json_array();
    if (set(root, "operators", ops) != 0)
        goto out;
    for (size_t i = 0; i < r->n_operators; i++) {
        if (push(ops, operator_json(r, &r->operators[i])) != 0)
            goto out;
    }
    json_t *fs = json_array();
    if (set(root, "findings", fs) != 0)
        goto out;
    for (size_t i = 0; i < r->n_findings; i++) {
        if (push(fs, finding_json(r, &r->findings[i])) != 0)
            goto out;
    }
    out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
out:
    json_decref(root);
    return out;
}
