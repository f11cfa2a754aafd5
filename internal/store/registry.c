/*
 * store: the policy registry (table policies) and the advisory locks that
 * elect the one instance that trains.
 *
 * A version is written once as a challenger and only its status changes
 * afterwards.  Promotion runs in one transaction under a transaction-level
 * advisory lock, so two promoters cannot interleave: it checks that the
 * champion is still the one the caller compared against, retires it,
 * crowns the new version and queues NOTIFY understudy_policy (payload: the
 * version), which PostgreSQL delivers only if the transaction commits.
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"
#include "util/util.h"

/* A version column's text (PostgreSQL integer, so it fits). */
static int version_of(const char *s)
{
    return (int)strtol(s, NULL, 10);
}

static const char *ts_param(int64_t us, char *buf, size_t size)
{
    if (us == INT64_MIN)
        return NULL;
    return util_format_rfc3339(us, buf, size);
}

int store_policy_insert(struct store *st, const struct store_policy_row *p, int *version, char *err,
                        size_t errlen)
{
    PGconn *conn = store_conn(st);
    char from[40], to[40], n[24];
    const char *params[6] = {
        p->model_json,
        p->parameters_json ? p->parameters_json : "{}",
        p->metrics_json ? p->metrics_json : "{}",
        ts_param(p->train_from_us, from, sizeof from),
        ts_param(p->train_to_us, to, sizeof to),
        p->n_examples >= 0 ? util_fmt(n, sizeof n, "%lld", (long long)p->n_examples) : NULL,
    };
    PGresult *r = PQexecParams(conn,
                               "INSERT INTO policies (model, parameters, metrics, train_from,"
                               " train_to, n_examples)"
                               " VALUES ($1::jsonb, $2::jsonb, $3::jsonb, $4::timestamptz,"
                               " $5::timestamptz, $6::bigint) RETURNING version",
                               6, NULL, params, NULL, NULL, 0);
    int rc = store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen);
    if (rc == 0)
        *version = version_of(PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

int store_policy_champion(struct store *st, int *version, char **model_json, char *err,
                          size_t errlen)
{
    PGconn *conn = store_conn(st);
    *version = 0;
    if (model_json)
        *model_json = NULL;
    PGresult *r = PQexec(conn, model_json ? "SELECT version, model::text FROM policies"
                                            " WHERE status = 'champion'"
                                          : "SELECT version, NULL FROM policies"
                                            " WHERE status = 'champion'");
    int rc = store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen);
    if (rc == 0 && PQntuples(r) == 1) {
        *version = version_of(PQgetvalue(r, 0, 0));
        if (model_json && !(*model_json = util_strdup(PQgetvalue(r, 0, 1)))) {
            util_fmt(err, errlen, "out of memory");
            *version = 0;
            rc = -1;
        }
    }
    PQclear(r);
    return rc;
}

int store_policy_get(struct store *st, int version, char **model_json, char status[16], char *err,
                     size_t errlen)
{
    PGconn *conn = store_conn(st);
    char v[16];
    const char *params[1] = {util_fmt(v, sizeof v, "%d", version)};
    *model_json = NULL;
    PGresult *r = PQexecParams(conn, "SELECT model::text, status FROM policies WHERE version = $1",
                               1, NULL, params, NULL, NULL, 0);
    int rc = store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen);
    if (rc == 0 && PQntuples(r) == 0) {
        rc = 1;
    } else if (rc == 0) {
        if (status)
            util_fmt(status, 16, "%s", PQgetvalue(r, 0, 1));
        if (!(*model_json = util_strdup(PQgetvalue(r, 0, 0)))) {
            util_fmt(err, errlen, "out of memory");
            rc = -1;
        }
    }
    PQclear(r);
    return rc;
}

int store_policy_promote(struct store *st, int version, int expected_champion, char *err,
                         size_t errlen)
{
    PGconn *conn = store_conn(st);
    PGresult *r = NULL;
    char v[16], e[16], key[24];
    int rc = -1;

    if (store_exec(conn, "BEGIN", err, errlen) != 0)
        return -1;
    const char *kp[1] = {util_fmt(key, sizeof key, "%lld", (long long)STORE_PROMOTE_LOCK_KEY)};
    r = PQexecParams(conn, "SELECT pg_advisory_xact_lock($1::bigint)", 1, NULL, kp, NULL, NULL, 0);
    if (store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen) != 0)
        goto out;
    PQclear(r);
    r = PQexec(conn, "SELECT version FROM policies WHERE status = 'champion' FOR UPDATE");
    if (store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen) != 0)
        goto out;
    int current = PQntuples(r) ? version_of(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    r = NULL;
    if (current != expected_champion) {
        rc = 1;
        goto out;
    }
    const char *params[2] = {util_fmt(v, sizeof v, "%d", version),
                             util_fmt(e, sizeof e, "%d", expected_champion)};
    r = PQexecParams(conn,
                     "UPDATE policies SET status = 'retired', status_changed_at = now()"
                     " WHERE status = 'champion' AND version = $2::integer AND version <> "
                     "$1::integer",
                     2, NULL, params, NULL, NULL, 0);
    if (store_result_check(conn, r, PGRES_COMMAND_OK, err, errlen) != 0)
        goto out;
    PQclear(r);
    r = PQexecParams(conn,
                     "UPDATE policies SET status = 'champion', status_changed_at = now()"
                     " WHERE version = $1::integer AND status <> 'champion'",
                     1, NULL, params, NULL, NULL, 0);
    if (store_result_check(conn, r, PGRES_COMMAND_OK, err, errlen) != 0)
        goto out;
    if (strcmp(PQcmdTuples(r), "1") != 0 && current != version) {
        util_fmt(err, errlen, "policy version %d does not exist", version);
        goto out;
    }
    PQclear(r);
    r = PQexecParams(conn, "SELECT pg_notify('" STORE_POLICY_CHANNEL "', $1)", 1, NULL, params,
                     NULL, NULL, 0);
    if (store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen) != 0)
        goto out;
    PQclear(r);
    r = NULL;
    if (store_exec(conn, "COMMIT", err, errlen) != 0)
        return -1;
    return 0;
out:
    PQclear(r);
    {
        char ignored[64];
        (void)store_exec(conn, "ROLLBACK", ignored, sizeof ignored);
    }
    return rc;
}

int store_policy_newest(struct store *st, int64_t *created_us, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    PGresult *r = PQexec(
        conn, "SELECT (extract(epoch FROM max(created_at)) * 1000000)::bigint FROM policies");
    int rc = store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen);
    if (rc == 0)
        *created_us = PQgetisnull(r, 0, 0) ? INT64_MIN : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

int store_max_action_id(struct store *st, int64_t *out, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    PGresult *r = PQexec(conn, "SELECT coalesce(max(id), 0) FROM action_events");
    int rc = store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen);
    if (rc == 0)
        *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

int store_try_advisory_lock(struct store *st, int64_t key, int *got, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    char k[24];
    const char *params[1] = {util_fmt(k, sizeof k, "%lld", (long long)key)};
    PGresult *r = PQexecParams(conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, params,
                               NULL, NULL, 0);
    int rc = store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen);
    if (rc == 0)
        *got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return rc;
}

int store_advisory_unlock(struct store *st, int64_t key, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    char k[24];
    const char *params[1] = {util_fmt(k, sizeof k, "%lld", (long long)key)};
    PGresult *r =
        PQexecParams(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, params, NULL, NULL, 0);
    int rc = store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen);
    PQclear(r);
    return rc;
}
