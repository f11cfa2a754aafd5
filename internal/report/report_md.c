/*
 * report_md: the audit as Markdown, for a terminal, a ticket or a wiki.  The
 * same content as the HTML page without its charts: the header, the
 * operators, each finding with its sentence and its numbers, the method and
 * the parameters.
 *
 * Text that comes from the data (operator ids, feature names, levels, class
 * names, the findings' summaries) is escaped with a backslash before every
 * character Markdown could read as syntax inside a line or a table cell
 * (CommonMark escapes any ASCII punctuation this way), and line breaks in it
 * become spaces, so no value can break a table or start a heading.  Our own
 * fixed text is written as is.
 */
#include "report/report.h"

#include <math.h>
#include <string.h>

/* Characters that mean something inside a line or a table cell. */
static const char md_special[] = "\\`*_{}[]<>|~#&!";

static void md_esc(struct report_sink *s, const char *t)
{
    const char *run = t;
    for (const char *p = t;; p++) {
        bool special = *p && strchr(md_special, *p) != NULL;
        bool newline = *p == '\n' || *p == '\r' || *p == '\t';
        if (*p && !special && !newline)
            continue;
        report_sink_printf(s, "%.*s", (int)(p - run), run);
        if (!*p)
            break;
        if (special)
            report_sink_printf(s, "\\%c", *p);
        else
            report_sink_puts(s, " ");
        run = p + 1;
    }
}

static size_t count_severity(const struct audit_result *r, enum audit_severity sev)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_findings; i++)
        n += r->findings[i].severity == sev;
    return n;
}

static void header(struct report_sink *s, const struct audit_result *r, const struct report_meta *m)
{
    char a[REPORT_NUM_MAX], b[REPORT_NUM_MAX], d[REPORT_NUM_MAX];
    size_t audited = 0;
    for (size_t i = 0; i < r->n_operators; i++)
        audited += r->operators[i].audited;

    report_sink_puts(s, "# Operator audit\n\n");
    report_sink_puts(s, "- Source: ");
    if (m->csv_path) {
        report_sink_puts(s, "CSV file `");
        /* Inside a code span only the backtick matters; none is expected in a path. */
        for (const char *p = m->csv_path; *p; p++)
            report_sink_printf(s, "%c", *p == '`' ? '\'' : *p);
        report_sink_puts(s, "`");
    } else {
        md_esc(s, m->source ? m->source : "database");
    }
    if (m->run_id > 0)
        report_sink_printf(s, ", audit run %lld", (long long)m->run_id);
    report_sink_puts(s, "\n");
    if (m->policy_version > 0)
        report_sink_printf(s, "- Compared with policy version %d\n", m->policy_version);
    else
        report_sink_puts(s, "- No policy compared with\n");
    report_sink_printf(s, "- Requested window: %s to %s\n",
                       report_fmt_time(m->window_from_us, a, sizeof a),
                       report_fmt_time(m->window_to_us, b, sizeof b));
    report_sink_printf(s, "- Decisions: %zu, from %s to %s", r->rows,
                       report_fmt_time(r->from_us, a, sizeof a),
                       report_fmt_time(r->to_us, b, sizeof b));
    if (r->from_us != INT64_MIN && r->to_us != INT64_MIN)
        report_sink_printf(s, " (%s)", report_fmt_duration(r->to_us - r->from_us, d, sizeof d));
    report_sink_puts(s, "\n");
    report_sink_printf(s, "- Operators: %zu, of which %zu audited\n", r->n_operators, audited);
    report_sink_printf(
        s, "- Findings: %zu high, %zu medium, %zu low, %zu info\n",
        count_severity(r, AUDIT_SEVERITY_HIGH), count_severity(r, AUDIT_SEVERITY_MEDIUM),
        count_severity(r, AUDIT_SEVERITY_LOW), count_severity(r, AUDIT_SEVERITY_INFO));
    report_sink_printf(s, "- Generated: %s\n\n", report_fmt_time(m->generated_us, a, sizeof a));
}

static void operators(struct report_sink *s, const struct audit_result *r)
{
    char a[REPORT_NUM_MAX];
    report_sink_puts(s, "## Operators\n\n");
    report_sink_puts(s, "| Operator | Decisions | Actions | Outside the team's experience | "
                        "Audited | High | Medium | Low | Info | Policy agreement | Acceptance |\n");
    report_sink_puts(s, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < r->n_operators; i++) {
        const struct audit_operator *op = &r->operators[i];
        report_sink_puts(s, "| ");
        md_esc(s, op->operator_id);
        report_sink_printf(s, " | %zu | %zu | %zu | %s | %zu | %zu | %zu | %zu | ", op->decisions,
                           op->actions, op->outside_support,
                           op->audited ? (op->in_reference ? "yes" : "yes, not in references")
                                       : "no (too few decisions, or not asked for)",
                           op->findings_by_severity[AUDIT_SEVERITY_HIGH],
                           op->findings_by_severity[AUDIT_SEVERITY_MEDIUM],
                           op->findings_by_severity[AUDIT_SEVERITY_LOW],
                           op->findings_by_severity[AUDIT_SEVERITY_INFO]);
        report_sink_printf(s, "%s | ", report_fmt_share(op->policy_agreement, a, sizeof a));
        if (op->verdicts > 0 && isfinite(op->acceptance_rate))
            report_sink_printf(s, "%s of %zu |\n",
                               report_fmt_share(op->acceptance_rate, a, sizeof a), op->verdicts);
        else
            report_sink_puts(s, "n/a |\n");
    }
    report_sink_puts(
        s, "\nPolicy agreement: how often the policy's most likely action is what "
           "the operator did. Acceptance: the share of the policy's recommendations "
           "the operator accepted. Outside the team's experience: decisions in states the rest of "
           "the team never showed, which no test uses.\n\n");
}

static void finding(struct report_sink *s, const struct audit_result *r,
                    const struct audit_finding *f, size_t no)
{
    char region[AUDIT_MAX_CONDS * (2 * AUDIT_NAME_MAX + 48)], meaning[REPORT_PARA_MAX];
    struct report_row rows[REPORT_ROWS_MAX];
    const char *sev = audit_severity_name(f->severity);

    report_sink_printf(s, "### %zu. %s: ", no, report_kind_title(f->kind));
    md_esc(s, f->operator_id[0] ? f->operator_id : "the team");
    if (f->action >= 0) {
        report_sink_puts(s, ", ");
        md_esc(s, report_class_name(r, f->action));
    }
    report_sink_printf(s, " (%s)\n\n", sev ? sev : "unknown");
    audit_region_text(&f->region, region, sizeof region);
    if (region[0]) {
        report_sink_puts(s, "Where: ");
        md_esc(s, region);
        report_sink_puts(s, "\n\n");
    }
    report_sink_puts(s, "**");
    md_esc(s, f->summary);
    report_sink_puts(s, "**\n\n");
    md_esc(s, report_finding_meaning(r, f, meaning, sizeof meaning));
    report_sink_puts(s, "\n\n| | |\n|---|---:|\n");
    size_t n = report_finding_rows(r, f, rows, REPORT_ROWS_MAX);
    for (size_t i = 0; i < n; i++) {
        report_sink_printf(s, "| %s | ", rows[i].label);
        md_esc(s, rows[i].value);
        report_sink_puts(s, " |\n");
    }
    report_sink_puts(s, "\n");
}

static void method(struct report_sink *s, const struct audit_result *r, const struct report_meta *m)
{
    char para[REPORT_PARA_MAX], a[REPORT_NUM_MAX], b[REPORT_NUM_MAX], c[REPORT_NUM_MAX],
        d[REPORT_NUM_MAX];
    struct report_param params[REPORT_PARAMS_MAX];

    report_sink_puts(s, "## Method\n\n");
    for (size_t i = 0; i < REPORT_METHOD_PARAS; i++) {
        report_method_text(r, m, i, para, sizeof para);
        if (!para[0])
            continue;
        md_esc(s, para);
        report_sink_puts(s, "\n\n");
    }
    report_sink_puts(s, "### Parameters\n\n| Parameter | Value | Meaning |\n|---|---:|---|\n");
    size_t n = report_param_rows(r, params, REPORT_PARAMS_MAX);
    for (size_t i = 0; i < n; i++) {
        report_sink_printf(s, "| `%s` | ", params[i].name);
        md_esc(s, params[i].value);
        report_sink_printf(s, " | %s |\n", params[i].meaning);
    }
    report_sink_puts(s, "\nFeatures audited: ");
    if (!m->features || m->n_features == 0)
        report_sink_puts(s, "not recorded");
    for (size_t i = 0; m->features && i < m->n_features; i++) {
        if (i)
            report_sink_puts(s, ", ");
        md_esc(s, m->features[i] ? m->features[i] : "");
    }
    report_sink_puts(s, ".\n\n");
    report_sink_printf(s, "Data window: requested %s to %s; decisions from %s to %s.\n",
                       report_fmt_time(m->window_from_us, a, sizeof a),
                       report_fmt_time(m->window_to_us, b, sizeof b),
                       report_fmt_time(r->from_us, c, sizeof c),
                       report_fmt_time(r->to_us, d, sizeof d));
}

int report_markdown(const struct audit_result *r, const struct report_meta *m, struct util_buf *out)
{
    struct report_sink s;
    report_sink_init(&s, out);
    header(&s, r, m);
    operators(&s, r);
    report_sink_puts(&s, "## Findings\n\n");
    if (r->n_findings == 0)
        report_sink_puts(&s, "No findings: no operator differed from the rest of the team beyond "
                             "the tolerance, after the correction for the number of tests.\n\n");
    for (size_t i = 0; i < r->n_findings; i++)
        finding(&s, r, &r->findings[i], i + 1);
    method(&s, r, m);
    return report_sink_finish(&s);
}
