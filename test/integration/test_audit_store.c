/*
 * The audit's store functions (internal/store/audit.c) against real
 * PostgreSQL: a run's life (running -> finished | failed), what
 * audit_findings_latest and audit_operators_latest show, refusals that
 * write nothing, stale runs, the verdicts per operator, and what
 * understudy_reader may read.  Each test migrates a database of its own.
 *
 * Rows of the views are compared whole, as jsonb (to_jsonb of the row
 * without its ids and run times), so every column, NULLs included, is
 * checked by one equality.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "log/log.h"
#include "store/store.h"
#include "testenv.h"

#define DSN_LEN 512

/* 2026-10-01T00:00:00Z and 2026-11-01T00:00:00Z in microseconds. */
#define FROM_US INT64_C(1790812800000000)
#define TO_US   INT64_C(1793491200000000)

/* ---- the documents ------------------------------------------------------ */

/* One finding of each severity; nulls where the audit has no number. */
#define FINDING_HIGH                                                                               \
    "{\"operator_id\":\"op-03\",\"kind\":\"blind_spot\",\"action\":\"bid_down\","                  \
    "\"region\":\"channel = social\","                                                             \
    "\"conditions\":[{\"feature\":\"channel\",\"op\":\"=\",\"level\":\"social\"}],"                \
    "\"n\":412,\"observed\":0,\"expected\":41.2,\"effect\":0,\"ci_low\":0,\"ci_high\":0.09,"       \
    "\"p_value\":1e-12,\"q_value\":3e-11,\"test\":\"poisson_binomial\",\"severity\":\"high\","     \
    "\"summary\":\"op-03 never bids down on social\","                                             \
    "\"details\":{\"inside_observed\":0,\"expected_policy\":null}}"
#define FINDING_MEDIUM                                                                             \
    "{\"operator_id\":\"op-01\",\"kind\":\"policy_disagreement\",\"action\":null,"                 \
    "\"region\":\"\",\"conditions\":[],\"n\":2500,\"observed\":0.71,\"expected\":null,"            \
    "\"effect\":null,\"ci_low\":null,\"ci_high\":null,\"p_value\":0.001,\"q_value\":0.004,"        \
    "\"test\":\"two_proportion\",\"severity\":\"medium\","                                         \
    "\"summary\":\"the champion agrees with op-01 less often than with the team\","                \
    "\"details\":{}}"
#define FINDING_LOW                                                                                \
    "{\"operator_id\":null,\"kind\":\"magnitude\",\"action\":\"budget_up\",\"region\":null,"       \
    "\"n\":40,\"observed\":12.5,\"expected\":10,\"effect\":1.25,\"p_value\":0.02,"                 \
    "\"q_value\":0.04,\"test\":\"welch_t\",\"severity\":\"low\",\"summary\":\"team sizes\"}"

#define OPERATOR_01                                                                                \
    "{\"operator_id\":\"op-01\",\"decisions\":2500,\"actions\":950,\"audited\":true,"              \
    "\"in_reference\":true,\"outside_support\":7,\"policy_agreement\":0.71,\"acceptance_rate\":"   \
    "null,\"verdicts\":0,"                                                                         \
    "\"findings\":{\"high\":0,\"medium\":1,\"low\":0,\"info\":0},"                                 \
    "\"disagreements\":[{\"did\":\"hold\",\"policy\":\"bid_down\",\"n\":120}],"                    \
    "\"cells\":{\"bid_down\":{\"observed\":300,\"expected\":310.5,\"expected_policy\":290.1}}}"
#define OPERATOR_03                                                                                \
    "{\"operator_id\":\"op-03\",\"decisions\":12,\"actions\":3,\"audited\":false,"                 \
    "\"in_reference\":false,\"policy_agreement\":null,\"acceptance_rate\":0.5,\"verdicts\":4,"     \
    "\"findings\":{\"high\":1,\"medium\":0,\"low\":0,\"info\":0},\"disagreements\":[],"            \
    "\"cells\":{}}"

#define PARAMETERS "{\"fdr_q\":0.05,\"min_support\":30}"

static const char good_doc[] =
    "{\"parameters\":" PARAMETERS ",\"findings\":[" FINDING_HIGH "," FINDING_MEDIUM "," FINDING_LOW
    "],\"operators\":[" OPERATOR_01 "," OPERATOR_03 "]}";

/* What the views must show for good_doc, without run_id (added per run). */
static const char *const want_findings[] = {
    "{\"policy_version\":null,\"operator_id\":\"op-03\",\"kind\":\"blind_spot\","
    "\"action\":\"bid_down\",\"region\":\"channel = social\",\"n\":412,\"observed\":0,"
    "\"expected\":41.2,\"effect\":0,\"p_value\":1e-12,\"q_value\":3e-11,\"severity\":\"high\","
    "\"summary\":\"op-03 never bids down on social\","
    "\"details\":{\"conditions\":[{\"feature\":\"channel\",\"op\":\"=\",\"level\":\"social\"}],"
    "\"ci_low\":0,\"ci_high\":0.09,\"test\":\"poisson_binomial\","
    "\"details\":{\"inside_observed\":0,\"expected_policy\":null}}}",
    "{\"policy_version\":null,\"operator_id\":\"op-01\",\"kind\":\"policy_disagreement\","
    "\"action\":null,\"region\":\"\",\"n\":2500,\"observed\":0.71,\"expected\":null,"
    "\"effect\":null,\"p_value\":0.001,\"q_value\":0.004,\"severity\":\"medium\","
    "\"summary\":\"the champion agrees with op-01 less often than with the team\","
    "\"details\":{\"conditions\":[],\"ci_low\":null,\"ci_high\":null,"
    "\"test\":\"two_proportion\",\"details\":{}}}",
    "{\"policy_version\":null,\"operator_id\":null,\"kind\":\"magnitude\","
    "\"action\":\"budget_up\",\"region\":\"\",\"n\":40,\"observed\":12.5,\"expected\":10,"
    "\"effect\":1.25,\"p_value\":0.02,\"q_value\":0.04,\"severity\":\"low\","
    "\"summary\":\"team sizes\",\"details\":{\"test\":\"welch_t\"}}",
};

static const char *const want_operators[] = {
    "{\"policy_version\":null,\"window_from\":\"2026-10-01T00:00:00+00:00\","
    "\"window_to\":\"2026-11-01T00:00:00+00:00\",\"operator_id\":\"op-01\",\"decisions\":2500,"
    "\"actions\":950,\"audited\":true,\"in_reference\":true,\"outside_support\":7,"
    "\"policy_agreement\":0.71,"
    "\"acceptance_rate\":null,\"verdicts\":0,\"findings_high\":0,\"findings_medium\":1,"
    "\"findings_low\":0,"
    "\"details\":{\"disagreements\":[{\"did\":\"hold\",\"policy\":\"bid_down\",\"n\":120}],"
    "\"cells\":{\"bid_down\":{\"observed\":300,\"expected\":310.5,\"expected_policy\":290.1}}}}",
    "{\"policy_version\":null,\"window_from\":\"2026-10-01T00:00:00+00:00\","
    "\"window_to\":\"2026-11-01T00:00:00+00:00\",\"operator_id\":\"op-03\",\"decisions\":12,"
    "\"actions\":3,\"audited\":false,\"in_reference\":false,\"outside_support\":0,"
    "\"policy_agreement\":null,"
    "\"acceptance_rate\":0.5,\"verdicts\":4,\"findings_high\":1,\"findings_medium\":0,"
    "\"findings_low\":0,\"details\":{\"disagreements\":[],\"cells\":{}}}",
};

/* ---- helpers -------------------------------------------------------------- */

struct db {
    struct store *st;
    PGconn *c;
};

/* A fresh, migrated database with a store and a plain connection on it. */
static void db_open(struct db *d, const char *name)
{
    char dsn[DSN_LEN], err[1024];
    int applied = 0;
    testenv_create_db(name, dsn, sizeof dsn);
    d->st = NULL;
    if (store_connect(dsn, NULL, &d->st, err, sizeof err) != 0)
        fail_msg("store_connect: %s", err);
    if (store_migrate(d->st, NULL, &applied, err, sizeof err) != 0)
        fail_msg("store_migrate: %s", err);
    assert_int_equal(applied, (int)store_n_migrations);
    d->c = testenv_connect(dsn);
    /* to_jsonb renders timestamptz in the session's time zone. */
    PGresult *r = PQexec(d->c, "SET TIME ZONE 'UTC'");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
}

static void db_close(struct db *d)
{
    PQfinish(d->c);
    store_free(d->st);
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* The first value of sql with text params; "NULL" for SQL NULL, "" for no
 * rows.  Caller frees. */
static char *qstr(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    char *v = strdup(PQntuples(r) == 0 ? "" : PQgetisnull(r, 0, 0) ? "NULL" : PQgetvalue(r, 0, 0));
    assert_non_null(v);
    PQclear(r);
    return v;
}

/* Asserts that sql (with the run id as $1) yields want. */
static void assert_run_value(PGconn *c, int64_t run_id, const char *sql, const char *want)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)run_id);
    const char *params[1] = {id};
    char *v = qstr(c, sql, 1, params);
    if (strcmp(v, want) != 0)
        fail_msg("run %s: %s: got \"%s\", want \"%s\"", id, sql, v, want);
    free(v);
}

static void assert_value(PGconn *c, const char *sql, const char *want)
{
    char *v = qstr(c, sql, 0, NULL);
    if (strcmp(v, want) != 0)
        fail_msg("%s: got \"%s\", want \"%s\"", sql, v, want);
    free(v);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static int64_t begin_ok(struct db *d, int policy_version, int64_t from_us, int64_t to_us,
                        const char *parameters)
{
    char err[1024];
    int64_t id = 0;
    if (store_audit_begin(d->st, policy_version, from_us, to_us, parameters, &id, err,
                          sizeof err) != 0)
        fail_msg("store_audit_begin: %s", err);
    assert_true(id > 0);
    return id;
}

static void finish_ok(struct db *d, int64_t run_id, const char *doc, int64_t want_n)
{
    char err[1024];
    int64_t n = -1;
    if (store_audit_finish(d->st, run_id, doc, &n, err, sizeof err) != 0)
        fail_msg("store_audit_finish: %s", err);
    assert_int_equal(n, want_n);
}

/*
 * Asserts that view (audit_findings_latest or audit_operators_latest) holds
 * exactly the rows want[0..n) of run run_id, in that order.
 */
static void assert_view_rows(PGconn *c, const char *view, int64_t run_id, const char *const *want,
                             size_t n)
{
    char sql[512], id[24], count[24];
    snprintf(id, sizeof id, "%lld", (long long)run_id);
    snprintf(count, sizeof count, "%zu", n);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", view);
    assert_value(c, sql, count);
    /* Ordinal of each row in the view's own order, compared without the
     * columns that are not in the document. */
    snprintf(sql, sizeof sql,
             "SELECT coalesce(string_agg(i::text, ','), '') FROM"
             " (SELECT row_number() OVER () AS i, to_jsonb(v) - 'id' - 'run_started_at'"
             "  - 'run_finished_at' AS j FROM %s AS v) AS x"
             " WHERE j = $2::jsonb || jsonb_build_object('run_id', $1::bigint)",
             view);
    for (size_t k = 0; k < n; k++) {
        const char *params[2] = {id, want[k]};
        char *v = qstr(c, sql, 2, params);
        char ord[24];
        snprintf(ord, sizeof ord, "%zu", k + 1);
        if (strcmp(v, ord) != 0) {
            char all[256];
            snprintf(all, sizeof all,
                     "SELECT string_agg((to_jsonb(v) - 'id' - 'run_started_at'"
                     " - 'run_finished_at')::text, E'\\n') FROM %s AS v",
                     view);
            char *rows = qstr(c, all, 0, NULL);
            fail_msg("%s: row %zu found at \"%s\"; want\n%s\nrows:\n%s", view, k + 1, v, want[k],
                     rows);
        }
        free(v);
    }
}

/* ---- tests ------------------------------------------------------------------ */

static void test_audit_store_finish_shows_exact_rows_in_latest_views(void **state)
{
    (void)state;
    struct db d;
    db_open(&d, "understudy_t_audit_finish");
    int64_t id = begin_ok(&d, 0, FROM_US, TO_US, "{\"fdr_q\":0.1}");
    assert_run_value(d.c, id,
                     "SELECT status || ' ' || (finished_at IS NULL) || ' ' ||"
                     " (policy_version IS NULL) || ' ' || parameters::text FROM audit_runs"
                     " WHERE id = $1::bigint",
                     "running true true {\"fdr_q\": 0.1}");
    /* A running run shows nothing yet. */
    assert_value(d.c, "SELECT count(*) FROM audit_findings_latest", "0");
    assert_value(d.c, "SELECT count(*) FROM audit_operators_latest", "0");

    finish_ok(&d, id, good_doc, 3);
    assert_run_value(d.c, id,
                     "SELECT status || ' ' || (finished_at >= started_at) || ' ' ||"
                     " (error IS NULL) || ' ' || (parameters = '" PARAMETERS "'::jsonb)"
                     " FROM audit_runs WHERE id = $1::bigint",
                     "finished true true true");
    assert_run_value(d.c, id,
                     "SELECT (extract(epoch FROM window_from) * 1000000)::bigint || ' ' ||"
                     " (extract(epoch FROM window_to) * 1000000)::bigint FROM audit_runs"
                     " WHERE id = $1::bigint",
                     "1790812800000000 1793491200000000");
    assert_view_rows(d.c, "audit_findings_latest", id, want_findings, 3);
    assert_view_rows(d.c, "audit_operators_latest", id, want_operators, 2);

    /* JSON null is SQL NULL, not the text "null". */
    assert_value(d.c,
                 "SELECT count(*) FILTER (WHERE action IS NULL) || ' ' ||"
                 " count(*) FILTER (WHERE expected IS NULL) || ' ' ||"
                 " count(*) FILTER (WHERE effect IS NULL) || ' ' ||"
                 " count(*) FILTER (WHERE operator_id IS NULL) FROM audit_findings_latest",
                 "1 1 1 1");
    assert_value(d.c,
                 "SELECT count(*) FILTER (WHERE policy_agreement IS NULL) || ' ' ||"
                 " count(*) FILTER (WHERE acceptance_rate IS NULL) FROM audit_operators_latest",
                 "1 1");
    /* The views' run columns. */
    assert_run_value(d.c, id,
                     "SELECT count(*) FROM audit_findings_latest f JOIN audit_runs r"
                     " ON r.id = f.run_id WHERE f.run_id = $1::bigint"
                     " AND f.run_started_at = r.started_at AND f.run_finished_at = r.finished_at",
                     "3");
    assert_run_value(d.c, id,
                     "SELECT count(*) FROM audit_operators_latest o JOIN audit_runs r"
                     " ON r.id = o.run_id WHERE o.run_id = $1::bigint"
                     " AND o.run_started_at = r.started_at AND o.run_finished_at = r.finished_at",
                     "2");
    db_close(&d);
}

static void test_audit_store_begin_records_policy_and_open_window(void **state)
{
    (void)state;
    struct db d;
    char err[1024];
    int64_t id = 0;
    db_open(&d, "understudy_t_audit_begin");
    exec_ok(d.c, "INSERT INTO policies (version, status, model) VALUES (7, 'champion', '{}')");
    id = begin_ok(&d, 7, INT64_MIN, INT64_MIN, NULL);
    assert_run_value(d.c, id,
                     "SELECT policy_version || ' ' || (window_from IS NULL) || ' ' ||"
                     " (window_to IS NULL) || ' ' || parameters::text FROM audit_runs"
                     " WHERE id = $1::bigint",
                     "7 true true {}");
    /* Without "parameters" in the document, the run keeps its own. */
    finish_ok(&d, id, "{\"findings\":[" FINDING_HIGH "]}", 1);
    assert_run_value(d.c, id,
                     "SELECT status || ' ' || parameters::text FROM audit_runs"
                     " WHERE id = $1::bigint",
                     "finished {}");
    assert_value(d.c, "SELECT policy_version FROM audit_findings_latest", "7");
    assert_value(d.c, "SELECT count(*) FROM audit_operators_latest", "0");

    /* An unknown policy version is refused by the foreign key. */
    assert_int_equal(store_audit_begin(d.st, 8, INT64_MIN, INT64_MIN, NULL, &id, err, sizeof err),
                     -1);
    assert_contains(err, "23503");
    assert_int_equal(id, 0);
    assert_value(d.c, "SELECT count(*) FROM audit_runs", "1");
    db_close(&d);
}

static void test_audit_store_fail_keeps_previous_findings_visible(void **state)
{
    (void)state;
    struct db d;
    char err[1024];
    db_open(&d, "understudy_t_audit_fail");
    int64_t a = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    finish_ok(&d, a, good_doc, 3);

    int64_t b = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    assert_int_equal(
        store_audit_fail(d.st, b, "reference fit: out of memory\nat pass 2", err, sizeof err), 0);
    assert_run_value(d.c, b,
                     "SELECT status || '|' || error || '|' || (finished_at >= started_at)"
                     " FROM audit_runs WHERE id = $1::bigint",
                     "failed|reference fit: out of memory|true");
    /* A failed run and a running one after it hide nothing. */
    int64_t c = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    assert_true(c > b);
    assert_view_rows(d.c, "audit_findings_latest", a, want_findings, 3);
    assert_view_rows(d.c, "audit_operators_latest", a, want_operators, 2);

    /* Failing again, or failing a finished or unknown run, changes nothing. */
    assert_int_equal(store_audit_fail(d.st, b, "again", err, sizeof err), 1);
    assert_int_equal(store_audit_fail(d.st, a, "late", err, sizeof err), 1);
    assert_int_equal(store_audit_fail(d.st, c + 100, "nobody", err, sizeof err), 1);
    assert_run_value(d.c, b, "SELECT error FROM audit_runs WHERE id = $1::bigint",
                     "reference fit: out of memory");
    assert_run_value(d.c, a,
                     "SELECT status || ' ' || (error IS NULL) FROM audit_runs"
                     " WHERE id = $1::bigint",
                     "finished true");
    /* An empty reason still says something. */
    assert_int_equal(store_audit_fail(d.st, c, "", err, sizeof err), 0);
    assert_run_value(d.c, c, "SELECT status || '|' || error FROM audit_runs WHERE id = $1::bigint",
                     "failed|unspecified error");
    db_close(&d);
}

static void test_audit_store_finish_refuses_run_not_running(void **state)
{
    (void)state;
    struct db d;
    char err[1024];
    int64_t n = -1;
    db_open(&d, "understudy_t_audit_refuse");
    int64_t a = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    finish_ok(&d, a, good_doc, 3);
    char *before = qstr(d.c, "SELECT finished_at::text FROM audit_runs WHERE id = 1", 0, NULL);

    assert_int_equal(store_audit_finish(d.st, a, good_doc, &n, err, sizeof err), -1);
    assert_int_equal(n, 0);
    assert_contains(err, "is finished, not running");
    assert_value(d.c, "SELECT count(*) FROM audit_findings", "3");
    assert_value(d.c, "SELECT count(*) FROM audit_operators", "2");
    char *after = qstr(d.c, "SELECT finished_at::text FROM audit_runs WHERE id = 1", 0, NULL);
    assert_string_equal(before, after);
    free(before);
    free(after);

    int64_t b = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    assert_int_equal(store_audit_fail(d.st, b, "boom", err, sizeof err), 0);
    assert_int_equal(store_audit_finish(d.st, b, good_doc, &n, err, sizeof err), -1);
    assert_contains(err, "is failed, not running");
    assert_run_value(d.c, b, "SELECT status || ' ' || error FROM audit_runs WHERE id = $1::bigint",
                     "failed boom");

    assert_int_equal(store_audit_finish(d.st, b + 1, good_doc, &n, err, sizeof err), -1);
    assert_contains(err, "no audit run");
    assert_value(d.c, "SELECT count(*) FROM audit_findings", "3");
    assert_value(d.c, "SELECT count(*) FROM audit_operators", "2");
    /* The session is usable afterwards (no transaction left open). */
    assert_int_equal(PQtransactionStatus(store_conn(d.st)), PQTRANS_IDLE);
    db_close(&d);
}

static void test_audit_store_finish_bad_document_writes_nothing(void **state)
{
    (void)state;
    static const struct {
        const char *doc;
        const char *want; /* in the error */
    } bad[] = {
        {"{\"findings\":[" FINDING_HIGH ",", "22P02"},
        {"[" FINDING_HIGH "]", "a JSON array, not an object"},
        {"{\"findings\":[" FINDING_HIGH ",{\"operator_id\":\"op-01\",\"kind\":\"over_acting\","
         "\"action\":\"bid_sideways\",\"severity\":\"high\",\"summary\":\"s\"}]}",
         "audit_findings_action_check"},
        {"{\"findings\":[" FINDING_HIGH ",{\"operator_id\":\"op-01\",\"kind\":\"over_acting\","
         "\"action\":null,\"severity\":\"critical\",\"summary\":\"s\"}]}",
         "audit_findings_severity_check"},
        {"{\"findings\":[{\"operator_id\":\"op-01\",\"kind\":\"over_acting\",\"p_value\":1.5,"
         "\"severity\":\"low\",\"summary\":\"s\"}]}",
         "audit_findings_p_value_range"},
        {"{\"findings\":[{\"operator_id\":\"op-01\",\"kind\":\"over_acting\",\"n\":\"many\","
         "\"severity\":\"low\",\"summary\":\"s\"}]}",
         "22P02"},
        {"{\"findings\":{\"not\":\"an array\"}}", "22023"},
        /* Good findings, a bad operator row: the findings go too. */
        {"{\"findings\":[" FINDING_HIGH "],\"operators\":[" OPERATOR_01 "," OPERATOR_01 "]}",
         "23505"},
        {"{\"findings\":[" FINDING_HIGH "],\"operators\":[{\"operator_id\":\"op-01\"}]}", "23502"},
        {"{\"findings\":[" FINDING_HIGH "],\"operators\":[" OPERATOR_03 "],\"parameters\":[1]}",
         "audit_runs_parameters_object"},
    };
    struct db d;
    char err[1024];
    db_open(&d, "understudy_t_audit_bad");
    int64_t id = begin_ok(&d, 0, FROM_US, TO_US, "{\"fdr_q\":0.1}");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t n = -1;
        err[0] = '\0';
        if (store_audit_finish(d.st, id, bad[i].doc, &n, err, sizeof err) != -1)
            fail_msg("case %zu: accepted", i + 1);
        if (!strstr(err, bad[i].want))
            fail_msg("case %zu: error \"%s\" lacks \"%s\"", i + 1, err, bad[i].want);
        assert_null(strchr(err, '\n'));
        assert_int_equal(n, 0);
        assert_value(d.c, "SELECT count(*) FROM audit_findings", "0");
        assert_value(d.c, "SELECT count(*) FROM audit_operators", "0");
        assert_run_value(d.c, id,
                         "SELECT status || ' ' || (finished_at IS NULL) || ' ' ||"
                         " parameters::text FROM audit_runs WHERE id = $1::bigint",
                         "running true {\"fdr_q\": 0.1}");
        assert_int_equal(PQtransactionStatus(store_conn(d.st)), PQTRANS_IDLE);
    }
    assert_int_equal(store_audit_finish(d.st, id, NULL, &(int64_t){0}, err, sizeof err), -1);
    /* The run stayed usable: the caller marks it failed. */
    assert_int_equal(store_audit_fail(d.st, id, "bad audit document", err, sizeof err), 0);
    assert_run_value(d.c, id, "SELECT status FROM audit_runs WHERE id = $1::bigint", "failed");
    db_close(&d);
}

static void test_audit_store_fail_stale_marks_running_runs_failed(void **state)
{
    (void)state;
    struct db d;
    char err[1024];
    int64_t n = -1;
    db_open(&d, "understudy_t_audit_stale");
    int64_t done = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    finish_ok(&d, done, good_doc, 3);
    int64_t failed = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    assert_int_equal(store_audit_fail(d.st, failed, "earlier failure", err, sizeof err), 0);
    int64_t r1 = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    int64_t r2 = begin_ok(&d, 0, INT64_MIN, INT64_MIN, NULL);

    if (store_audit_fail_stale(d.st, &n, err, sizeof err) != 0)
        fail_msg("store_audit_fail_stale: %s", err);
    assert_int_equal(n, 2);
    assert_run_value(d.c, r1,
                     "SELECT status || '|' || error || '|' || (finished_at >= started_at)"
                     " FROM audit_runs WHERE id = $1::bigint",
                     "failed|" STORE_AUDIT_INTERRUPTED "|true");
    assert_run_value(d.c, r2, "SELECT status || '|' || error FROM audit_runs WHERE id = $1::bigint",
                     "failed|" STORE_AUDIT_INTERRUPTED);
    assert_run_value(d.c, failed, "SELECT error FROM audit_runs WHERE id = $1::bigint",
                     "earlier failure");
    assert_run_value(d.c, done, "SELECT status FROM audit_runs WHERE id = $1::bigint", "finished");
    assert_view_rows(d.c, "audit_findings_latest", done, want_findings, 3);

    /* A stale run can no longer be finished; a second sweep finds nothing. */
    assert_int_equal(store_audit_finish(d.st, r1, good_doc, &n, err, sizeof err), -1);
    assert_contains(err, "not running");
    n = -1;
    assert_int_equal(store_audit_fail_stale(d.st, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    db_close(&d);
}

static void test_audit_store_last_finished_follows_view_rule(void **state)
{
    (void)state;
    struct db d;
    char err[1024], want[32];
    int64_t us = 0;
    db_open(&d, "understudy_t_audit_last");
    assert_int_equal(store_audit_last_finished(d.st, &us, err, sizeof err), 0);
    assert_true(us == INT64_MIN);

    int64_t a = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    assert_int_equal(store_audit_last_finished(d.st, &us, err, sizeof err), 0);
    assert_true(us == INT64_MIN); /* running does not count */
    finish_ok(&d, a, good_doc, 3);
    exec_ok(d.c, "UPDATE audit_runs SET started_at = '2026-11-02T10:00:00.123456Z',"
                 " finished_at = '2026-11-02T11:00:00Z' WHERE id = 1");
    assert_int_equal(store_audit_last_finished(d.st, &us, err, sizeof err), 0);
    assert_true(us == INT64_C(1793613600123456));

    /* A later failed run does not count; an older finished one is older. */
    int64_t b = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    assert_int_equal(store_audit_fail(d.st, b, "x", err, sizeof err), 0);
    int64_t c = begin_ok(&d, 0, FROM_US, TO_US, "{}");
    finish_ok(&d, c, "{\"findings\":[]}", 0);
    exec_ok(d.c, "UPDATE audit_runs SET started_at = '2026-11-01T10:00:00Z',"
                 " finished_at = '2026-11-01T11:00:00Z' WHERE status = 'finished' AND id <> 1");
    assert_int_equal(store_audit_last_finished(d.st, &us, err, sizeof err), 0);
    assert_true(us == INT64_C(1793613600123456));
    assert_value(d.c, "SELECT DISTINCT run_id FROM audit_findings_latest", "1");

    /* Moved to the newest start, the empty run is the latest: the views
     * agree with store_audit_last_finished and show no findings. */
    exec_ok(d.c, "UPDATE audit_runs SET started_at = '2026-11-03T10:00:00Z',"
                 " finished_at = '2026-11-03T11:00:00Z' WHERE status = 'finished' AND id <> 1");
    assert_int_equal(store_audit_last_finished(d.st, &us, err, sizeof err), 0);
    assert_true(us == INT64_C(1793700000000000));
    assert_value(d.c, "SELECT count(*) FROM audit_findings_latest", "0");
    assert_value(d.c, "SELECT count(*) FROM audit_operators_latest", "0");
    snprintf(want, sizeof want, "%lld", (long long)us);
    assert_value(d.c,
                 "SELECT (extract(epoch FROM started_at) * 1000000)::bigint FROM audit_runs"
                 " WHERE status = 'finished' ORDER BY started_at DESC, id DESC LIMIT 1",
                 want);
    db_close(&d);
}

struct verdict_row {
    char operator_id[32];
    int64_t accepted, total;
};

struct verdict_list {
    struct verdict_row rows[8];
    size_t n;
    int stop_after; /* return non-zero on this call (1-based); 0 = never */
};

static int collect_verdict(void *arg, const char *operator_id, int64_t accepted, int64_t total)
{
    struct verdict_list *l = arg;
    if (l->n >= sizeof l->rows / sizeof l->rows[0])
        return -1;
    snprintf(l->rows[l->n].operator_id, sizeof l->rows[0].operator_id, "%s", operator_id);
    l->rows[l->n].accepted = accepted;
    l->rows[l->n].total = total;
    l->n++;
    return l->stop_after != 0 && (int)l->n == l->stop_after;
}

static void assert_verdict(const struct verdict_list *l, size_t i, const char *op, int64_t accepted,
                           int64_t total)
{
    assert_true(i < l->n);
    assert_string_equal(l->rows[i].operator_id, op);
    assert_int_equal(l->rows[i].accepted, accepted);
    assert_int_equal(l->rows[i].total, total);
}

static void test_audit_store_verdicts_counts_per_operator_in_window(void **state)
{
    (void)state;
    struct db d;
    char err[1024];
    db_open(&d, "understudy_t_audit_verdicts");
    /* op-a: 2 accepted, 1 rejected, 1 modified, and recommendation 5 first
     * rejected then accepted (counts once, accepted); op-b: one rejected
     * inside, one accepted before the window; op-c: only at the window's
     * end (excluded) and after it. */
    exec_ok(d.c,
            "INSERT INTO feedback_events (event_id, ts, operator_id, recommendation_id, verdict,"
            " action, delta_pct, decision, src_topic, src_partition, src_offset) VALUES"
            " ('f1', '2026-10-02T00:00:00Z', 'op-a', 1, 'accepted', NULL, NULL, NULL, 't', 0, 1),"
            " ('f2', '2026-10-03T00:00:00Z', 'op-a', 2, 'accepted', NULL, NULL, NULL, 't', 0, 2),"
            " ('f3', '2026-10-04T00:00:00Z', 'op-a', 3, 'rejected', NULL, NULL, NULL, 't', 0, 3),"
            " ('f4', '2026-10-05T00:00:00Z', 'op-a', 4, 'modified', 'bid_change', -5,"
            "  'bid_down', 't', 0, 4),"
            " ('f5', '2026-10-06T00:00:00Z', 'op-a', 5, 'rejected', NULL, NULL, NULL, 't', 0, 5),"
            " ('f6', '2026-10-07T00:00:00Z', 'op-a', 5, 'accepted', NULL, NULL, NULL, 't', 0, 6),"
            " ('f7', '2026-10-01T00:00:00Z', 'op-b', 7, 'rejected', NULL, NULL, NULL, 't', 0, 7),"
            " ('f8', '2026-09-30T23:59:59Z', 'op-b', 8, 'accepted', NULL, NULL, NULL, 't', 0, 8),"
            " ('f9', '2026-11-01T00:00:00Z', 'op-c', 9, 'accepted', NULL, NULL, NULL, 't', 0, 9),"
            " ('fa', '2026-12-01T00:00:00Z', 'op-c', 10, 'accepted', NULL, NULL, NULL, 't', 0,"
            "  10)");

    struct verdict_list l = {0};
    if (store_audit_verdicts(d.st, FROM_US, TO_US, collect_verdict, &l, err, sizeof err) != 0)
        fail_msg("store_audit_verdicts: %s", err);
    assert_int_equal(l.n, 2);
    assert_verdict(&l, 0, "op-a", 3, 5);
    assert_verdict(&l, 1, "op-b", 0, 1);

    /* Unbounded on both sides: everything. */
    memset(&l, 0, sizeof l);
    if (store_audit_verdicts(d.st, INT64_MIN, INT64_MAX, collect_verdict, &l, err, sizeof err) != 0)
        fail_msg("store_audit_verdicts: %s", err);
    assert_int_equal(l.n, 3);
    assert_verdict(&l, 0, "op-a", 3, 5);
    assert_verdict(&l, 1, "op-b", 1, 2);
    assert_verdict(&l, 2, "op-c", 2, 2);

    /* The latest verdict in the window counts: before f6, 5 is rejected. */
    memset(&l, 0, sizeof l);
    assert_int_equal(store_audit_verdicts(d.st, FROM_US, INT64_C(1791331200000000), collect_verdict,
                                          &l, err, sizeof err),
                     0); /* to 2026-10-07T00:00:00Z */
    assert_int_equal(l.n, 2);
    assert_verdict(&l, 0, "op-a", 2, 5);

    /* Nothing in an empty window: fn is never called. */
    memset(&l, 0, sizeof l);
    assert_int_equal(store_audit_verdicts(d.st, INT64_C(1893456000000000), INT64_MAX,
                                          collect_verdict, &l, err, sizeof err),
                     0);
    assert_int_equal(l.n, 0);

    /* A callback that says stop stops the walk. */
    memset(&l, 0, sizeof l);
    l.stop_after = 1;
    assert_int_equal(
        store_audit_verdicts(d.st, INT64_MIN, INT64_MAX, collect_verdict, &l, err, sizeof err), -1);
    assert_int_equal(l.n, 1);
    assert_string_equal(err, "stopped by the callback");
    db_close(&d);
}

static void test_audit_store_reader_reads_views_only(void **state)
{
    (void)state;
    static const char *const hidden[] = {"audit_runs", "audit_findings", "audit_operators"};
    struct db d;
    char sql[128], s[6];
    db_open(&d, "understudy_t_audit_reader");
    int64_t id = begin_ok(&d, 0, FROM_US, TO_US, NULL);
    finish_ok(&d, id, good_doc, 3);

    exec_ok(d.c, "SET ROLE understudy_reader");
    assert_value(d.c, "SELECT current_user", "understudy_reader");
    assert_value(d.c, "SELECT count(*) FROM audit_findings_latest", "3");
    assert_value(d.c, "SELECT count(*) FROM audit_operators_latest", "2");
    assert_value(d.c,
                 "SELECT string_agg(operator_id || ':' || findings_high, ',' ORDER BY"
                 " operator_id) FROM audit_operators_latest",
                 "op-01:0,op-03:1");
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        snprintf(sql, sizeof sql, "SELECT * FROM %s", hidden[i]);
        int st = testenv_exec_status(d.c, sql, s);
        if (st == PGRES_TUPLES_OK || strcmp(s, "42501") != 0)
            fail_msg("%s as understudy_reader: status %d SQLSTATE %s", sql, st, s);
    }
    assert_int_not_equal(testenv_exec_status(d.c, "DELETE FROM audit_operators", s),
                         PGRES_COMMAND_OK);
    assert_string_equal(s, "42501");
    assert_int_not_equal(testenv_exec_status(d.c,
                                             "UPDATE audit_runs SET status = 'failed',"
                                             " error = 'x'",
                                             s),
                         PGRES_COMMAND_OK);
    assert_string_equal(s, "42501");
    exec_ok(d.c, "RESET ROLE");
    assert_value(d.c, "SELECT count(*) FROM audit_operators", "2");

    /* Of the audit objects, the reader may read exactly the two views, and
     * do nothing else with them. */
    assert_value(d.c,
                 "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class"
                 " WHERE relnamespace = current_schema()::regnamespace AND relname LIKE 'audit%'"
                 " AND relkind IN ('r', 'v') AND has_table_privilege('understudy_reader', oid,"
                 " 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')",
                 "audit_findings_latest,audit_operators_latest");
    assert_value(d.c,
                 "SELECT count(*) FROM pg_class WHERE relnamespace ="
                 " current_schema()::regnamespace AND relname LIKE 'audit%'"
                 " AND has_table_privilege('understudy_reader', oid,"
                 " 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')",
                 "0");
    db_close(&d);
}

int main(void)
{
    log_setup(LOG_LEVEL_WARN, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_store_finish_shows_exact_rows_in_latest_views),
        cmocka_unit_test(test_audit_store_begin_records_policy_and_open_window),
        cmocka_unit_test(test_audit_store_fail_keeps_previous_findings_visible),
        cmocka_unit_test(test_audit_store_finish_refuses_run_not_running),
        cmocka_unit_test(test_audit_store_finish_bad_document_writes_nothing),
        cmocka_unit_test(test_audit_store_fail_stale_marks_running_runs_failed),
        cmocka_unit_test(test_audit_store_last_finished_follows_view_rule),
        cmocka_unit_test(test_audit_store_verdicts_counts_per_operator_in_window),
        cmocka_unit_test(test_audit_store_reader_reads_views_only),
    };
    return cmocka_run_group_tests_name("audit_store", tests, NULL, NULL);
}
