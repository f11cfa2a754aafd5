/*
 * `understudy recommend --from-db` against real PostgreSQL: the guardrails
 * as they end up in recommendations and abstentions, idempotent writes,
 * supersede by snapshot time and after a promotion, expiry, the
 * recommendation_stats view and what understudy_reader may read.
 *
 * One base database is built once: a simulated team's logs replayed
 * through the mock Kafka cluster and stored by the daemon (recommender
 * off), then `train --from-db --promote`.  Every test works on its own
 * copy (CREATE DATABASE ... TEMPLATE), so rows are unique per (snapshot,
 * version) without clean-up between tests.  Extra snapshots and actions
 * are inserted with SQL (ingest is tested elsewhere), on fresh entities
 * and after the simulated time range so they interfere with nothing.
 *
 * Most runs use cooldown 0, which makes every snapshot's outcome
 * independent of the others; a --dry-run with that config is the
 * baseline a rule's effect is measured against (loaded into a table
 * t_base of the copy).
 */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tdaemon.h"
#include "testenv.h"

#define BASE_DB  "understudy_t_rdb_base"
#define SIM_ROWS "2000"
#define DSN_LEN  512

/* Every scored snapshot once per version: written as a recommendation
 * (status "open" here, whatever it became later) or as an abstention. */
#define OUTCOMES                                                                                   \
    "(SELECT state_event_id, 'open' AS status, NULL::text AS reason, action, policy_version,"      \
    " guardrails, confidence, delta_pct, ood_score, ood_reasons FROM recommendations"              \
    " UNION ALL SELECT state_event_id, 'abstain', reason, action, policy_version, guardrails,"     \
    " confidence, delta_pct, ood_score, ood_reasons FROM abstentions) o"

static struct {
    int ready;
    char dsn[DSN_LEN];
    long states, actions;
    long version;
} base;

/* ---- SQL helpers ----------------------------------------------------------- */

static void exec_ok(PGconn *c, const char *sql)
{
    char state[6];
    int st = testenv_exec_status(c, sql, state);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: SQLSTATE %s: %s", sql, state, PQerrorMessage(c));
}

/* Runs sql with text parameters; returns the result (caller PQclear's). */
static PGresult *qexec(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    return r;
}

/* The first value of sql (NULL for SQL NULL; "" for no rows); caller frees. */
static char *qstr(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = qexec(c, sql, n, params);
    char *v = NULL;
    if (PQntuples(r) == 0)
        v = strdup("");
    else if (!PQgetisnull(r, 0, 0))
        v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static long qlong(PGconn *c, const char *sql)
{
    char *v = qstr(c, sql, 0, NULL);
    if (!v)
        fail_msg("%s: NULL", sql);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

static long qlong_p(PGconn *c, const char *sql, int n, const char *const *params)
{
    char *v = qstr(c, sql, n, params);
    if (!v)
        fail_msg("%s: NULL", sql);
    long x = strtol(v, NULL, 10);
    free(v);
    return x;
}

static double qdouble_p(PGconn *c, const char *sql, int n, const char *const *params)
{
    char *v = qstr(c, sql, n, params);
    if (!v)
        fail_msg("%s: NULL", sql);
    double x = strtod(v, NULL);
    free(v);
    return x;
}

/* Parses a jsonb text value; fails the test when it is not JSON. */
static json_t *qjson_p(PGconn *c, const char *sql, int n, const char *const *params)
{
    char *v = qstr(c, sql, n, params);
    if (!v)
        fail_msg("%s: NULL", sql);
    json_error_t je;
    json_t *j = json_loads(v, 0, &je);
    if (!j)
        fail_msg("%s: not JSON (%s): %s", sql, je.text, v);
    free(v);
    return j;
}

/* Everything written, with statuses and decision times: equal fingerprints
 * mean nothing was inserted, updated or deleted in between. */
static char *fingerprint(PGconn *c)
{
    return qstr(c,
                "SELECT md5(coalesce((SELECT string_agg(id || ':' || status || ':' ||"
                " coalesce(decided_at::text, '-') || ':' || policy_version, ',' ORDER BY id)"
                " FROM recommendations), '') || '|' || coalesce((SELECT string_agg(id || ':' ||"
                " reason || ':' || policy_version, ',' ORDER BY id) FROM abstentions), ''))",
                0, NULL);
}

/* ---- processes ------------------------------------------------------------ */

/* `recommend --from-db -c cfg` plus up to three more arguments. */
static char *recommend(const char *dsn, const char *cfg, const char *a1, const char *a2,
                       const char *a3)
{
    const char *args[] = {"recommend", "--from-db", "-c", cfg, a1, a2, a3, NULL};
    return testenv_run_bin(dsn, args, 0);
}

static void recommend_write(const char *dsn, const char *cfg)
{
    free(recommend(dsn, cfg, NULL, NULL, NULL));
}

/* Writes a config with a recommend section of body into buf. */
static const char *config(const char *name, const char *body, char *buf, size_t len)
{
    snprintf(buf, len, "%s/rdb-%s.yaml", testenv_get("UNDERSTUDY_TEST_TMP"), name);
    FILE *f = fopen(buf, "w");
    assert_non_null(f);
    fprintf(f, "log:\n  level: info\nrecommend:\n%s", body);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long n = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

struct stored_wait {
    PGconn *conn;
    long actions, states;
};

static int stored_reached(void *ud)
{
    struct stored_wait *w = ud;
    return tcount(w->conn, "action_events") == w->actions &&
           tcount(w->conn, "state_events") == w->states;
}

/* The base database: simulated logs ingested by the daemon, a champion. */
static void base_setup(void)
{
    if (base.ready)
        return;
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dir[512], states[600], actions[600];
    snprintf(dir, sizeof dir, "%s/rdb-sim", testenv_get("UNDERSTUDY_TEST_TMP"));
    snprintf(states, sizeof states, "%s/states.jsonl", dir);
    snprintf(actions, sizeof actions, "%s/actions.jsonl", dir);
    const char *sim[] = {"simulate", "--out", dir, "--rows", SIM_ROWS, "--seed", "7", NULL};
    free(testenv_run_bin(NULL, sim, 0));
    base.states = count_lines(states);
    base.actions = count_lines(actions);
    assert_int_equal(base.states, atol(SIM_ROWS));
    assert_true(base.actions > 100);

    testenv_create_db(BASE_DB, base.dsn, sizeof base.dsn);
    tmigrate(base.dsn);
    PGconn *c = testenv_connect(base.dsn);
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 3);
    treplay(bin, m.brokers, "ops.actions", actions);
    treplay(bin, m.brokers, "ops.states", states);
    struct tdaemon d;
    tdaemon_config(&d, "rdb-ingest", m.brokers, "rdb-ingest", "recommend:\n  enabled: false\n");
    tdaemon_start(&d, bin, base.dsn, NULL);
    struct stored_wait w = {c, base.actions, base.states};
    if (!twait_until(stored_reached, &w, 60))
        fail_msg("simulated logs not stored in 60 s; see %s", d.log);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 20), 0);
    tmock_stop(&m);
    assert_int_equal(tcount(c, "recommendations"), 0);
    assert_int_equal(tcount(c, "abstentions"), 0);
    PQfinish(c);

    const char *train[] = {"train", "--from-db", "--promote", "--rounds", "30", NULL};
    char *out = testenv_run_bin(base.dsn, train, 0);
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    if (!j)
        fail_msg("train printed no JSON: %s", out);
    free(out);
    assert_true(json_is_true(json_object_get(j, "promoted")));
    base.version = (long)json_integer_value(json_object_get(j, "version"));
    assert_true(base.version > 0);
    json_decref(j);
    base.ready = 1;
}

/* A fresh copy of the base database named name; its conninfo into dsn. */
static PGconn *copy_db(const char *name, char *dsn)
{
    base_setup();
    PGconn *admin = testenv_connect(testenv_get("UNDERSTUDY_TEST_PG_ADMIN"));
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    exec_ok(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s", name, BASE_DB);
    exec_ok(admin, sql);
    PQfinish(admin);
    snprintf(dsn, DSN_LEN, "host=%s port=%s user=%s dbname=%s",
             testenv_get("UNDERSTUDY_TEST_PG_HOST"), testenv_get("UNDERSTUDY_TEST_PG_PORT"),
             testenv_get("UNDERSTUDY_TEST_PG_USER"), name);
    return testenv_connect(dsn);
}

/*
 * Loads the JSON lines of a --dry-run into t_base (one row per snapshot);
 * checks that every line is an object with the row keys; returns the
 * number of lines.
 */
static long load_baseline(PGconn *c, const char *out)
{
    long lines = 0;
    static const char *const keys[] = {
        "state_event_id", "snapshot_ts",   "entity_type",   "entity_id", "campaign_id",
        "policy_version", "status",        "reason",        "action",    "confidence",
        "delta_pct",      "explanation",   "probabilities", "ood_score", "ood_reasons",
        "guardrails",     "contributions", "operator_id",
    };
    for (const char *p = out; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        json_error_t je;
        json_t *j = json_loadb(p, len, 0, &je);
        if (!json_is_object(j))
            fail_msg("dry-run line %ld is not a JSON object (%s)", lines + 1, je.text);
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            if (!json_object_get(j, keys[k]))
                fail_msg("dry-run line %ld has no %s", lines + 1, keys[k]);
        }
        json_decref(j);
        lines++;
        p = nl ? nl + 1 : p + len;
    }
    exec_ok(c, "CREATE TABLE t_base (event_id text PRIMARY KEY, status text, reason text,"
               " action text, entity_type text, delta_pct double precision,"
               " confidence double precision)");
    const char *params[] = {out};
    PGresult *r = qexec(c,
                        "INSERT INTO t_base SELECT j->>'state_event_id', j->>'status',"
                        " j->>'reason', j->>'action', j->>'entity_type',"
                        " (j->>'delta_pct')::float8, (j->>'confidence')::float8"
                        " FROM (SELECT l::jsonb AS j FROM regexp_split_to_table($1, E'\\n') AS l"
                        " WHERE l <> '') AS x",
                        1, params);
    assert_int_equal(strtol(PQcmdTuples(r), NULL, 10), lines);
    PQclear(r);
    return lines;
}

/* The dry-run baseline under cfg; every stored snapshot must be in it. */
static void baseline(PGconn *c, const char *dsn, const char *cfg)
{
    char *out = recommend(dsn, cfg, "--dry-run", NULL, NULL);
    long n = load_baseline(c, out);
    free(out);
    assert_int_equal(n, tcount(c, "state_events"));
    assert_int_equal(tcount(c, "recommendations") + tcount(c, "abstentions"), 0);
}

/* Inserts snapshot id at ts for entity, with the state (and campaign,
 * operator, entity type) of the stored snapshot like. */
static void insert_snapshot_like(PGconn *c, const char *like, const char *id, const char *entity,
                                 const char *ts)
{
    const char *params[] = {like, id, entity, ts};
    PGresult *r =
        qexec(c,
              "INSERT INTO state_events (event_id, ts, operator_id, campaign_id, entity_type,"
              " entity_id, state, src_topic, src_partition, src_offset)"
              " SELECT $2, $4::timestamptz, operator_id, campaign_id, entity_type, $3, state,"
              " 'test', 0, 0 FROM state_events WHERE event_id = $1",
              4, params);
    assert_string_equal(PQcmdTuples(r), "1");
    PQclear(r);
}

/* A snapshot the baseline recommends with a size; caller frees. */
static char *open_example(PGconn *c)
{
    char *id = qstr(c,
                    "SELECT event_id FROM t_base WHERE status = 'open' AND delta_pct IS NOT NULL"
                    " ORDER BY event_id LIMIT 1",
                    0, NULL);
    assert_non_null(id);
    assert_true(*id != '\0');
    return id;
}

/* The last guard of a written row (the blocking one for an abstention):
 * checks rule and blocked and returns the object (caller decrefs). */
static json_t *last_guard(PGconn *c, const char *event_id, const char *rule, int blocked)
{
    const char *params[] = {event_id};
    json_t *g = qjson_p(c, "SELECT guardrails::text FROM " OUTCOMES " WHERE state_event_id = $1", 1,
                        params);
    size_t n = json_array_size(g);
    assert_true(n >= 1);
    json_t *e = json_incref(json_array_get(g, n - 1));
    json_decref(g);
    assert_string_equal(json_string_value(json_object_get(e, "rule")), rule);
    assert_int_equal(json_is_true(json_object_get(e, "blocked")), blocked);
    static const char *const keys[] = {"value", "limit", "before", "after"};
    for (size_t k = 0; k < 4; k++)
        assert_non_null(json_object_get(e, keys[k]));
    if (blocked)
        assert_true(json_is_null(json_object_get(e, "after")));
    return e;
}

static double jnum(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        fail_msg("%s is not a number", key);
    return json_number_value(v);
}

/* ---- 1. guardrails --------------------------------------------------------- */

static void test_recommend_db_kill_switch_abstains_everything(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600];
    PGconn *c = copy_db("understudy_t_rdb_kill", dsn);
    recommend_write(dsn, config("kill", "  kill_switch: true\n  cooldown: 0s\n", cfg, sizeof cfg));

    assert_int_equal(tcount(c, "recommendations"), 0);
    assert_int_equal(tcount(c, "abstentions"), base.states);
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions WHERE reason <> 'kill_switch'"), 0);
    /* The kill switch runs first: holds are abstained for it too, and it is
     * the only guard recorded. */
    assert_true(qlong(c, "SELECT count(*) FROM abstentions WHERE action = 'hold'") > 0);
    assert_true(qlong(c, "SELECT count(*) FROM abstentions WHERE action <> 'hold'") > 0);
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions WHERE NOT ("
                              " jsonb_array_length(guardrails) = 1"
                              " AND guardrails->0->>'rule' = 'kill_switch'"
                              " AND guardrails->0->'blocked' = 'true'"
                              " AND guardrails->0->'value' = 'null'"
                              " AND guardrails->0->'limit' = 'null'"
                              " AND guardrails->0->'after' = 'null')"),
                     0);
    char *id = qstr(c, "SELECT state_event_id FROM abstentions ORDER BY id LIMIT 1", 0, NULL);
    json_decref(last_guard(c, id, "kill_switch", 1));
    free(id);
    PQfinish(c);
}

static void test_recommend_db_min_confidence_abstains_below_limit(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600], cfg0[600];
    PGconn *c = copy_db("understudy_t_rdb_conf", dsn);
    baseline(c, dsn, config("conf0", "  cooldown: 0s\n", cfg0, sizeof cfg0));
    recommend_write(dsn,
                    config("conf", "  cooldown: 0s\n  min_confidence: 0.99\n", cfg, sizeof cfg));

    long low = qlong(c, "SELECT count(*) FROM abstentions WHERE reason = 'low_confidence'");
    assert_true(low > 0);
    /* Snapshots that were open at 0.5 are now abstained for it. */
    assert_true(qlong(c, "SELECT count(*) FROM abstentions a JOIN t_base b"
                         " ON b.event_id = a.state_event_id"
                         " WHERE a.reason = 'low_confidence' AND b.status = 'open'") > 0);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE confidence < 0.99"), 0);
    /* Each one records the rule with the confidence against the limit. */
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions WHERE reason = 'low_confidence'"
                              " AND NOT (guardrails->-1->>'rule' = 'min_confidence'"
                              " AND guardrails->-1->'blocked' = 'true'"
                              " AND abs((guardrails->-1->>'value')::float8 - confidence) < 1e-9"
                              " AND abs((guardrails->-1->>'limit')::float8 - 0.99) < 1e-12"
                              " AND (guardrails->-1->>'value')::float8 < 0.99)"),
                     0);
    /* Nothing else changed: hold and entity-type abstentions as before. */
    assert_int_equal(qlong(c, "SELECT count(*) FROM t_base b JOIN " OUTCOMES
                              " ON o.state_event_id = b.event_id"
                              " WHERE b.reason IN ('hold', 'not_allowed_for_entity')"
                              " AND o.reason IS DISTINCT FROM b.reason"),
                     0);
    char *id = qstr(c,
                    "SELECT state_event_id FROM abstentions WHERE reason = 'low_confidence'"
                    " ORDER BY id LIMIT 1",
                    0, NULL);
    json_t *g = last_guard(c, id, "min_confidence", 1);
    assert_true(jnum(g, "value") < jnum(g, "limit"));
    json_decref(g);
    free(id);
    PQfinish(c);
}

static void test_recommend_db_ood_threshold_blocks_unusual_snapshot(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600], cfg0[600];
    PGconn *c = copy_db("understudy_t_rdb_ood", dsn);
    /* Far above every numeric range, and a channel never seen. */
    exec_ok(c, "INSERT INTO state_events (event_id, ts, operator_id, campaign_id, entity_type,"
               " entity_id, state, src_topic, src_partition, src_offset)"
               " SELECT 'rdb-odd-1', '2026-12-01T00:00:00Z', operator_id, campaign_id,"
               " 'ad_group', 'rdb-odd-ag', state || '{\"cpa\": 1000000, \"cpa_ratio\": 1000000,"
               " \"channel\": \"metaverse\"}'::jsonb, 'test', 0, 0 FROM state_events"
               " WHERE entity_type = 'ad_group' ORDER BY id LIMIT 1");
    recommend_write(dsn, config("ood", "  cooldown: 0s\n  ood_threshold: 2\n", cfg, sizeof cfg));

    const char *odd[] = {"rdb-odd-1"};
    char *reason = qstr(c, "SELECT reason FROM abstentions WHERE state_event_id = $1", 1, odd);
    assert_non_null(reason);
    assert_string_equal(reason, "out_of_distribution");
    free(reason);
    double score =
        qdouble_p(c, "SELECT ood_score FROM abstentions WHERE state_event_id = $1", 1, odd);
    assert_true(score >= 2);
    json_t *g = last_guard(c, "rdb-odd-1", "ood_threshold", 1);
    assert_true(fabs(jnum(g, "value") - score) < 1e-9 * score);
    assert_true(fabs(jnum(g, "limit") - 2) < 1e-12);
    json_decref(g);
    json_t *reasons =
        qjson_p(c, "SELECT ood_reasons::text FROM abstentions WHERE state_event_id = $1", 1, odd);
    int cpa_ratio = 0, channel = 0;
    double sum = 0;
    size_t i;
    json_t *e;
    json_array_foreach(reasons, i, e)
    {
        const char *f = json_string_value(json_object_get(e, "feature"));
        const char *why = json_string_value(json_object_get(e, "why"));
        assert_non_null(f);
        assert_non_null(why);
        sum += jnum(e, "penalty");
        if (strcmp(f, "cpa_ratio") == 0) {
            cpa_ratio = 1;
            assert_non_null(strstr(why, "above the training range"));
            assert_true(jnum(e, "penalty") > 1);
        } else if (strcmp(f, "channel") == 0) {
            channel = 1;
            assert_non_null(strstr(why, "not seen"));
            assert_true(fabs(jnum(e, "penalty") - 1) < 1e-12);
        }
    }
    json_decref(reasons);
    assert_true(cpa_ratio && channel);
    assert_true(fabs(sum - score) < 1e-9 * score); /* the score is the sum of its reasons */
    /* The rule exactly: abstained for it iff the score reaches the limit. */
    assert_int_equal(qlong(c, "SELECT count(*) FROM " OUTCOMES " WHERE (o.ood_score >= 2)"
                              " <> (o.reason IS NOT DISTINCT FROM 'out_of_distribution')"),
                     0);

    /* ood_threshold 0: scored as usual, the score still recorded. */
    exec_ok(c, "DELETE FROM recommendations");
    exec_ok(c, "DELETE FROM abstentions");
    recommend_write(dsn, config("ood0", "  cooldown: 0s\n  ood_threshold: 0\n", cfg0, sizeof cfg0));
    assert_int_equal(tcount(c, "recommendations") + tcount(c, "abstentions"), base.states + 1);
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions"
                              " WHERE reason = 'out_of_distribution'"),
                     0);
    assert_int_equal(qlong(c, "SELECT count(*) FROM " OUTCOMES " WHERE EXISTS (SELECT 1 FROM"
                              " jsonb_array_elements(o.guardrails) AS g"
                              " WHERE g->>'rule' = 'ood_threshold')"),
                     0);
    double score0 =
        qdouble_p(c, "SELECT o.ood_score FROM " OUTCOMES " WHERE o.state_event_id = $1", 1, odd);
    assert_true(fabs(score0 - score) < 1e-9 * score);
    assert_int_equal(qlong_p(c,
                             "SELECT count(*) FROM " OUTCOMES
                             ", jsonb_array_elements(o.ood_reasons)"
                             " AS r WHERE o.state_event_id = $1"
                             " AND r->>'feature' IN ('cpa_ratio', 'channel')",
                             1, odd),
                     2);
    PQfinish(c);
}

static void test_recommend_db_entity_type_blocks_disallowed_actions(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600], cfg0[600];
    PGconn *c = copy_db("understudy_t_rdb_entity", dsn);
    baseline(c, dsn, config("entity0", "  cooldown: 0s\n", cfg0, sizeof cfg0));
    recommend_write(dsn, config("entity",
                                "  cooldown: 0s\n  allowed:\n    ad_group: \"bid_down\"\n"
                                "    keyword: \"\"\n",
                                cfg, sizeof cfg));

    /* What the team's model suggests on those entities and is now refused. */
    const char *refused = "b.reason IS DISTINCT FROM 'hold'"
                          " AND b.reason IS DISTINCT FROM 'out_of_distribution'"
                          " AND (b.entity_type = 'keyword'"
                          " OR (b.entity_type = 'ad_group' AND b.action <> 'bid_down'))";
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM t_base b WHERE %s", refused);
    long n = qlong(c, sql);
    assert_true(n > 0);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM t_base b JOIN abstentions a ON a.state_event_id = b.event_id"
             " WHERE %s AND a.reason = 'not_allowed_for_entity'"
             " AND a.guardrails->-1->>'rule' = 'entity_type'"
             " AND a.guardrails->-1->'blocked' = 'true' AND a.guardrails->-1->'value' = 'null'"
             " AND a.guardrails->-1->'limit' = 'null'",
             refused);
    assert_int_equal(qlong(c, sql), n);
    /* Some of them were open recommendations before. */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM t_base b WHERE %s AND b.status = 'open'",
             refused);
    assert_true(qlong(c, sql) > 0);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE entity_type = 'keyword'"
                              " OR (entity_type = 'ad_group' AND action <> 'bid_down')"),
                     0);
    /* Everything else is as in the baseline (hold stays allowed). */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM t_base b JOIN " OUTCOMES " ON o.state_event_id = b.event_id"
             " WHERE NOT (%s) AND (o.status <> b.status OR o.reason IS DISTINCT FROM b.reason)",
             refused);
    assert_int_equal(qlong(c, sql), 0);
    assert_true(qlong(c, "SELECT count(*) FROM recommendations WHERE entity_type = 'ad_group'") >
                0);
    PQfinish(c);
}

static void test_recommend_db_cooldown_after_action_and_recommendation(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600], cfg0[600];
    PGconn *c = copy_db("understudy_t_rdb_cooldown", dsn);
    config("cool0", "  cooldown: 0s\n", cfg0, sizeof cfg0);
    baseline(c, dsn, cfg0);
    char *like = open_example(c);

    /* x: an operator acted on the entity 5 minutes before its snapshot.
     * z, then y 10 minutes later (same run) and y2 20 minutes later (next
     * run): the same open-worthy state on one entity. */
    insert_snapshot_like(c, like, "rdb-x", "rdb-cool-x", "2026-12-01T10:00:00Z");
    const char *act[] = {"rdb-x"};
    PGresult *r = qexec(c,
                        "INSERT INTO action_events (event_id, ts, operator_id, campaign_id,"
                        " entity_type, entity_id, action, delta_pct, decision, state, src_topic,"
                        " src_partition, src_offset)"
                        " SELECT 'rdb-act-x', ts - interval '5 minutes', coalesce(operator_id,"
                        " 'op-01'), campaign_id, entity_type, entity_id, 'bid_change', 5,"
                        " 'bid_up', state, 'test', 0, 0 FROM state_events WHERE event_id = $1",
                        1, act);
    assert_string_equal(PQcmdTuples(r), "1");
    PQclear(r);
    insert_snapshot_like(c, like, "rdb-z", "rdb-cool-z", "2026-12-01T12:00:00Z");
    insert_snapshot_like(c, like, "rdb-y", "rdb-cool-z", "2026-12-01T12:10:00Z");
    /* Stored out of time order on one entity (w3 after w2 but 10 minutes
     * after w1): w3's cooldown must see w1, not only the newest open w2. */
    insert_snapshot_like(c, like, "rdb-w1", "rdb-cool-w", "2026-12-01T12:00:00Z");
    insert_snapshot_like(c, like, "rdb-w2", "rdb-cool-w", "2026-12-01T14:00:00Z");
    insert_snapshot_like(c, like, "rdb-w3", "rdb-cool-w", "2026-12-01T12:10:00Z");

    recommend_write(dsn, config("cool", "  cooldown: 30m\n", cfg, sizeof cfg));
    /* In the simulation an entity is snapshotted every 2 h and acted on at
     * most 20 minutes after a snapshot, so only the inserted rows are
     * within 30 minutes of an action or a recommendation. */
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions WHERE reason = 'cooldown'"), 3);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations"
                              " WHERE state_event_id = 'rdb-z' AND status = 'open'"),
                     1);
    json_t *g = last_guard(c, "rdb-x", "cooldown", 1);
    assert_true(fabs(jnum(g, "value") - 300000) < 1e-6);
    assert_true(fabs(jnum(g, "limit") - 1800000) < 1e-6);
    json_decref(g);
    g = last_guard(c, "rdb-y", "cooldown", 1); /* z, earlier in the same batch */
    assert_true(fabs(jnum(g, "value") - 600000) < 1e-6);
    json_decref(g);
    g = last_guard(c, "rdb-w3", "cooldown", 1); /* w1, not the newer w2 */
    assert_true(fabs(jnum(g, "value") - 600000) < 1e-6);
    json_decref(g);

    /* y2 in the next run: z's stored recommendation counts. */
    insert_snapshot_like(c, like, "rdb-y2", "rdb-cool-z", "2026-12-01T12:20:00Z");
    recommend_write(dsn, cfg);
    g = last_guard(c, "rdb-y2", "cooldown", 1);
    assert_true(fabs(jnum(g, "value") - 1200000) < 1e-6);
    json_decref(g);
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions WHERE reason = 'cooldown'"), 4);

    /* cooldown 0: none of them is blocked. */
    exec_ok(c, "DELETE FROM recommendations");
    exec_ok(c, "DELETE FROM abstentions");
    recommend_write(dsn, cfg0);
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions WHERE reason = 'cooldown'"), 0);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE state_event_id IN"
                              " ('rdb-x', 'rdb-z', 'rdb-y', 'rdb-y2') AND NOT EXISTS (SELECT 1"
                              " FROM jsonb_array_elements(guardrails) AS g"
                              " WHERE g->>'rule' = 'cooldown')"),
                     4);
    free(like);
    PQfinish(c);
}

static void test_recommend_db_max_step_caps_the_size(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600], cfg0[600];
    PGconn *c = copy_db("understudy_t_rdb_maxstep", dsn);
    baseline(c, dsn, config("step0", "  cooldown: 0s\n", cfg0, sizeof cfg0));
    recommend_write(dsn, config("step",
                                "  cooldown: 0s\n  max_step_pct:\n    bid_up: 2\n    bid_down: 2\n"
                                "    budget_up: 2\n    budget_down: 2\n",
                                cfg, sizeof cfg));

    long sized = qlong(c, "SELECT count(*) FROM recommendations WHERE delta_pct IS NOT NULL");
    assert_true(sized > 0);
    /* The same snapshots are open as in the baseline; only sizes shrank. */
    assert_int_equal(sized, qlong(c, "SELECT count(*) FROM t_base WHERE status = 'open'"
                                     " AND delta_pct IS NOT NULL"));
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE abs(delta_pct) > 2"), 0);
    assert_true(qlong(c, "SELECT count(*) FROM t_base WHERE status = 'open'"
                         " AND abs(delta_pct) > 2") > 0);
    /* Each capped size records max_step: before the raw size, after the cap. */
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations r JOIN t_base b"
                              " ON b.event_id = r.state_event_id"
                              " WHERE abs(b.delta_pct) > 2 AND NOT EXISTS (SELECT 1"
                              " FROM jsonb_array_elements(r.guardrails) AS g"
                              " WHERE g->>'rule' = 'max_step' AND g->'blocked' = 'false'"
                              " AND abs((g->>'limit')::float8 - 2) < 1e-12"
                              " AND abs((g->>'before')::float8) > abs((g->>'after')::float8)"
                              " AND abs((g->>'after')::float8 - r.delta_pct) < 1e-9)"),
                     0);
    char *id = qstr(c,
                    "SELECT state_event_id FROM recommendations WHERE delta_pct IS NOT NULL"
                    " ORDER BY id LIMIT 1",
                    0, NULL);
    const char *p[] = {id};
    double d =
        qdouble_p(c, "SELECT delta_pct FROM recommendations WHERE state_event_id = $1", 1, p);
    double raw = qdouble_p(c, "SELECT delta_pct FROM t_base WHERE event_id = $1", 1, p);
    assert_true(fabs(fabs(d) - 2) < 1e-9 && d * raw > 0);
    json_t *g = NULL, *all = qjson_p(c,
                                     "SELECT guardrails::text FROM recommendations"
                                     " WHERE state_event_id = $1",
                                     1, p);
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "rule")), "max_step") == 0)
            g = e;
    }
    assert_non_null(g);
    assert_true(json_is_false(json_object_get(g, "blocked")));
    /* The baseline's size is already cut to the default 20. */
    assert_true(fabs(jnum(g, "before")) > fabs(raw) - 1e-6 && jnum(g, "before") * raw > 0);
    assert_true(fabs(jnum(g, "after") - d) < 1e-9);
    assert_true(fabs(jnum(g, "before")) > fabs(jnum(g, "after")));
    json_decref(all);
    free(id);
    PQfinish(c);
}

static void test_recommend_db_deadband_abstains_small_sizes(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600], cfg0[600];
    PGconn *c = copy_db("understudy_t_rdb_deadband", dsn);
    baseline(c, dsn, config("dead0", "  cooldown: 0s\n", cfg0, sizeof cfg0));
    recommend_write(dsn, config("dead",
                                "  cooldown: 0s\n  deadband_pct:\n    bid_up: 100\n"
                                "    bid_down: 100\n    budget_up: 100\n    budget_down: 100\n",
                                cfg, sizeof cfg));

    long sized_open = qlong(c, "SELECT count(*) FROM t_base WHERE (status = 'open'"
                               " AND delta_pct IS NOT NULL) OR reason = 'deadband'");
    assert_true(sized_open > 0);
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions WHERE reason = 'deadband'"),
                     sized_open);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE delta_pct IS NOT NULL"),
                     0);
    /* Blocking guard: |size| (the capped one) against the deadband; the
     * abstention keeps the size the rule saw. */
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions a JOIN t_base b"
                              " ON b.event_id = a.state_event_id WHERE a.reason = 'deadband'"
                              " AND NOT (a.guardrails->-1->>'rule' = 'deadband'"
                              " AND a.guardrails->-1->'blocked' = 'true'"
                              " AND abs((a.guardrails->-1->>'limit')::float8 - 100) < 1e-12"
                              " AND (a.guardrails->-1->>'value')::float8 < 100"
                              " AND abs((a.guardrails->-1->>'value')::float8 - abs(b.delta_pct))"
                              "   < 1e-6"
                              " AND abs(a.delta_pct - b.delta_pct) < 1e-6)"),
                     0);
    PQfinish(c);
}

/* ---- 2. idempotent writes, dry runs ------------------------------------------ */

static void test_recommend_db_write_is_idempotent_and_dry_run_writes_nothing(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600], cfg_small[600];
    PGconn *c = copy_db("understudy_t_rdb_idem", dsn);
    config("idem", "  cooldown: 0s\n", cfg, sizeof cfg);
    baseline(c, dsn, cfg);

    /* Written in pages of 150: the same outcome per snapshot as printed. */
    recommend_write(
        dsn, config("idem150", "  cooldown: 0s\n  batch: 150\n", cfg_small, sizeof cfg_small));
    assert_int_equal(tcount(c, "recommendations") + tcount(c, "abstentions"), base.states);
    assert_int_equal(qlong(c, "SELECT count(*) FROM t_base b LEFT JOIN " OUTCOMES
                              " ON o.state_event_id = b.event_id WHERE o.state_event_id IS NULL"
                              " OR o.status <> b.status OR o.reason IS DISTINCT FROM b.reason"
                              " OR o.action <> b.action OR abs(o.confidence - b.confidence) > 1e-8"
                              " OR (o.delta_pct IS NULL) <> (b.delta_pct IS NULL)"
                              " OR abs(o.delta_pct - b.delta_pct) > 1e-6"),
                     0);
    assert_int_equal(qlong(c, "SELECT count(DISTINCT policy_version) FROM " OUTCOMES), 1);
    assert_true(tcount(c, "recommendations") > 0);
    char *f1 = fingerprint(c);

    /* Again, and again over everything with --since: nothing new. */
    recommend_write(dsn, cfg);
    char *f2 = fingerprint(c);
    assert_string_equal(f1, f2);
    free(f2);
    free(recommend(dsn, cfg, "--since", "2000-01-01T00:00:00Z", NULL));
    f2 = fingerprint(c);
    assert_string_equal(f1, f2);
    free(f2);

    /* Dry runs: nothing left unscored; everything with --since. */
    char *out = recommend(dsn, cfg, "--dry-run", NULL, NULL);
    assert_string_equal(out, "");
    free(out);
    out = recommend(dsn, cfg, "--dry-run", "--since", "2000-01-01T00:00:00Z");
    long lines = 0;
    for (const char *p = out; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    assert_int_equal(lines, base.states);
    free(out);
    out = recommend(dsn, cfg, "--dry-run", "--since", "2026-10-07T00:00:00Z");
    lines = 0;
    for (const char *p = out; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    free(out);
    long later = qlong(c, "SELECT count(*) FROM state_events WHERE ts >= '2026-10-07T00:00:00Z'");
    assert_true(later > 0 && later < base.states);
    assert_int_equal(lines, later);
    f2 = fingerprint(c);
    assert_string_equal(f1, f2);
    free(f2);

    /* Three new snapshots: a dry run prints exactly those and writes
     * nothing; the write then stores what it printed. */
    char *like = open_example(c);
    insert_snapshot_like(c, like, "rdb-new-1", "rdb-new-a", "2026-12-02T00:00:00Z");
    insert_snapshot_like(c, like, "rdb-new-2", "rdb-new-b", "2026-12-02T00:00:00Z");
    exec_ok(c, "INSERT INTO state_events (event_id, ts, operator_id, campaign_id, entity_type,"
               " entity_id, state, src_topic, src_partition, src_offset)"
               " SELECT 'rdb-new-3', '2026-12-02T00:00:00Z', operator_id, campaign_id, entity_type,"
               " 'rdb-new-c', state, 'test', 0, 0 FROM state_events s WHERE event_id ="
               " (SELECT event_id FROM t_base WHERE reason = 'hold' ORDER BY event_id LIMIT 1)");
    out = recommend(dsn, cfg, "--dry-run", NULL, NULL);
    f2 = fingerprint(c);
    assert_string_equal(f1, f2);
    free(f2);
    exec_ok(c, "DROP TABLE t_base");
    assert_int_equal(load_baseline(c, out), 3);
    free(out);
    assert_int_equal(qlong(c, "SELECT count(*) FROM t_base WHERE event_id LIKE 'rdb-new-%'"), 3);
    assert_int_equal(qlong(c, "SELECT count(*) FROM t_base WHERE status = 'open'"), 2);
    recommend_write(dsn, cfg);
    assert_int_equal(tcount(c, "recommendations") + tcount(c, "abstentions"), base.states + 3);
    assert_int_equal(qlong(c,
                           "SELECT count(*) FROM t_base b JOIN " OUTCOMES
                           " ON o.state_event_id = b.event_id WHERE o.status = b.status"
                           " AND o.reason IS NOT DISTINCT FROM b.reason AND o.action = b.action"),
                     3);
    free(like);
    free(f1);
    PQfinish(c);
}

/* ---- 3. supersede ------------------------------------------------------------ */

static long entities_with_two_open(PGconn *c)
{
    return qlong(c, "SELECT count(*) FROM (SELECT 1 FROM recommendations WHERE status = 'open'"
                    " GROUP BY entity_type, entity_id HAVING count(*) > 1) AS x");
}

static void test_recommend_db_supersede_keeps_newest_snapshot_and_new_version(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600];
    PGconn *c = copy_db("understudy_t_rdb_supersede", dsn);
    config("sup", "  cooldown: 0s\n", cfg, sizeof cfg);
    baseline(c, dsn, cfg);
    char *like = open_example(c);

    /* The newer snapshot is stored and scored first, the older later. */
    insert_snapshot_like(c, like, "rdb-newer", "rdb-sup", "2026-12-03T12:00:00Z");
    recommend_write(dsn, cfg);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE entity_id = 'rdb-sup'"
                              " AND status = 'open'"),
                     1);
    insert_snapshot_like(c, like, "rdb-older", "rdb-sup", "2026-12-03T11:00:00Z");
    free(recommend(dsn, cfg, "--since", "2026-12-03T11:00:00Z", NULL));
    char *open_id = qstr(c,
                         "SELECT state_event_id FROM recommendations WHERE entity_id = 'rdb-sup'"
                         " AND status = 'open'",
                         0, NULL);
    assert_string_equal(open_id, "rdb-newer");
    free(open_id);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE"
                              " state_event_id = 'rdb-older' AND status = 'superseded'"
                              " AND decided_at IS NOT NULL"
                              " AND id > (SELECT id FROM recommendations"
                              "   WHERE state_event_id = 'rdb-newer')"),
                     1);
    /* At most one open recommendation per entity, and on the simulated
     * entities the open one is of the newest snapshot recommended. */
    assert_int_equal(entities_with_two_open(c), 0);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations r WHERE r.status = 'open'"
                              " AND EXISTS (SELECT 1 FROM recommendations n"
                              " WHERE n.entity_type = r.entity_type AND n.entity_id = r.entity_id"
                              " AND n.snapshot_ts > r.snapshot_ts)"),
                     0);
    long entities =
        qlong(c, "SELECT count(DISTINCT (entity_type, entity_id)) FROM recommendations");
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE status = 'open'"),
                     entities);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE"
                              " (status = 'superseded') <> (decided_at IS NOT NULL)"),
                     0);

    /* A second version (a challenger, then promoted by hand). */
    const char *train[] = {"train", "--from-db", "--rounds", "40", NULL};
    char *t = testenv_run_bin(dsn, train, 0);
    json_t *j = json_loads(t, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(j);
    free(t);
    assert_true(json_is_false(json_object_get(j, "promoted")));
    long v2 = (long)json_integer_value(json_object_get(j, "version"));
    json_decref(j);
    assert_true(v2 > base.version);
    char vbuf[24], v1buf[24];
    snprintf(vbuf, sizeof vbuf, "%ld", v2);
    snprintf(v1buf, sizeof v1buf, "%ld", base.version);
    const char *promote[] = {"model", "promote", "--version", vbuf, NULL};
    free(testenv_run_bin(dsn, promote, 0));
    const char *pv[] = {vbuf}, *pv1[] = {v1buf};
    assert_int_equal(qlong_p(c,
                             "SELECT count(*) FROM policies WHERE status = 'champion'"
                             " AND version = $1::int",
                             1, pv),
                     1);

    long v1_open = qlong_p(c,
                           "SELECT count(*) FROM recommendations WHERE status = 'open'"
                           " AND policy_version = $1::int",
                           1, pv1);
    long v1_superseded = qlong_p(c,
                                 "SELECT count(*) FROM recommendations WHERE status ="
                                 " 'superseded' AND policy_version = $1::int",
                                 1, pv1);
    assert_true(v1_open > 0);
    /* Without --since nothing is unscored, so nothing is re-scored. */
    char *f1 = fingerprint(c);
    recommend_write(dsn, cfg);
    char *f2 = fingerprint(c);
    assert_string_equal(f1, f2);
    free(f1);
    free(f2);

    free(recommend(dsn, cfg, "--since", "2000-01-01T00:00:00Z", NULL));
    assert_int_equal(
        qlong_p(c, "SELECT count(*) FROM " OUTCOMES " WHERE policy_version = $1::int", 1, pv),
        base.states + 2);
    assert_int_equal(qlong_p(c,
                             "SELECT count(*) FROM recommendations WHERE status = 'open'"
                             " AND policy_version = $1::int",
                             1, pv1),
                     0);
    assert_int_equal(qlong_p(c,
                             "SELECT count(*) FROM recommendations WHERE status = 'superseded'"
                             " AND policy_version = $1::int",
                             1, pv1),
                     v1_open + v1_superseded);
    assert_int_equal(entities_with_two_open(c), 0);
    assert_true(qlong_p(c,
                        "SELECT count(*) FROM recommendations WHERE status = 'open'"
                        " AND policy_version = $1::int",
                        1, pv) > 0);
    free(like);
    PQfinish(c);
}

/* ---- 4. expiry ------------------------------------------------------------------ */

static void test_recommend_db_expired_rows_hidden_then_marked(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600];
    PGconn *c = copy_db("understudy_t_rdb_expire", dsn);
    config("exp", "  cooldown: 0s\n  ttl: 2h\n", cfg, sizeof cfg);
    recommend_write(dsn, cfg);

    long open = qlong(c, "SELECT count(*) FROM recommendations WHERE status = 'open'");
    assert_true(open > 1);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations_open"), open);
    /* ttl: expires_at is created_at + 2 h on every row written. */
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations"
                              " WHERE expires_at IS DISTINCT FROM created_at + interval '2 hours'"),
                     0);

    char *id = qstr(c, "SELECT min(id) FROM recommendations WHERE status = 'open'", 0, NULL);
    const char *p[] = {id};
    PGresult *r = qexec(c,
                        "UPDATE recommendations SET created_at = now() - interval '2 days',"
                        " expires_at = now() - interval '1 day' WHERE id = $1::bigint",
                        1, p);
    PQclear(r);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations_open"), open - 1);
    assert_int_equal(
        qlong_p(c, "SELECT count(*) FROM recommendations_open WHERE id = $1::bigint", 1, p), 0);

    /* A dry run retires nothing. */
    free(recommend(dsn, cfg, "--dry-run", NULL, NULL));
    assert_int_equal(qlong_p(c,
                             "SELECT count(*) FROM recommendations WHERE id = $1::bigint"
                             " AND status = 'open' AND decided_at IS NULL",
                             1, p),
                     1);

    char *t0 = qstr(c, "SELECT now()::text", 0, NULL);
    recommend_write(dsn, cfg);
    const char *pt[] = {id, t0};
    assert_int_equal(qlong_p(c,
                             "SELECT count(*) FROM recommendations WHERE id = $1::bigint"
                             " AND status = 'expired' AND decided_at >= $2::timestamptz",
                             2, pt),
                     1);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE status = 'expired'"), 1);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations WHERE status = 'open'"),
                     open - 1);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations_open"), open - 1);
    free(t0);
    free(id);
    PQfinish(c);
}

/* ---- 5. recommendation_stats ------------------------------------------------------ */

static const char stats_direct[] =
    "SELECT (SELECT count(*) FROM recommendations r WHERE r.operator_id IS NOT DISTINCT FROM $1"
    "  AND r.action = $2),"
    " (SELECT count(*) FROM recommendations r WHERE r.operator_id IS NOT DISTINCT FROM $1"
    "  AND r.action = $2 AND r.status = 'open'),"
    " (SELECT count(*) FROM recommendations r WHERE r.operator_id IS NOT DISTINCT FROM $1"
    "  AND r.action = $2 AND r.status = 'superseded'),"
    " (SELECT count(*) FROM abstentions a WHERE a.operator_id IS NOT DISTINCT FROM $1"
    "  AND a.action = $2),"
    " (SELECT count(*) FROM abstentions a WHERE a.operator_id IS NOT DISTINCT FROM $1"
    "  AND a.action = $2 AND a.reason = 'hold'),"
    " (SELECT count(*) FROM abstentions a WHERE a.operator_id IS NOT DISTINCT FROM $1"
    "  AND a.action = $2 AND a.reason = 'not_allowed_for_entity'),"
    " (SELECT count(*) FROM abstentions a WHERE a.operator_id IS NOT DISTINCT FROM $1"
    "  AND a.action = $2 AND a.reason = 'low_confidence')";

static void test_recommend_db_stats_view_matches_tables(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600];
    PGconn *c = copy_db("understudy_t_rdb_stats", dsn);
    recommend_write(dsn, config("stats", "  cooldown: 0s\n", cfg, sizeof cfg));

    PGresult *v = qexec(c,
                        "SELECT operator_id, action, recommended, open, superseded, abstained,"
                        " abstained_hold, abstained_not_allowed_for_entity,"
                        " abstained_low_confidence, acceptance_rate IS NULL FROM"
                        " recommendation_stats",
                        0, NULL);
    int groups = PQntuples(v);
    assert_true(groups > 1);
    assert_int_equal(groups, qlong(c, "SELECT count(*) FROM (SELECT operator_id, action FROM"
                                      " recommendations UNION SELECT operator_id, action FROM"
                                      " abstentions) AS g"));
    long sum_rec = 0, sum_abs = 0;
    for (int i = 0; i < groups; i++) {
        const char *params[] = {PQgetisnull(v, i, 0) ? NULL : PQgetvalue(v, i, 0),
                                PQgetvalue(v, i, 1)};
        PGresult *d = qexec(c, stats_direct, 2, params);
        for (int k = 0; k < 7; k++) {
            if (strcmp(PQgetvalue(v, i, 2 + k), PQgetvalue(d, 0, k)) != 0)
                fail_msg("recommendation_stats (%s, %s) column %d: %s, direct count %s",
                         params[0] ? params[0] : "NULL", params[1], 2 + k, PQgetvalue(v, i, 2 + k),
                         PQgetvalue(d, 0, k));
        }
        PQclear(d);
        sum_rec += strtol(PQgetvalue(v, i, 2), NULL, 10);
        sum_abs += strtol(PQgetvalue(v, i, 5), NULL, 10);
        assert_string_equal(PQgetvalue(v, i, 9), "t"); /* nothing decided yet */
    }
    PQclear(v);
    assert_int_equal(sum_rec, tcount(c, "recommendations"));
    assert_int_equal(sum_abs, tcount(c, "abstentions"));

    /* Verdicts on four rows of one group: 2 accepted, 1 rejected, 1
     * modified; one rejected row in another group. */
    char *grp = qstr(c,
                     "SELECT operator_id || '|' || action FROM recommendations"
                     " WHERE operator_id IS NOT NULL GROUP BY operator_id, action"
                     " HAVING count(*) >= 4 ORDER BY count(*) DESC, 1 LIMIT 1",
                     0, NULL);
    assert_non_null(grp);
    assert_true(strchr(grp, '|') != NULL);
    char *bar = strchr(grp, '|');
    *bar = '\0';
    const char *g[] = {grp, bar + 1};
    static const char *const verdicts[] = {"accepted", "accepted", "rejected", "modified"};
    for (int k = 0; k < 4; k++) {
        const char *p[] = {grp, bar + 1, verdicts[k]};
        PGresult *r = qexec(c,
                            "UPDATE recommendations SET status = $3, decided_at = now()"
                            " WHERE id = (SELECT min(id) FROM recommendations WHERE"
                            " operator_id = $1 AND action = $2"
                            " AND status IN ('open', 'superseded'))",
                            3, p);
        assert_string_equal(PQcmdTuples(r), "1");
        PQclear(r);
    }
    double rate = qdouble_p(c,
                            "SELECT acceptance_rate FROM recommendation_stats"
                            " WHERE operator_id = $1 AND action = $2",
                            2, g);
    assert_true(fabs(rate - 0.5) < 1e-12);
    assert_int_equal(qlong_p(c,
                             "SELECT accepted * 100 + rejected * 10 + modified FROM"
                             " recommendation_stats WHERE operator_id = $1 AND action = $2",
                             2, g),
                     211);
    char *other = qstr(c,
                       "SELECT min(id) FROM recommendations WHERE NOT (operator_id = $1"
                       " AND action = $2)",
                       2, g);
    assert_non_null(other);
    const char *po[] = {other};
    PGresult *r = qexec(c,
                        "UPDATE recommendations SET status = 'rejected', decided_at = now()"
                        " WHERE id = $1::bigint",
                        1, po);
    PQclear(r);
    assert_int_equal(qlong_p(c,
                             "SELECT count(*) FROM recommendation_stats s, recommendations r"
                             " WHERE r.id = $1::bigint"
                             " AND s.operator_id IS NOT DISTINCT FROM r.operator_id"
                             " AND s.action = r.action AND s.acceptance_rate = 0",
                             1, po),
                     1);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendation_stats"
                              " WHERE acceptance_rate IS NOT NULL"),
                     2);
    free(other);
    free(grp);
    PQfinish(c);
}

/* ---- 6. the reader role ------------------------------------------------------------ */

static void test_recommend_db_reader_reads_outcomes_only(void **state)
{
    (void)state;
    char dsn[DSN_LEN], cfg[600], s[6];
    PGconn *c = copy_db("understudy_t_rdb_reader", dsn);
    recommend_write(dsn, config("reader", "  cooldown: 0s\n", cfg, sizeof cfg));
    long recs = tcount(c, "recommendations"), abst = tcount(c, "abstentions");
    long open = qlong(c, "SELECT count(*) FROM recommendations_open");
    assert_true(recs > 0 && abst > 0 && open > 0);

    exec_ok(c, "SET ROLE understudy_reader");
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations"), recs);
    assert_int_equal(qlong(c, "SELECT count(*) FROM abstentions"), abst);
    assert_int_equal(qlong(c, "SELECT count(*) FROM recommendations_open"), open);
    assert_int_equal(qlong(c, "SELECT sum(recommended + abstained) FROM recommendation_stats"),
                     recs + abst);
    static const char *const hidden[] = {"recommender_progress", "state_events", "action_events",
                                         "policies"};
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT * FROM %s", hidden[i]);
        int st = testenv_exec_status(c, sql, s);
        if (st == PGRES_TUPLES_OK || strcmp(s, "42501") != 0)
            fail_msg("%s as understudy_reader: status %d SQLSTATE %s", sql, st, s);
    }
    int st = testenv_exec_status(c, "DELETE FROM abstentions", s);
    assert_true(st != PGRES_COMMAND_OK);
    assert_string_equal(s, "42501");
    exec_ok(c, "RESET ROLE");
    assert_int_equal(tcount(c, "abstentions"), abst);
    PQfinish(c);
}

/* ---- 7. usage errors ------------------------------------------------------------------ */

static void test_recommend_db_usage_errors_exit_2(void **state)
{
    (void)state;
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char f[600];
    snprintf(f, sizeof f, "%s/rdb-empty.jsonl", testenv_get("UNDERSTUDY_TEST_TMP"));
    FILE *fp = fopen(f, "w");
    assert_non_null(fp);
    assert_int_equal(fclose(fp), 0);
    const char *u1[] = {bin, "recommend", "--from-db", "--jsonl", f, "--dry-run", NULL};
    const char *u2[] = {
        bin, "recommend", "--jsonl", f, "--dry-run", "--since", "2026-10-05T00:00:00Z", NULL};
    const char *u3[] = {bin, "recommend", "--jsonl", f, NULL};
    const char *u4[] = {bin, "recommend", "--from-db", "--model", f, NULL};
    const char *u5[] = {bin, "recommend", "--from-db", "--since", "yesterday", NULL};
    const char *u6[] = {bin, "recommend", "--from-db", "--since", "2026-13-01T00:00:00Z", NULL};
    const char *u7[] = {bin, "recommend", "--from-db", "--since", NULL};
    const char *const *usage[] = {u1, u2, u3, u4, u5, u6, u7};
    static const char *const why[] = {
        "give one of --from-db or --jsonl",
        "--since goes with --from-db",
        "--jsonl needs --dry-run",
        "--model needs --dry-run",
        "RFC 3339",
        "RFC 3339",
        "needs a value",
    };
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        char *out = NULL, *err = NULL;
        int st = testenv_run(usage[i], NULL, &out, &err);
        if (st != 2 || !strstr(err, "usage: understudy recommend") || !strstr(err, why[i]))
            fail_msg("case %zu: exit %d, stderr: %s", i + 1, st, err);
        assert_string_equal(out, "");
        free(out);
        free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recommend_db_usage_errors_exit_2),
        cmocka_unit_test(test_recommend_db_kill_switch_abstains_everything),
        cmocka_unit_test(test_recommend_db_min_confidence_abstains_below_limit),
        cmocka_unit_test(test_recommend_db_ood_threshold_blocks_unusual_snapshot),
        cmocka_unit_test(test_recommend_db_entity_type_blocks_disallowed_actions),
        cmocka_unit_test(test_recommend_db_cooldown_after_action_and_recommendation),
        cmocka_unit_test(test_recommend_db_max_step_caps_the_size),
        cmocka_unit_test(test_recommend_db_deadband_abstains_small_sizes),
        cmocka_unit_test(test_recommend_db_write_is_idempotent_and_dry_run_writes_nothing),
        cmocka_unit_test(test_recommend_db_supersede_keeps_newest_snapshot_and_new_version),
        cmocka_unit_test(test_recommend_db_expired_rows_hidden_then_marked),
        cmocka_unit_test(test_recommend_db_stats_view_matches_tables),
        cmocka_unit_test(test_recommend_db_reader_reads_outcomes_only),
    };
    return cmocka_run_group_tests_name("recommend_db", tests, NULL, NULL);
}
