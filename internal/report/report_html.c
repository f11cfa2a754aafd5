/*
 * report_html: the audit as one self-contained HTML page for analysts.
 * Inline CSS and inline SVG only: no script, no web font, no image or
 * style sheet fetched from anywhere, so the file can be mailed, archived
 * and opened offline, and prints as it shows.  Every text from the data
 * is escaped (& < > " ').
 *
 * The page: a header (source, windows, policy, counts), the operators'
 * table, one funnel plot per action class with a rate finding (the
 * overview: where every operator stands), one card per finding (its
 * summary, a sentence saying what it means, its numbers and one chart),
 * and the method with the parameters.
 *
 * Charts, one <svg> each:
 *  - rate findings (over/under acting, blind spot): the observed count
 *    against the peers' (and the policy's) expected count, then the ratio
 *    observed / expected with its 95 % interval on a log axis against the
 *    line 1 and the tolerance band; a region finding adds the ratio inside
 *    the region and everywhere else, on the same axis;
 *  - magnitude: the operator's and the peers' typical size, then the size
 *    ratio with its interval against 1;
 *  - policy disagreement: the share of decisions the policy agrees with,
 *    for the operator (with the interval of the difference placed on it)
 *    and for the rest of the team;
 *  - funnel plot of a class: every audited operator at x = expected count
 *    (log axis), y = observed / expected, with Poisson control limits
 *    around 1 at 95 % and 99.8 % (report_funnel_limits).
 * Values beyond an axis are drawn at its end, and their labels say the
 * true value.
 */
#include "report/report.h"

#include <math.h>
#include <string.h>

/* ---- text ----------------------------------------------------------------- */

static void esc(struct report_sink *s, const char *t)
{
    const char *run = t;
    for (const char *p = t;; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            break;
        }
        if (*p && !rep)
            continue;
        report_sink_printf(s, "%.*s", (int)(p - run), run);
        if (!*p)
            break;
        report_sink_puts(s, rep);
        run = p + 1;
    }
}

static const char *sev_name(enum audit_severity sev)
{
    const char *n = audit_severity_name(sev);
    return n ? n : "info";
}

static const char *sev_color(enum audit_severity sev)
{
    switch (sev) {
    case AUDIT_SEVERITY_HIGH:
        return "#c62828";
    case AUDIT_SEVERITY_MEDIUM:
        return "#e8710a";
    case AUDIT_SEVERITY_LOW:
        return "#e6b800";
    case AUDIT_SEVERITY_INFO:
    case AUDIT_SEVERITY_COUNT:
        break;
    }
    return "#8a8f98";
}

/* The operator's colour in charts: its severity's, but blue for info, whose
 * grey would read as the peers'. */
static const char *chart_color(enum audit_severity sev)
{
    return sev == AUDIT_SEVERITY_INFO ? "#4a6fa5" : sev_color(sev);
}

static void badge(struct report_sink *s, enum audit_severity sev, size_t n)
{
    report_sink_printf(s, "<span class=\"b %s\" title=\"%s\">%zu</span>",
                       n ? sev_name(sev) : "zero", sev_name(sev), n);
}

static size_t count_severity(const struct audit_result *r, enum audit_severity sev)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_findings; i++)
        n += r->findings[i].severity == sev;
    return n;
}

static const char css[] =
    "*{box-sizing:border-box}"
    "body{margin:0;background:#fff;color:#1f2430;"
    "font:14px/1.5 \"DejaVu Sans\",\"Liberation Sans\",Arial,Helvetica,sans-serif}"
    "main{max-width:1140px;margin:0 auto;padding:24px 28px 40px}"
    "h1{font-size:26px;margin:0 0 4px}"
    "h2{font-size:19px;margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid #e3e6ea}"
    "h3{font-size:15px;margin:0 0 6px}"
    "p{margin:6px 0}"
    ".lede{color:#4a5160;margin:0 0 14px}"
    ".stats{display:flex;gap:14px;flex-wrap:wrap;margin:10px 0 14px}"
    ".stat{border:1px solid #e3e6ea;border-radius:6px;padding:8px 14px;min-width:150px}"
    ".stat .v{display:block;font-size:22px;font-weight:700}"
    ".stat .l{color:#5b6270;font-size:12px}"
    "dl.facts{display:grid;grid-template-columns:170px 1fr;gap:3px 12px;margin:0}"
    "dl.facts dt{color:#5b6270}dl.facts dd{margin:0}"
    "table{border-collapse:collapse}"
    "th,td{padding:5px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}"
    "th{background:#f5f6f8;font-weight:600;font-size:13px}"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}"
    "table.ops{width:100%}"
    ".b{display:inline-block;min-width:24px;padding:0 6px;margin-right:3px;border-radius:10px;"
    "text-align:center;font-size:12px;font-weight:700;line-height:19px;color:#fff}"
    ".b.high{background:#c62828}.b.medium{background:#e8710a}"
    ".b.low{background:#f5c518;color:#3b3000}.b.info{background:#8a8f98}"
    ".b.zero{background:#fff;color:#a0a6b0;border:1px solid #d5d9df;line-height:17px}"
    ".muted{color:#7a8190}"
    "code{font-family:\"DejaVu Sans Mono\",monospace;font-size:13px;background:#f3f4f6;"
    "padding:0 3px;border-radius:3px}"
    ".finding{display:flex;flex-wrap:wrap;gap:20px;border:1px solid #e3e6ea;"
    "border-left:6px solid #8a8f98;border-radius:6px;padding:14px 16px;margin:14px 0;"
    "break-inside:avoid;page-break-inside:avoid}"
    ".finding.high{border-left-color:#c62828}.finding.medium{border-left-color:#e8710a}"
    ".finding.low{border-left-color:#f5c518}"
    ".ftext{flex:1 1 420px;min-width:0}"
    ".summary{font-weight:700;margin:8px 0 4px}"
    ".where{color:#4a5160}"
    "table.nums{margin-top:8px;font-size:13px}"
    "table.nums td{padding:3px 8px}"
    "figure{margin:0}"
    "figure.chart{flex:0 0 560px}"
    "figcaption{color:#5b6270;font-size:12px;margin-top:4px}"
    ".funnels{display:grid;grid-template-columns:repeat(auto-fill,minmax(530px,1fr));"
    "gap:8px 24px;margin-top:12px}"
    "figure.funnel{margin:0 0 12px;break-inside:avoid;page-break-inside:avoid}"
    "svg{display:block;font:12px \"DejaVu Sans\",\"Liberation Sans\",Arial,sans-serif}"
    "table.params td:first-child{white-space:nowrap}"
    "footer{margin-top:36px;color:#7a8190;font-size:12px}"
    "@media print{main{max-width:none;padding:0}body{font-size:11pt}"
    "h2{break-after:avoid;page-break-after:avoid}}";

/* ---- header and tables ---------------------------------------------------- */

static void header(struct report_sink *s, const struct audit_result *r, const struct report_meta *m)
{
    char a[REPORT_NUM_MAX], b[REPORT_NUM_MAX], d[REPORT_NUM_MAX];
    size_t audited = 0;
    for (size_t i = 0; i < r->n_operators; i++)
        audited += r->operators[i].audited;

    report_sink_puts(s, "<header>\n<h1>Operator audit</h1>\n<p class=\"lede\">");
    report_sink_printf(s, "%zu decisions by %zu operators", r->rows, r->n_operators);
    if (r->from_us != INT64_MIN && r->to_us != INT64_MIN)
        report_sink_printf(s, ", %s to %s (%s)", report_fmt_time(r->from_us, a, sizeof a),
                           report_fmt_time(r->to_us, b, sizeof b),
                           report_fmt_duration(r->to_us - r->from_us, d, sizeof d));
    report_sink_puts(s, ". Each operator is compared with the rest of the team in the same "
                        "situations.</p>\n");

    report_sink_puts(s, "<div class=\"stats\">");
    report_sink_printf(s,
                       "<div class=\"stat\"><span class=\"v\">%zu</span>"
                       "<span class=\"l\">decisions</span></div>",
                       r->rows);
    report_sink_printf(s,
                       "<div class=\"stat\"><span class=\"v\">%zu</span>"
                       "<span class=\"l\">operators, %zu audited</span></div>",
                       r->n_operators, audited);
    report_sink_printf(s,
                       "<div class=\"stat\"><span class=\"v\">%zu</span>"
                       "<span class=\"l\">findings</span></div>",
                       r->n_findings);
    report_sink_puts(s, "<div class=\"stat\"><span class=\"v\">");
    for (int sev = AUDIT_SEVERITY_HIGH; sev >= AUDIT_SEVERITY_INFO; sev--)
        badge(s, (enum audit_severity)sev, count_severity(r, (enum audit_severity)sev));
    report_sink_puts(s, "</span><span class=\"l\">high, medium, low, info</span></div>");
    report_sink_puts(s, "</div>\n<dl class=\"facts\">\n<dt>Source</dt><dd>");
    if (m->csv_path) {
        report_sink_puts(s, "CSV file <code>");
        esc(s, m->csv_path);
        report_sink_puts(s, "</code>");
    } else {
        esc(s, m->source ? m->source : "database");
    }
    if (m->run_id > 0)
        report_sink_printf(s, ", audit run %lld", (long long)m->run_id);
    report_sink_puts(s, "</dd>\n<dt>Requested window</dt><dd>");
    report_sink_printf(s, "%s to %s</dd>\n", report_fmt_time(m->window_from_us, a, sizeof a),
                       report_fmt_time(m->window_to_us, b, sizeof b));
    report_sink_printf(s, "<dt>Decisions</dt><dd>%s to %s</dd>\n",
                       report_fmt_time(r->from_us, a, sizeof a),
                       report_fmt_time(r->to_us, b, sizeof b));
    if (m->policy_version > 0)
        report_sink_printf(s, "<dt>Policy</dt><dd>version %d (the champion)</dd>\n",
                           m->policy_version);
    else
        report_sink_printf(s, "<dt>Policy</dt><dd>%s</dd>\n",
                           r->have_policy ? "compared" : "none compared");
    report_sink_printf(s, "<dt>Generated</dt><dd>%s</dd>\n</dl>\n</header>\n",
                       report_fmt_time(m->generated_us, a, sizeof a));
}

static void operators(struct report_sink *s, const struct audit_result *r)
{
    char a[REPORT_NUM_MAX];
    report_sink_puts(s,
                     "<section>\n<h2>Operators</h2>\n<table class=\"ops\">\n<thead><tr>"
                     "<th>Operator</th><th class=\"n\">Decisions</th><th class=\"n\">Actions</th>"
                     "<th class=\"n\">Outside the team's experience</th>"
                     "<th>Audited</th><th>Findings (high, medium, low)</th>"
                     "<th class=\"n\">Policy agreement</th><th class=\"n\">Acceptance</th>"
                     "</tr></thead>\n<tbody>\n");
    for (size_t i = 0; i < r->n_operators; i++) {
        const struct audit_operator *op = &r->operators[i];
        report_sink_puts(s, "<tr><td><code>");
        esc(s, op->operator_id);
        report_sink_printf(s,
                           "</code></td><td class=\"n\">%zu</td><td class=\"n\">%zu</td>"
                           "<td class=\"n\">%zu</td><td>",
                           op->decisions, op->actions, op->outside_support);
        if (!op->audited)
            report_sink_puts(s, "<span class=\"muted\">no: too few decisions, or not asked "
                                "for</span>");
        else if (!op->in_reference)
            report_sink_puts(s, "yes <span class=\"muted\">(left out of the references)</span>");
        else
            report_sink_puts(s, "yes");
        report_sink_puts(s, "</td><td>");
        badge(s, AUDIT_SEVERITY_HIGH, op->findings_by_severity[AUDIT_SEVERITY_HIGH]);
        badge(s, AUDIT_SEVERITY_MEDIUM, op->findings_by_severity[AUDIT_SEVERITY_MEDIUM]);
        badge(s, AUDIT_SEVERITY_LOW, op->findings_by_severity[AUDIT_SEVERITY_LOW]);
        if (op->findings_by_severity[AUDIT_SEVERITY_INFO])
            badge(s, AUDIT_SEVERITY_INFO, op->findings_by_severity[AUDIT_SEVERITY_INFO]);
        report_sink_printf(s, "</td><td class=\"n\">%s</td>",
                           report_fmt_share(op->policy_agreement, a, sizeof a));
        if (op->verdicts > 0 && isfinite(op->acceptance_rate))
            report_sink_printf(s,
                               "<td class=\"n\">%s <span class=\"muted\">of %zu</span></td></tr>\n",
                               report_fmt_share(op->acceptance_rate, a, sizeof a), op->verdicts);
        else
            report_sink_puts(s, "<td class=\"n muted\">n/a</td></tr>\n");
    }
    report_sink_puts(s, "</tbody>\n</table>\n<p class=\"muted\">Policy agreement: how often the "
                        "policy's most likely action is what the operator did. Acceptance: the "
                        "share of the policy's recommendations the operator accepted, of the "
                        "verdicts given. Outside the team's experience: decisions in states the "
                        "rest of the team never showed (some feature value they never met), "
                        "which no test uses.</p>\n</section>\n");
}

/* ---- chart primitives ---------------------------------------------------- */

#define CHART_W  560
#define LABEL_X  144 /* right edge of the row labels */
#define PLOT_X0  152
#define PLOT_X1  410
#define VALUE_X  420 /* left edge of the value column of ratio rows */
#define ROW_H    22
#define BAR_H    14
#define TITLE_H  20
#define C_PEERS  "#7b8794"
#define C_POLICY "#b9c3ce"
#define C_AXIS   "#6b7280"
#define C_GRID   "#e5e7eb"
#define C_BAND   "#e7efe7"

struct logaxis {
    double lo, hi; /* domain, lo > 0 */
    double x0, x1; /* range in pixels */
};

static double log_x(const struct logaxis *ax, double v)
{
    if (!(v > ax->lo))
        v = ax->lo;
    if (v > ax->hi)
        v = ax->hi;
    return ax->x0 + (log(v) - log(ax->lo)) / (log(ax->hi) - log(ax->lo)) * (ax->x1 - ax->x0);
}

/* Widens [*lo, *hi] to take v (ignored unless finite and positive). */
static void take(double *lo, double *hi, double v)
{
    if (!isfinite(v) || v <= 0)
        return;
    if (v < *lo)
        *lo = v;
    if (v > *hi)
        *hi = v;
}

/* A ratio axis around 1: at least 0.5..2, at most 0.01..100, with a margin. */
static void ratio_axis(struct logaxis *ax, const double *vals, size_t n)
{
    double lo = 0.5, hi = 2;
    for (size_t i = 0; i < n; i++)
        take(&lo, &hi, vals[i]);
    ax->lo = fmax(lo / 1.25, 0.01);
    ax->hi = fmin(hi * 1.25, 100);
    ax->x0 = PLOT_X0;
    ax->x1 = PLOT_X1;
}

static void text_at(struct report_sink *s, double x, double y, const char *anchor,
                    const char *style, const char *t)
{
    report_sink_printf(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s%s>", x, y, anchor,
                       style ? " " : "", style ? style : "");
    esc(s, t);
    report_sink_puts(s, "</text>");
}

static void block_title(struct report_sink *s, double y, const char *t)
{
    text_at(s, 0, y + 14, "start", "font-weight=\"700\" fill=\"#1f2430\"", t);
}

/* Ticks 1, 2, 5 per decade of a log axis, from y_top down to the axis at y. */
static void log_ticks(struct report_sink *s, const struct logaxis *ax, double y_top, double y)
{
    report_sink_printf(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>",
                       ax->x0, y, ax->x1, y, C_AXIS);
    static const double mant[] = {1, 2, 5};
    int d0 = (int)floor(log10(ax->lo)), d1 = (int)ceil(log10(ax->hi));
    for (int d = d0; d <= d1; d++) {
        for (size_t i = 0; i < 3; i++) {
            double v = mant[i] * pow(10, d);
            if (v < ax->lo * 0.999 || v > ax->hi * 1.001)
                continue;
            double x = log_x(ax, v);
            char lab[REPORT_NUM_MAX];
            report_sink_printf(
                s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>", x,
                y_top, x, y, C_GRID);
            report_sink_printf(
                s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>", x, y, x,
                y + 4, C_AXIS);
            util_fmt(lab, sizeof lab, "%g", v);
            text_at(s, x, y + 16, "middle", "fill=\"#4b5563\" font-size=\"11\"", lab);
        }
    }
}

/* A row label on the left of a row starting at y. */
static void row_label(struct report_sink *s, double y, const char *t)
{
    text_at(s, LABEL_X, y + 15, "end", "fill=\"#374151\"", t);
}

/*
 * Horizontal bars on a linear axis from 0 (at PLOT_X0) to vmax (at
 * PLOT_X1), one row each, with the value text after the bar.  A bar may
 * carry an interval [lo, hi] (NaN: none).
 */
struct bar {
    const char *label;
    double value, lo, hi;
    const char *fill;
    char text[2 * REPORT_NUM_MAX];
};

static double lin_x(double v, double vmax)
{
    if (!(v > 0))
        v = 0;
    if (v > vmax)
        v = vmax;
    return PLOT_X0 + v / vmax * (PLOT_X1 - PLOT_X0);
}

static double bars(struct report_sink *s, double y, const struct bar *b, size_t n, double vmax)
{
    if (!(vmax > 0))
        vmax = 1;
    report_sink_printf(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\"/>",
                       PLOT_X0, y + 2, PLOT_X0, y + (double)n * ROW_H, C_AXIS);
    for (size_t i = 0; i < n; i++, y += ROW_H) {
        double x = lin_x(b[i].value, vmax), end = x;
        row_label(s, y, b[i].label);
        report_sink_printf(s,
                           "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>",
                           PLOT_X0, y + 4, x - PLOT_X0, BAR_H, b[i].fill);
        if (isfinite(b[i].lo) && isfinite(b[i].hi)) {
            double xl = lin_x(b[i].lo, vmax), xh = lin_x(b[i].hi, vmax), yc = y + 4 + BAR_H / 2.0;
            report_sink_printf(s,
                               "<path d=\"M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f\" "
                               "stroke=\"#1f2430\" stroke-width=\"1.5\" fill=\"none\"/>",
                               xl, yc, xh, xl, yc - 5, yc + 5, xh, yc - 5, yc + 5);
            end = fmax(end, xh);
        }
        text_at(s, end + 6, y + 15, "start", "fill=\"#1f2430\"", b[i].text);
    }
    return y;
}

/* One row of a ratio block: a point with its interval, or a bar from 1. */
static void ratio_point(struct report_sink *s, const struct logaxis *ax, double y, double v,
                        double lo, double hi, const char *color, const char *label)
{
    double yc = y + 4 + BAR_H / 2.0, x = log_x(ax, v);
    if (isfinite(lo) && isfinite(hi)) {
        double xl = log_x(ax, lo), xh = log_x(ax, hi);
        report_sink_printf(s,
                           "<path d=\"M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f\" "
                           "stroke=\"#1f2430\" stroke-width=\"2\" fill=\"none\"/>",
                           xl, yc, xh, xl, yc - 6, yc + 6, xh, yc - 6, yc + 6);
    }
    if (isfinite(v))
        report_sink_printf(s,
                           "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"6\" fill=\"%s\" stroke=\"#fff\" "
                           "stroke-width=\"1.5\"/>",
                           x, yc, color);
    text_at(s, VALUE_X, y + 15, "start", "fill=\"#1f2430\"", label);
}

static void ratio_bar(struct report_sink *s, const struct logaxis *ax, double y, double v,
                      const char *color, const char *label)
{
    double x1 = log_x(ax, 1), x = isfinite(v) ? log_x(ax, v) : x1;
    report_sink_printf(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>",
                       fmin(x, x1), y + 4, fabs(x - x1), BAR_H, color);
    text_at(s, VALUE_X, y + 15, "start", "fill=\"#1f2430\"", label);
}

static void svg_open(struct report_sink *s, int w, double h, const char *label)
{
    report_sink_printf(s,
                       "<svg width=\"%d\" height=\"%.0f\" viewBox=\"0 0 %d %.0f\" role=\"img\" "
                       "aria-label=\"",
                       w, ceil(h), w, ceil(h));
    esc(s, label);
    report_sink_puts(s, "\">");
}

/* ---- finding charts ------------------------------------------------------ */

static double ratio_of(double o, double e)
{
    return isfinite(o) && isfinite(e) && e > 0 ? o / e : NAN;
}

static void interval_text(char *dst, size_t size, double v, double lo, double hi)
{
    char a[REPORT_NUM_MAX], b[REPORT_NUM_MAX], c[REPORT_NUM_MAX];
    if (isfinite(lo) && isfinite(hi))
        util_fmt(dst, size, "%s (%s to %s)", report_fmt_ratio(v, a, sizeof a),
                 report_fmt_ratio(lo, b, sizeof b), report_fmt_ratio(hi, c, sizeof c));
    else
        util_fmt(dst, size, "%s", report_fmt_ratio(v, a, sizeof a));
}

static void rate_chart(struct report_sink *s, const struct audit_result *r,
                       const struct audit_finding *f)
{
    const char *color = chart_color(f->severity);
    bool region = f->region.n_conds > 0;
    double tol = r->params.tolerance;
    double in = region ? ratio_of(f->inside_observed, f->inside_expected) : NAN;
    double out = region ? ratio_of(f->outside_observed, f->outside_expected) : NAN;
    struct bar b[3];
    size_t nb = 0;
    char title[2 * AUDIT_NAME_MAX + 64], lab[2 * REPORT_NUM_MAX];

    b[nb] = (struct bar){"This operator", f->observed, NAN, NAN, color, ""};
    report_fmt_count(f->observed, b[nb++].text, sizeof b[0].text);
    b[nb] = (struct bar){"Peers, same states", f->expected, NAN, NAN, C_PEERS, ""};
    report_fmt_count(f->expected, b[nb].text, sizeof b[0].text);
    util_fmt(b[nb].text + strlen(b[nb].text), sizeof b[0].text - strlen(b[nb].text), " expected");
    nb++;
    if (isfinite(f->expected_policy)) {
        b[nb] = (struct bar){"Policy, same states", f->expected_policy, NAN, NAN, C_POLICY, ""};
        report_fmt_count(f->expected_policy, b[nb].text, sizeof b[0].text);
        util_fmt(b[nb].text + strlen(b[nb].text), sizeof b[0].text - strlen(b[nb].text),
                 " expected");
        nb++;
    }
    double vmax = 0;
    for (size_t i = 0; i < nb; i++)
        vmax = isfinite(b[i].value) ? fmax(vmax, b[i].value) : vmax;

    double vals[] = {f->effect, f->ci_lo, f->ci_hi, tol, tol > 0 ? 1 / tol : NAN, in, out};
    struct logaxis ax;
    ratio_axis(&ax, vals, sizeof vals / sizeof vals[0]);

    size_t ratio_rows = region ? 3 : 1;
    double h = TITLE_H + nb * ROW_H + 14 + TITLE_H + ratio_rows * ROW_H + 26;
    util_fmt(title, sizeof title, "How often %s was chosen", report_class_name(r, f->action));
    svg_open(s, CHART_W, h, title);

    double y = 0;
    block_title(s, y, title);
    y = bars(s, y + TITLE_H, b, nb, vmax * 1.05) + 14;

    block_title(s, y, "Observed \xc3\xb7 expected, 95% interval (log scale)");
    y += TITLE_H;
    double y_rows = y, y_axis = y + (double)ratio_rows * ROW_H + 4;
    if (tol > 1)
        report_sink_printf(
            s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>",
            log_x(&ax, 1 / tol), y_rows, log_x(&ax, tol) - log_x(&ax, 1 / tol), y_axis - y_rows,
            C_BAND);
    log_ticks(s, &ax, y_rows, y_axis);
    report_sink_printf(s,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f2430\" "
                       "stroke-width=\"1.5\"/>",
                       log_x(&ax, 1), y_rows - 2, log_x(&ax, 1), y_axis);
    row_label(s, y, region ? "Ratio (test half)" : "Ratio");
    interval_text(lab, sizeof lab, f->effect, f->ci_lo, f->ci_hi);
    ratio_point(s, &ax, y, f->effect, f->ci_lo, f->ci_hi, color, lab);
    y += ROW_H;
    if (region) {
        row_label(s, y, "Inside the region");
        ratio_bar(s, &ax, y, in, color, report_fmt_ratio(in, lab, sizeof lab));
        y += ROW_H;
        row_label(s, y, "Everywhere else");
        ratio_bar(s, &ax, y, out, C_PEERS, report_fmt_ratio(out, lab, sizeof lab));
    }
    report_sink_puts(s, "</svg>\n");
}

static void magnitude_chart(struct report_sink *s, const struct audit_result *r,
                            const struct audit_finding *f)
{
    const char *color = chart_color(f->severity);
    struct bar b[2];
    char title[2 * AUDIT_NAME_MAX + 64], lab[2 * REPORT_NUM_MAX];

    b[0] = (struct bar){"This operator", f->observed, NAN, NAN, color, ""};
    b[1] = (struct bar){"Peers, same states", f->expected, NAN, NAN, C_PEERS, ""};
    for (size_t i = 0; i < 2; i++) {
        if (isfinite(b[i].value))
            util_fmt(b[i].text, sizeof b[i].text, "%.1f%%", b[i].value);
        else
            util_fmt(b[i].text, sizeof b[i].text, "n/a");
    }
    double vmax =
        fmax(isfinite(f->observed) ? f->observed : 0, isfinite(f->expected) ? f->expected : 0);
    double vals[] = {f->effect, f->ci_lo, f->ci_hi};
    struct logaxis ax;
    ratio_axis(&ax, vals, 3);

    double h = TITLE_H + 2 * ROW_H + 14 + TITLE_H + ROW_H + 26;
    util_fmt(title, sizeof title, "Typical size of a %s change", report_class_name(r, f->action));
    svg_open(s, CHART_W, h, title);
    double y = 0;
    block_title(s, y, title);
    y = bars(s, y + TITLE_H, b, 2, vmax * 1.05) + 14;
    block_title(s, y, "Operator's size \xc3\xb7 peers' size, 95% interval (log scale)");
    y += TITLE_H;
    log_ticks(s, &ax, y, y + ROW_H + 4);
    report_sink_printf(s,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f2430\" "
                       "stroke-width=\"1.5\"/>",
                       log_x(&ax, 1), y - 2, log_x(&ax, 1), y + ROW_H + 4);
    row_label(s, y, "Size ratio");
    interval_text(lab, sizeof lab, f->effect, f->ci_lo, f->ci_hi);
    ratio_point(s, &ax, y, f->effect, f->ci_lo, f->ci_hi, color, lab);
    report_sink_puts(s, "</svg>\n");
}

static void policy_chart(struct report_sink *s, const struct audit_finding *f)
{
    struct bar b[2];
    char a[REPORT_NUM_MAX];
    b[0] = (struct bar){"This operator", f->observed, NAN, NAN, chart_color(f->severity), ""};
    if (isfinite(f->expected) && isfinite(f->ci_lo) && isfinite(f->ci_hi)) {
        b[0].lo = f->expected + f->ci_lo;
        b[0].hi = f->expected + f->ci_hi;
    }
    b[1] = (struct bar){"Rest of the team", f->expected, NAN, NAN, C_PEERS, ""};
    report_fmt_share(f->observed, b[0].text, sizeof b[0].text);
    report_fmt_share(f->expected, b[1].text, sizeof b[1].text);

    double h = TITLE_H + 2 * ROW_H + 30;
    const char *title = "Share of decisions the policy agrees with";
    svg_open(s, CHART_W, h, title);
    block_title(s, 0, title);
    double y = TITLE_H, y_axis = y + 2 * ROW_H + 4;
    report_sink_printf(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\"/>",
                       PLOT_X0, y_axis, PLOT_X1, y_axis, C_AXIS);
    for (int t = 0; t <= 100; t += 25) {
        double x = lin_x(t / 100.0, 1);
        report_sink_printf(s,
                           "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>",
                           x, y, x, y_axis, C_GRID);
        text_at(s, x, y_axis + 16, "middle", "fill=\"#4b5563\" font-size=\"11\"",
                util_fmt(a, sizeof a, "%d%%", t));
    }
    bars(s, y, b, 2, 1);
    report_sink_puts(s, "</svg>\n");
}

static void finding_card(struct report_sink *s, const struct audit_result *r,
                         const struct audit_finding *f, size_t no)
{
    char region[AUDIT_MAX_CONDS * (2 * AUDIT_NAME_MAX + 48)], meaning[REPORT_PARA_MAX];
    char a[REPORT_NUM_MAX], b[REPORT_NUM_MAX];
    struct report_row rows[REPORT_ROWS_MAX];
    const char *sev = sev_name(f->severity);

    report_sink_printf(s,
                       "<article class=\"finding %s\">\n<div class=\"ftext\">\n<h3>"
                       "<span class=\"b %s\">%s</span> %zu. %s: ",
                       sev, sev, sev, no, report_kind_title(f->kind));
    report_sink_puts(s, "<code>");
    esc(s, f->operator_id[0] ? f->operator_id : "the team");
    report_sink_puts(s, "</code>");
    if (f->action >= 0) {
        report_sink_puts(s, ", <code>");
        esc(s, report_class_name(r, f->action));
        report_sink_puts(s, "</code>");
    }
    report_sink_puts(s, "</h3>\n");
    audit_region_text(&f->region, region, sizeof region);
    report_sink_puts(s, "<p class=\"where\">");
    if (region[0]) {
        report_sink_puts(s, "Where <code>");
        esc(s, region);
        report_sink_puts(s, "</code>");
    } else {
        report_sink_puts(s, "In every situation the operator handled");
    }
    report_sink_puts(s, "</p>\n<p class=\"summary\">");
    esc(s, f->summary);
    report_sink_puts(s, "</p>\n<p>");
    esc(s, report_finding_meaning(r, f, meaning, sizeof meaning));
    report_sink_puts(s, "</p>\n<table class=\"nums\">\n");
    size_t n = report_finding_rows(r, f, rows, REPORT_ROWS_MAX);
    for (size_t i = 0; i < n; i++) {
        report_sink_puts(s, "<tr><td>");
        esc(s, rows[i].label);
        report_sink_puts(s, "</td><td class=\"n\">");
        esc(s, rows[i].value);
        report_sink_puts(s, "</td></tr>\n");
    }
    report_sink_puts(s, "</table>\n</div>\n");

    if (report_is_rate_kind(f->kind)) {
        report_sink_puts(s, "<figure class=\"chart\">");
        rate_chart(s, r, f);
        report_sink_printf(
            s,
            "<figcaption>The dot is the ratio of what the operator did to what the peers "
            "would have done; the whisker, its 95%% interval. The line marks no difference; the "
            "shaded band (%s to %s) is the tolerance, within which nothing is reported.%s"
            "</figcaption></figure>\n",
            report_fmt_ratio(r->params.tolerance > 0 ? 1 / r->params.tolerance : NAN, a, sizeof a),
            report_fmt_ratio(r->params.tolerance, b, sizeof b),
            f->region.n_conds ? " The two bars compare the region with everywhere else, on "
                                "the same half of the data."
                              : "");
    } else if (f->kind == AUDIT_MAGNITUDE) {
        report_sink_puts(s, "<figure class=\"chart\">");
        magnitude_chart(s, r, f);
        report_sink_puts(s,
                         "<figcaption>Typical size: the geometric mean of the size of the "
                         "changes, in percent. The line marks sizes like the peers'.</figcaption>"
                         "</figure>\n");
    } else if (f->kind == AUDIT_POLICY_DISAGREEMENT) {
        report_sink_puts(s, "<figure class=\"chart\">");
        policy_chart(s, f);
        if (isfinite(f->ci_lo) && isfinite(f->ci_hi))
            report_sink_puts(s, "<figcaption>The whisker on the operator's bar is the 95% "
                                "interval of the difference from the team, placed on the "
                                "team's share.</figcaption>");
        report_sink_puts(s, "</figure>\n");
    }
    report_sink_puts(s, "</article>\n");
}

/* ---- funnel plots ------------------------------------------------------- */

#define FUNNEL_W 530
#define FUNNEL_H 330
#define F_LEFT   56
#define F_RIGHT  16
#define F_TOP    14
#define F_BOTTOM 52
#define Z_95     1.959963985
#define Z_998    3.090232306

/* The most severe rate finding about (operator, class); NULL if none. */
static const struct audit_finding *rate_finding(const struct audit_result *r, const char *op, int k)
{
    const struct audit_finding *best = NULL;
    for (size_t i = 0; i < r->n_findings; i++) {
        const struct audit_finding *f = &r->findings[i];
        if (report_is_rate_kind(f->kind) && f->action == k && strcmp(f->operator_id, op) == 0 &&
            (!best || f->severity > best->severity))
            best = f;
    }
    return best;
}

struct funnel_axes {
    struct logaxis x;
    double ymax, y0, y1; /* y1 (top) < y0 (bottom) in pixels */
};

static double fy(const struct funnel_axes *a, double v)
{
    if (v < 0)
        v = 0;
    return a->y0 - v / a->ymax * (a->y0 - a->y1);
}

static void funnel_limit_path(struct report_sink *s, const struct funnel_axes *a, double z,
                              bool upper, const char *style)
{
    report_sink_puts(s, "<polyline fill=\"none\" ");
    report_sink_puts(s, style);
    report_sink_puts(s, " points=\"");
    for (int i = 0; i <= 120; i++) {
        double e = exp(log(a->x.lo) + (log(a->x.hi) - log(a->x.lo)) * i / 120.0), lo, hi;
        report_funnel_limits(e, z, &lo, &hi);
        report_sink_printf(s, "%s%.1f,%.1f", i ? " " : "", log_x(&a->x, e),
                           fy(a, (upper ? hi : lo) / e));
    }
    report_sink_puts(s, "\"/>");
}

static void funnel(struct report_sink *s, const struct audit_result *r, int k)
{
    const char *cls = report_class_name(r, k);
    double emin = INFINITY, emax = 0, rmax = 0;
    size_t npts = 0, flagged = 0;
    char a[REPORT_NUM_MAX];

    for (size_t i = 0; i < r->n_operators; i++) {
        const struct audit_operator *op = &r->operators[i];
        if (!op->audited || !op->cells)
            continue;
        double e = op->cells[k].expected, o = op->cells[k].observed;
        if (!isfinite(e) || e <= 0 || !isfinite(o))
            continue;
        emin = fmin(emin, e);
        emax = fmax(emax, e);
        rmax = fmax(rmax, o / e);
        npts++;
        flagged += rate_finding(r, op->operator_id, k) != NULL;
    }
    if (npts == 0) {
        emin = 1;
        emax = 100;
    }
    struct funnel_axes ax;
    ax.x.lo = emin / 1.6;
    ax.x.hi = emax * 1.6;
    if (ax.x.hi / ax.x.lo < 10) {
        double mid = sqrt(ax.x.lo * ax.x.hi);
        ax.x.lo = mid / sqrt(10);
        ax.x.hi = mid * sqrt(10);
    }
    ax.x.x0 = F_LEFT;
    ax.x.x1 = FUNNEL_W - F_RIGHT;
    ax.ymax = fmin(fmax(2, rmax * 1.15), 5);
    ax.y0 = FUNNEL_H - F_BOTTOM;
    ax.y1 = F_TOP;

    char label[AUDIT_NAME_MAX + 32];
    util_fmt(label, sizeof label, "Funnel plot of %s", cls);
    report_sink_puts(s, "<figure class=\"funnel\"><h3>");
    esc(s, cls);
    report_sink_puts(s, "</h3>");
    svg_open(s, FUNNEL_W, FUNNEL_H, label);
    report_sink_printf(s,
                       "<defs><clipPath id=\"funnel-clip-%d\"><rect x=\"%.1f\" y=\"%.1f\" "
                       "width=\"%.1f\" height=\"%.1f\"/></clipPath></defs>",
                       k, ax.x.x0, ax.y1, ax.x.x1 - ax.x.x0, ax.y0 - ax.y1);

    /* grid and y axis */
    double step = ax.ymax <= 3 ? 0.5 : 1;
    for (int i = 0; (double)i * step <= ax.ymax + 1e-9; i++) {
        double v = (double)i * step;
        report_sink_printf(s,
                           "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>",
                           ax.x.x0, fy(&ax, v), ax.x.x1, fy(&ax, v), C_GRID);
        text_at(s, ax.x.x0 - 6, fy(&ax, v) + 4, "end", "fill=\"#4b5563\" font-size=\"11\"",
                util_fmt(a, sizeof a, "%g", v));
    }
    log_ticks(s, &ax.x, ax.y1, ax.y0);
    text_at(s, (ax.x.x0 + ax.x.x1) / 2, FUNNEL_H - 8, "middle", "fill=\"#1f2430\"",
            "Expected decisions (log scale)");
    report_sink_printf(s,
                       "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\" "
                       "fill=\"#1f2430\">Observed \xc3\xb7 expected</text>",
                       (ax.y0 + ax.y1) / 2);

    /* limits: the 95 % band shaded, 95 % dashed, 99.8 % dotted */
    report_sink_printf(s, "<g clip-path=\"url(#funnel-clip-%d)\">", k);
    report_sink_puts(s, "<polygon fill=\"#eef2f7\" points=\"");
    for (int pass = 0; pass < 2; pass++) {
        for (int j = 0; j <= 120; j++) {
            int i = pass == 0 ? j : 120 - j;
            double e = exp(log(ax.x.lo) + (log(ax.x.hi) - log(ax.x.lo)) * i / 120.0), lo, hi;
            report_funnel_limits(e, Z_95, &lo, &hi);
            report_sink_printf(s, "%s%.1f,%.1f", pass || j ? " " : "", log_x(&ax.x, e),
                               fy(&ax, (pass == 0 ? hi : lo) / e));
        }
    }
    report_sink_puts(s, "\"/>");
    funnel_limit_path(s, &ax, Z_95, true, "stroke=\"#6b7785\" stroke-dasharray=\"6 4\"");
    funnel_limit_path(s, &ax, Z_95, false, "stroke=\"#6b7785\" stroke-dasharray=\"6 4\"");
    funnel_limit_path(s, &ax, Z_998, true, "stroke=\"#6b7785\" stroke-dasharray=\"2 3\"");
    funnel_limit_path(s, &ax, Z_998, false, "stroke=\"#6b7785\" stroke-dasharray=\"2 3\"");
    report_sink_puts(s, "</g>");
    report_sink_printf(s,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f2430\" "
                       "stroke-width=\"1.5\"/>",
                       ax.x.x0, fy(&ax, 1), ax.x.x1, fy(&ax, 1));
    report_sink_printf(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>",
                       ax.x.x0, ax.y1, ax.x.x0, ax.y0, C_AXIS);

    /* operators: unflagged first so that flagged ones are drawn on top */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < r->n_operators; i++) {
            const struct audit_operator *op = &r->operators[i];
            if (!op->audited || !op->cells)
                continue;
            double e = op->cells[k].expected, o = op->cells[k].observed;
            if (!isfinite(e) || e <= 0 || !isfinite(o))
                continue;
            const struct audit_finding *f = rate_finding(r, op->operator_id, k);
            if ((f != NULL) != (pass == 1))
                continue;
            double x = log_x(&ax.x, e), ratio = o / e, y = fy(&ax, fmin(ratio, ax.ymax));
            if (f)
                report_sink_printf(s,
                                   "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"7\" fill=\"%s\" "
                                   "stroke=\"#fff\" stroke-width=\"1.5\"/>",
                                   x, y, chart_color(f->severity));
            else
                report_sink_printf(s,
                                   "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"#4a6fa5\" "
                                   "stroke=\"#fff\" stroke-width=\"1\"/>",
                                   x, y);
            char name[AUDIT_NAME_MAX + 32];
            if (ratio > ax.ymax)
                util_fmt(name, sizeof name, "%s (%.2f)", op->operator_id, ratio);
            else
                util_fmt(name, sizeof name, "%s", op->operator_id);
            /* near the right edge the label goes to the left of the point */
            bool left = x > FUNNEL_W - F_RIGHT - 90;
            text_at(s, left ? x - 9 : x + 9, y - 7, left ? "end" : "start",
                    f ? "fill=\"#1f2430\" font-weight=\"700\"" : "fill=\"#4b5563\"", name);
        }
    }
    if (npts == 0)
        text_at(s, FUNNEL_W / 2.0, FUNNEL_H / 2.0, "middle", "fill=\"#4b5563\"",
                "No audited operator had expected decisions of this class.");
    report_sink_printf(s,
                       "</svg>\n<figcaption>%zu audited operator%s. Limits: 95%% and 99.8%% of "
                       "a Poisson count, exact quantiles.",
                       npts, npts == 1 ? "" : "s");
    if (flagged)
        report_sink_printf(
            s, " Large points: %zu operator%s with a finding about this action (below).", flagged,
            flagged == 1 ? "" : "s");
    report_sink_puts(s, "</figcaption></figure>\n");
}

static void funnels(struct report_sink *s, const struct audit_result *r)
{
    bool any = false;
    report_sink_puts(
        s, "<section>\n<h2>Funnel plots</h2>\n<p>How every audited operator compares with the "
           "peers on one action over the whole window. Each point is an operator: across, the "
           "number of these decisions the peers would have made in that operator's situations "
           "(the expected count); up, what the operator did divided by that. The more decisions "
           "are expected, the closer to 1 chance alone keeps the ratio, which gives the funnel "
           "its shape: the shaded band with dashed edges holds 95% of what chance gives, the "
           "dotted lines 99.8%. The limits are those of a Poisson count with the expected mean "
           "(exact Poisson quantiles, interpolated between whole counts). A point outside them "
           "is not a finding by itself: findings also have to pass the tolerance band and the "
           "correction for the number of tests, and may be about a region only.</p>\n"
           "<div class=\"funnels\">\n");
    for (size_t k = 0; k < r->n_classes; k++) {
        bool has = false;
        for (size_t i = 0; i < r->n_findings && !has; i++)
            has = report_is_rate_kind(r->findings[i].kind) && r->findings[i].action == (int)k;
        if (has) {
            funnel(s, r, (int)k);
            any = true;
        }
    }
    if (!any) {
        /* No rate finding: the most frequent action other than hold, as context. */
        int best = -1;
        double best_n = -1;
        for (size_t k = 0; k < r->n_classes; k++) {
            double n = 0;
            if ((int)k == r->hold_class)
                continue;
            for (size_t i = 0; i < r->n_operators; i++) {
                const struct audit_operator *op = &r->operators[i];
                if (op->cells && isfinite(op->cells[k].observed))
                    n += op->cells[k].observed;
            }
            if (n > best_n) {
                best_n = n;
                best = (int)k;
            }
        }
        if (best >= 0)
            funnel(s, r, best);
    }
    report_sink_puts(s, "</div>\n</section>\n");
}

/* ---- method ------------------------------------------------------------------ */

static void method(struct report_sink *s, const struct audit_result *r, const struct report_meta *m)
{
    char para[REPORT_PARA_MAX], a[REPORT_NUM_MAX], b[REPORT_NUM_MAX];
    struct report_param params[REPORT_PARAMS_MAX];

    report_sink_puts(s, "<section>\n<h2>Method</h2>\n");
    for (size_t i = 0; i < REPORT_METHOD_PARAS; i++) {
        report_method_text(r, m, i, para, sizeof para);
        if (!para[0])
            continue;
        report_sink_puts(s, "<p>");
        esc(s, para);
        report_sink_puts(s, "</p>\n");
    }
    report_sink_puts(s, "<h3>Parameters</h3>\n<table class=\"params\">\n<thead><tr>"
                        "<th>Parameter</th><th class=\"n\">Value</th><th>Meaning</th></tr>"
                        "</thead>\n<tbody>\n");
    size_t n = report_param_rows(r, params, REPORT_PARAMS_MAX);
    for (size_t i = 0; i < n; i++) {
        report_sink_printf(s, "<tr><td><code>%s</code></td><td class=\"n\">", params[i].name);
        esc(s, params[i].value);
        report_sink_puts(s, "</td><td>");
        esc(s, params[i].meaning);
        report_sink_puts(s, "</td></tr>\n");
    }
    report_sink_puts(s, "</tbody>\n</table>\n<p>Features audited: ");
    if (!m->features || m->n_features == 0)
        report_sink_puts(s, "not recorded");
    for (size_t i = 0; m->features && i < m->n_features; i++) {
        report_sink_puts(s, i ? ", <code>" : "<code>");
        esc(s, m->features[i] ? m->features[i] : "");
        report_sink_puts(s, "</code>");
    }
    report_sink_printf(s, ".</p>\n<p>Data window: requested %s to %s; ",
                       report_fmt_time(m->window_from_us, a, sizeof a),
                       report_fmt_time(m->window_to_us, b, sizeof b));
    report_sink_printf(s, "decisions from %s to %s.</p>\n</section>\n",
                       report_fmt_time(r->from_us, a, sizeof a),
                       report_fmt_time(r->to_us, b, sizeof b));
}

int report_html(const struct audit_result *r, const struct report_meta *m, struct util_buf *out)
{
    struct report_sink s;
    char a[REPORT_NUM_MAX];
    report_sink_init(&s, out);
    report_sink_puts(&s,
                     "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                     "<title>Operator audit</title>\n<style>");
    report_sink_puts(&s, css);
    report_sink_puts(&s, "</style>\n</head>\n<body>\n<main>\n");
    header(&s, r, m);
    operators(&s, r);
    funnels(&s, r);
    report_sink_puts(&s, "<section>\n<h2>Findings</h2>\n");
    if (r->n_findings == 0)
        report_sink_puts(&s, "<p>No findings: no operator differed from the rest of the team "
                             "beyond the tolerance, after the correction for the number of "
                             "tests.</p>\n");
    for (size_t i = 0; i < r->n_findings; i++)
        finding_card(&s, r, &r->findings[i], i + 1);
    report_sink_puts(&s, "</section>\n");
    method(&s, r, m);
    report_sink_printf(&s,
                       "<footer>understudy operator audit, format understudy-audit version 1, "
                       "generated %s.</footer>\n</main>\n</body>\n</html>\n",
                       report_fmt_time(m->generated_us, a, sizeof a));
    return report_sink_finish(&s);
}
