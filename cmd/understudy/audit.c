/*
 * understudy audit: the operator bias audit from PostgreSQL or a CSV file
 * (internal/audit/auditor.h does the work); prints a short summary.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/auditor.h"
#include "cli.h"
#include "report/report.h"
#include "store/store.h"
#include "util/util.h"

enum {
    OPT_SINCE = 256,
    OPT_UNTIL,
    OPT_OPERATORS,
    OPT_REPORT,
    OPT_FORMAT,
    OPT_CSV,
    OPT_LABEL,
    OPT_OPERATOR,
    OPT_DELTA,
    OPT_TS,
    OPT_CATEGORICAL,
    OPT_DROP,
    OPT_THREADS,
};

struct audit_args {
    const char *config, *since, *until, *report, *format;
    const char *csv, *label, *operator_col, *delta, *ts;
    const char *threads;
    struct cli_list operators, categorical, drop;
};

static void args_free(struct audit_args *a)
{
    cli_list_free(&a->operators);
    cli_list_free(&a->categorical);
    cli_list_free(&a->drop);
}

static int parse_args(int argc, char **argv, struct audit_args *a)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"operators", required_argument, NULL, OPT_OPERATORS},
        {"report", required_argument, NULL, OPT_REPORT},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"csv", required_argument, NULL, OPT_CSV},
        {"label", required_argument, NULL, OPT_LABEL},
        {"operator", required_argument, NULL, OPT_OPERATOR},
        {"delta", required_argument, NULL, OPT_DELTA},
        {"ts", required_argument, NULL, OPT_TS},
        {"categorical", required_argument, NULL, OPT_CATEGORICAL},
        {"drop", required_argument, NULL, OPT_DROP},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        struct cli_list *l = NULL;
        switch (c) {
        case 'c':
            a->config = optarg;
            break;
        case OPT_SINCE:
            a->since = optarg;
            break;
        case OPT_UNTIL:
            a->until = optarg;
            break;
        case OPT_OPERATORS:
            l = &a->operators;
            break;
        case OPT_REPORT:
            a->report = optarg;
            break;
        case OPT_FORMAT:
            a->format = optarg;
            break;
        case OPT_CSV:
            a->csv = optarg;
            break;
        case OPT_LABEL:
            a->label = optarg;
            break;
        case OPT_OPERATOR:
            a->operator_col = optarg;
            break;
        case OPT_DELTA:
            a->delta = optarg;
            break;
        case OPT_TS:
            a->ts = optarg;
            break;
        case OPT_CATEGORICAL:
            l = &a->categorical;
            break;
        case OPT_DROP:
            l = &a->drop;
            break;
        case OPT_THREADS:
            a->threads = optarg;
            break;
        case 'h':
            print_command_usage(stdout, find_command("audit"));
            return 0;
        default:
            return option_error("audit", c, argv);
        }
        if (l && cli_list_parse(optarg, l) != 0)
            return usage_error("audit", "--%s takes a comma-separated list of names, not '%s'",
                               l == &a->operators     ? "operators"
                               : l == &a->categorical ? "categorical"
                                                      : "drop",
                               optarg);
    }
    if (optind < argc)
        return usage_error("audit", "unexpected argument %s", argv[optind]);
    if (a->csv && (!a->label || !a->operator_col))
        return usage_error("audit", "--csv needs --label COL and --operator COL");
    if (!a->csv &&
        (a->label || a->operator_col || a->delta || a->ts || a->categorical.n || a->drop.n))
        return usage_error("audit", "--label, --operator, --delta, --ts, --categorical and "
                                    "--drop go with --csv");
    if (a->format && !a->report)
        return usage_error("audit", "--format goes with --report DIR");
    return -1;
}

static const char *severity_word(enum audit_severity s)
{
    return audit_severity_name(s);
}

static void print_summary(const struct audit_job_outcome *out, const struct audit_job *j)
{
    const struct audit_result *r = out->result;
    char from[40], to[40];
    size_t by[AUDIT_SEVERITY_COUNT] = {0};
    for (size_t i = 0; i < r->n_findings; i++)
        by[r->findings[i].severity]++;
    if (out->run_id)
        printf("audit run %lld: ", (long long)out->run_id);
    else
        printf("audit of %s: ", j->csv_path);
    printf("%zu decisions of %zu operators", r->rows, r->n_operators);
    if (r->from_us != INT64_MIN)
        printf(" from %s to %s", util_format_rfc3339(r->from_us, from, sizeof from),
               util_format_rfc3339(r->to_us, to, sizeof to));
    if (out->policy_version)
        printf(", compared with the team and with policy version %d", out->policy_version);
    else
        printf(", compared with the team");
    printf("\n");
    printf("%zu finding%s (%zu high, %zu medium, %zu low) from %zu tests at a false discovery "
           "rate of %g; reading the decisions took %.1f s, the audit %.1f s\n",
           r->n_findings, r->n_findings == 1 ? "" : "s", by[AUDIT_SEVERITY_HIGH],
           by[AUDIT_SEVERITY_MEDIUM], by[AUDIT_SEVERITY_LOW], r->n_tests, r->params.fdr_q,
           out->load_seconds, r->seconds);
    for (size_t i = 0; i < r->n_findings; i++) {
        const struct audit_finding *f = &r->findings[i];
        printf("  %-6s %s\n", severity_word(f->severity), f->summary);
    }
    size_t skipped = 0;
    for (size_t o = 0; o < r->n_operators; o++)
        skipped += !r->operators[o].audited;
    if (skipped) {
        printf("not audited (fewer than %lld decisions, or not asked for):",
               (long long)r->params.min_support);
        for (size_t o = 0; o < r->n_operators; o++) {
            if (!r->operators[o].audited)
                printf(" %s (%zu)", r->operators[o].operator_id, r->operators[o].decisions);
        }
        printf("\n");
    }
    if (j->report_dir && !out->report_error[0]) {
        static const struct {
            unsigned bit;
            const char *file;
        } files[] = {
            {REPORT_HTML, "audit.html"}, {REPORT_MD, "audit.md"}, {REPORT_JSON, "audit.json"}};
        printf("reports:");
        for (size_t i = 0; i < 3; i++) {
            if (j->formats & files[i].bit)
                printf(" %s/%s", j->report_dir, files[i].file);
        }
        printf("\n");
    }
}

int cmd_audit(int argc, char **argv)
{
    struct audit_args a = {0};
    struct cfg *cfg = NULL;
    struct store *st = NULL;
    struct audit_job j;
    struct audit_job_outcome out = {0};
    char err[1024];
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        goto out;
    rc = EXIT_USAGE;
    if (!(cfg = load_config(config_path_from(a.config))))
        goto out;
    audit_job_from_cfg(&j, cfg);
    j.params.only = a.operators.items;
    j.params.n_only = a.operators.n;
    if (a.threads) {
        long t;
        if (parse_int_arg(a.threads, 1, 256, &t) != 0) {
            rc = usage_error("audit", "--threads takes 1..256, not '%s'", a.threads);
            goto out;
        }
        j.params.threads = (unsigned)t;
    }
    if (a.since && event_parse_rfc3339(a.since, &j.since_us) != 0) {
        rc = usage_error("audit", "--since takes an RFC 3339 time, not '%s'", a.since);
        goto out;
    }
    if (a.until && event_parse_rfc3339(a.until, &j.until_us) != 0) {
        rc = usage_error("audit", "--until takes an RFC 3339 time, not '%s'", a.until);
        goto out;
    }
    if (j.since_us != INT64_MIN && j.until_us != INT64_MAX && j.since_us >= j.until_us) {
        rc = usage_error("audit", "--since must be before --until");
        goto out;
    }
    if (a.report) {
        j.report_dir = a.report;
        j.formats = REPORT_HTML | REPORT_MD | REPORT_JSON;
        if (a.format && report_parse_formats(a.format, &j.formats, err, sizeof err) != 0) {
            rc = usage_error("audit", "--format: %s", err);
            goto out;
        }
    }
    rc = 1;
    if (a.csv) {
        j.csv_path = a.csv;
        j.csv.label = a.label;
        j.csv.group = a.operator_col;
        j.csv.ts = a.ts;
        j.csv.target = a.delta;
        j.csv.categorical = a.categorical.items;
        j.csv.n_categorical = a.categorical.n;
        j.csv.drop = a.drop.items;
        j.csv.n_drop = a.drop.n;
        if ((a.since || a.until) && !a.ts) {
            rc = usage_error("audit", "--since and --until need --ts COL with a CSV");
            goto out;
        }
    } else {
        if (store_connect(cfg->postgres.dsn, cfg->postgres.password_file, &st, err, sizeof err) !=
                0 ||
            store_check_schema(st, err, sizeof err) != 0) {
            fprintf(stderr, "understudy audit: %s\n", err);
            goto out;
        }
        j.store = st;
    }
    int r = audit_job_run(&j, &out, err, sizeof err);
    if (r != 0) {
        if (out.run_id)
            fprintf(stderr, "understudy audit: run %lld failed: %s\n", (long long)out.run_id, err);
        else
            fprintf(stderr, "understudy audit: %s\n", err);
        goto out;
    }
    print_summary(&out, &j);
    rc = fflush(stdout) == 0 ? 0 : 1;
    if (out.report_error[0]) {
        fprintf(stderr,
                "understudy audit: the audit %s, but the reports could not be written: %s\n",
                out.run_id ? "finished and was recorded" : "finished", out.report_error);
        rc = 1;
    }
out:
    audit_result_free(out.result);
    store_free(st);
    cfg_free(cfg);
    args_free(&a);
    return rc;
}
