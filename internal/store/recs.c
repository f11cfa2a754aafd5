/*
 * store: what the recommender reads and writes.
 *
 * Reading: stored state snapshots are rebuilt as wire events (event_id,
 * ts in UTC with microseconds, ids, entity type, state, and operator_id
 * when known) so the recommender decodes them with the same decoder as a
 * Kafka message, together with what the cooldown needs: the entity's
 * newest action at or before the snapshot and its newest recommendation
 * for an earlier snapshot (both by index lookups).
 *
 * Writing: one transaction per batch.  The batch (a JSON array) is parsed
 * once into a temporary table; recommendations and abstentions are
 * inserted from it with ON CONFLICT DO NOTHING on (state_event_id,
 * policy_version), so writing a batch twice changes nothing.  Supersede
 * then keeps, per entity touched, only the open recommendation with the
 * newest (snapshot_ts, id): a late-scored older snapshot never replaces a
 * newer one.  A transaction-level advisory lock serialises these
 * transactions across instances, so "at most one open recommendation per
 * entity" holds after every commit.
 */
#include "store/store.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"
#include "util/util.h"

/* The snapshot as a wire event, and the two cooldown times in µs. */
static const char snapshot_select[] =
    "SELECT s.id,"
    " (jsonb_build_object('event_id', s.event_id,"
    "   'ts', to_char(s.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
    "   'campaign_id', s.campaign_id, 'entity_type', s.entity_type,"
    "   'entity_id', s.entity_id, 'state', s.state)"
    "  || CASE WHEN s.operator_id IS NULL THEN '{}'::jsonb"
    "     ELSE jsonb_build_object('operator_id', s.operator_id) END)::text,"
    " (SELECT (extract(epoch FROM max(a.ts)) * 1000000)::bigint FROM action_events a"
    "   WHERE a.entity_id = s.entity_id AND a.entity_type = s.entity_type AND a.ts <= s.ts),"
    " (SELECT (extract(epoch FROM max(r.snapshot_ts)) * 1000000)::bigint FROM recommendations r"
    "   WHERE r.entity_type = s.entity_type AND r.entity_id = s.entity_id"
    "   AND r.snapshot_ts < s.ts)";

static const char snapshot_from[] = " FROM state_events s WHERE s.id > $1::bigint";
/* One index range scan per range. */
static const char snapshot_from_ranges[] =
    " FROM unnest($3::bigint[], $4::bigint[]) AS g(lo, hi)"
    " JOIN state_events s ON s.id BETWEEN g.lo AND g.hi WHERE s.id > $1::bigint";

static const char *const snapshot_where[] = {
    [STORE_SNAP_AFTER_ID] = "",
    [STORE_SNAP_UNSCORED] =
        " AND s.id <= $3::bigint"
        " AND NOT EXISTS (SELECT 1 FROM recommendations r WHERE r.state_event_id = s.event_id)"
        " AND NOT EXISTS (SELECT 1 FROM abstentions b WHERE b.state_event_id = s.event_id)",
    [STORE_SNAP_SINCE_TS] = " AND s.ts >= $3::timestamptz",
    [STORE_SNAP_OPEN_OTHER] =
        " AND EXISTS (SELECT 1 FROM recommendations r WHERE r.state_event_id = s.event_id"
        " AND r.status = 'open' AND r.policy_version <> $3::integer)",
    [STORE_SNAP_IN_RANGES] = "",
};

static int64_t us_or_none(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return INT64_MIN;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

int store_load_snapshots(struct store *st, const struct store_snapshot_query *q,
                         store_snapshot_fn fn, void *arg, size_t *n_rows, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    struct util_buf sql;
    PGresult *r = NULL;
    struct util_buf los, his;
    char after[24], limit[24], third[40];
    const char *params[4] = {
        util_fmt(after, sizeof after, "%lld", (long long)q->after_id),
        util_fmt(limit, sizeof limit, "%lld", (long long)q->limit),
        NULL,
        NULL,
    };
    int nparams = 2, rc = -1;

    util_buf_init(&los);
    util_buf_init(&his);
    util_buf_init(&sql);
    if (n_rows)
        *n_rows = 0;
    if ((unsigned)q->by >= sizeof snapshot_where / sizeof snapshot_where[0]) {
        util_fmt(err, errlen, "unknown snapshot selection %d", (int)q->by);
        return -1;
    }
    switch (q->by) {
    case STORE_SNAP_IN_RANGES: {
        int bad = util_buf_puts(&los, "{") | util_buf_puts(&his, "{");
        for (size_t i = 0; i < q->n_ranges; i++)
            bad |= util_buf_printf(&los, "%s%lld", i ? "," : "", (long long)q->ranges[i][0]) |
                   util_buf_printf(&his, "%s%lld", i ? "," : "", (long long)q->ranges[i][1]);
        bad |= util_buf_puts(&los, "}") | util_buf_puts(&his, "}");
        if (bad) {
            util_fmt(err, errlen, "out of memory");
            goto out;
        }
        params[2] = los.data;
        params[3] = his.data;
        nparams = 4;
        break;
    }
    case STORE_SNAP_UNSCORED:
        params[2] = util_fmt(third, sizeof third, "%lld", (long long)q->until_id);
        nparams = 3;
        break;
    case STORE_SNAP_SINCE_TS:
        params[2] = util_format_rfc3339(q->since_us, third, sizeof third);
        nparams = 3;
        break;
    case STORE_SNAP_OPEN_OTHER:
        params[2] = util_fmt(third, sizeof third, "%d", q->version);
        nparams = 3;
        break;
    case STORE_SNAP_AFTER_ID:
        break;
    }
    if (util_buf_puts(&sql, snapshot_select) != 0 ||
        util_buf_puts(&sql, q->by == STORE_SNAP_IN_RANGES ? snapshot_from_ranges : snapshot_from) !=
            0 ||
        util_buf_puts(&sql, snapshot_where[q->by]) != 0 ||
        util_buf_puts(&sql, " ORDER BY s.id LIMIT $2::bigint") != 0) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    r = PQexecParams(conn, sql.data, nparams, NULL, params, NULL, NULL, 0);
    if (store_result_check(conn, r, PGRES_TUPLES_OK, err, errlen) != 0)
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        struct store_snapshot s = {
            .id = strtoll(PQgetvalue(r, i, 0), NULL, 10),
            .event_json = PQgetvalue(r, i, 1),
            .event_len = (size_t)PQgetlength(r, i, 1),
            .last_action_us = us_or_none(r, i, 2),
            .last_rec_us = us_or_none(r, i, 3),
        };
        if (fn(arg, &s, err, errlen) != 0)
            goto out;
        if (n_rows)
            (*n_rows)++;
    }
    rc = 0;
out:
    PQclear(r);
    util_buf_deinit(&los);
    util_buf_deinit(&his);
    util_buf_deinit(&sql);
    return rc;
}

/* The batch, once per session (ON COMMIT DELETE ROWS empties it). */
static const char batch_table[] =
    "CREATE TEMPORARY TABLE IF NOT EXISTS recs_batch ("
    " state_event_id text, snapshot_ts timestamptz, entity_type text, entity_id text,"
    " campaign_id text, operator_id text, policy_version integer, status text, reason text,"
    " action text, probabilities jsonb, confidence double precision, delta_pct double precision,"
    " explanation text, contributions jsonb, ood_score double precision, ood_reasons jsonb,"
    " guardrails jsonb) ON COMMIT DELETE ROWS";

static const char batch_fill[] =
    "INSERT INTO recs_batch SELECT * FROM jsonb_populate_recordset(NULL::recs_batch, $1::jsonb)";

/* Pairs already written (in either table) are not written again, and do
 * not supersede anything: the lock makes this check exact. */
static const char batch_drop_known_recs[] =
    "DELETE FROM recs_batch b WHERE EXISTS (SELECT 1 FROM recommendations r"
    " WHERE r.state_event_id = b.state_event_id AND r.policy_version = b.policy_version)";
/* Two statements: an OR of the two EXISTS cannot use the unique indexes. */
static const char batch_drop_known_abst[] =
    "DELETE FROM recs_batch b WHERE EXISTS (SELECT 1 FROM abstentions a"
    " WHERE a.state_event_id = b.state_event_id AND a.policy_version = b.policy_version)";

static const char batch_reasons[] =
    "SELECT reason, count(*) FROM recs_batch WHERE status = 'abstain' GROUP BY reason";

/* The new open rows that are still open after supersede, for publishing. */
static const char still_open[] =
    "SELECT to_jsonb(r.*)::text FROM recommendations r JOIN recs_batch b"
    " ON r.state_event_id = b.state_event_id AND r.policy_version = b.policy_version"
    " WHERE b.status = 'open' AND r.status = 'open' ORDER BY r.id";

static const char insert_open[] =
    "INSERT INTO recommendations (state_event_id, snapshot_ts, entity_type, entity_id,"
    " campaign_id, operator_id, policy_version, action, probabilities, confidence, delta_pct,"
    " explanation, contributions, ood_score, ood_reasons, guardrails, expires_at)"
    " SELECT state_event_id, snapshot_ts, entity_type, entity_id, campaign_id, operator_id,"
    " policy_version, action, probabilities, confidence, delta_pct, explanation, contributions,"
    " ood_score, ood_reasons, guardrails, now() + $1::bigint * interval '1 millisecond'"
    " FROM recs_batch WHERE status = 'open'"
    " ON CONFLICT (state_event_id, policy_version) DO NOTHING";

static const char insert_abstain[] =
    "INSERT INTO abstentions (state_event_id, snapshot_ts, entity_type, entity_id, campaign_id,"
    " operator_id, policy_version, reason, action, probabilities, confidence, delta_pct,"
    " explanation, ood_score, ood_reasons, guardrails)"
    " SELECT state_event_id, snapshot_ts, entity_type, entity_id, campaign_id, operator_id,"
    " policy_version, reason, action, probabilities, confidence, delta_pct, explanation,"
    " ood_score, ood_reasons, guardrails"
    " FROM recs_batch WHERE status = 'abstain'"
    " ON CONFLICT (state_event_id, policy_version) DO NOTHING";

/* Per entity with a new open row, everything but the newest open row. */
static const char supersede_older[] =
    "UPDATE recommendations r SET status = 'superseded', decided_at = now()"
    " WHERE r.status = 'open'"
    " AND (r.entity_type, r.entity_id) IN"
    "  (SELECT entity_type, entity_id FROM recs_batch WHERE status = 'open')"
    " AND EXISTS (SELECT 1 FROM recommendations n WHERE n.status = 'open'"
    "  AND n.entity_type = r.entity_type AND n.entity_id = r.entity_id"
    "  AND (coalesce(n.snapshot_ts, '-infinity'), n.id)"
    "    > (coalesce(r.snapshot_ts, '-infinity'), r.id))";

/* A snapshot scored by a new version: its old open rows are replaced. */
static const char supersede_rescored[] =
    "UPDATE recommendations r SET status = 'superseded', decided_at = now()"
    " FROM recs_batch b"
    " WHERE r.status = 'open' AND r.state_event_id = b.state_event_id"
    " AND r.policy_version <> b.policy_version";

static const char set_progress[] =
    "INSERT INTO recommender_progress (singleton, scored_through) VALUES (true, $1::bigint)"
    " ON CONFLICT (singleton) DO UPDATE SET"
    " scored_through = GREATEST(recommender_progress.scored_through, EXCLUDED.scored_through),"
    " updated_at = now()";

/* Runs sql with nparams text params; *affected (may be NULL) gets the row
 * count; res (may be NULL) keeps the result for the caller. */
static int run(PGconn *conn, const char *sql, int nparams, const char *const *params,
               ExecStatusType want, int64_t *affected, PGresult **res, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (store_result_check(conn, r, want, err, errlen) != 0) {
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

int store_recs_write(struct store *st, const char *rows_json, int64_t ttl_ms, int64_t progress,
                     struct util_buf *published, struct store_recs_written *out, char *err,
                     size_t errlen)
{
    PGconn *conn = store_conn(st);
    PGresult *reasons = NULL, *opened = NULL;
    char ttl[24], prog[24], key[24];
    const char *p_rows[1] = {rows_json};
    const char *p_ttl[1] = {util_fmt(ttl, sizeof ttl, "%lld", (long long)ttl_ms)};
    const char *p_prog[1] = {util_fmt(prog, sizeof prog, "%lld", (long long)progress)};
    const char *p_key[1] = {
        util_fmt(key, sizeof key, "%lld", (long long)STORE_RECOMMEND_WRITE_LOCK_KEY)};
    int64_t more = 0;
    int in_tx = 0, rc = -1;

    memset(out, 0, sizeof *out);
    if (store_exec(conn, "BEGIN", err, errlen) != 0)
        goto out;
    in_tx = 1;
    if (run(conn, "SELECT pg_advisory_xact_lock($1::bigint)", 1, p_key, PGRES_TUPLES_OK, NULL, NULL,
            err, errlen) != 0 ||
        store_exec(conn, batch_table, err, errlen) != 0 ||
        run(conn, batch_fill, 1, p_rows, PGRES_COMMAND_OK, NULL, NULL, err, errlen) != 0 ||
        run(conn, batch_drop_known_recs, 0, NULL, PGRES_COMMAND_OK, NULL, NULL, err, errlen) != 0 ||
        run(conn, batch_drop_known_abst, 0, NULL, PGRES_COMMAND_OK, NULL, NULL, err, errlen) != 0 ||
        run(conn, batch_reasons, 0, NULL, PGRES_TUPLES_OK, NULL, &reasons, err, errlen) != 0 ||
        run(conn, insert_open, 1, p_ttl, PGRES_COMMAND_OK, &out->opened, NULL, err, errlen) != 0 ||
        run(conn, insert_abstain, 0, NULL, PGRES_COMMAND_OK, &out->abstained, NULL, err, errlen) !=
            0 ||
        run(conn, supersede_rescored, 0, NULL, PGRES_COMMAND_OK, &out->superseded, NULL, err,
            errlen) != 0 ||
        run(conn, supersede_older, 0, NULL, PGRES_COMMAND_OK, &more, NULL, err, errlen) != 0)
        goto out;
    out->superseded += more;
    if (published &&
        run(conn, still_open, 0, NULL, PGRES_TUPLES_OK, NULL, &opened, err, errlen) != 0)
        goto out;
    if (progress >= 0 &&
        run(conn, set_progress, 1, p_prog, PGRES_COMMAND_OK, NULL, NULL, err, errlen) != 0)
        goto out;
    if (store_exec(conn, "COMMIT", err, errlen) != 0) {
        in_tx = 0;
        goto out;
    }
    in_tx = 0;
    for (int i = 0; i < PQntuples(reasons) && out->n_reasons < STORE_RECS_MAX_REASONS; i++) {
        util_fmt(out->reasons[out->n_reasons].reason, sizeof out->reasons[0].reason, "%s",
                 PQgetvalue(reasons, i, 0));
        out->reasons[out->n_reasons++].n = strtoll(PQgetvalue(reasons, i, 1), NULL, 10);
    }
    rc = 0;
    for (int i = 0; opened && i < PQntuples(opened); i++) {
        if (util_buf_puts(published, PQgetvalue(opened, i, 0)) != 0 ||
            util_buf_puts(published, "\n") != 0) {
            /* Committed already: the rows are written, only the copy for
             * publishing is short. */
            util_fmt(err, errlen, "out of memory");
            break;
        }
    }
out:
    if (in_tx && PQstatus(conn) == CONNECTION_OK) {
        PGresult *r = PQexec(conn, "ROLLBACK");
        PQclear(r);
    }
    if (rc < 0)
        memset(out, 0, sizeof *out);
    PQclear(reasons);
    PQclear(opened);
    return rc;
}

int store_recs_expire(struct store *st, int64_t *n, char *err, size_t errlen)
{
    return run(store_conn(st),
               "UPDATE recommendations SET status = 'expired', decided_at = now()"
               " WHERE status = 'open' AND expires_at <= now()",
               0, NULL, PGRES_COMMAND_OK, n, NULL, err, errlen);
}

int store_recs_progress(struct store *st, int64_t *scored_through, int64_t *max_id, char *err,
                        size_t errlen)
{
    PGconn *conn = store_conn(st);
    PGresult *r = NULL;
    if (run(conn,
            "SELECT (SELECT scored_through FROM recommender_progress),"
            " (SELECT coalesce(max(id), 0) FROM state_events)",
            0, NULL, PGRES_TUPLES_OK, NULL, &r, err, errlen) != 0)
        return -1;
    *scored_through = PQgetisnull(r, 0, 0) ? -1 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    *max_id = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return 0;
}

int store_recs_set_progress(struct store *st, int64_t scored_through, char *err, size_t errlen)
{
    char prog[24];
    const char *params[1] = {util_fmt(prog, sizeof prog, "%lld", (long long)scored_through)};
    return run(store_conn(st), set_progress, 1, params, PGRES_COMMAND_OK, NULL, NULL, err, errlen);
}

int store_listen(struct store *st, const char *channel, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    char *quoted = PQescapeIdentifier(conn, channel, strlen(channel));
    char sql[160];
    int rc = -1;
    if (!quoted) {
        util_fmt(err, errlen, "%s", PQerrorMessage(conn));
        return -1;
    }
    rc = store_exec(conn, util_fmt(sql, sizeof sql, "LISTEN %s", quoted), err, errlen);
    PQfreemem(quoted);
    return rc;
}

/* Takes every queued notification; 0, or -1 when the connection failed. */
static int drain_notifies(PGconn *conn, unsigned *got, char *err, size_t errlen)
{
    if (!PQconsumeInput(conn)) {
        util_fmt(err, errlen, "%s", PQerrorMessage(conn));
        err[strcspn(err, "\n")] = '\0';
        return -1;
    }
    PGnotify *n;
    while ((n = PQnotifies(conn)) != NULL) {
        if (strcmp(n->relname, STORE_POLICY_CHANNEL) == 0)
            *got |= STORE_NOTIFY_POLICY;
        else if (strcmp(n->relname, STORE_STATES_CHANNEL) == 0)
            *got |= STORE_NOTIFY_STATES;
        PQfreemem(n);
    }
    return 0;
}

int store_wait_notify(struct store *st, int wake_fd, int timeout_ms, unsigned *got, char *err,
                      size_t errlen)
{
    PGconn *conn = store_conn(st);
    *got = 0;
    /* Notifications may already be queued from an earlier command. */
    if (drain_notifies(conn, got, err, errlen) != 0)
        return -1;
    if (*got)
        return 0;
    struct pollfd fds[2] = {
        {.fd = PQsocket(conn), .events = POLLIN},
        {.fd = wake_fd, .events = POLLIN},
    };
    if (fds[0].fd < 0) {
        util_fmt(err, errlen, "not connected");
        return -1;
    }
    if (poll(fds, wake_fd >= 0 ? 2 : 1, timeout_ms) < 0) {
        if (errno == EINTR)
            return 0;
        util_fmt(err, errlen, "poll: %s", strerror(errno));
        return -1;
    }
    if (wake_fd >= 0 && (fds[1].revents & POLLIN))
        *got |= STORE_NOTIFY_WAKE;
    if (fds[0].revents)
        return drain_notifies(conn, got, err, errlen);
    return 0;
}
