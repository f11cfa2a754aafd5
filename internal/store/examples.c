/*
 * store: labelled training examples, read from the event tables.
 *
 * One example per action event (its decision class and its own state) and
 * one "hold" example per state snapshot that the contract's labelling rule
 * makes a hold: no action on the same entity (entity_type, entity_id) with
 * ts in [t - settle_window, t + hold_window].  The rule looks at every
 * stored action, also outside the requested time range, so a snapshot just
 * inside the range is not labelled hold because of an action just outside.
 *
 * Features are extracted by PostgreSQL, so no state object is parsed here:
 * a numeric feature is the text of a JSON number, a categorical one the
 * text of a string or boolean ("true"/"false"); any other kind is NULL,
 * i.e. missing, exactly as event_features() reads an event.  Feature names
 * are bound as parameters: the statement text depends only on how many
 * features there are.  Rows stream in single-row mode, ordered by ts (ties:
 * actions first, then by id), so memory does not grow with the table.
 */
#include "store/store.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "event/event.h"
#include "store/store_impl.h"
#include "util/util.h"

enum { FIXED_PARAMS = 6, FIXED_COLS = 8 };

static int build_sql(struct util_buf *sql, const struct store_example_query *q)
{
    /* Per-feature column expressions: $7, $8, ... carry the feature names. */
    struct util_buf cols;
    util_buf_init(&cols);
    int rc = -1;
    for (size_t f = 0; f < q->n_features; f++) {
        size_t p = FIXED_PARAMS + 1 + f;
        const char *kinds =
            q->features[f].kind == EVENT_FEATURE_NUMERIC ? "'number'" : "'string', 'boolean'";
        if (util_buf_printf(&cols,
                            ",\n  CASE WHEN jsonb_typeof(e.state -> $%zu::text) IN (%s)"
                            " THEN e.state ->> $%zu::text END",
                            p, kinds, p) != 0)
            goto out;
    }
    if (util_buf_printf(
            sql,
            "WITH acts AS (\n"
            "  SELECT 0 AS src, a.id, a.event_id, a.decision AS label, a.ts, a.operator_id,\n"
            "         a.entity_type, a.entity_id, a.delta_pct, a.state\n"
            "  FROM action_events a\n"
            "  WHERE ($1::timestamptz IS NULL OR a.ts >= $1) AND ($2::timestamptz IS NULL OR a.ts "
            "< "
            "$2)\n"
            "), holds AS (\n"
            "  SELECT 1 AS src, s.id, s.event_id, 'hold'::text AS label, s.ts, s.operator_id,\n"
            "         s.entity_type, s.entity_id, NULL::double precision AS delta_pct, s.state\n"
            "  FROM state_events s\n"
            "  WHERE ($1::timestamptz IS NULL OR s.ts >= $1) AND ($2::timestamptz IS NULL OR s.ts "
            "< "
            "$2)\n"
            "    AND NOT EXISTS (SELECT 1 FROM action_events a\n"
            "                    WHERE a.entity_id = s.entity_id AND a.entity_type = "
            "s.entity_type\n"
            "                      AND a.ts >= s.ts - $3::bigint * interval '1 microsecond'\n"
            "                      AND a.ts <= s.ts + $4::bigint * interval '1 microsecond')\n"
            ")\n"
            "SELECT e.src, e.event_id, e.label, (extract(epoch FROM e.ts) * 1000000)::bigint,\n"
            "       e.operator_id, e.entity_type, e.entity_id, e.delta_pct%s\n"
            "FROM (SELECT * FROM acts UNION ALL SELECT * FROM holds) e\n"
            "WHERE ($5::text[] IS NULL OR e.operator_id = ANY($5::text[]))\n"
            "  AND ($6::text[] IS NULL OR e.operator_id IS NULL OR NOT (e.operator_id = "
            "ANY($6::text[])))\n"
            "ORDER BY e.ts, e.src, e.id",
            cols.len ? cols.data : "") != 0)
        goto out;
    rc = 0;
out:
    util_buf_deinit(&cols);
    return rc;
}

int store_load_examples(struct store *st, const struct store_example_query *q, store_example_fn fn,
                        void *arg, size_t *n_rows, char *err, size_t errlen)
{
    int rc = -1;
    PGconn *conn = store_conn(st);
    PGresult *r = NULL;
    struct util_buf sql, inc, exc;
    char since[40], until[40], settle[24], hold[24];
    const char **params = NULL;
    struct event_feature_value *vals = NULL;
    int sent = 0;

    util_buf_init(&sql);
    util_buf_init(&inc);
    util_buf_init(&exc);
    if (n_rows)
        *n_rows = 0;
    size_t nparams = FIXED_PARAMS + q->n_features;
    params = util_calloc(nparams, sizeof *params);
    vals = util_calloc(q->n_features ? q->n_features : 1, sizeof *vals);
    if (!params || !vals || build_sql(&sql, q) != 0)
        goto oom;
    if (q->since_us != INT64_MIN) {
        util_format_rfc3339(q->since_us, since, sizeof since);
        params[0] = since;
    }
    if (q->until_us != INT64_MAX) {
        util_format_rfc3339(q->until_us, until, sizeof until);
        params[1] = until;
    }
    util_fmt(settle, sizeof settle, "%lld", (long long)q->settle_ms * 1000);
    util_fmt(hold, sizeof hold, "%lld", (long long)q->hold_ms * 1000);
    params[2] = settle;
    params[3] = hold;
    if (q->include_operators) {
        if (store_text_array(&inc, q->include_operators, q->n_include) != 0)
            goto oom;
        params[4] = inc.data;
    }
    if (q->n_exclude) {
        if (store_text_array(&exc, q->exclude_operators, q->n_exclude) != 0)
            goto oom;
        params[5] = exc.data;
    }
    for (size_t f = 0; f < q->n_features; f++)
        params[FIXED_PARAMS + f] = q->features[f].name;

    if (!PQsendQueryParams(conn, sql.data, (int)nparams, NULL, params, NULL, NULL, 0)) {
        store_result_check(conn, NULL, PGRES_TUPLES_OK, err, errlen);
        goto out;
    }
    sent = 1;
    if (!PQsetSingleRowMode(conn)) {
        util_fmt(err, errlen, "cannot stream the examples query");
        goto out;
    }
    int failed = 0;
    while ((r = PQgetResult(conn)) != NULL) {
        ExecStatusType s = PQresultStatus(r);
        if (failed || s == PGRES_TUPLES_OK) {
            PQclear(r);
            r = NULL;
            continue;
        }
        if (s != PGRES_SINGLE_TUPLE) {
            store_result_check(conn, r, PGRES_SINGLE_TUPLE, err, errlen);
            failed = 1;
            PQclear(r);
            r = NULL;
            continue;
        }
        struct store_example ex;
        ex.event_id = PQgetvalue(r, 0, 1);
        ex.label = PQgetvalue(r, 0, 2);
        ex.ts_us = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        ex.operator_id = PQgetisnull(r, 0, 4) ? NULL : PQgetvalue(r, 0, 4);
        ex.entity_type = PQgetvalue(r, 0, 5);
        ex.entity_id = PQgetvalue(r, 0, 6);
        ex.delta_pct = PQgetisnull(r, 0, 7) ? NAN : strtod(PQgetvalue(r, 0, 7), NULL);
        for (size_t f = 0; f < q->n_features; f++) {
            int c = FIXED_COLS + (int)f;
            vals[f].missing = PQgetisnull(r, 0, c) != 0;
            vals[f].num = NAN;
            vals[f].cat = NULL;
            if (vals[f].missing)
                continue;
            if (q->features[f].kind == EVENT_FEATURE_NUMERIC) {
                char *end;
                vals[f].num = strtod(PQgetvalue(r, 0, c), &end);
                if (*end != '\0' || !isfinite(vals[f].num))
                    vals[f].missing = true;
            } else {
                vals[f].cat = PQgetvalue(r, 0, c);
            }
        }
        ex.values = vals;
        if (fn(arg, &ex, err, errlen) != 0) {
            /* Stop reading: cancel the rest and drain the results. */
            failed = 1;
            PGcancel *cancel = PQgetCancel(conn);
            if (cancel) {
                char ebuf[128];
                (void)PQcancel(cancel, ebuf, sizeof ebuf);
                PQfreeCancel(cancel);
            }
        } else if (n_rows) {
            (*n_rows)++;
        }
        PQclear(r);
        r = NULL;
    }
    sent = 0;
    if (!failed)
        rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    if (sent) {
        while ((r = PQgetResult(conn)) != NULL)
            PQclear(r);
    }
    PQclear(r);
    util_buf_deinit(&sql);
    util_buf_deinit(&inc);
    util_buf_deinit(&exc);
    free(params);
    free(vals);
    return rc;
}
