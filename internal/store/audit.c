/*
 * store: the operator audit's runs, findings and per-operator rows
 * (audit_runs, audit_findings, audit_operators), and the verdicts on
 * recommendations the audit reports per operator.
 *
 * A run's life: store_audit_begin writes it 'running'; store_audit_finish
 * writes every finding and operator row and marks it 'finished' in one
 * transaction, or store_audit_fail marks it 'failed'.  The dashboards'
 * views show only the newest finished run, so a reader never sees a run
 * half-written, and a failed or running run never hides the previous
 * results.  A process that dies mid-run leaves its run 'running'; the next
 * holder of STORE_AUDIT_RUN_LOCK_KEY marks such runs failed
 * (store_audit_fail_stale).  Finishing and failing lock the run's row and
 * only act on a 'running' run, so a run ends exactly once.
 *
 * The audit module hands the results over as one JSON document, and the
 * arrays are expanded by PostgreSQL (jsonb_array_elements on a parameter):
 * no SQL is built from data, and a row PostgreSQL refuses aborts the whole
 * transaction.  Of a finding, the keys that have columns go there and
 * every other key (conditions, interval, test, details...) stays in the
 * details column, so what the audit adds later is kept without a
 * migration.  JSON null becomes SQL NULL (->> yields NULL), except for
 * region, which is NOT NULL with '' meaning everywhere.
 *
 * finished_at is GREATEST(now(), started_at): now() is the transaction's
 * start, and a server clock stepped back between begin and finish must not
 * make the run unfinishable (audit_runs_finish_after_start).
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"
#include "util/util.h"

/* Locks the run's row and looks at the document's outer type (which
 * also makes a non-JSON document fail here, before anything is written). */
static const char lock_run[] = "SELECT status, jsonb_typeof($2::jsonb) FROM audit_runs"
                               " WHERE id = $1::bigint FOR UPDATE";

static const char insert_findings[] =
    "INSERT INTO audit_findings (run_id, operator_id, kind, action, region, n, observed,"
    " expected, effect, p_value, q_value, severity, summary, details)"
    " SELECT $1::bigint, e->>'operator_id', e->>'kind', e->>'action',"
    " coalesce(e->>'region', ''), (e->>'n')::bigint, (e->>'observed')::double precision,"
    " (e->>'expected')::double precision, (e->>'effect')::double precision,"
    " (e->>'p_value')::double precision, (e->>'q_value')::double precision,"
    " e->>'severity', e->>'summary',"
    " e - ARRAY['operator_id', 'kind', 'action', 'region', 'n', 'observed', 'expected',"
    "  'effect', 'p_value', 'q_value', 'severity', 'summary']"
    " FROM jsonb_array_elements(coalesce($2::jsonb -> 'findings', '[]')) WITH ORDINALITY"
    "  AS f(e, i)"
    " ORDER BY f.i"; /* ids in the document's order: the view's tie-break */

static const char insert_operators[] =
    "INSERT INTO audit_operators (run_id, operator_id, decisions, actions, audited,"
    " in_reference, outside_support, policy_agreement, acceptance_rate, verdicts, findings_high,"
    " findings_medium, findings_low, details)"
    " SELECT $1::bigint, e->>'operator_id', (e->>'decisions')::bigint,"
    " (e->>'actions')::bigint, (e->>'audited')::boolean, (e->>'in_reference')::boolean,"
    " coalesce((e->>'outside_support')::bigint, 0),"
    " (e->>'policy_agreement')::double precision, (e->>'acceptance_rate')::double precision,"
    " (e->>'verdicts')::bigint, (e #>> '{findings,high}')::integer,"
    " (e #>> '{findings,medium}')::integer, (e #>> '{findings,low}')::integer,"
    " jsonb_build_object('cells', e->'cells', 'disagreements', e->'disagreements')"
    " FROM jsonb_array_elements(coalesce($2::jsonb -> 'operators', '[]')) AS o(e)";

static const char mark_finished[] =
    "UPDATE audit_runs SET status = 'finished', finished_at = GREATEST(now(), started_at),"
    " parameters = coalesce($2::jsonb -> 'parameters', parameters)"
    " WHERE id = $1::bigint AND status = 'running'";

static const char *ts_param(int64_t us, char *buf, size_t size)
{
    if (us == INT64_MIN)
        return NULL;
    return util_format_rfc3339(us, buf, size);
}

/* Runs sql with nparams text params, wanting status want; *affected (may be
 * NULL) gets the row count and res (may be NULL) keeps the result.  On
 * error err reads "what: SQLSTATE: message". */
static int run(PGconn *conn, const char *what, const char *sql, int nparams,
               const char *const *params, ExecStatusType want, int64_t *affected, PGresult **res,
               char *err, size_t errlen)
{
    PGresult *r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    char why[512];
    if (store_result_check(conn, r, want, why, sizeof why) != 0) {
        util_fmt(err, errlen, "%s: %s", what, why);
        PQclear(r);
        return -1;
    }
    if (affected)
        *affected = strtoll(PQcmdTuples(r), NULL, 10);
    if (res)
        *res = r;
    else
        PQclear(r);
    return 0;
}

int store_audit_begin(struct store *st, int policy_version, int64_t from_us, int64_t to_us,
                      const char *parameters_json, int64_t *run_id, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    PGresult *r = NULL;
    char pv[16], from[40], to[40];
    const char *params[4] = {
        policy_version != 0 ? util_fmt(pv, sizeof pv, "%d", policy_version) : NULL,
        ts_param(from_us, from, sizeof from),
        ts_param(to_us, to, sizeof to),
        parameters_json ? parameters_json : "{}",
    };
    *run_id = 0;
    if (run(conn, "audit run",
            "INSERT INTO audit_runs (policy_version, window_from, window_to, parameters)"
            " VALUES ($1::integer, $2::timestamptz, $3::timestamptz, $4::jsonb) RETURNING id",
            4, params, PGRES_TUPLES_OK, NULL, &r, err, errlen) != 0)
        return -1;
    *run_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

int store_audit_finish(struct store *st, int64_t run_id, const char *doc_json, int64_t *n_findings,
                       char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    PGresult *r = NULL;
    char id[24];
    const char *params[2] = {util_fmt(id, sizeof id, "%lld", (long long)run_id), doc_json};
    int64_t found = 0, finished = 0;
    int in_tx = 0, rc = -1;

    *n_findings = 0;
    if (!doc_json) {
        util_fmt(err, errlen, "audit document: missing");
        return -1;
    }
    if (store_exec(conn, "BEGIN", err, errlen) != 0)
        goto out;
    in_tx = 1;
    if (run(conn, "audit document", lock_run, 2, params, PGRES_TUPLES_OK, NULL, &r, err, errlen) !=
        0)
        goto out;
    if (PQntuples(r) == 0) {
        util_fmt(err, errlen, "no audit run %lld", (long long)run_id);
        goto out;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "running") != 0) {
        util_fmt(err, errlen, "audit run %lld is %s, not running", (long long)run_id,
                 PQgetvalue(r, 0, 0));
        goto out;
    }
    if (strcmp(PQgetvalue(r, 0, 1), "object") != 0) {
        util_fmt(err, errlen, "audit document: a JSON %s, not an object", PQgetvalue(r, 0, 1));
        goto out;
    }
    PQclear(r);
    r = NULL;
    if (run(conn, "audit findings", insert_findings, 2, params, PGRES_COMMAND_OK, &found, NULL, err,
            errlen) != 0 ||
        run(conn, "audit operators", insert_operators, 2, params, PGRES_COMMAND_OK, NULL, NULL, err,
            errlen) != 0 ||
        run(conn, "audit run", mark_finished, 2, params, PGRES_COMMAND_OK, &finished, NULL, err,
            errlen) != 0)
        goto out;
    if (finished != 1) {
        /* Cannot happen while the row lock is held; refuse rather than
         * commit findings of a run that is not finished. */
        util_fmt(err, errlen, "audit run %lld changed while it was being finished",
                 (long long)run_id);
        goto out;
    }
    in_tx = 0; /* COMMIT ends the transaction whether or not it succeeds */
    if (store_exec(conn, "COMMIT", err, errlen) != 0)
        goto out;
    *n_findings = found;
    rc = 0;
out:
    PQclear(r);
    if (in_tx && PQstatus(conn) == CONNECTION_OK) {
        PGresult *rb = PQexec(conn, "ROLLBACK");
        PQclear(rb);
    }
    return rc;
}

int store_audit_fail(struct store *st, int64_t run_id, const char *error, char *err, size_t errlen)
{
    char id[24];
    const char *params[2] = {util_fmt(id, sizeof id, "%lld", (long long)run_id), error};
    int64_t n = 0;
    /* The first line only: the column is shown in one-line lists. */
    if (run(store_conn(st), "audit run",
            "UPDATE audit_runs SET status = 'failed', finished_at = GREATEST(now(), started_at),"
            " error = coalesce(nullif(split_part(split_part($2::text, E'\\n', 1), E'\\r', 1),"
            " ''), 'unspecified error')"
            " WHERE id = $1::bigint AND status = 'running'",
            2, params, PGRES_COMMAND_OK, &n, NULL, err, errlen) != 0)
        return -1;
    return n == 1 ? 0 : 1;
}

int store_audit_fail_stale(struct store *st, int64_t *n, char *err, size_t errlen)
{
    const char *params[1] = {STORE_AUDIT_INTERRUPTED};
    *n = 0;
    return run(store_conn(st), "audit runs",
               "UPDATE audit_runs SET status = 'failed', finished_at = GREATEST(now(), started_at),"
               " error = $1::text WHERE status = 'running'",
               1, params, PGRES_COMMAND_OK, n, NULL, err, errlen);
}

int store_audit_last_finished(struct store *st, int64_t *started_us, char *err, size_t errlen)
{
    PGresult *r = NULL;
    *started_us = INT64_MIN;
    /* The same "newest" as the views. */
    if (run(store_conn(st), "audit runs",
            "SELECT (extract(epoch FROM started_at) * 1000000)::bigint FROM audit_runs"
            " WHERE status = 'finished' ORDER BY started_at DESC, id DESC LIMIT 1",
            0, NULL, PGRES_TUPLES_OK, NULL, &r, err, errlen) != 0)
        return -1;
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        *started_us = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

/* -infinity / infinity keep the ts range one index-friendly condition. */
static const char verdicts_sql[] =
    "SELECT operator_id, count(*) FILTER (WHERE verdict = 'accepted'), count(*)"
    " FROM (SELECT DISTINCT ON (operator_id, recommendation_id) operator_id, verdict"
    "  FROM feedback_events"
    "  WHERE ts >= coalesce($1::timestamptz, '-infinity')"
    "  AND ts < coalesce($2::timestamptz, 'infinity')"
    "  ORDER BY operator_id, recommendation_id, ts DESC, id DESC) AS v"
    " GROUP BY operator_id ORDER BY operator_id";

int store_audit_verdicts(struct store *st, int64_t from_us, int64_t to_us,
                         store_audit_verdict_fn fn, void *arg, char *err, size_t errlen)
{
    PGresult *r = NULL;
    char from[40], to[40];
    const char *params[2] = {
        ts_param(from_us, from, sizeof from),
        to_us == INT64_MAX ? NULL : ts_param(to_us, to, sizeof to),
    };
    int rc = -1;

    if (run(store_conn(st), "feedback verdicts", verdicts_sql, 2, params, PGRES_TUPLES_OK, NULL, &r,
            err, errlen) != 0)
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        if (fn(arg, PQgetvalue(r, i, 0), strtoll(PQgetvalue(r, i, 1), NULL, 10),
               strtoll(PQgetvalue(r, i, 2), NULL, 10)) != 0) {
            util_fmt(err, errlen, "stopped by the callback");
            goto out;
        }
    }
    rc = 0;
out:
    PQclear(r);
    return rc;
}
