/*
 * store: the ingest write path.  One call writes one consumer batch in one
 * transaction: the decoded events, the dead letters and the per-partition
 * next offsets, so the database alone says how far each partition has been
 * read (the "effectively once" of ingest: offsets and rows commit together).
 *
 * Per kind of event:  COPY the rows into a temporary staging table, then
 * INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING RETURNING event_id;
 * the ids that come back are stored, every other row of the batch is a
 * duplicate (of an earlier batch or of an earlier row of this one).
 *
 * A row PostgreSQL refuses (SQLSTATE classes 22 data exception, 23 integrity
 * violation, 54 program limit) must not hold back the others: the rows of
 * that kind are retried in halves under savepoints until the failing rows are
 * alone, and those become dead letters carrying the SQLSTATE and message, in
 * the same transaction as the good rows.  Any other failure (connection lost,
 * server shutting down, serialization failure, a missing table) rolls the
 * whole transaction back and is reported as retryable: nothing is written,
 * and the caller retries the same batch later.  A message is never
 * dead-lettered because the database was unavailable.
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "event/event.h"
#include "log/log.h"
#include "store/store_impl.h"
#include "util/util.h"

/* A COPY buffer is sent to the server in pieces of about this size. */
#define COPY_CHUNK ((size_t)256 * 1024)

struct kind_sql {
    const char *stage;  /* staging table */
    const char *create; /* CREATE TEMP TABLE for the staging table */
    const char *insert; /* INSERT ... SELECT ... RETURNING event_id */
};

static const struct kind_sql kind_sql[EVENT_KIND_COUNT] = {
    [EVENT_KIND_ACTION] =
        {
            "understudy_stage_actions",
            "CREATE TEMP TABLE IF NOT EXISTS understudy_stage_actions ("
            " seq integer, event_id text, ts timestamptz, ts_text text, operator_id text,"
            " campaign_id text, entity_type text, entity_id text, action text,"
            " delta_pct double precision, decision text, state jsonb, extra jsonb,"
            " src_topic text, src_partition integer, src_offset bigint)"
            " ON COMMIT DELETE ROWS",
            "INSERT INTO action_events (event_id, ts, ts_text, operator_id, campaign_id,"
            " entity_type, entity_id, action, delta_pct, decision, state, extra, src_topic,"
            " src_partition, src_offset)"
            " SELECT event_id, ts, ts_text, operator_id, campaign_id, entity_type, entity_id,"
            " action, delta_pct, decision, state, extra, src_topic, src_partition, src_offset"
            " FROM understudy_stage_actions ORDER BY seq"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        },
    [EVENT_KIND_STATE] =
        {
            "understudy_stage_states",
            "CREATE TEMP TABLE IF NOT EXISTS understudy_stage_states ("
            " seq integer, event_id text, ts timestamptz, ts_text text, operator_id text,"
            " campaign_id text, entity_type text, entity_id text, state jsonb, extra jsonb,"
            " src_topic text, src_partition integer, src_offset bigint)"
            " ON COMMIT DELETE ROWS",
            "INSERT INTO state_events (event_id, ts, ts_text, operator_id, campaign_id,"
            " entity_type, entity_id, state, extra, src_topic, src_partition, src_offset)"
            " SELECT event_id, ts, ts_text, operator_id, campaign_id, entity_type, entity_id,"
            " state, extra, src_topic, src_partition, src_offset"
            " FROM understudy_stage_states ORDER BY seq"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        },
    [EVENT_KIND_FEEDBACK] =
        {
            "understudy_stage_feedback",
            "CREATE TEMP TABLE IF NOT EXISTS understudy_stage_feedback ("
            " seq integer, event_id text, ts timestamptz, ts_text text, operator_id text,"
            " recommendation_id bigint, verdict text, action text, delta_pct double precision,"
            " decision text, extra jsonb, src_topic text, src_partition integer,"
            " src_offset bigint)"
            " ON COMMIT DELETE ROWS",
            "INSERT INTO feedback_events (event_id, ts, ts_text, operator_id, recommendation_id,"
            " verdict, action, delta_pct, decision, extra, src_topic, src_partition, src_offset)"
            " SELECT event_id, ts, ts_text, operator_id, recommendation_id, verdict, action,"
            " delta_pct, decision, extra, src_topic, src_partition, src_offset"
            " FROM understudy_stage_feedback ORDER BY seq"
            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        },
};

static const char create_dead_stage[] =
    "CREATE TEMP TABLE IF NOT EXISTS understudy_stage_dead ("
    " topic text, partition integer, \"offset\" bigint, key bytea, raw bytea, reason text,"
    " sqlstate text) ON COMMIT DELETE ROWS";

static const char insert_dead[] =
    "INSERT INTO dead_letters (topic, partition, \"offset\", key, raw, reason, sqlstate)"
    " SELECT topic, partition, \"offset\", key, raw, reason, sqlstate FROM understudy_stage_dead"
    " ON CONFLICT (topic, partition, \"offset\") DO NOTHING";

static const char upsert_offsets[] =
    "INSERT INTO ingest_offsets (group_id, topic, partition, next_offset)"
    " SELECT $1, t, p, o FROM unnest($2::text[], $3::integer[], $4::bigint[]) AS u(t, p, o)"
    " ON CONFLICT (group_id, topic, partition) DO UPDATE"
    " SET next_offset = GREATEST(ingest_offsets.next_offset, EXCLUDED.next_offset),"
    " updated_at = now()";

/* Outcome of one statement, as the batch logic needs to see it. */
enum pg_outcome {
    PG_OK = 0,
    PG_ROW_ERROR, /* the data of some row was refused: bisect */
    PG_RETRY,     /* anything else: roll back, retry the batch later */
};

static int sqlstate_is_row_error(const char *s)
{
    return s && (strncmp(s, "22", 2) == 0 || strncmp(s, "23", 2) == 0 || strncmp(s, "54", 2) == 0);
}

/* Classifies a result and fills err with its message on failure. */
static enum pg_outcome classify(PGconn *conn, PGresult *r, ExecStatusType want, char *sqlstate,
                                char *err, size_t errlen)
{
    if (r && PQresultStatus(r) == want)
        return PG_OK;
    const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (sqlstate)
        util_fmt(sqlstate, 6, "%s", s ? s : "");
    util_fmt(err, errlen, "%s%s%s", s ? s : "", s ? ": " : "",
             m ? m : (PQerrorMessage(conn)[0] ? PQerrorMessage(conn) : "no result"));
    err[strcspn(err, "\n")] = '\0';
    if (PQstatus(conn) != CONNECTION_OK)
        return PG_RETRY;
    return sqlstate_is_row_error(s) ? PG_ROW_ERROR : PG_RETRY;
}

static enum pg_outcome exec_simple(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    enum pg_outcome o = classify(conn, r, PGRES_COMMAND_OK, NULL, err, errlen);
    PQclear(r);
    return o;
}

/* ---- COPY text encoding --------------------------------------------------- */

static int copy_text(struct util_buf *b, const char *s)
{
    if (!s)
        return util_buf_puts(b, "\\N");
    const char *run = s;
    for (; *s; s++) {
        const char *esc = NULL;
        switch (*s) {
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            continue;
        }
        if (util_buf_append(b, run, (size_t)(s - run)) != 0 || util_buf_puts(b, esc) != 0)
            return -1;
        run = s + 1;
    }
    return util_buf_append(b, run, (size_t)(s - run));
}

static int copy_bytea(struct util_buf *b, const void *p, size_t n, int null_if_empty)
{
    static const char hex[] = "0123456789abcdef";
    if (!p || (n == 0 && null_if_empty))
        return util_buf_puts(b, "\\N");
    if (util_buf_puts(b, "\\\\x") != 0)
        return -1;
    const unsigned char *u = p;
    for (size_t i = 0; i < n; i++) {
        char pair[2] = {hex[u[i] >> 4], hex[u[i] & 15]};
        if (util_buf_append(b, pair, 2) != 0)
            return -1;
    }
    return 0;
}

/* Writes ts as "YYYY-MM-DD HH:MM:SS.ffffff+00". */
static int copy_ts(struct util_buf *b, int64_t us)
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return -1;
    return util_buf_printf(b, "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", tm.tm_year + 1900,
                           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                           (long long)frac);
}

static int copy_delta(struct util_buf *b, const struct event *ev)
{
    if (!ev->has_delta)
        return util_buf_puts(b, "\\N");
    return util_buf_printf(b, "%.17g", ev->delta_pct);
}

/* Appends one staging row for rows[i]; 0 or -1 (out of memory). */
static int copy_event_row(struct util_buf *b, const struct store_row *row, size_t seq)
{
    const struct event *ev = row->ev;
    enum event_class cls;
    const char *decision = event_class_of(ev, &cls) == 0 ? event_class_name(cls) : NULL;
    int rc = util_buf_printf(b, "%zu\t", seq);
    rc |= copy_text(b, ev->event_id);
    rc |= util_buf_puts(b, "\t");
    rc |= copy_ts(b, ev->ts_us);
    rc |= util_buf_puts(b, "\t");
    rc |= copy_text(b, ev->ts_text);
    rc |= util_buf_puts(b, "\t");
    rc |= copy_text(b, ev->operator_id);
    rc |= util_buf_puts(b, "\t");
    switch (ev->kind) {
    case EVENT_KIND_ACTION:
    case EVENT_KIND_STATE:
        rc |= copy_text(b, ev->campaign_id);
        rc |= util_buf_puts(b, "\t");
        rc |= copy_text(b, event_entity_name(ev->entity_type));
        rc |= util_buf_puts(b, "\t");
        rc |= copy_text(b, ev->entity_id);
        rc |= util_buf_puts(b, "\t");
        if (ev->kind == EVENT_KIND_ACTION) {
            rc |= copy_text(b, event_action_name(ev->action));
            rc |= util_buf_puts(b, "\t");
            rc |= copy_delta(b, ev);
            rc |= util_buf_puts(b, "\t");
            rc |= copy_text(b, decision);
            rc |= util_buf_puts(b, "\t");
        }
        rc |= copy_text(b, ev->state_json);
        rc |= util_buf_puts(b, "\t");
        break;
    case EVENT_KIND_FEEDBACK:
        rc |= util_buf_printf(b, "%lld\t", (long long)ev->recommendation_id);
        rc |= copy_text(b, event_verdict_name(ev->verdict));
        rc |= util_buf_puts(b, "\t");
        rc |= copy_text(b, ev->has_action ? event_action_name(ev->action) : NULL);
        rc |= util_buf_puts(b, "\t");
        rc |= copy_delta(b, ev);
        rc |= util_buf_puts(b, "\t");
        rc |= copy_text(b, ev->has_action ? decision : NULL);
        rc |= util_buf_puts(b, "\t");
        break;
    default:
        return -1;
    }
    rc |= copy_text(b, ev->extra_json);
    rc |= util_buf_puts(b, "\t");
    rc |= copy_text(b, row->topic);
    rc |= util_buf_printf(b, "\t%d\t%lld\n", (int)row->partition, (long long)row->offset);
    return rc ? -1 : 0;
}

static int copy_dead_row(struct util_buf *b, const struct store_row *row, const char *reason,
                         const char *sqlstate)
{
    int rc = copy_text(b, row->topic);
    rc |= util_buf_printf(b, "\t%d\t%lld\t", (int)row->partition, (long long)row->offset);
    rc |= copy_bytea(b, row->key, row->keylen, 1);
    rc |= util_buf_puts(b, "\t");
    rc |= copy_bytea(b, row->raw, row->rawlen, 0);
    rc |= util_buf_puts(b, "\t");
    rc |= copy_text(b, reason);
    rc |= util_buf_puts(b, "\t");
    rc |= copy_text(b, sqlstate && sqlstate[0] ? sqlstate : NULL);
    rc |= util_buf_puts(b, "\n");
    return rc ? -1 : 0;
}

/* Runs COPY table FROM STDIN with the buffer's rows. */
static enum pg_outcome copy_in(PGconn *conn, const char *table, const struct util_buf *data,
                               char *err, size_t errlen)
{
    char sql[128];
    util_fmt(sql, sizeof sql, "COPY %s FROM STDIN", table);
    PGresult *r = PQexec(conn, sql);
    enum pg_outcome o = classify(conn, r, PGRES_COPY_IN, NULL, err, errlen);
    PQclear(r);
    if (o != PG_OK)
        return o;
    int sent_ok = 1;
    for (size_t off = 0; off < data->len && sent_ok; off += COPY_CHUNK) {
        size_t n = data->len - off < COPY_CHUNK ? data->len - off : COPY_CHUNK;
        sent_ok = PQputCopyData(conn, data->data + off, (int)n) == 1;
    }
    if (PQputCopyEnd(conn, sent_ok ? NULL : "client failed to send") != 1) {
        util_fmt(err, errlen, "COPY %s: %s", table, PQerrorMessage(conn));
        err[strcspn(err, "\n")] = '\0';
        return PG_RETRY;
    }
    o = PG_OK;
    while ((r = PQgetResult(conn)) != NULL) {
        enum pg_outcome o2 = classify(conn, r, PGRES_COMMAND_OK, NULL, err, errlen);
        if (o == PG_OK)
            o = o2;
        PQclear(r);
    }
    if (!sent_ok && o == PG_OK) {
        util_fmt(err, errlen, "COPY %s: %s", table, PQerrorMessage(conn));
        o = PG_RETRY;
    }
    return o;
}

/* ---- writing ------------------------------------------------------------- */

struct id_ref {
    const char *id;
    size_t row;
};

static int cmp_id_ref(const void *a, const void *b)
{
    const struct id_ref *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c)
        return c;
    return x->row < y->row ? -1 : x->row > y->row;
}

struct writer {
    PGconn *conn;
    int stage_used[EVENT_KIND_COUNT]; /* staging table holds rows in this tx */
    struct store_row *rows;
    struct util_buf buf;
    int savepoints; /* counter for unique savepoint names */
    char err[512];
};

/*
 * Stages and inserts rows idx[0..n) of one kind, marking each stored or
 * duplicate.  Returns PG_OK, PG_ROW_ERROR (nothing of this call remains, the
 * caller rolled back to its savepoint) or PG_RETRY.
 */
static enum pg_outcome insert_rows(struct writer *w, enum event_kind kind, const size_t *idx,
                                   size_t n)
{
    enum pg_outcome o;
    struct id_ref *refs = NULL;
    PGresult *r = NULL;

    /* Bisection reuses the staging table within the transaction; the first
     * use finds it empty (ON COMMIT DELETE ROWS). */
    if (w->stage_used[kind]) {
        char sql[96];
        util_fmt(sql, sizeof sql, "TRUNCATE pg_temp.%s", kind_sql[kind].stage);
        o = exec_simple(w->conn, sql, w->err, sizeof w->err);
        if (o != PG_OK)
            return PG_RETRY;
    }
    w->stage_used[kind] = 1;
    util_buf_reset(&w->buf);
    for (size_t i = 0; i < n; i++) {
        if (copy_event_row(&w->buf, &w->rows[idx[i]], i) != 0) {
            util_fmt(w->err, sizeof w->err, "out of memory");
            return PG_RETRY;
        }
    }
    o = copy_in(w->conn, kind_sql[kind].stage, &w->buf, w->err, sizeof w->err);
    if (o != PG_OK)
        goto out;
    FAILPOINT("store.after_copy");
    r = PQexec(w->conn, kind_sql[kind].insert);
    o = classify(w->conn, r, PGRES_TUPLES_OK, NULL, w->err, sizeof w->err);
    if (o != PG_OK)
        goto out;

    /* Stored: the first row (in batch order) of each id that came back. */
    refs = util_calloc(n, sizeof *refs);
    if (!refs) {
        util_fmt(w->err, sizeof w->err, "out of memory");
        o = PG_RETRY;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        refs[i].id = w->rows[idx[i]].ev->event_id;
        refs[i].row = idx[i];
        w->rows[idx[i]].outcome = STORE_ROW_DUPLICATE;
    }
    qsort(refs, n, sizeof *refs, cmp_id_ref);
    for (int t = 0; t < PQntuples(r); t++) {
        struct id_ref key = {PQgetvalue(r, t, 0), 0};
        /* Lower bound: the earliest row with this id. */
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cmp_id_ref(&refs[mid], &key) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < n && strcmp(refs[lo].id, key.id) == 0)
            w->rows[refs[lo].row].outcome = STORE_ROW_STORED;
    }
    FAILPOINT("store.after_insert");
out:
    PQclear(r);
    free(refs);
    return o;
}

/*
 * Inserts rows idx[0..n) of one kind under a savepoint; on a row error splits
 * the set in halves until single rows are left, and turns those into dead
 * letters.  Returns PG_OK or PG_RETRY.
 */
static enum pg_outcome insert_isolating(struct writer *w, enum event_kind kind, const size_t *idx,
                                        size_t n)
{
    char sp[64], sql[96];
    if (n == 0)
        return PG_OK;
    util_fmt(sp, sizeof sp, "understudy_sp_%d", w->savepoints++);
    util_fmt(sql, sizeof sql, "SAVEPOINT %s", sp);
    enum pg_outcome o = exec_simple(w->conn, sql, w->err, sizeof w->err);
    if (o != PG_OK)
        return PG_RETRY;
    o = insert_rows(w, kind, idx, n);
    if (o == PG_RETRY)
        return PG_RETRY;
    if (o == PG_OK) {
        util_fmt(sql, sizeof sql, "RELEASE SAVEPOINT %s", sp);
        return exec_simple(w->conn, sql, w->err, sizeof w->err) == PG_OK ? PG_OK : PG_RETRY;
    }
    /* A row was refused. */
    char reason[512], state[6] = "";
    util_fmt(reason, sizeof reason, "%s", w->err);
    memcpy(state, reason, 5);
    util_fmt(sql, sizeof sql, "ROLLBACK TO SAVEPOINT %s", sp);
    if (exec_simple(w->conn, sql, w->err, sizeof w->err) != PG_OK)
        return PG_RETRY;
    if (n == 1) {
        struct store_row *row = &w->rows[idx[0]];
        row->outcome = STORE_ROW_DEAD_LETTER_DB;
        util_fmt(row->db_sqlstate, sizeof row->db_sqlstate, "%s", state);
        util_fmt(row->db_reason, sizeof row->db_reason, "database refused the event: %s", reason);
        log_warn("store: %s[%d]@%lld: %s", row->topic, (int)row->partition, (long long)row->offset,
                 row->db_reason);
        return PG_OK;
    }
    size_t half = n / 2;
    o = insert_isolating(w, kind, idx, half);
    if (o != PG_OK)
        return o;
    return insert_isolating(w, kind, idx + half, n - half);
}

static enum pg_outcome write_dead_letters(struct writer *w, size_t n)
{
    util_buf_reset(&w->buf);
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        struct store_row *row = &w->rows[i];
        int rc = 0;
        if (!row->ev) {
            row->outcome = STORE_ROW_DEAD_LETTER;
            rc = copy_dead_row(&w->buf, row, row->reason ? row->reason : "undecodable", NULL);
            count++;
        } else if (row->outcome == STORE_ROW_DEAD_LETTER_DB) {
            rc = copy_dead_row(&w->buf, row, row->db_reason, row->db_sqlstate);
            count++;
        }
        if (rc != 0) {
            util_fmt(w->err, sizeof w->err, "out of memory");
            return PG_RETRY;
        }
    }
    if (count == 0)
        return PG_OK;
    enum pg_outcome o = copy_in(w->conn, "understudy_stage_dead", &w->buf, w->err, sizeof w->err);
    if (o == PG_OK)
        o = exec_simple(w->conn, insert_dead, w->err, sizeof w->err);
    /* The staging rows are plain data we produced; any refusal here is not
     * the message's fault, so never bisect dead letters. */
    return o == PG_OK ? PG_OK : PG_RETRY;
}

struct part_max {
    const char *topic;
    int32_t partition;
    int64_t max;
};

/* Upserts max(offset)+1 per (topic, partition) of the batch.  A batch spans
 * few partitions, so a linear scan of the distinct ones is the cheap way. */
static enum pg_outcome write_offsets(struct writer *w, const char *group_id, size_t n)
{
    struct util_buf topics, parts, offs;
    struct part_max *pm = util_calloc(n, sizeof *pm);
    size_t npm = 0;
    enum pg_outcome o = PG_RETRY;
    util_buf_init(&topics);
    util_buf_init(&parts);
    util_buf_init(&offs);
    if (!pm)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const struct store_row *row = &w->rows[i];
        size_t k = 0;
        while (k < npm &&
               !(pm[k].partition == row->partition && strcmp(pm[k].topic, row->topic) == 0))
            k++;
        if (k == npm) {
            pm[npm].topic = row->topic;
            pm[npm].partition = row->partition;
            pm[npm++].max = row->offset;
        } else if (row->offset > pm[k].max) {
            pm[k].max = row->offset;
        }
    }
    int rc = util_buf_puts(&topics, "{") | util_buf_puts(&parts, "{") | util_buf_puts(&offs, "{");
    for (size_t k = 0; k < npm; k++) {
        const char *sep = k ? "," : "";
        rc |= util_buf_printf(&topics, "%s\"", sep);
        for (const char *c = pm[k].topic; *c; c++) {
            if (*c == '"' || *c == '\\')
                rc |= util_buf_puts(&topics, "\\");
            rc |= util_buf_append(&topics, c, 1);
        }
        rc |= util_buf_puts(&topics, "\"");
        rc |= util_buf_printf(&parts, "%s%d", sep, (int)pm[k].partition);
        rc |= util_buf_printf(&offs, "%s%lld", sep, (long long)pm[k].max + 1);
    }
    rc |= util_buf_puts(&topics, "}") | util_buf_puts(&parts, "}") | util_buf_puts(&offs, "}");
    if (rc != 0)
        goto oom;
    const char *params[4] = {group_id, topics.data, parts.data, offs.data};
    PGresult *r = PQexecParams(w->conn, upsert_offsets, 4, NULL, params, NULL, NULL, 0);
    o = classify(w->conn, r, PGRES_COMMAND_OK, NULL, w->err, sizeof w->err);
    PQclear(r);
    if (o != PG_OK)
        o = PG_RETRY;
    goto out;
oom:
    util_fmt(w->err, sizeof w->err, "out of memory");
out:
    free(pm);
    util_buf_deinit(&topics);
    util_buf_deinit(&parts);
    util_buf_deinit(&offs);
    return o;
}

static enum pg_outcome ensure_staging(PGconn *conn, char *err, size_t errlen)
{
    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        if (exec_simple(conn, kind_sql[k].create, err, errlen) != PG_OK)
            return PG_RETRY;
    }
    return exec_simple(conn, create_dead_stage, err, errlen) == PG_OK ? PG_OK : PG_RETRY;
}

int store_write_batch(struct store *st, const char *group_id, struct store_row *rows, size_t n,
                      char *err, size_t errlen)
{
    struct writer w;
    size_t *idx = NULL;
    int rc = -1, in_tx = 0;
    PGconn *conn = store_conn(st);

    memset(&w, 0, sizeof w);
    w.conn = conn;
    w.rows = rows;
    util_buf_init(&w.buf);
    for (size_t i = 0; i < n; i++) {
        rows[i].outcome = STORE_ROW_PENDING;
        rows[i].db_reason[0] = '\0';
        rows[i].db_sqlstate[0] = '\0';
    }
    if (n == 0)
        return 0;
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        util_fmt(err, errlen, "not connected");
        goto out;
    }
    idx = util_calloc(n, sizeof *idx);
    if (!idx) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }

    /* Temp tables live per session: create them once per backend, outside
     * the batch's transaction so that a rollback cannot undo them. */
    if (st->staging_backend != PQbackendPID(conn)) {
        if (ensure_staging(conn, w.err, sizeof w.err) != PG_OK)
            goto fail;
        st->staging_backend = PQbackendPID(conn);
    }
    if (exec_simple(conn, "BEGIN", w.err, sizeof w.err) != PG_OK)
        goto fail;
    in_tx = 1;
    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (rows[i].ev && (int)rows[i].ev->kind == k)
                idx[m++] = i;
        }
        if (insert_isolating(&w, (enum event_kind)k, idx, m) != PG_OK)
            goto fail;
    }
    if (write_dead_letters(&w, n) != PG_OK)
        goto fail;
    if (write_offsets(&w, group_id, n) != PG_OK)
        goto fail;
    if (exec_simple(conn, "COMMIT", w.err, sizeof w.err) != PG_OK) {
        in_tx = 0; /* a failed COMMIT ends the transaction */
        goto fail;
    }
    rc = 0;
    goto out;
fail:
    util_fmt(err, errlen, "%s", w.err);
    if (in_tx && PQstatus(conn) == CONNECTION_OK) {
        PGresult *r = PQexec(conn, "ROLLBACK");
        PQclear(r);
    }
    for (size_t i = 0; i < n; i++)
        rows[i].outcome = STORE_ROW_PENDING;
out:
    util_buf_deinit(&w.buf);
    free(idx);
    return rc;
}

int store_load_offsets(struct store *st, const char *group_id, const char *topic,
                       const int32_t *partitions, size_t n, int64_t *next, char *err, size_t errlen)
{
    int rc = -1;
    struct util_buf arr;
    PGresult *r = NULL;
    PGconn *conn = store_conn(st);

    util_buf_init(&arr);
    for (size_t i = 0; i < n; i++)
        next[i] = -1;
    if (util_buf_puts(&arr, "{") != 0)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        if (util_buf_printf(&arr, "%s%d", i ? "," : "", (int)partitions[i]) != 0)
            goto oom;
    }
    if (util_buf_puts(&arr, "}") != 0)
        goto oom;
    const char *params[3] = {group_id, topic, arr.data};
    r = PQexecParams(conn,
                     "SELECT partition, next_offset FROM ingest_offsets"
                     " WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::integer[])",
                     3, NULL, params, NULL, NULL, 0);
    if (classify(conn, r, PGRES_TUPLES_OK, NULL, err, errlen) != PG_OK)
        goto out;
    for (int t = 0; t < PQntuples(r); t++) {
        int32_t p = (int32_t)strtol(PQgetvalue(r, t, 0), NULL, 10);
        int64_t o = strtoll(PQgetvalue(r, t, 1), NULL, 10);
        for (size_t i = 0; i < n; i++) {
            if (partitions[i] == p)
                next[i] = o;
        }
    }
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    PQclear(r);
    util_buf_deinit(&arr);
    return rc;
}

int store_ping(struct store *st, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        util_fmt(err, errlen, "not connected");
        return -1;
    }
    PGresult *r = PQexec(conn, "SELECT 1");
    int rc = classify(conn, r, PGRES_TUPLES_OK, NULL, err, errlen) == PG_OK ? 0 : -1;
    PQclear(r);
    return rc;
}

int store_reconnect(struct store *st, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    if (!conn) {
        util_fmt(err, errlen, "no connection to reset");
        return -1;
    }
    PQreset(conn);
    if (PQstatus(conn) != CONNECTION_OK) {
        util_fmt(err, errlen, "postgres: cannot reconnect: %s", PQerrorMessage(conn));
        err[strcspn(err, "\n")] = '\0';
        return -1;
    }
    return 0;
}

int store_set_statement_timeout(struct store *st, int64_t ms, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    char value[32];
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        util_fmt(err, errlen, "not connected");
        return -1;
    }
    util_fmt(value, sizeof value, "%lld", (long long)(ms < 1 ? 1 : ms));
    const char *params[1] = {value};
    PGresult *r = PQexecParams(conn, "SELECT set_config('statement_timeout', $1, false)", 1, NULL,
                               params, NULL, NULL, 0);
    int rc = classify(conn, r, PGRES_TUPLES_OK, NULL, err, errlen) == PG_OK ? 0 : -1;
    PQclear(r);
    return rc;
}
