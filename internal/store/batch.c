/*
 * store: the ingest write path.  One call writes one consumer batch in one
 * transaction: the decoded events, the dead letters and the per-partition
 * next offsets, so the database alone says how far each partition has been
 * read (the "effectively once" of ingest: offsets and rows commit together).
 *
 * Per kind of event, the fast path first: rows whose event_id already came
 * earlier in the batch are duplicates, decided here; the others are COPYed
 * (binary format) straight into the event table under a savepoint.  That is
 * all when their ids are new, the usual case, and costs PostgreSQL no more
 * than a plain COPY of the same rows.  When that COPY fails on a row
 * (SQLSTATE class 22, 23 or 54; an id stored by an earlier batch gives
 * 23505), the savepoint is rolled back and the same rows take the general
 * path: COPY into a temporary staging table, then INSERT ... SELECT ... ON
 * CONFLICT (event_id) DO NOTHING RETURNING event_id; the ids that come back
 * are stored, every other row of the batch is a duplicate (of an earlier
 * batch or of an earlier row of this one).  Both paths store the first row
 * of each id, in batch order, so every row's outcome is the same whichever
 * path wrote it.  The staging tables are created only when first needed.
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

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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
    const char *direct; /* binary COPY into the event table: the staging columns but seq */
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
            "COPY action_events (event_id, ts, ts_text, operator_id, campaign_id, entity_type,"
            " entity_id, action, delta_pct, decision, state, extra, src_topic, src_partition,"
            " src_offset) FROM STDIN WITH (FORMAT binary)",
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
            "COPY state_events (event_id, ts, ts_text, operator_id, campaign_id, entity_type,"
            " entity_id, state, extra, src_topic, src_partition, src_offset)"
            " FROM STDIN WITH (FORMAT binary)",
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
            "COPY feedback_events (event_id, ts, ts_text, operator_id, recommendation_id, verdict,"
            " action, delta_pct, decision, extra, src_topic, src_partition, src_offset)"
            " FROM STDIN WITH (FORMAT binary)",
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

/*
 * Hand-written rather than printf: this runs for every column of every row,
 * and the format of each piece is fixed.
 */
static int copy_text(struct util_buf *b, const char *s)
{
    if (!s)
        return util_buf_append(b, "\\N", 2);
    for (;;) {
        size_t n = strcspn(s, "\\\n\r\t");
        if (util_buf_append(b, s, n) != 0)
            return -1;
        s += n;
        if (*s == '\0')
            return 0;
        const char *esc = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : *s == '\r' ? "\\r" : "\\t";
        if (util_buf_append(b, esc, 2) != 0)
            return -1;
        s++;
    }
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

/* Writes v in decimal, then the character after (0: nothing). */
static int copy_int(struct util_buf *b, long long v, char after)
{
    char text[24];
    size_t i = sizeof text;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    if (after)
        text[--i] = after;
    do {
        text[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        text[--i] = '-';
    return util_buf_append(b, text + i, sizeof text - i);
}

/* n decimal digits of v (0 <= v < 10^n) at p. */
static void put_digits(char *p, long long v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/*
 * Writes ts as "YYYY-MM-DD HH:MM:SS.ffffff+00" in UTC.  The proleptic
 * Gregorian date comes from the day count in 400-year eras counted from
 * 0000-03-01 (the inverse of event_time's days-from-civil), so no gmtime_r
 * and no time zone.  Outside years 0..9999 (an offset can move 0001-01-01
 * into year 0, which PostgreSQL refuses) printf writes what it always wrote.
 */
static int copy_ts(struct util_buf *b, int64_t us)
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t day = doy - (153 * mp + 2) / 5 + 1;
    int64_t month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = yoe + era * 400 + (month <= 2);
    if (year < 0 || year > 9999) {
        return util_buf_printf(b, "%04lld-%02d-%02d %02d:%02d:%02d.%06lld+00", (long long)year,
                               (int)month, (int)day, (int)(sod / 3600), (int)(sod / 60 % 60),
                               (int)(sod % 60), (long long)frac);
    }
    char t[29];
    put_digits(t, year, 4);
    t[4] = '-';
    put_digits(t + 5, month, 2);
    t[7] = '-';
    put_digits(t + 8, day, 2);
    t[10] = ' ';
    put_digits(t + 11, sod / 3600, 2);
    t[13] = ':';
    put_digits(t + 14, sod / 60 % 60, 2);
    t[16] = ':';
    put_digits(t + 17, sod % 60, 2);
    t[19] = '.';
    put_digits(t + 20, frac, 6);
    t[26] = '+';
    t[27] = '0';
    t[28] = '0';
    return util_buf_append(b, t, sizeof t);
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
    int rc = copy_int(b, (long long)seq, '\t');
    rc |= copy_text(b, ev->event_id);
    rc |= util_buf_append(b, "\t", 1);
    rc |= copy_ts(b, ev->ts_us);
    rc |= util_buf_append(b, "\t", 1);
    rc |= copy_text(b, ev->ts_text);
    rc |= util_buf_append(b, "\t", 1);
    rc |= copy_text(b, ev->operator_id);
    rc |= util_buf_append(b, "\t", 1);
    switch (ev->kind) {
    case EVENT_KIND_ACTION:
    case EVENT_KIND_STATE:
        rc |= copy_text(b, ev->campaign_id);
        rc |= util_buf_append(b, "\t", 1);
        rc |= copy_text(b, event_entity_name(ev->entity_type));
        rc |= util_buf_append(b, "\t", 1);
        rc |= copy_text(b, ev->entity_id);
        rc |= util_buf_append(b, "\t", 1);
        if (ev->kind == EVENT_KIND_ACTION) {
            rc |= copy_text(b, event_action_name(ev->action));
            rc |= util_buf_append(b, "\t", 1);
            rc |= copy_delta(b, ev);
            rc |= util_buf_append(b, "\t", 1);
            rc |= copy_text(b, decision);
            rc |= util_buf_append(b, "\t", 1);
        }
        rc |= copy_text(b, ev->state_json);
        rc |= util_buf_append(b, "\t", 1);
        break;
    case EVENT_KIND_FEEDBACK:
        rc |= copy_int(b, (long long)ev->recommendation_id, '\t');
        rc |= copy_text(b, event_verdict_name(ev->verdict));
        rc |= util_buf_append(b, "\t", 1);
        rc |= copy_text(b, ev->has_action ? event_action_name(ev->action) : NULL);
        rc |= util_buf_append(b, "\t", 1);
        rc |= copy_delta(b, ev);
        rc |= util_buf_append(b, "\t", 1);
        rc |= copy_text(b, ev->has_action ? decision : NULL);
        rc |= util_buf_append(b, "\t", 1);
        break;
    default:
        return -1;
    }
    rc |= copy_text(b, ev->extra_json);
    rc |= util_buf_append(b, "\t", 1);
    rc |= copy_text(b, row->topic);
    rc |= util_buf_append(b, "\t", 1);
    rc |= copy_int(b, (long long)row->partition, '\t');
    rc |= copy_int(b, (long long)row->offset, '\n');
    return rc ? -1 : 0;
}

/* ---- binary COPY encoding (the fast path) ---------------------------------- */

/*
 * PostgreSQL's binary COPY format: a fixed header, then per row a 16-bit
 * field count and per field a 32-bit length (-1 for NULL) and the value in
 * the type's send format, all integers big-endian; a count of -1 ends the
 * data.  Compared with text, the server skips parsing timestamps and
 * numbers and unescaping text (measured: up to a seventh of its time per
 * state_events row, less when index inserts dominate), and the client skips
 * formatting and escaping.  text is its UTF-8
 * bytes, jsonb a version byte 1 and the JSON text (parsed as from text),
 * timestamptz microseconds since 2000-01-01 UTC, float8 the IEEE bits.
 */
static const unsigned char bin_header[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xFF, '\r', '\n',
                                             0,   0,   0,   0,   0,   0,   0,    0,    0};

/* Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01. */
#define PG_EPOCH_US INT64_C(946684800000000)
/*
 * The fast path takes times from 0001-01-01 to 9999-12-31 (UTC).  An offset
 * can push a valid ts just outside; the text path keeps what PostgreSQL
 * makes of those (year 0 is refused in text but not in binary).
 */
#define BIN_TS_MIN INT64_C(-62135596800000000)
#define BIN_TS_END INT64_C(253402300800000000)

static int bin_u16(struct util_buf *b, uint16_t v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    return util_buf_append(b, x, 2);
}

static int bin_u32(struct util_buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    return util_buf_append(b, x, 4);
}

static int bin_u64(struct util_buf *b, uint64_t v)
{
    return bin_u32(b, (uint32_t)(v >> 32)) | bin_u32(b, (uint32_t)v);
}

static int bin_null(struct util_buf *b)
{
    return bin_u32(b, UINT32_MAX);
}

static int bin_text(struct util_buf *b, const char *s)
{
    if (!s)
        return bin_null(b);
    size_t n = strlen(s);
    if (n > INT32_MAX)
        return -1;
    return bin_u32(b, (uint32_t)n) | util_buf_append(b, s, n);
}

static int bin_jsonb(struct util_buf *b, const char *s)
{
    if (!s)
        return bin_null(b);
    size_t n = strlen(s);
    if (n >= INT32_MAX)
        return -1;
    return bin_u32(b, (uint32_t)n + 1) | util_buf_append(b, "\1", 1) | util_buf_append(b, s, n);
}

static int bin_int4(struct util_buf *b, int32_t v)
{
    return bin_u32(b, 4) | bin_u32(b, (uint32_t)v);
}

static int bin_int8(struct util_buf *b, int64_t v)
{
    return bin_u32(b, 8) | bin_u64(b, (uint64_t)v);
}

static int bin_float8(struct util_buf *b, const struct event *ev)
{
    uint64_t bits;
    if (!ev->has_delta)
        return bin_null(b);
    memcpy(&bits, &ev->delta_pct, sizeof bits);
    return bin_u32(b, 8) | bin_u64(b, bits);
}

static bool bin_ts_ok(const struct event *ev)
{
    return ev->ts_us >= BIN_TS_MIN && ev->ts_us < BIN_TS_END;
}

/*
 * Appends one binary row of rows[i] for its event table, the columns of
 * kind_sql[].direct.  Returns 0, 1 when the row must take the text path
 * (its ts, see bin_ts_ok), or -1 (out of memory).
 */
static int bin_event_row(struct util_buf *b, const struct store_row *row)
{
    const struct event *ev = row->ev;
    enum event_class cls;
    const char *decision = event_class_of(ev, &cls) == 0 ? event_class_name(cls) : NULL;
    static const uint16_t fields[EVENT_KIND_COUNT] = {
        [EVENT_KIND_ACTION] = 15, [EVENT_KIND_STATE] = 12, [EVENT_KIND_FEEDBACK] = 13};

    if ((unsigned)ev->kind >= EVENT_KIND_COUNT)
        return -1;
    if (!bin_ts_ok(ev))
        return 1;
    int rc = bin_u16(b, fields[ev->kind]);
    rc |= bin_text(b, ev->event_id);
    rc |= bin_int8(b, ev->ts_us - PG_EPOCH_US);
    rc |= bin_text(b, ev->ts_text);
    rc |= bin_text(b, ev->operator_id);
    if (ev->kind == EVENT_KIND_FEEDBACK) {
        rc |= bin_int8(b, ev->recommendation_id);
        rc |= bin_text(b, event_verdict_name(ev->verdict));
        rc |= bin_text(b, ev->has_action ? event_action_name(ev->action) : NULL);
        rc |= bin_float8(b, ev);
        rc |= bin_text(b, ev->has_action ? decision : NULL);
    } else {
        rc |= bin_text(b, ev->campaign_id);
        rc |= bin_text(b, event_entity_name(ev->entity_type));
        rc |= bin_text(b, ev->entity_id);
        if (ev->kind == EVENT_KIND_ACTION) {
            rc |= bin_text(b, event_action_name(ev->action));
            rc |= bin_float8(b, ev);
            rc |= bin_text(b, decision);
        }
        rc |= bin_jsonb(b, ev->state_json);
    }
    rc |= bin_jsonb(b, ev->extra_json);
    rc |= bin_text(b, row->topic);
    rc |= bin_int4(b, row->partition);
    rc |= bin_int8(b, row->offset);
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

/* Starts the COPY ... FROM STDIN statement sql. */
static enum pg_outcome copy_start(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    enum pg_outcome o = classify(conn, r, PGRES_COPY_IN, NULL, err, errlen);
    PQclear(r);
    return o;
}

/* Sends p[0..n) in pieces of COPY_CHUNK; 0, or -1 when libpq refused. */
static int copy_send(PGconn *conn, const char *p, size_t n)
{
    for (size_t off = 0; off < n; off += COPY_CHUNK) {
        size_t k = n - off < COPY_CHUNK ? n - off : COPY_CHUNK;
        if (PQputCopyData(conn, p + off, (int)k) != 1)
            return -1;
    }
    return 0;
}

/*
 * Ends a COPY started by copy_start; sent_ok 0 aborts it (the data could not
 * all be sent or produced), which is then never a row's fault.
 */
static enum pg_outcome copy_finish(PGconn *conn, const char *sql, int sent_ok, char *err,
                                   size_t errlen)
{
    PGresult *r;
    if (PQputCopyEnd(conn, sent_ok ? NULL : "client failed to send") != 1) {
        util_fmt(err, errlen, "%.40s: %s", sql, PQerrorMessage(conn));
        err[strcspn(err, "\n")] = '\0';
        return PG_RETRY;
    }
    enum pg_outcome o = PG_OK;
    while ((r = PQgetResult(conn)) != NULL) {
        enum pg_outcome o2 = classify(conn, r, PGRES_COMMAND_OK, NULL, err, errlen);
        if (o == PG_OK)
            o = o2;
        PQclear(r);
    }
    if (!sent_ok) {
        if (o == PG_OK)
            util_fmt(err, errlen, "%.40s: %s", sql, PQerrorMessage(conn));
        o = PG_RETRY;
    }
    return o;
}

/* Runs the COPY ... FROM STDIN statement sql with the buffer's rows. */
static enum pg_outcome copy_in(PGconn *conn, const char *sql, const struct util_buf *data,
                               char *err, size_t errlen)
{
    enum pg_outcome o = copy_start(conn, sql, err, errlen);
    if (o != PG_OK)
        return o;
    return copy_finish(conn, sql, copy_send(conn, data->data, data->len) == 0, err, errlen);
}

/* ---- writing ------------------------------------------------------------- */

static enum pg_outcome ensure_staging(PGconn *conn, char *err, size_t errlen)
{
    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        if (exec_simple(conn, kind_sql[k].create, err, errlen) != PG_OK)
            return PG_RETRY;
    }
    return exec_simple(conn, create_dead_stage, err, errlen) == PG_OK ? PG_OK : PG_RETRY;
}

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
    struct store *st;
    int staging_created;              /* this transaction created the staging tables */
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
    char sql[96];
    util_fmt(sql, sizeof sql, "COPY %s FROM STDIN", kind_sql[kind].stage);
    o = copy_in(w->conn, sql, &w->buf, w->err, sizeof w->err);
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
 * The fast path for rows idx[0..n) of one kind (idx in batch order): the
 * first row of each event_id is COPYed (binary) straight into the event
 * table under a savepoint, the later ones are duplicates.  Rows are encoded
 * and sent in pieces, so that PostgreSQL works on the first while the rest
 * are encoded.  Returns PG_OK with every row marked; PG_ROW_ERROR when
 * PostgreSQL refused a row (23505 for an id stored before, or any other
 * class 22/23/54 error: the savepoint is rolled back) or a row's ts is for
 * the text path (nothing was sent): then nothing of this call remains and no
 * row is marked; or PG_RETRY.
 */
static enum pg_outcome insert_direct(struct writer *w, enum event_kind kind, const size_t *idx,
                                     size_t n)
{
    char sp[64], sql[160];
    enum pg_outcome o = PG_RETRY;
    struct id_ref *refs = util_calloc(n, sizeof *refs);
    unsigned char *first = util_calloc(n, 1);

    if (!refs || !first) {
        util_fmt(w->err, sizeof w->err, "out of memory");
        goto out;
    }
    /* Sorted by (id, position), the first of each run of equal ids is the
     * earliest row with that id. */
    for (size_t i = 0; i < n; i++) {
        refs[i].id = w->rows[idx[i]].ev->event_id;
        refs[i].row = i;
    }
    qsort(refs, n, sizeof *refs, cmp_id_ref);
    for (size_t j = 0; j < n; j++) {
        if (j == 0 || strcmp(refs[j].id, refs[j - 1].id) != 0)
            first[refs[j].row] = 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (first[i] && !bin_ts_ok(w->rows[idx[i]].ev)) {
            o = PG_ROW_ERROR; /* for the text path; nothing was sent */
            goto out;
        }
    }
    util_fmt(sp, sizeof sp, "understudy_sp_%d", w->savepoints++);
    util_fmt(sql, sizeof sql, "SAVEPOINT %s", sp);
    if (exec_simple(w->conn, sql, w->err, sizeof w->err) != PG_OK)
        goto out;
    const char *copy = kind_sql[kind].direct;
    o = copy_start(w->conn, copy, w->err, sizeof w->err);
    if (o == PG_OK) {
        int sent = 1;
        util_buf_reset(&w->buf);
        int encoded = util_buf_append(&w->buf, bin_header, sizeof bin_header) == 0;
        for (size_t i = 0; i < n && encoded && sent; i++) {
            if (first[i])
                encoded = bin_event_row(&w->buf, &w->rows[idx[i]]) == 0;
            if (encoded && w->buf.len >= COPY_CHUNK) {
                sent = copy_send(w->conn, w->buf.data, w->buf.len) == 0;
                util_buf_reset(&w->buf);
            }
        }
        encoded = encoded && bin_u16(&w->buf, UINT16_MAX) == 0;
        sent = sent && encoded && copy_send(w->conn, w->buf.data, w->buf.len) == 0;
        o = copy_finish(w->conn, copy, sent, w->err, sizeof w->err);
        if (!encoded)
            util_fmt(w->err, sizeof w->err, "out of memory");
    }
    if (o == PG_ROW_ERROR) {
        log_debug("store: %s rows: the direct COPY was refused (%s); using the staging path",
                  event_kind_name(kind), w->err);
        util_fmt(sql, sizeof sql, "ROLLBACK TO SAVEPOINT %s; RELEASE SAVEPOINT %s", sp, sp);
        if (exec_simple(w->conn, sql, w->err, sizeof w->err) != PG_OK)
            o = PG_RETRY;
        goto out;
    }
    if (o != PG_OK)
        goto out;
    FAILPOINT("store.after_copy");
    util_fmt(sql, sizeof sql, "RELEASE SAVEPOINT %s", sp);
    if (exec_simple(w->conn, sql, w->err, sizeof w->err) != PG_OK) {
        o = PG_RETRY;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        w->rows[idx[i]].outcome = first[i] ? STORE_ROW_STORED : STORE_ROW_DUPLICATE;
    FAILPOINT("store.after_insert");
out:
    free(refs);
    free(first);
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

/*
 * The temporary staging tables, created the first time this session needs
 * them: the fast path does not, so a session that only ever sees new ids
 * never creates them.  This runs inside the batch's transaction but never
 * under a savepoint (bisection rolls those back), and counts for the
 * session only once the transaction has committed.
 */
static enum pg_outcome need_staging(struct writer *w)
{
    if (w->staging_created || w->st->staging_backend == PQbackendPID(w->conn))
        return PG_OK;
    if (ensure_staging(w->conn, w->err, sizeof w->err) != PG_OK)
        return PG_RETRY;
    w->staging_created = 1;
    return PG_OK;
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
    if (need_staging(w) != PG_OK)
        return PG_RETRY;
    enum pg_outcome o =
        copy_in(w->conn, "COPY understudy_stage_dead FROM STDIN", &w->buf, w->err, sizeof w->err);
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

int store_write_batch(struct store *st, const char *group_id, struct store_row *rows, size_t n,
                      char *err, size_t errlen)
{
    struct writer w;
    size_t *idx = NULL;
    int rc = -1, in_tx = 0;
    PGconn *conn = store_conn(st);

    memset(&w, 0, sizeof w);
    w.conn = conn;
    w.st = st;
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

    if (exec_simple(conn, "BEGIN", w.err, sizeof w.err) != PG_OK)
        goto fail;
    in_tx = 1;
    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (rows[i].ev && (int)rows[i].ev->kind == k)
                idx[m++] = i;
        }
        if (m == 0)
            continue;
        enum pg_outcome o = insert_direct(&w, (enum event_kind)k, idx, m);
        if (o == PG_ROW_ERROR) {
            o = need_staging(&w);
            if (o == PG_OK)
                o = insert_isolating(&w, (enum event_kind)k, idx, m);
        }
        if (o != PG_OK)
            goto fail;
    }
    if (write_dead_letters(&w, n) != PG_OK)
        goto fail;
    if (write_offsets(&w, group_id, n) != PG_OK)
        goto fail;
    /* Wake the recommender (delivered at COMMIT, once per transaction). */
    for (size_t i = 0; i < n; i++) {
        if (rows[i].outcome == STORE_ROW_STORED && rows[i].ev &&
            rows[i].ev->kind == EVENT_KIND_STATE) {
            if (exec_simple(conn, "NOTIFY " STORE_STATES_CHANNEL, w.err, sizeof w.err) != PG_OK)
                goto fail;
            break;
        }
    }
    if (exec_simple(conn, "COMMIT", w.err, sizeof w.err) != PG_OK) {
        in_tx = 0; /* a failed COMMIT ends the transaction */
        goto fail;
    }
    if (w.staging_created)
        st->staging_backend = PQbackendPID(conn);
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
