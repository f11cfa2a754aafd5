/*
 * audit: names, regions as text, and the result's lifecycle and order.
 */
#include "audit/audit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static const char *const kind_names[AUDIT_KIND_COUNT] = {
    "over_acting", "under_acting", "blind_spot", "magnitude", "policy_disagreement",
};
static const char *const severity_names[AUDIT_SEVERITY_COUNT] = {"info", "low", "medium", "high"};
static const char *const test_names[AUDIT_TEST_COUNT] = {
    "poisson_binomial", "normal_skew", "conditional_binomial", "welch_t", "normal_overdispersed",
};

const char *audit_kind_name(enum audit_kind k)
{
    return (unsigned)k < AUDIT_KIND_COUNT ? kind_names[k] : NULL;
}

const char *audit_severity_name(enum audit_severity s)
{
    return (unsigned)s < AUDIT_SEVERITY_COUNT ? severity_names[s] : NULL;
}

const char *audit_test_name(enum audit_test t)
{
    return (unsigned)t < AUDIT_TEST_COUNT ? test_names[t] : NULL;
}

char *audit_region_text(const struct audit_region *r, char *out, size_t outlen)
{
    size_t used = 0;
    if (outlen == 0)
        return out;
    out[0] = '\0';
    for (size_t i = 0; r && i < r->n_conds && i < AUDIT_MAX_CONDS; i++) {
        const struct audit_cond *c = &r->conds[i];
        char one[2 * AUDIT_NAME_MAX + 48];
        if (c->op == AUDIT_COND_EQ)
            util_fmt(one, sizeof one, "%s%s = %s", i ? " and " : "", c->feature, c->level);
        else
            util_fmt(one, sizeof one, "%s%s %s %.3g", i ? " and " : "", c->feature,
                     c->op == AUDIT_COND_LT ? "<" : ">=", c->value);
        util_fmt(out + used, outlen - used, "%s", one);
        used = strlen(out);
    }
    return out;
}

void audit_params_default(struct audit_params *p)
{
    memset(p, 0, sizeof *p);
    p->fdr_q = 0.05;
    p->min_support = 30;
    p->tolerance = 1.1;
    p->blind_spot_ratio = 0.1;
    p->blind_spot_min_expected = 10;
    p->rounds = 100;
    p->learning_rate = 0.3;
    p->max_bins = 64;
    p->reference_rows = 150000;
    p->threads = 1;
    p->seed = 1;
}

void audit_result_free(struct audit_result *r)
{
    if (!r)
        return;
    for (size_t c = 0; r->classes && c < r->n_classes; c++)
        free(r->classes[c]);
    free(r->classes);
    for (size_t o = 0; r->operators && o < r->n_operators; o++)
        free(r->operators[o].cells);
    free(r->operators);
    free(r->findings);
    free(r);
}

static int finding_cmp(const void *a, const void *b)
{
    const struct audit_finding *x = a, *y = b;
    if (x->severity != y->severity)
        return x->severity > y->severity ? -1 : 1;
    if (x->q_value < y->q_value)
        return -1;
    if (x->q_value > y->q_value)
        return 1;
    int c = strcmp(x->operator_id, y->operator_id);
    if (c)
        return c;
    if (x->action != y->action)
        return x->action < y->action ? -1 : 1;
    return x->kind < y->kind ? -1 : x->kind > y->kind;
}

void audit_result_sort(struct audit_result *r)
{
    if (r->n_findings > 1)
        qsort(r->findings, r->n_findings, sizeof *r->findings, finding_cmp);
    for (size_t o = 0; o < r->n_operators; o++)
        memset(r->operators[o].findings_by_severity, 0,
               sizeof r->operators[o].findings_by_severity);
    for (size_t i = 0; i < r->n_findings; i++) {
        for (size_t o = 0; o < r->n_operators; o++) {
            if (strcmp(r->operators[o].operator_id, r->findings[i].operator_id) == 0 &&
                (unsigned)r->findings[i].severity < AUDIT_SEVERITY_COUNT)
                r->operators[o].findings_by_severity[r->findings[i].severity]++;
        }
    }
}
