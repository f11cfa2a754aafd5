/*
 * sim_bias: reads bias specs ("op-03:never=bid_down@channel=social") and
 * checks simulation options.  Every refusal names the part that is wrong and
 * quotes the spec, so the CLI can print it as is.
 *
 * Grammar (docs/simulate.md):
 *
 *     SPEC   = OPERATOR ":" KIND "=" ARGS [ "@" REGION ]
 *     never=CLASS | shift=CLASS:FEATURE:AMOUNT | scale=CLASS:FACTOR | favor=CLASS:FACTOR
 *     REGION = FEATURE "=" LEVEL | FEATURE "<" NUMBER | FEATURE ">" NUMBER
 */
#include "sim/sim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_impl.h"
#include "util/util.h"

static const char *const kind_names[SIM_BIAS_KIND_COUNT] = {"never", "shift", "scale", "favor"};

const char *sim_bias_kind_name(enum sim_bias_kind k)
{
    return (unsigned)k < SIM_BIAS_KIND_COUNT ? kind_names[k] : NULL;
}

static const char action_classes[] =
    "bid_up, bid_down, budget_up, budget_down, creative_pause, creative_resume";

/* Parses a whole, finite number. */
static int parse_number(const char *s, double *out)
{
    if (!*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int find_feature(const char *name, size_t *out)
{
    for (size_t f = 0; f < SF_COUNT; f++) {
        if (strcmp(sim_feats[f].name, name) == 0) {
            *out = f;
            return 0;
        }
    }
    return -1;
}

/* "op-3", "op-03" or "op-003": a number 1..SIM_MAX_OPERATORS. */
static int parse_operator(const char *s, unsigned *out)
{
    if (strncmp(s, "op-", 3) != 0)
        return -1;
    s += 3;
    size_t n = strlen(s);
    if (n < 1 || n > 3 || strspn(s, "0123456789") != n)
        return -1;
    unsigned v = (unsigned)strtoul(s, NULL, 10);
    if (v < 1 || v > SIM_MAX_OPERATORS)
        return -1;
    *out = v;
    return 0;
}

static int parse_region(const char *spec, char *region, struct sim_bias *b, char *err,
                        size_t errlen)
{
    size_t at = strcspn(region, "=<>");
    if (region[at] == '\0' || at == 0 || region[at + 1] == '\0') {
        util_fmt(err, errlen,
                 "bias '%s': region '%s' is not FEATURE=LEVEL, FEATURE<NUMBER or FEATURE>NUMBER",
                 spec, region);
        return -1;
    }
    char op = region[at];
    region[at] = '\0';
    const char *value = region + at + 1;
    size_t f;
    if (find_feature(region, &f) != 0) {
        util_fmt(err, errlen, "bias '%s': unknown region feature '%s'", spec, region);
        return -1;
    }
    b->region_feature = f;
    if (sim_feats[f].categorical) {
        if (op != '=') {
            util_fmt(err, errlen, "bias '%s': region feature '%s' is categorical: use %s=LEVEL",
                     spec, region, region);
            return -1;
        }
        size_t n;
        const char *const *levels = sim_levels(f, &n);
        for (size_t i = 0; i < n; i++) {
            if (strcmp(levels[i], value) == 0) {
                b->region_op = SIM_REGION_EQ;
                util_fmt(b->region_level, sizeof b->region_level, "%s", value);
                return 0;
            }
        }
        char list[256] = "";
        size_t len = 0;
        for (size_t i = 0; i < n; i++) {
            int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", levels[i]);
            if (w < 0 || (size_t)w >= sizeof list - len)
                break;
            len += (size_t)w;
        }
        util_fmt(err, errlen, "bias '%s': unknown level '%s' of %s (%s)", spec, value, region,
                 list);
        return -1;
    }
    if (op == '=') {
        util_fmt(err, errlen,
                 "bias '%s': region feature '%s' is numeric: use %s<NUMBER or %s>NUMBER", spec,
                 region, region, region);
        return -1;
    }
    if (parse_number(value, &b->region_value) != 0) {
        util_fmt(err, errlen, "bias '%s': bad number '%s' in the region", spec, value);
        return -1;
    }
    b->region_op = op == '<' ? SIM_REGION_LT : SIM_REGION_GT;
    return 0;
}

static int parse_factor(const char *spec, const char *text, const char *what, double *out,
                        char *err, size_t errlen)
{
    if (parse_number(text, out) != 0) {
        util_fmt(err, errlen, "bias '%s': bad number '%s' for the %s", spec, text, what);
        return -1;
    }
    if (!(*out > 0.0)) {
        util_fmt(err, errlen, "bias '%s': the %s must be > 0, not %s", spec, what, text);
        return -1;
    }
    return 0;
}

int sim_parse_bias(const char *spec, struct sim_bias *out, char *err, size_t errlen)
{
    struct sim_bias b;
    char buf[SIM_SPEC_MAX];
    char *args[4];
    size_t nargs = 0;
    int rc = -1;

    memset(&b, 0, sizeof b);
    if (!spec || !*spec) {
        util_fmt(err, errlen, "bias: empty spec (expected e.g. op-03:never=bid_down)");
        goto out;
    }
    if (strlen(spec) >= sizeof buf) {
        util_fmt(err, errlen, "bias '%.40s...': longer than %d bytes", spec, SIM_SPEC_MAX - 1);
        goto out;
    }
    util_fmt(b.spec, sizeof b.spec, "%s", spec);
    util_fmt(buf, sizeof buf, "%s", spec);

    char *colon = strchr(buf, ':');
    char *eq = colon ? strchr(colon + 1, '=') : NULL;
    if (!colon || !eq) {
        util_fmt(err, errlen, "bias '%s': expected OPERATOR:KIND=ARGS (e.g. op-03:never=bid_down)",
                 spec);
        goto out;
    }
    *colon = '\0';
    *eq = '\0';
    if (parse_operator(buf, &b.op) != 0) {
        util_fmt(err, errlen, "bias '%s': operator '%s' is not one of op-01..op-%02d", spec, buf,
                 SIM_MAX_OPERATORS);
        goto out;
    }
    const char *kind = colon + 1;
    int k = -1;
    for (int i = 0; i < SIM_BIAS_KIND_COUNT; i++)
        if (strcmp(kind, kind_names[i]) == 0)
            k = i;
    if (k < 0) {
        util_fmt(err, errlen, "bias '%s': unknown kind '%s' (never, shift, scale, favor)", spec,
                 kind);
        goto out;
    }
    b.kind = (enum sim_bias_kind)k;

    char *rest = eq + 1;
    char *at = strchr(rest, '@');
    if (at) {
        *at = '\0';
        if (parse_region(spec, at + 1, &b, err, errlen) != 0)
            goto out;
    }
    for (char *p = rest;;) {
        if (nargs == sizeof args / sizeof args[0]) {
            nargs++;
            break;
        }
        args[nargs++] = p;
        char *c = strchr(p, ':');
        if (!c)
            break;
        *c = '\0';
        p = c + 1;
    }
    static const size_t want[SIM_BIAS_KIND_COUNT] = {1, 3, 2, 2};
    static const char *const usage[SIM_BIAS_KIND_COUNT] = {
        "never=CLASS", "shift=CLASS:FEATURE:AMOUNT", "scale=CLASS:FACTOR", "favor=CLASS:FACTOR"};
    if (nargs != want[b.kind]) {
        util_fmt(err, errlen, "bias '%s': %s takes %s", spec, kind_names[b.kind], usage[b.kind]);
        goto out;
    }
    enum event_class cls;
    if (event_class_parse(args[0], &cls) != 0) {
        util_fmt(err, errlen, "bias '%s': unknown class '%s' (%s)", spec, args[0], action_classes);
        goto out;
    }
    if (cls == EVENT_CLASS_HOLD) {
        util_fmt(err, errlen, "bias '%s': class 'hold' cannot be biased; name one of %s", spec,
                 action_classes);
        goto out;
    }
    b.cls = cls;

    switch (b.kind) {
    case SIM_BIAS_NEVER:
        break;
    case SIM_BIAS_SHIFT: {
        size_t f;
        if (find_feature(args[1], &f) != 0) {
            util_fmt(err, errlen, "bias '%s': unknown feature '%s'", spec, args[1]);
            goto out;
        }
        if (!sim_rule_uses_feature(cls, f)) {
            char list[256];
            sim_rule_feature_list(cls, list, sizeof list);
            util_fmt(err, errlen, "bias '%s': feature '%s' does not enter the %s score (%s)", spec,
                     args[1], event_class_name(cls), list);
            goto out;
        }
        b.feature = f;
        if (parse_number(args[2], &b.amount) != 0) {
            util_fmt(err, errlen, "bias '%s': bad number '%s' for the amount", spec, args[2]);
            goto out;
        }
        break;
    }
    case SIM_BIAS_SCALE:
        if (sim_delta_rules[cls].sign > 0.0 || sim_delta_rules[cls].sign < 0.0) {
            if (parse_factor(spec, args[1], "factor", &b.amount, err, errlen) != 0)
                goto out;
            break;
        }
        util_fmt(err, errlen,
                 "bias '%s': %s has no magnitude to scale (bid_up, bid_down, budget_up, "
                 "budget_down)",
                 spec, event_class_name(cls));
        goto out;
    case SIM_BIAS_FAVOR:
        if (parse_factor(spec, args[1], "factor", &b.amount, err, errlen) != 0)
            goto out;
        break;
    default:
        goto out;
    }
    *out = b;
    rc = 0;
out:
    return rc;
}

int sim_check_options(const struct sim_options *o, char *err, size_t errlen)
{
    /* 1970-01-01 .. 9000-01-01: leaves room for any run before year 9999. */
    static const int64_t max_start_us = INT64_C(221845392000) * 1000000;
    if (!o) {
        util_fmt(err, errlen, "simulate: no options");
        return -1;
    }
    if (o->rows < 1 || o->rows > UINT64_C(10000000000)) {
        util_fmt(err, errlen, "simulate: rows must be 1 to 10000000000");
        return -1;
    }
    if (o->operators < 1 || o->operators > SIM_MAX_OPERATORS) {
        util_fmt(err, errlen, "simulate: operators must be 1 to %d", SIM_MAX_OPERATORS);
        return -1;
    }
    if (o->campaigns != 0 && (o->campaigns < o->operators || o->campaigns > 1000000)) {
        util_fmt(err, errlen,
                 "simulate: campaigns must be 0 (automatic) or %u (the operators) to 1000000",
                 o->operators);
        return -1;
    }
    if (!(o->temperature > 0.0) || !(o->temperature <= 100.0)) {
        util_fmt(err, errlen, "simulate: temperature must be > 0 and <= 100");
        return -1;
    }
    if (o->start_us < 0 || o->start_us >= max_start_us) {
        util_fmt(err, errlen, "simulate: start must be from 1970-01-01 to before 9000-01-01");
        return -1;
    }
    if (sim_last_event_s(o) > SIM_MAX_END_S) {
        util_fmt(err, errlen,
                 "simulate: the run would end after 9999-12-31 (fewer rows or "
                 "more campaigns)");
        return -1;
    }
    if (o->n_biases > 0 && !o->biases) {
        util_fmt(err, errlen, "simulate: %zu biases but no array", o->n_biases);
        return -1;
    }
    for (size_t i = 0; i < o->n_biases; i++) {
        const struct sim_bias *b = &o->biases[i];
        if (b->op < 1 || b->op > o->operators) {
            util_fmt(err, errlen, "bias '%s': operator op-%02u is not in op-01..op-%02u", b->spec,
                     b->op, o->operators);
            return -1;
        }
        if ((unsigned)b->kind >= SIM_BIAS_KIND_COUNT || (unsigned)b->cls >= EVENT_CLASS_COUNT ||
            b->cls == EVENT_CLASS_HOLD || b->feature >= SF_COUNT || b->region_feature >= SF_COUNT) {
            util_fmt(err, errlen, "bias '%s': not from sim_parse_bias", b->spec);
            return -1;
        }
    }
    return 0;
}
