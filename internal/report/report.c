/*
 * report: what the three renderers share (number and time formats, the
 * plain-language texts, a finding's table of numbers, the parameters, the
 * funnel plot's control limits), the format list parser, and writing the
 * documents into a directory.
 *
 * The texts are produced once here, unescaped, so that the Markdown and
 * the HTML say the same thing; each renderer escapes them for its syntax.
 *
 * Writing: each document goes to a temporary file in the target directory
 * (same file system, so the rename is atomic), is written in full and
 * fsync'ed, then renamed over the final name, and the directory is fsync'ed
 * so that the rename itself survives a crash.  A reader polling the
 * directory therefore never sees a half-written report.
 *
 * Funnel limits: for a Poisson count with mean E, the p-quantile is taken
 * from the exact distribution and interpolated between whole counts (with
 * F the CDF and r the least count with F(r) >= p, the limit is
 * r - (F(r) - p) / P(X = r)), which makes the limits continuous in E; the
 * probabilities are summed upwards from P(X = 0) = exp(-E), which stays a
 * normal double up to E = 700.  Above that the Poisson is close enough to
 * normal that the Cornish-Fisher quantile E + z sqrt(E) + (z^2 - 1) / 6
 * (skewness term included) is within a small fraction of a count.
 */
#include "report/report.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- sink ----------------------------------------------------------------- */

void report_sink_init(struct report_sink *s, struct util_buf *buf)
{
    s->buf = buf;
    s->start = buf->len;
    s->failed = false;
}

void report_sink_puts(struct report_sink *s, const char *text)
{
    if (!s->failed && util_buf_puts(s->buf, text) != 0)
        s->failed = true;
}

void report_sink_printf(struct report_sink *s, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    if (s->failed)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        s->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        if (util_buf_append(s->buf, small, (size_t)n) != 0)
            s->failed = true;
        return;
    }
    char *big = util_malloc((size_t)n + 1);
    if (!big) {
        s->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    if (util_buf_append(s->buf, big, (size_t)n) != 0)
        s->failed = true;
    free(big);
}

int report_sink_finish(struct report_sink *s)
{
    if (!s->failed)
        return 0;
    s->buf->len = s->start;
    if (s->buf->data)
        s->buf->data[s->start] = '\0';
    return -1;
}

/* ---- numbers and times ------------------------------------------------- */

char *report_fmt_time(int64_t us, char *dst, size_t size)
{
    char full[40];
    if (us == INT64_MIN)
        return util_fmt(dst, size, "open");
    util_format_rfc3339(us, full, sizeof full);
    /* "YYYY-MM-DDTHH:MM:SS" is the first 19 characters; the fraction goes. */
    return util_fmt(dst, size, "%.19sZ", full);
}

char *report_fmt_duration(int64_t us, char *dst, size_t size)
{
    if (us < 0)
        return util_fmt(dst, size, "n/a");
    double minutes = (double)us / 60e6, hours = minutes / 60, days = hours / 24;
    if (minutes < 1)
        return util_fmt(dst, size, "%.0f seconds", (double)us / 1e6);
    if (hours < 2) {
        double m = floor(minutes + 0.5);
        return util_fmt(dst, size, "%.0f minute%s", m, m < 1.5 ? "" : "s");
    }
    if (days < 2) {
        if (fabs(hours - floor(hours + 0.5)) < 0.05)
            return util_fmt(dst, size, "%.0f hours", floor(hours + 0.5));
        return util_fmt(dst, size, "%.1f hours", hours);
    }
    if (fabs(days - floor(days + 0.5)) < 0.05)
        return util_fmt(dst, size, "%.0f days", floor(days + 0.5));
    return util_fmt(dst, size, "%.1f days", days);
}

char *report_fmt_count(double v, char *dst, size_t size)
{
    if (!isfinite(v))
        return util_fmt(dst, size, "n/a");
    if (fabs(v - nearbyint(v)) < 1e-9)
        return util_fmt(dst, size, "%.0f", nearbyint(v));
    return util_fmt(dst, size, "%.1f", v);
}

char *report_fmt_ratio(double v, char *dst, size_t size)
{
    if (!isfinite(v))
        return util_fmt(dst, size, "n/a");
    return util_fmt(dst, size, "%.2f", v);
}

char *report_fmt_p(double p, char *dst, size_t size)
{
    if (!isfinite(p))
        return util_fmt(dst, size, "n/a");
    if (p < 0.001)
        return util_fmt(dst, size, "< 0.001");
    return util_fmt(dst, size, "%.3g", p);
}

char *report_fmt_share(double v, char *dst, size_t size)
{
    if (!isfinite(v))
        return util_fmt(dst, size, "n/a");
    return util_fmt(dst, size, "%.1f%%", 100 * v);
}

/* ---- names and sentences ------------------------------------------------ */

const char *report_class_name(const struct audit_result *r, int k)
{
    if (k < 0 || (size_t)k >= r->n_classes || !r->classes || !r->classes[k])
        return "(none)";
    return r->classes[k];
}

const char *report_kind_title(enum audit_kind k)
{
    switch (k) {
    case AUDIT_OVER_ACTING:
        return "Acts more often";
    case AUDIT_UNDER_ACTING:
        return "Acts less often";
    case AUDIT_BLIND_SPOT:
        return "Blind spot";
    case AUDIT_MAGNITUDE:
        return "Change size";
    case AUDIT_POLICY_DISAGREEMENT:
        return "Policy disagrees";
    case AUDIT_KIND_COUNT:
        break;
    }
    return "Finding";
}

bool report_is_rate_kind(enum audit_kind k)
{
    return k == AUDIT_OVER_ACTING || k == AUDIT_UNDER_ACTING || k == AUDIT_BLIND_SPOT;
}

#define REGION_TEXT_MAX (AUDIT_MAX_CONDS * (2 * AUDIT_NAME_MAX + 48))

char *report_finding_meaning(const struct audit_result *r, const struct audit_finding *f, char *dst,
                             size_t size)
{
    char region[REGION_TEXT_MAX], when[REGION_TEXT_MAX + 16];
    const char *cls = report_class_name(r, f->action);
    audit_region_text(&f->region, region, sizeof region);
    if (region[0])
        util_fmt(when, sizeof when, "When %s, ", region);
    else
        when[0] = '\0';
    switch (f->kind) {
    case AUDIT_OVER_ACTING:
    case AUDIT_UNDER_ACTING:
        return util_fmt(dst, size,
                        "%s%s chooses %s %s often than the rest of the team would in the same "
                        "circumstances.",
                        when, region[0] ? "this operator" : "This operator", cls,
                        f->kind == AUDIT_OVER_ACTING ? "more" : "less");
    case AUDIT_BLIND_SPOT:
        if (region[0])
            return util_fmt(dst, size,
                            "%sthe rest of the team chooses %s; this operator almost never does.",
                            when, cls);
        return util_fmt(dst, size,
                        "In the situations this operator handles, the rest of the team chooses "
                        "%s; this operator almost never does.",
                        cls);
    case AUDIT_MAGNITUDE:
        if (!isfinite(f->effect))
            return util_fmt(dst, size,
                            "When this operator chooses %s, the size of the change differs from "
                            "the rest of the team's in the same situations.",
                            cls);
        return util_fmt(dst, size,
                        "When this operator chooses %s, the change is %s than the rest of the "
                        "team's in the same situations (about %.2f times their size).",
                        cls, f->effect > 1 ? "bigger" : "smaller", f->effect);
    case AUDIT_POLICY_DISAGREEMENT:
        return util_fmt(dst, size,
                        "The policy learned from the whole team agrees with this operator %s "
                        "often than with the rest of the team: %s",
                        f->effect > 0 ? "more" : "less",
                        f->effect > 0 ? "this operator decides much as the policy would."
                                      : "this operator's decisions often differ from the "
                                        "team's usual practice, and the policy will not copy "
                                        "them.");
    case AUDIT_KIND_COUNT:
        break;
    }
    return util_fmt(dst, size, "%s", "");
}

/* ---- a finding's numbers ------------------------------------------------- */

static void row(struct report_row *rows, size_t *n, size_t max, const char *label, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));

static void row(struct report_row *rows, size_t *n, size_t max, const char *label, const char *fmt,
                ...)
{
    va_list ap;
    if (*n >= max)
        return;
    rows[*n].label = label;
    va_start(ap, fmt);
    vsnprintf(rows[*n].value, sizeof rows[*n].value, fmt, ap);
    va_end(ap);
    (*n)++;
}

/* "1.92 (1.45 to 2.55)" */
static char *with_interval(double v, double lo, double hi, char *(*fmt)(double, char *, size_t),
                           char *dst, size_t size)
{
    char a[REPORT_NUM_MAX], b[REPORT_NUM_MAX], c[REPORT_NUM_MAX];
    if (!isfinite(lo) || !isfinite(hi))
        return util_fmt(dst, size, "%s", fmt(v, a, sizeof a));
    return util_fmt(dst, size, "%s (%s to %s)", fmt(v, a, sizeof a), fmt(lo, b, sizeof b),
                    fmt(hi, c, sizeof c));
}

static char *fmt_points(double v, char *dst, size_t size)
{
    if (!isfinite(v))
        return util_fmt(dst, size, "n/a");
    return util_fmt(dst, size, "%+.1f", 100 * v);
}

static char *fmt_size(double v, char *dst, size_t size)
{
    if (!isfinite(v))
        return util_fmt(dst, size, "n/a");
    return util_fmt(dst, size, "%.1f%%", v);
}

static double ratio_of(double o, double e)
{
    return isfinite(o) && isfinite(e) && e > 0 ? o / e : NAN;
}

size_t report_finding_rows(const struct audit_result *r, const struct audit_finding *f,
                           struct report_row *rows, size_t max)
{
    char a[REPORT_NUM_MAX], b[REPORT_NUM_MAX], iv[2 * REPORT_NUM_MAX];
    size_t n = 0;
    bool region = f->region.n_conds > 0;
    (void)r;
    switch (f->kind) {
    case AUDIT_OVER_ACTING:
    case AUDIT_UNDER_ACTING:
    case AUDIT_BLIND_SPOT:
        row(rows, &n, max, region ? "Decisions in scope (test half)" : "Decisions in scope", "%zu",
            f->n);
        row(rows, &n, max, "Times it took the action", "%s",
            report_fmt_count(f->observed, a, sizeof a));
        row(rows, &n, max, "Expected from the peers", "%s",
            report_fmt_count(f->expected, a, sizeof a));
        if (isfinite(f->expected_policy))
            row(rows, &n, max, "Expected from the policy", "%s",
                report_fmt_count(f->expected_policy, a, sizeof a));
        row(rows, &n, max, "Ratio observed / expected (95% interval)", "%s",
            with_interval(f->effect, f->ci_lo, f->ci_hi, report_fmt_ratio, iv, sizeof iv));
        if (region) {
            row(rows, &n, max, "Inside the region: took / expected", "%s / %s (ratio %s)",
                report_fmt_count(f->inside_observed, a, sizeof a),
                report_fmt_count(f->inside_expected, b, sizeof b),
                report_fmt_ratio(ratio_of(f->inside_observed, f->inside_expected), iv, sizeof iv));
            row(rows, &n, max, "Everywhere else: took / expected", "%s / %s (ratio %s)",
                report_fmt_count(f->outside_observed, a, sizeof a),
                report_fmt_count(f->outside_expected, b, sizeof b),
                report_fmt_ratio(ratio_of(f->outside_observed, f->outside_expected), iv,
                                 sizeof iv));
            if (isfinite(f->discovery_z))
                row(rows, &n, max, "Strength where the region was found", "z = %.1f",
                    f->discovery_z);
        }
        break;
    case AUDIT_MAGNITUDE:
        row(rows, &n, max, "Decisions with a size", "%zu", f->n);
        row(rows, &n, max, "Operator's typical change", "%s", fmt_size(f->observed, a, sizeof a));
        row(rows, &n, max, "Peers' typical change, same states", "%s",
            fmt_size(f->expected, a, sizeof a));
        row(rows, &n, max, "Size ratio (95% interval)", "%s",
            with_interval(f->effect, f->ci_lo, f->ci_hi, report_fmt_ratio, iv, sizeof iv));
        break;
    case AUDIT_POLICY_DISAGREEMENT:
        row(rows, &n, max, "Decisions", "%zu", f->n);
        row(rows, &n, max, "Policy agrees with this operator", "%s",
            report_fmt_share(f->observed, a, sizeof a));
        row(rows, &n, max, "Policy agrees with the rest of the team", "%s",
            report_fmt_share(f->expected, a, sizeof a));
        row(rows, &n, max, "Difference in points (95% interval)", "%s",
            with_interval(f->effect, f->ci_lo, f->ci_hi, fmt_points, iv, sizeof iv));
        break;
    case AUDIT_KIND_COUNT:
        break;
    }
    row(rows, &n, max, "p-value", "%s", report_fmt_p(f->p_value, a, sizeof a));
    row(rows, &n, max, "q-value (after the correction for all tests)", "%s",
        report_fmt_p(f->q_value, a, sizeof a));
    const char *test = audit_test_name(f->test);
    row(rows, &n, max, "Test", "%s", test ? test : "unknown");
    return n;
}

/* ---- parameters ------------------------------------------------------------ */

static void param(struct report_param *rows, size_t *n, size_t max, const char *name,
                  const char *meaning, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void param(struct report_param *rows, size_t *n, size_t max, const char *name,
                  const char *meaning, const char *fmt, ...)
{
    va_list ap;
    if (*n >= max)
        return;
    rows[*n].name = name;
    rows[*n].meaning = meaning;
    va_start(ap, fmt);
    vsnprintf(rows[*n].value, sizeof rows[*n].value, fmt, ap);
    va_end(ap);
    (*n)++;
}

size_t report_param_rows(const struct audit_result *r, struct report_param *rows, size_t max)
{
    const struct audit_params *p = &r->params;
    size_t n = 0;
    param(rows, &n, max, "fdr_q", "share of false alarms tolerated among the findings", "%g",
          p->fdr_q);
    param(rows, &n, max, "min_support", "fewest decisions for an operator or a region to be judged",
          "%" PRId64, p->min_support);
    param(rows, &n, max, "tolerance",
          "rate ratios between 1/tolerance and tolerance are not findings", "%g", p->tolerance);
    param(rows, &n, max, "blind_spot_ratio",
          "a blind spot: the operator acts at most this share of what the peers would", "%g",
          p->blind_spot_ratio);
    param(rows, &n, max, "blind_spot_min_expected",
          "a blind spot: the peers would have acted at least this often", "%g",
          p->blind_spot_min_expected);
    param(rows, &n, max, "rounds", "boosting rounds of each reference model", "%u", p->rounds);
    param(rows, &n, max, "learning_rate", "learning rate of each reference model", "%g",
          p->learning_rate);
    param(rows, &n, max, "max_bins", "value bins per feature in the reference models", "%u",
          p->max_bins);
    param(rows, &n, max, "reference_rows", "training rows of a reference, sampled down to this",
          "%zu", p->reference_rows);
    param(rows, &n, max, "threads", "threads used", "%u", p->threads);
    param(rows, &n, max, "seed", "seed of the half split and of the reference sample", "%" PRIu64,
          p->seed);
    param(rows, &n, max, "passes", "passes run (biased operators removed from the references)",
          "%u", r->passes);
    param(rows, &n, max, "tests", "tests in the multiple-testing correction", "%zu", r->n_tests);
    param(rows, &n, max, "have_policy", "a champion policy was compared with", "%s",
          r->have_policy ? "yes" : "no");
    param(rows, &n, max, "seconds", "time the audit took", "%.1f", r->seconds);
    return n;
}

/* ---- method ------------------------------------------------------------------ */

char *report_method_text(const struct audit_result *r, const struct report_meta *m, size_t i,
                         char *dst, size_t size)
{
    const struct audit_params *p = &r->params;
    switch (i) {
    case 0:
        return util_fmt(
            dst, size,
            "Each operator is compared with the rest of the team, in the same situations. For "
            "every operator a model of the team's decisions is fitted without that operator's "
            "own decisions (leave one operator out). For each state the operator was in, it "
            "gives the chance that the others would have taken each action; adding these "
            "chances up gives how many times the others would have taken each action in exactly "
            "those states: the expected count. Because the comparison is made state by state, an "
            "operator who looks after harder or unusual campaigns is not blamed for the "
            "campaigns.");
    case 1:
        return util_fmt(dst, size,
                        "An operator found biased is left out of every other operator's "
                        "reference in the next pass, and the audit runs again, so that one "
                        "outlier does not shift what looks normal for everyone else. This run "
                        "took %u pass%s (at most %d).",
                        r->passes, r->passes == 1 ? "" : "es", AUDIT_MAX_PASSES);
    case 2:
        return util_fmt(
            dst, size,
            "Besides the whole window, the audit looks for situations where an operator differs: "
            "regions of at most %d conditions, such as \"vertical = retail and hour_of_day >= "
            "20\". Each operator's decisions are split at random into two halves (seed %" PRIu64
            "). Regions are searched on one half and tested on the other only, so a region that "
            "looked different by chance while searching has to show the difference again on "
            "decisions the search never saw. The numbers of a region finding come from that "
            "second half.",
            AUDIT_MAX_CONDS, p->seed);
    case 3:
        return util_fmt(
            dst, size,
            "Many comparisons are made, and some would look surprising by chance alone. All %zu "
            "tests of this run, whether they became findings or not, go through one "
            "Benjamini-Hochberg correction. The q-value of a finding is its p-value after that "
            "correction; a finding needs q at most %g, so that about %g%% of the findings, or "
            "fewer, are expected to be false alarms.",
            r->n_tests, p->fdr_q, 100 * p->fdr_q);
    case 4:
        return util_fmt(
            dst, size,
            "A difference has to matter, not only be real. How often an operator takes an "
            "action is reported only when the ratio of observed to expected is outside the "
            "tolerance band from %.2f to %.2f, and the test asks whether the ratio is beyond the "
            "edge of that band, not merely different from 1, so a tiny difference is not a "
            "finding however much data there is. An operator, and a region, needs at least "
            "%" PRId64 " decisions to be judged.",
            p->tolerance > 0 ? 1 / p->tolerance : NAN, p->tolerance, p->min_support);
    case 5:
        return util_fmt(dst, size,
                        "A blind spot is a set of situations where the peers would have taken "
                        "an action at least %g times, but the operator took it at most %g%% "
                        "as often as that.",
                        p->blind_spot_min_expected, 100 * p->blind_spot_ratio);
    case 6:
        return util_fmt(
            dst, size,
            "For bid and budget changes the sizes are compared too. The operator's typical size "
            "(the geometric mean of the size of the changes) is compared with what the peers' "
            "size model predicts in the same states, relative to how the peers themselves "
            "compare with that model, with a Welch t test on the logarithms of those ratios.");
    case 7:
        if (!r->have_policy)
            return util_fmt(dst, size,
                            "No champion policy was available, so agreement with the policy "
                            "was not measured.");
        if (m && m->policy_version > 0)
            return util_fmt(
                dst, size,
                "The champion policy (version %d) was compared with each operator: how often "
                "its most likely action is what the operator did, against the same share for "
                "the rest of the team (a test of two proportions). The policy copies the "
                "team, so an operator it often disagrees with decides differently from the "
                "team's usual practice.",
                m->policy_version);
        return util_fmt(dst, size,
                        "The champion policy was compared with each operator: how often its "
                        "most likely action is what the operator did, against the same share "
                        "for the rest of the team (a test of two proportions). The policy "
                        "copies the team, so an operator it often disagrees with decides "
                        "differently from the team's usual practice.");
    default:
        break;
    }
    return util_fmt(dst, size, "%s", "");
}

/* ---- funnel limits ------------------------------------------------------------ */

/* The interpolated p-quantile of Poisson(e), 0 < e <= 700. */
static double poisson_quantile(double e, double p)
{
    double pmf = exp(-e), cdf = pmf;
    /* The loop ends well before this bound; it only guards against p = 1. */
    double limit = e + 40 * sqrt(e) + 100;
    for (long i = 0; (double)i < limit; i++) {
        double k = (double)i;
        if (cdf >= p) {
            double q = k - (cdf - p) / pmf;
            return q > 0 ? q : 0;
        }
        pmf *= e / (k + 1);
        cdf += pmf;
    }
    return limit;
}

void report_funnel_limits(double expected, double z, double *lo, double *hi)
{
    *lo = *hi = 0;
    if (!isfinite(expected) || expected <= 0 || !isfinite(z))
        return;
    z = fabs(z);
    if (expected > 700) {
        double s = sqrt(expected), skew = (z * z - 1) / 6;
        *lo = fmax(0, expected - z * s + skew);
        *hi = expected + z * s + skew;
        return;
    }
    double tail = 0.5 * erfc(z / sqrt(2.0));
    *lo = poisson_quantile(expected, tail);
    *hi = poisson_quantile(expected, 1 - tail);
}

/* ---- formats ----------------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned bit;
} format_names[] = {{"html", REPORT_HTML}, {"md", REPORT_MD}, {"json", REPORT_JSON}};

int report_parse_formats(const char *list, unsigned *out, char *err, size_t errlen)
{
    unsigned mask = 0;
    const char *p = list ? list : "";
    const char *end = p + strlen(p);
    const char *q = p;
    while (*q == ' ')
        q++;
    if (*q == '\0') {
        util_fmt(err, errlen, "empty format list (use html, md, json)");
        return -1;
    }
    while (p <= end) {
        const char *comma = strchr(p, ',');
        const char *stop = comma ? comma : end;
        const char *a = p, *b = stop;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        int len = (int)(b - a);
        if (len == 0) {
            util_fmt(err, errlen, "empty format name in \"%s\" (use html, md, json)", list);
            return -1;
        }
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++) {
            if (strlen(format_names[i].name) == (size_t)len &&
                memcmp(format_names[i].name, a, (size_t)len) == 0)
                bit = format_names[i].bit;
        }
        if (!bit) {
            util_fmt(err, errlen, "unknown format \"%.*s\" (use html, md, json)", len, a);
            return -1;
        }
        if (mask & bit) {
            util_fmt(err, errlen, "format \"%.*s\" given twice", len, a);
            return -1;
        }
        mask |= bit;
        if (!comma)
            break;
        p = comma + 1;
    }
    *out = mask;
    return 0;
}

/* ---- writing ---------------------------------------------------------------- */

/* mkdir -p: creates every missing component of dir. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    int rc = -1;
    char *path = util_strdup(dir);
    if (!path) {
        util_fmt(err, errlen, "%s: out of memory", dir);
        return -1;
    }
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        path[--len] = '\0';
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) != 0) {
            if (errno != EEXIST) {
                util_fmt(err, errlen, "%s: %s", path, strerror(errno));
                goto out;
            }
            if (stat(path, &st) != 0) {
                util_fmt(err, errlen, "%s: %s", path, strerror(errno));
                goto out;
            }
            if (!S_ISDIR(st.st_mode)) {
                util_fmt(err, errlen, "%s: not a directory", path);
                goto out;
            }
        }
        path[i] = saved;
    }
    rc = 0;
out:
    free(path);
    return rc;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, data, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes data to dir/name through a temporary file in dir. */
static int write_atomic(const char *dir, const char *name, const char *data, size_t len, char *err,
                        size_t errlen)
{
    char *path = NULL, *tmp = NULL;
    int fd = -1, rc = -1;
    size_t dl = strlen(dir), nl = strlen(name);
    if (!(path = util_malloc(dl + nl + 2)) || !(tmp = util_malloc(dl + nl + 32))) {
        util_fmt(err, errlen, "%s/%s: out of memory", dir, name);
        goto out;
    }
    snprintf(path, dl + nl + 2, "%s/%s", dir, name);
    snprintf(tmp, dl + nl + 32, "%s/.%s.tmp.%ld", dir, name, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        util_fmt(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        util_fmt(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out_unlink;
    }
    int c = close(fd);
    fd = -1;
    if (c != 0) {
        util_fmt(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out_unlink;
    }
    if (rename(tmp, path) != 0) {
        util_fmt(err, errlen, "%s: %s", path, strerror(errno));
        goto out_unlink;
    }
    rc = 0;
    goto out;
out_unlink:
    unlink(tmp);
out:
    if (fd >= 0)
        close(fd);
    free(path);
    free(tmp);
    return rc;
}

static int sync_dir(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        util_fmt(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = fsync(fd);
    if (rc != 0)
        util_fmt(err, errlen, "%s: %s", dir, strerror(errno));
    close(fd);
    return rc == 0 ? 0 : -1;
}

int report_write(const struct audit_result *r, const struct report_meta *m, const char *dir,
                 unsigned formats, char *err, size_t errlen)
{
    struct util_buf buf;
    char *json = NULL;
    int rc = -1;
    util_buf_init(&buf);
    if (formats & ~(unsigned)(REPORT_HTML | REPORT_MD | REPORT_JSON)) {
        util_fmt(err, errlen, "%s: unknown format bits 0x%x", dir, formats);
        goto out;
    }
    if (formats == 0) {
        rc = 0;
        goto out;
    }
    if (make_dirs(dir, err, errlen) != 0)
        goto out;
    if (formats & REPORT_JSON) {
        if (!(json = report_json(r, m))) {
            util_fmt(err, errlen, "%s/audit.json: out of memory", dir);
            goto out;
        }
        /* A text file ends with a newline. */
        size_t len = strlen(json);
        if (util_buf_append(&buf, json, len) != 0 || util_buf_puts(&buf, "\n") != 0) {
            util_fmt(err, errlen, "%s/audit.json: out of memory", dir);
            goto out;
        }
        if (write_atomic(dir, "audit.json", buf.data, buf.len, err, errlen) != 0)
            goto out;
        util_buf_reset(&buf);
    }
    if (formats & REPORT_MD) {
        if (report_markdown(r, m, &buf) != 0) {
            util_fmt(err, errlen, "%s/audit.md: out of memory", dir);
            goto out;
        }
        if (write_atomic(dir, "audit.md", buf.data, buf.len, err, errlen) != 0)
            goto out;
        util_buf_reset(&buf);
    }
    if (formats & REPORT_HTML) {
        if (report_html(r, m, &buf) != 0) {
            util_fmt(err, errlen, "%s/audit.html: out of memory", dir);
            goto out;
        }
        if (write_atomic(dir, "audit.html", buf.data, buf.len, err, errlen) != 0)
            goto out;
    }
    if (sync_dir(dir, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    free(json);
    util_buf_deinit(&buf);
    return rc;
}
