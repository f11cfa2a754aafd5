/*
 * Integration tests of the operator audit, `understudy audit` and the
 * daemon's audit thread, against real PostgreSQL, the mock Kafka cluster
 * and the real binary.
 *
 * One simulation (16000 snapshots, 96 campaigns, seed 7) plants one bias:
 * op-03 never bids down on social campaigns.  The audit of that log finds
 * exactly it and nothing else (measured): op-03, blind_spot, bid_down,
 * region "channel = social", severity high.  Its events go once through
 * the mock broker into a daemon whose audit is off, which makes a base
 * database; each test that needs PostgreSQL works on a copy of it (CREATE
 * DATABASE ... TEMPLATE), so every test starts with no audit run.
 *
 * The tests: the CLI on the database (the run, both views, the reader
 * role, the three reports, a rendering); the CLI restricted to two
 * operators (the same finding, the others listed as not audited, Markdown
 * only); the daemon auditing at start and after a promotion, against the
 * new champion; bad input refused with exit 1 or 2 and a reason, leaving
 * no running or finished run; the CLI on a CSV file.
 *
 * The broker keeps 5 MiB per partition and states.jsonl is about 10 MB, so
 * the ingest topics get 8 partitions.  The audit settings in the tests'
 * configuration are not the defaults, so that the run's recorded
 * parameters show they were read from the file.
 */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "tdaemon.h"
#include "tdb.h"
#include "testenv.h"
#include "tfile.h"
#include "tsim.h"

#define SIM_ROWS   16000
#define TOPICS     "ops.actions,ops.states,ops.feedback"
#define PARTITIONS 8
#define BASE_DB    "understudy_t_audit_base"
/* The audit section of every test configuration (defaults 0.05 and 30). */
#define FDR_Q       0.04
#define MIN_SUPPORT 40
#define AUDIT_YAML  "audit:\n  fdr_q: 0.04\n  min_support: 40\n"

/* ---- small helpers ------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *tmp_path(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", testenv_get("UNDERSTUDY_TEST_TMP"), name);
    return buf;
}

/* True when path is a regular file with at least one byte. */
static bool file_written(const char *dir, const char *name)
{
    char path[800];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0;
}

static bool path_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static PGresult *query_rows(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    return r;
}

/*
 * Runs the binary with args (NULL-terminated, without the program name) and,
 * when dsn is not NULL, UNDERSTUDY_PG_DSN=dsn; returns the exit status with
 * stdout and stderr (caller frees both).
 */
static int run_bin(const char *dsn, const char *const *args, char **out, char **err)
{
    const char *argv[32] = {testenv_get("UNDERSTUDY_BIN")};
    size_t n = 1;
    for (; *args; args++) {
        assert_true(n < 31);
        argv[n++] = *args;
    }
    argv[n] = NULL;
    if (dsn)
        assert_int_equal(setenv("UNDERSTUDY_PG_DSN", dsn, 1), 0);
    int st = testenv_run(argv, NULL, out, err);
    if (dsn)
        unsetenv("UNDERSTUDY_PG_DSN");
    return st;
}

/* Runs an audit that must exit 0; returns its stdout (caller frees). */
static char *audit_ok(const char *dsn, const char *const *args)
{
    char *out = NULL, *err = NULL;
    int st = run_bin(dsn, args, &out, &err);
    if (st != 0)
        fail_msg("understudy audit exited %d: %s", st, err);
    free(err);
    return out;
}

/* The run id and decision count from the summary's first line,
 * "audit run N: D decisions of K operators ...". */
static void summary_numbers(const char *out, long *run, long *decisions, long *operators)
{
    if (sscanf(out, "audit run %ld: %ld decisions of %ld operators", run, decisions, operators) !=
        3)
        fail_msg("unexpected summary: %s", out);
}

/* scripts/render-report.sh html png must exit 0 (a non-blank rendering). */
static void render_ok(const char *html, const char *png)
{
    const char *argv[] = {"scripts/render-report.sh", html, png, NULL};
    char *out = NULL, *err = NULL;
    int st = testenv_run(argv, NULL, &out, &err);
    if (st != 0)
        fail_msg("render-report.sh %s exited %d: %s%s", html, st, out, err);
    free(out);
    free(err);
    assert_true(path_exists(png));
}

/* A report's audit.json, parsed; checks its format tag. */
static json_t *load_report_json(const char *dir)
{
    char path[800];
    json_error_t je;
    snprintf(path, sizeof path, "%s/audit.json", dir);
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fail_msg("%s does not parse: %s (line %d)", path, je.text, je.line);
    assert_string_equal(json_string_value(json_object_get(j, "format")), "understudy-audit");
    return j;
}

/* ---- the simulation and the base database -------------------------------------- */

struct sim {
    char dir[600], actions[700], states[700];
    char csv[700];  /* examples.csv with an operator_id column */
    char *features; /* features.yaml: a `features:` section */
    size_t n_actions;
};

/* The simulation, written once per run. */
static const struct sim *sim(void)
{
    static struct sim s;
    static bool done;
    if (done)
        return &s;
    char path[800];
    tmp_path("audit-sim", s.dir, sizeof s.dir);
    const char *args[] = {"--rows", "16000", "--campaigns", "96",
                          "--seed", "7",     "--bias",      "op-03:never=bid_down@channel=social",
                          NULL};
    tsim_run(s.dir, args);
    snprintf(s.actions, sizeof s.actions, "%s/actions.jsonl", s.dir);
    snprintf(s.states, sizeof s.states, "%s/states.jsonl", s.dir);
    snprintf(path, sizeof path, "%s/features.yaml", s.dir);
    s.features = tread_file(path, NULL);
    assert_non_null(strstr(s.features, "features:"));
    s.n_actions = tsim_count_lines(s.actions);
    assert_true(s.n_actions > 1000);
    assert_int_equal(tsim_count_lines(s.states), SIM_ROWS);
    snprintf(s.csv, sizeof s.csv, "%s/examples-operators.csv", s.dir);
    assert_int_equal(tsim_csv_with_operators(s.dir, s.csv, NULL, 0), SIM_ROWS);
    done = true;
    return &s;
}

/* The simulation's features followed by extra YAML (caller frees). */
static char *with_features(const char *extra)
{
    const char *f = sim()->features;
    size_t len = strlen(f) + strlen(extra) + 2;
    char *y = malloc(len);
    assert_non_null(y);
    snprintf(y, len, "%s%s%s", f, f[strlen(f) - 1] == '\n' ? "" : "\n", extra);
    return y;
}

/* Writes a configuration file for the CLI: the features and extra. */
static void write_config(const char *name, const char *extra, char *path, size_t len)
{
    char file[200];
    snprintf(file, sizeof file, "%s.yaml", name);
    tmp_path(file, path, len);
    char *y = with_features(extra);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(y, f) >= 0);
    assert_int_equal(fclose(f), 0);
    free(y);
}

/*
 * The base database, made once: the simulation's actions and snapshots
 * replayed through the broker and stored by a daemon whose audit is off.
 */
static void base_db(void)
{
    static bool done;
    if (done)
        return;
    double t0 = now_s();
    const struct sim *s = sim();
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512];
    testenv_create_db(BASE_DB, dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);
    struct tmock m;
    tmock_start(&m, TOPICS, PARTITIONS);
    treplay(bin, m.brokers, "ops.actions", s->actions);
    treplay(bin, m.brokers, "ops.states", s->states);
    struct tdaemon d;
    char *extra = with_features("audit:\n  enabled: false\n");
    tdaemon_config(&d, "audit-base", m.brokers, "audit-base", extra);
    free(extra);
    tdaemon_start(&d, bin, dsn, NULL);
    tdb_wait_long(c, "SELECT count(*) FROM action_events", (long)s->n_actions, 60, d.log);
    tdb_wait_long(c, "SELECT count(*) FROM state_events", SIM_ROWS, 60, d.log);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 20), 0);
    tmock_stop(&m);
    assert_int_equal(tcount(c, "dead_letters"), 0);
    assert_int_equal(tcount(c, "audit_runs"), 0);
    PQfinish(c); /* a template may have no sessions */
    print_message("base database: %zu actions and %d snapshots ingested in %.1f s\n", s->n_actions,
                  SIM_ROWS, now_s() - t0);
    done = true;
}

/* ---- what the audit wrote ----------------------------------------------------------- */

/* The one finding of the latest run is op-03's blind spot on social
 * bid-downs, found by run `run` against policy `version` (0 = none). */
static void assert_the_planted_finding(PGconn *c, long run, int version)
{
    long n = tcount(c, "audit_findings_latest");
    if (n != 1) {
        char *all = testenv_query_value(
            c, "SELECT string_agg(concat_ws(' ', operator_id, kind, action, quote_literal(region),"
               " severity, 'q=' || q_value), '; ') FROM audit_findings_latest");
        fail_msg("%ld findings, not op-03's blind spot alone: %s", n, all);
    }
    PGresult *r = query_rows(c, "SELECT run_id, operator_id, kind, action, region, q_value,"
                                " severity, summary, coalesce(policy_version, 0), n, observed,"
                                " expected, details->'conditions' @> '[{\"feature\": \"channel\","
                                " \"op\": \"=\", \"level\": \"social\"}]'"
                                " FROM audit_findings_latest");
    assert_int_equal(PQntuples(r), 1);
    assert_int_equal(strtol(PQgetvalue(r, 0, 0), NULL, 10), run);
    assert_string_equal(PQgetvalue(r, 0, 1), "op-03");
    assert_string_equal(PQgetvalue(r, 0, 2), "blind_spot");
    assert_string_equal(PQgetvalue(r, 0, 3), "bid_down");
    const char *region = PQgetvalue(r, 0, 4);
    if (!strstr(region, "channel = social"))
        fail_msg("region '%s' is not about social campaigns", region);
    double q = strtod(PQgetvalue(r, 0, 5), NULL);
    if (!(q >= 0 && q <= FDR_Q))
        fail_msg("q_value %g is not within [0, audit.fdr_q %g]", q, FDR_Q);
    assert_string_equal(PQgetvalue(r, 0, 6), "high");
    assert_true(strlen(PQgetvalue(r, 0, 7)) > 0);
    assert_int_equal(strtol(PQgetvalue(r, 0, 8), NULL, 10), version);
    assert_true(strtol(PQgetvalue(r, 0, 9), NULL, 10) > 0);
    /* A blind spot: (almost) never where the team acts. */
    double observed = strtod(PQgetvalue(r, 0, 10), NULL);
    double expected = strtod(PQgetvalue(r, 0, 11), NULL);
    if (!(observed < 0.1 * expected))
        fail_msg("observed %g, expected %g: not a blind spot", observed, expected);
    assert_string_equal(PQgetvalue(r, 0, 12), "t");
    PQclear(r);
}

/*
 * audit_operators_latest lists op-01..op-08 of run `run`, their decisions
 * summing to `decisions`; audited names the audited ones ("op-01,op-03").
 */
static void assert_operator_rows(PGconn *c, long run, long decisions, const char *audited)
{
    PGresult *r = query_rows(c, "SELECT run_id, operator_id, decisions, actions, audited"
                                " FROM audit_operators_latest ORDER BY operator_id");
    assert_int_equal(PQntuples(r), 8);
    long sum = 0;
    char list[200] = "";
    for (int i = 0; i < 8; i++) {
        char want[16];
        snprintf(want, sizeof want, "op-%02d", i + 1);
        const char *op = PQgetvalue(r, i, 1);
        assert_int_equal(strtol(PQgetvalue(r, i, 0), NULL, 10), run);
        assert_string_equal(op, want);
        long dec = strtol(PQgetvalue(r, i, 2), NULL, 10);
        long act = strtol(PQgetvalue(r, i, 3), NULL, 10);
        assert_true(dec >= MIN_SUPPORT);
        assert_true(act > 0 && act < dec);
        sum += dec;
        if (strcmp(PQgetvalue(r, i, 4), "t") == 0)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", *list ? "," : "", op);
    }
    PQclear(r);
    assert_int_equal(sum, decisions);
    assert_string_equal(list, audited);
}

/* In audit_operators_latest op-03 alone has a finding, a high one, and is
 * the one left out of the others' reference as biased. */
static void assert_operator_findings(PGconn *c)
{
    PGresult *r = query_rows(c, "SELECT operator_id, findings_high, findings_medium,"
                                " findings_low, in_reference"
                                " FROM audit_operators_latest ORDER BY operator_id");
    for (int i = 0; i < PQntuples(r); i++) {
        const char *op = PQgetvalue(r, i, 0);
        bool biased = strcmp(op, "op-03") == 0;
        char got[64], want[64];
        snprintf(got, sizeof got, "%s high %s medium %s low %s in_reference %s", op,
                 PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                 PQgetvalue(r, i, 4));
        snprintf(want, sizeof want, "%s high %d medium 0 low 0 in_reference %s", op, biased,
                 biased ? "f" : "t");
        assert_string_equal(got, want);
    }
    PQclear(r);
}

/* ---- 1: the CLI on the database ------------------------------------------------------ */

static void test_audit_cli_from_db_finds_the_planted_bias(void **state)
{
    (void)state;
    double t0 = now_s();
    base_db();
    char dsn[512], cfg[700], dir[700], png[700], html[800];
    tdb_clone(BASE_DB, "understudy_t_audit_cli", dsn, sizeof dsn);
    write_config("audit-cli", AUDIT_YAML, cfg, sizeof cfg);
    tmp_path("audit-cli-report", dir, sizeof dir);
    PGconn *c = testenv_connect(dsn);

    const char *args[] = {"audit", "-c", cfg, "--report", dir, NULL};
    char *out = audit_ok(dsn, args);
    long run = 0, decisions = 0, operators = 0;
    summary_numbers(out, &run, &decisions, &operators);
    if (!strstr(out, "op-03") || !strstr(out, "channel = social"))
        fail_msg("the summary does not name op-03's blind spot on social: %s", out);
    assert_non_null(strstr(out, "1 finding (1 high, 0 medium, 0 low)"));
    free(out);
    /* One decision per snapshot, as examples.csv has one row per line. */
    assert_int_equal(decisions, SIM_ROWS);
    assert_int_equal(operators, 8);

    /* The run: finished, with the configuration's parameters. */
    assert_int_equal(tcount(c, "audit_runs"), 1);
    PGresult *r = query_rows(c, "SELECT id, status, finished_at IS NOT NULL, error IS NULL,"
                                " policy_version IS NULL, parameters->>'fdr_q',"
                                " parameters->>'min_support' FROM audit_runs");
    assert_int_equal(strtol(PQgetvalue(r, 0, 0), NULL, 10), run);
    assert_string_equal(PQgetvalue(r, 0, 1), "finished");
    assert_string_equal(PQgetvalue(r, 0, 2), "t");
    assert_string_equal(PQgetvalue(r, 0, 3), "t");
    assert_string_equal(PQgetvalue(r, 0, 4), "t");
    assert_true(fabs(strtod(PQgetvalue(r, 0, 5), NULL) - FDR_Q) < 1e-12);
    assert_int_equal(strtol(PQgetvalue(r, 0, 6), NULL, 10), MIN_SUPPORT);
    PQclear(r);

    assert_the_planted_finding(c, run, 0);
    assert_operator_rows(c, run, decisions, "op-01,op-02,op-03,op-04,op-05,op-06,op-07,op-08");
    assert_operator_findings(c);
    /* Without a champion there is no agreement to report. */
    assert_int_equal(
        tdb_long(c, "SELECT count(*) FROM audit_operators_latest WHERE policy_agreement IS NULL"),
        8);

    /* Dashboards read both views through the reader role, and no more. */
    tdb_exec(c, "SET ROLE understudy_reader");
    assert_int_equal(tdb_long(c, "SELECT count(*) FROM audit_findings_latest"), 1);
    assert_int_equal(tdb_long(c, "SELECT count(*) FROM audit_operators_latest"), 8);
    assert_int_equal(
        tdb_long(c, "SELECT sum(findings_high) FROM audit_operators_latest WHERE operator_id ="
                    " (SELECT operator_id FROM audit_findings_latest)"),
        1);
    char s[6];
    assert_int_not_equal(testenv_exec_status(c, "SELECT * FROM audit_runs", s), PGRES_TUPLES_OK);
    assert_string_equal(s, "42501");
    tdb_exec(c, "RESET ROLE");

    /* The reports: all three formats, the JSON about the same run. */
    assert_true(file_written(dir, "audit.html"));
    assert_true(file_written(dir, "audit.md"));
    assert_true(file_written(dir, "audit.json"));
    json_t *j = load_report_json(dir);
    assert_int_equal(json_integer_value(json_object_get(j, "run_id")), run);
    json_t *findings = json_object_get(j, "findings");
    assert_int_equal(json_array_size(findings), 1);
    json_t *f = json_array_get(findings, 0);
    assert_string_equal(json_string_value(json_object_get(f, "operator_id")), "op-03");
    assert_string_equal(json_string_value(json_object_get(f, "kind")), "blind_spot");
    assert_string_equal(json_string_value(json_object_get(f, "action")), "bid_down");
    json_decref(j);
    snprintf(html, sizeof html, "%s/audit.html", dir);
    render_ok(html, tmp_path("audit-cli.png", png, sizeof png));

    PQfinish(c);
    print_message("took %.1f s\n", now_s() - t0);
}

/* ---- 2: the CLI, some operators only -------------------------------------------------- */

static void test_audit_cli_operators_audits_only_those_named(void **state)
{
    (void)state;
    double t0 = now_s();
    base_db();
    char dsn[512], cfg[700], dir[700];
    tdb_clone(BASE_DB, "understudy_t_audit_only", dsn, sizeof dsn);
    write_config("audit-only", AUDIT_YAML, cfg, sizeof cfg);
    tmp_path("audit-only-report", dir, sizeof dir);
    PGconn *c = testenv_connect(dsn);

    const char *args[] = {"audit",    "-c", cfg,        "--operators", "op-01,op-03",
                          "--format", "md", "--report", dir,           NULL};
    char *out = audit_ok(dsn, args);
    long run = 0, decisions = 0, operators = 0;
    summary_numbers(out, &run, &decisions, &operators);
    /* The others are named as not audited. */
    if (!strstr(out, "not audited") || !strstr(out, "op-02 (") || strstr(out, "op-03 ("))
        fail_msg("the summary does not list op-02 but not op-03 as not audited: %s", out);
    free(out);
    assert_int_equal(decisions, SIM_ROWS);
    assert_int_equal(tdb_long(c, "SELECT count(*) FROM audit_runs WHERE status = 'finished'"), 1);

    /* Markdown only. */
    assert_true(file_written(dir, "audit.md"));
    assert_false(file_written(dir, "audit.html"));
    assert_false(file_written(dir, "audit.json"));

    /* Every operator is listed; only the two named were audited, and the
     * finding is op-03's blind spot, as when everyone is audited. */
    assert_operator_rows(c, run, decisions, "op-01,op-03");
    assert_the_planted_finding(c, run, 0);
    assert_operator_findings(c);

    PQfinish(c);
    print_message("took %.1f s\n", now_s() - t0);
}

/* ---- 3: the daemon audits after a promotion ------------------------------------------- */

#define RUNS_FINISHED "understudy_audit_runs_total{result=\"finished\"}"
#define RUNS_FAILED   "understudy_audit_runs_total{result=\"failed\"}"

static void test_audit_daemon_audits_after_a_promotion(void **state)
{
    (void)state;
    double t0 = now_s();
    base_db();
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512], dir[700], png[700], html[800], sql[300], yaml[1200];
    tdb_clone(BASE_DB, "understudy_t_audit_daemon", dsn, sizeof dsn);
    tmp_path("audit-daemon-report", dir, sizeof dir);
    PGconn *c = testenv_connect(dsn);

    /* The simulated events are weeks old: audit them all (lookback 0s),
     * not the last 30 days. */
    snprintf(yaml, sizeof yaml, AUDIT_YAML "  report_dir: \"%s\"\n  every: 24h\n  lookback: 0s\n",
             dir);
    char *extra = with_features(yaml);
    struct tmock m;
    tmock_start(&m, TOPICS, 3);
    struct tdaemon d;
    tdaemon_config(&d, "audit-daemon", m.brokers, "audit-daemon", extra);
    free(extra);
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_metric(&d, "understudy_audit_leader", 1, 20);

    /* No run has finished yet, so the first audit is due at once; there is
     * no champion to compare with. */
    tdb_wait_long(c, "SELECT count(*) FROM audit_runs WHERE status = 'finished'", 1, 120, d.log);
    assert_int_equal(tdb_long(c, "SELECT count(*) FROM audit_runs WHERE policy_version IS NULL"),
                     1);
    tdaemon_wait_metric(&d, RUNS_FINISHED, 1, 20);

    const char *train[] = {"train", "-c", d.config, "--from-db", "--promote", NULL};
    char *out = NULL, *err = NULL;
    int st = run_bin(dsn, train, &out, &err);
    if (st != 0)
        fail_msg("understudy train exited %d: %s", st, err);
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    free(out);
    free(err);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "promoted")));
    int v = (int)json_integer_value(json_object_get(j, "version"));
    json_decref(j);
    assert_true(v > 0);

    /* The promotion starts an audit against the new champion. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit_runs WHERE status = 'finished' AND policy_version = %d",
             v);
    tdb_wait_long(c, sql, 1, 120, d.log);
    /* The reports are written after the run's commit; the counter after them. */
    tdaemon_wait_metric(&d, RUNS_FINISHED, 2, 60);
    snprintf(sql, sizeof sql, "SELECT id FROM audit_runs WHERE policy_version = %d", v);
    long run = tdb_long(c, sql);
    assert_the_planted_finding(c, run, v);
    assert_int_equal(tdb_long(c, "SELECT count(*) FROM audit_runs WHERE status <> 'finished'"), 0);
    assert_int_equal(tdb_long(c, "SELECT count(*) FROM audit_operators_latest"
                                 " WHERE policy_agreement BETWEEN 0 AND 1"),
                     8);

    assert_true(file_written(dir, "audit.html"));
    j = load_report_json(dir);
    assert_int_equal(json_integer_value(json_object_get(j, "run_id")), run);
    assert_int_equal(json_integer_value(json_object_get(j, "policy_version")), v);
    json_decref(j);
    snprintf(html, sizeof html, "%s/audit.html", dir);
    render_ok(html, tmp_path("audit-daemon.png", png, sizeof png));

    assert_true(fabs(tdaemon_metric(&d, "understudy_audit_leader") - 1) < 1e-9);
    assert_true(fabs(tdaemon_metric(&d, RUNS_FINISHED) - 2) < 1e-9);
    assert_true(fabs(tdaemon_metric(&d, RUNS_FAILED)) < 1e-9);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 30), 0);
    tmock_stop(&m);
    PQfinish(c);
    print_message("took %.1f s\n", now_s() - t0);
}

/* ---- 4: bad input ----------------------------------------------------------------- */

struct refusal {
    const char *what;
    const char *args[16];
    int want;         /* exit status */
    const char *says; /* must appear in stderr */
};

static void test_audit_bad_input_is_refused_cleanly(void **state)
{
    (void)state;
    double t0 = now_s();
    base_db();
    const struct sim *s = sim();
    char dsn[512], cfg[700], cfg_big[700], one[700], nodir[700];
    tdb_clone(BASE_DB, "understudy_t_audit_bad", dsn, sizeof dsn);
    write_config("audit-bad", AUDIT_YAML, cfg, sizeof cfg);
    write_config("audit-bad-support", "audit:\n  min_support: 1000000\n", cfg_big, sizeof cfg_big);
    tmp_path("audit-one-operator.csv", one, sizeof one);
    assert_int_equal(tsim_csv_with_operators(s->dir, one, "op-01", 2000), 2000);
    tmp_path("audit-bad-report", nodir, sizeof nodir);
    PGconn *c = testenv_connect(dsn);

    const struct refusal cases[] = {
        {"an empty window",
         {"audit", "-c", cfg, "--since", "2031-01-01T00:00:00Z"},
         1,
         "no decisions"},
        {"one operator",
         {"audit", "-c", cfg, "--csv", one, "--label", "label", "--operator", "operator_id"},
         1,
         "only one operator"},
        {"too few decisions", {"audit", "-c", cfg_big}, 1, "min_support"},
        {"an unknown operator", {"audit", "-c", cfg, "--operators", "op-99"}, 1, "op-99"},
        {"a missing column",
         {"audit", "-c", cfg, "--csv", s->csv, "--label", "label", "--operator", "nope"},
         1,
         "\"nope\""},
        {"--csv without --label", {"audit", "-c", cfg, "--csv", s->csv}, 2, "--label"},
        {"--format without --report", {"audit", "-c", cfg, "--format", "html"}, 2, "--report"},
        {"--since not a time", {"audit", "-c", cfg, "--since", "yesterday"}, 2, "yesterday"},
        {"an unknown format", {"audit", "-c", cfg, "--format", "pdf", "--report", nodir}, 2, "pdf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct refusal *k = &cases[i];
        char *out = NULL, *err = NULL;
        int st = run_bin(dsn, k->args, &out, &err);
        if (st != k->want)
            fail_msg("%s: exited %d, not %d: %s", k->what, st, k->want, err);
        if (!strstr(err, k->says))
            fail_msg("%s: stderr does not say '%s': %s", k->what, k->says, err);
        if (k->want == 2 && !strstr(err, "usage: understudy audit"))
            fail_msg("%s: no usage on stderr: %s", k->what, err);
        /* The reason is one line that says whose it is (log lines may
         * come before it). */
        const char *at = strstr(err, k->says);
        const char *bol = at;
        while (bol > err && bol[-1] != '\n')
            bol--;
        if (strncmp(bol, "understudy audit: ", 18) != 0)
            fail_msg("%s: '%s' is not on an 'understudy audit: ' line: %s", k->what, k->says, err);
        /* Refused: no summary at all. */
        if (*out)
            fail_msg("%s: stdout is not empty: %s", k->what, out);
        free(out);
        /* Refused before anything was recorded: no run at all. */
        assert_int_equal(tcount(c, "audit_runs"), 0);
        free(err);
    }
    assert_false(path_exists(nodir));
    assert_int_equal(tcount(c, "audit_findings") + tcount(c, "audit_operators"), 0);
    PQfinish(c);
    print_message("took %.1f s\n", now_s() - t0);
}

/* ---- 5: the CLI on a CSV file ----------------------------------------------------------- */

static void test_audit_cli_from_csv_finds_the_planted_bias(void **state)
{
    (void)state;
    double t0 = now_s();
    const struct sim *s = sim();
    char cfg[700], dir[700];
    write_config("audit-csv", AUDIT_YAML, cfg, sizeof cfg);
    tmp_path("audit-csv-report", dir, sizeof dir);
    /* A CSV audit reads no database: a DSN that cannot connect is fine. */
    const char *args[] = {"audit", "-c",         cfg,           "--csv",    s->csv, "--label",
                          "label", "--operator", "operator_id", "--report", dir,    NULL};
    char *out = audit_ok("host=/nonexistent dbname=none connect_timeout=1", args);
    char head[800];
    snprintf(head, sizeof head, "audit of %s: %d decisions of 8 operators", s->csv, SIM_ROWS);
    if (strncmp(out, head, strlen(head)) != 0)
        fail_msg("the summary does not start with '%s': %s", head, out);
    if (!strstr(out, "op-03") || !strstr(out, "channel = social"))
        fail_msg("the summary does not name op-03's blind spot on social: %s", out);
    assert_non_null(strstr(out, "1 finding (1 high, 0 medium, 0 low)"));
    free(out);
    assert_true(file_written(dir, "audit.html"));
    json_t *j = load_report_json(dir);
    assert_string_equal(json_string_value(json_object_get(j, "source")), "csv");
    assert_true(json_is_null(json_object_get(j, "run_id")));
    json_t *findings = json_object_get(j, "findings");
    assert_int_equal(json_array_size(findings), 1);
    json_t *f = json_array_get(findings, 0);
    assert_string_equal(json_string_value(json_object_get(f, "operator_id")), "op-03");
    assert_string_equal(json_string_value(json_object_get(f, "kind")), "blind_spot");
    assert_string_equal(json_string_value(json_object_get(f, "action")), "bid_down");
    assert_string_equal(json_string_value(json_object_get(f, "severity")), "high");
    json_decref(j);
    print_message("took %.1f s\n", now_s() - t0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_cli_from_db_finds_the_planted_bias),
        cmocka_unit_test(test_audit_cli_operators_audits_only_those_named),
        cmocka_unit_test(test_audit_daemon_audits_after_a_promotion),
        cmocka_unit_test(test_audit_bad_input_is_refused_cleanly),
        cmocka_unit_test(test_audit_cli_from_csv_finds_the_planted_bias),
    };
    return cmocka_run_group_tests_name("audit", tests, NULL, NULL);
}
