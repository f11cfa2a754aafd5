/*
 * Integration: the ingest daemon against real PostgreSQL and a private mock
 * Kafka cluster.  Exact accounting, the ordering of dead letters and offsets,
 * metrics and readiness, SIGHUP reloads, and the write path's fast path
 * against its staging fallback.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tdaemon.h"
#include "testenv.h"

struct consumed_wait {
    struct tdaemon *d;
    const char *series[2];
    double want[2];
};

static int consumed_reached(void *ud)
{
    struct consumed_wait *w = ud;
    int code = 0;
    char *body = tdaemon_http(w->d, "/metrics", &code);
    int ok = body && code == 200;
    for (int i = 0; ok && i < 2 && w->series[i]; i++)
        ok = tdaemon_metric_value(body, w->series[i]) >= w->want[i];
    free(body);
    return ok;
}

/* Issue test 1: 50 000 events, 2 % duplicates, 1 % bad: exact accounting in
 * the database and in the metrics. */
static void test_ingest_exact_accounting_50k(void **state)
{
    (void)state;
    char dsn[512], path_s[512], path_a[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *tmp = testenv_get("UNDERSTUDY_TEST_TMP");
    testenv_create_db("understudy_t_ingest_acct", dsn, sizeof dsn);
    tmigrate(dsn);

    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 3);
    struct tgen gs = {.kind = "state",
                      .n = 30000,
                      .first_id = 1,
                      .prefix = "s",
                      .dup_rate = 0.02,
                      .bad_rate = 0.01,
                      .seed = 7};
    struct tgen ga = {.kind = "action",
                      .n = 20000,
                      .first_id = 1,
                      .prefix = "a",
                      .dup_rate = 0.02,
                      .bad_rate = 0.01,
                      .seed = 8};
    struct tgen_counts cs, ca;
    snprintf(path_s, sizeof path_s, "%s/acct-states.jsonl", tmp);
    snprintf(path_a, sizeof path_a, "%s/acct-actions.jsonl", tmp);
    tgen_write(&gs, path_s, &cs);
    tgen_write(&ga, path_a, &ca);
    assert_true(cs.duplicates > 400 && cs.bad > 200);
    treplay(bin, m.brokers, "ops.states", path_s);
    treplay(bin, m.brokers, "ops.actions", path_a);

    struct tdaemon d;
    tdaemon_config(&d, "acct", m.brokers, "acct", "ingest:\n  batch_messages: 2000\n");
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_ready(&d, 30);
    struct consumed_wait w = {
        &d,
        {"understudy_ingest_consumed_total{topic=\"ops.states\"}",
         "understudy_ingest_consumed_total{topic=\"ops.actions\"}"},
        {(double)cs.lines, (double)ca.lines},
    };
    if (!twait_until(consumed_reached, &w, 60))
        fail_msg("not everything was consumed in 60 s; see %s", d.log);

    int code = 0;
    char *body = tdaemon_http(&d, "/metrics", &code);
    assert_int_equal(code, 200);
    /* The metrics: every consumed message is exactly one of the three. */
    struct {
        const char *topic;
        struct tgen_counts *c;
    } t[] = {{"ops.states", &cs}, {"ops.actions", &ca}};
    for (int i = 0; i < 2; i++) {
        char s[256];
        snprintf(s, sizeof s, "understudy_ingest_consumed_total{topic=\"%s\"}", t[i].topic);
        assert_int_equal((long)tdaemon_metric_value(body, s), (long)t[i].c->lines);
        snprintf(s, sizeof s, "understudy_ingest_stored_total{topic=\"%s\"}", t[i].topic);
        assert_int_equal((long)tdaemon_metric_value(body, s), (long)t[i].c->unique);
        snprintf(s, sizeof s, "understudy_ingest_duplicates_total{topic=\"%s\"}", t[i].topic);
        assert_int_equal((long)tdaemon_metric_value(body, s), (long)t[i].c->duplicates);
        long dead = 0;
        static const char *const reasons[] = {"size", "encoding", "json", "contract", "database"};
        for (int r = 0; r < 5; r++) {
            snprintf(s, sizeof s,
                     "understudy_ingest_dead_letters_total{topic=\"%s\",reason=\"%s\"}", t[i].topic,
                     reasons[r]);
            dead += (long)tdaemon_metric_value(body, s);
        }
        assert_int_equal(dead, (long)t[i].c->bad);
    }
    assert_true(tdaemon_metric_value(body, "understudy_ingest_batches_committed_total") > 0);
    assert_true(tdaemon_metric_value(body, "understudy_ingest_commit_seconds_count") > 0);
    assert_int_equal((long)tdaemon_metric_value(body, "understudy_ingest_paused"), 0);
    free(body);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 30), 0);

    /* The database: rows, dead letters and offsets account for every message. */
    PGconn *c = testenv_connect(dsn);
    assert_int_equal(tcount(c, "state_events"), (long)cs.unique);
    assert_int_equal(tcount(c, "action_events"), (long)ca.unique);
    assert_int_equal(tcount(c, "dead_letters WHERE topic = 'ops.states'"), (long)cs.bad);
    assert_int_equal(tcount(c, "dead_letters WHERE topic = 'ops.actions'"), (long)ca.bad);
    assert_int_equal(tcount(c, "dead_letters WHERE reason = '' OR raw IS NULL"), 0);
    char *v = testenv_query_value(c, "SELECT sum(next_offset) FROM ingest_offsets "
                                     "WHERE group_id = 'acct' AND topic = 'ops.states'");
    assert_int_equal(strtol(v, NULL, 10), (long)cs.lines);
    free(v);
    v = testenv_query_value(c, "SELECT sum(next_offset) FROM ingest_offsets "
                               "WHERE group_id = 'acct' AND topic = 'ops.actions'");
    assert_int_equal(strtol(v, NULL, 10), (long)ca.lines);
    free(v);
    /* Each stored event keeps the position of its first copy. */
    assert_int_equal(tcount(c, "state_events WHERE src_topic <> 'ops.states'"), 0);
    PQfinish(c);
    assert_int_equal(tmock_stop(&m), 0);
}

struct position_check {
    PGconn *conn;
    int violations;
    long max_next;
};

/* In one snapshot: every offset below the partition's committed position is
 * an event or a dead letter. */
static int position_consistent(void *ud)
{
    struct position_check *p = ud;
    PGresult *r =
        PQexec(p->conn, "SELECT o.next_offset,"
                        " (SELECT count(*) FROM action_events a WHERE a.src_partition = 0"
                        "   AND a.src_offset < o.next_offset)"
                        " + (SELECT count(*) FROM dead_letters l WHERE l.partition = 0"
                        "   AND l.\"offset\" < o.next_offset)"
                        " FROM ingest_offsets o WHERE o.topic = 'ops.actions' AND o.partition = 0");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    if (PQntuples(r) == 1) {
        long next = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        long covered = strtol(PQgetvalue(r, 0, 1), NULL, 10);
        if (next != covered)
            p->violations++;
        p->max_next = next;
    }
    PQclear(r);
    return p->max_next >= 200;
}

/* Issue test 4: message N bad and N+1 good in one partition: N is in the
 * dead letters before the committed offset passes it.  Checked on every
 * observation while 200 alternating messages go through one-message
 * batches. */
static void test_ingest_dead_letter_committed_before_offset_passes_it(void **state)
{
    (void)state;
    char dsn[512], path[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    testenv_create_db("understudy_t_ingest_order", dsn, sizeof dsn);
    tmigrate(dsn);
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 1);

    snprintf(path, sizeof path, "%s/order.jsonl", testenv_get("UNDERSTUDY_TEST_TMP"));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 100; i++) {
        fprintf(f, "{\"event_id\": \"bad-%d\", \"ts\": \"not a time\"}\n", i);
        fprintf(f,
                "{\"event_id\":\"good-%d\",\"ts\":\"2026-11-02T10:00:00Z\","
                "\"operator_id\":\"op-01\",\"campaign_id\":\"cmp-1\",\"entity_type\":\"campaign\","
                "\"entity_id\":\"cmp-1\",\"action\":\"budget_change\",\"delta_pct\":5,"
                "\"state\":{\"cpa\":1}}\n",
                i);
    }
    assert_int_equal(fclose(f), 0);

    struct tdaemon d;
    tdaemon_config(&d, "order", m.brokers, "order",
                   "ingest:\n  batch_messages: 1\n  batch_wait: 0s\n");
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_ready(&d, 30);
    treplay(bin, m.brokers, "ops.actions", path);

    struct position_check p = {testenv_connect(dsn), 0, 0};
    if (!twait_until(position_consistent, &p, 60))
        fail_msg("offset reached only %ld of 200 in 60 s; see %s", p.max_next, d.log);
    assert_int_equal(p.violations, 0);
    assert_int_equal(tcount(p.conn, "dead_letters"), 100);
    assert_int_equal(tcount(p.conn, "action_events"), 100);
    /* Every bad message sits right before its good one. */
    assert_int_equal(tcount(p.conn, "dead_letters WHERE \"offset\" % 2 <> 0"), 0);
    assert_int_equal(tcount(p.conn, "action_events WHERE src_offset % 2 <> 1"), 0);
    assert_int_equal(tcount(p.conn, "dead_letters WHERE reason <> 'ts: not RFC 3339'"), 0);
    PQfinish(p.conn);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 30), 0);
    assert_int_equal(tmock_stop(&m), 0);
}

static int log_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

struct log_wait {
    const char *path, *needle;
};

static int log_wait_cond(void *ud)
{
    struct log_wait *w = ud;
    return log_contains(w->path, w->needle);
}

/* SIGHUP: a valid file is applied; a broken one or one that changes a
 * restart-only key is refused and the daemon keeps running on the old one. */
static void test_ingest_sighup_reload_applies_valid_refuses_invalid(void **state)
{
    (void)state;
    char dsn[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    testenv_create_db("understudy_t_ingest_hup", dsn, sizeof dsn);
    tmigrate(dsn);
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 1);
    struct tdaemon d;
    tdaemon_config(&d, "hup", m.brokers, "hup", NULL);
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_ready(&d, 30);

    /* Valid and reloadable: a batch size. */
    FILE *f = fopen(d.config, "a");
    assert_non_null(f);
    fputs("ingest:\n  batch_messages: 10\n", f);
    assert_int_equal(fclose(f), 0);
    kill(d.pid, SIGHUP);
    struct log_wait w1 = {d.log, "config: reloaded"};
    assert_true(twait_until(log_wait_cond, &w1, 10));

    /* Broken YAML: refused with the file position, daemon still ready. */
    f = fopen(d.config, "a");
    assert_non_null(f);
    fputs("  batch_messages: [\n", f);
    assert_int_equal(fclose(f), 0);
    kill(d.pid, SIGHUP);
    struct log_wait w2 = {d.log, "config: reload refused, keeping the running configuration"};
    assert_true(twait_until(log_wait_cond, &w2, 10));
    tdaemon_wait_ready(&d, 5);

    /* Restart-only key changed: refused and named. */
    f = fopen(d.config, "w");
    assert_non_null(f);
    fprintf(f, "kafka:\n  brokers: \"127.0.0.1:1\"\n  group_id: hup\n"
               "metrics:\n  listen: \"127.0.0.1:0\"\n");
    assert_int_equal(fclose(f), 0);
    kill(d.pid, SIGHUP);
    struct log_wait w3 = {d.log, "kafka.brokers: changed; restart to apply"};
    assert_true(twait_until(log_wait_cond, &w3, 10));
    tdaemon_wait_ready(&d, 5);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 30), 0);
    assert_int_equal(tmock_stop(&m), 0);
}

/* /healthz, /readyz and the per-topic series exist before any traffic. */
static void test_ingest_endpoints_answer(void **state)
{
    (void)state;
    char dsn[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    testenv_create_db("understudy_t_ingest_http", dsn, sizeof dsn);
    tmigrate(dsn);
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 2);
    struct tdaemon d;
    tdaemon_config(&d, "http", m.brokers, "http", NULL);
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_ready(&d, 30);
    int code = 0;
    char *b = tdaemon_http(&d, "/healthz", &code);
    assert_int_equal(code, 200);
    free(b);
    b = tdaemon_http(&d, "/metrics", &code);
    assert_int_equal(code, 200);
    assert_int_equal(
        (long)tdaemon_metric_value(b, "understudy_ingest_consumed_total{topic=\"ops.feedback\"}"),
        0);
    assert_int_equal((long)tdaemon_metric_value(b, "understudy_ingest_assigned_partitions"), 6);
    assert_non_null(strstr(b, "# TYPE understudy_ingest_commit_seconds histogram"));
    free(b);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 30), 0);
    assert_int_equal(tmock_stop(&m), 0);
}

/* Rows PostgreSQL refuses are isolated by bisection and dead-lettered with
 * their SQLSTATE, in the same transaction as the good rows of the batch. */
static void test_ingest_rows_refused_by_database_become_dead_letters(void **state)
{
    (void)state;
    char dsn[512], path[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    testenv_create_db("understudy_t_ingest_refused", dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);
    char st[6];
    /* A rule the decoder does not know about, as a stand-in for any
     * constraint an operator might add. */
    assert_int_equal(testenv_exec_status(c,
                                         "ALTER TABLE state_events ADD CONSTRAINT no_evil"
                                         " CHECK (operator_id IS DISTINCT FROM 'op-evil')",
                                         st),
                     PGRES_COMMAND_OK);
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 1);
    snprintf(path, sizeof path, "%s/refused.jsonl", testenv_get("UNDERSTUDY_TEST_TMP"));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    int evil = 0;
    for (int i = 0; i < 1000; i++) {
        int is_evil = i % 97 == 13;
        evil += is_evil;
        fprintf(f,
                "{\"event_id\":\"r-%d\",\"ts\":\"2026-11-02T10:00:00Z\",\"operator_id\":\"%s\","
                "\"campaign_id\":\"cmp-1\",\"entity_type\":\"campaign\",\"entity_id\":\"cmp-1\","
                "\"state\":{\"cpa\":%d}}\n",
                i, is_evil ? "op-evil" : "op-01", i);
    }
    assert_int_equal(fclose(f), 0);
    treplay(bin, m.brokers, "ops.states", path);

    struct tdaemon d;
    tdaemon_config(&d, "refused", m.brokers, "refused", "ingest:\n  batch_messages: 500\n");
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_ready(&d, 30);
    struct consumed_wait w = {
        &d, {"understudy_ingest_consumed_total{topic=\"ops.states\"}", NULL}, {1000, 0}};
    if (!twait_until(consumed_reached, &w, 60))
        fail_msg("not everything was consumed in 60 s; see %s", d.log);
    int code = 0;
    char *body = tdaemon_http(&d, "/metrics", &code);
    assert_int_equal((long)tdaemon_metric_value(
                         body, "understudy_ingest_dead_letters_total{topic=\"ops.states\","
                               "reason=\"database\"}"),
                     evil);
    free(body);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 30), 0);

    assert_int_equal(tcount(c, "state_events"), 1000 - evil);
    assert_int_equal(tcount(c, "dead_letters"), evil);
    assert_int_equal(tcount(c, "dead_letters WHERE sqlstate = '23514'"
                               " AND reason LIKE 'database refused the event: 23514: %no_evil%'"
                               " AND convert_from(raw, 'UTF8') LIKE '%op-evil%'"),
                     evil);
    assert_int_equal(tcount(c, "state_events WHERE operator_id = 'op-evil'"), 0);
    char *v = testenv_query_value(c, "SELECT next_offset FROM ingest_offsets");
    assert_string_equal(v, "1000");
    free(v);
    PQfinish(c);
    assert_int_equal(tmock_stop(&m), 0);
}

struct offset_wait {
    PGconn *conn;
    long want;
};

static int offsets_reached(void *ud)
{
    struct offset_wait *w = ud;
    char *v = testenv_query_value(w->conn, "SELECT coalesce(sum(next_offset), 0) FROM "
                                           "ingest_offsets");
    long got = strtol(v, NULL, 10);
    free(v);
    return got >= w->want;
}

/* If the database comes back without commits this process saw acknowledged
 * (asynchronous commit, failover to a lagging replica, a restore), the daemon
 * notices after reconnecting and reads those messages again: nothing lost. */
static void test_ingest_rewinds_when_database_lost_commits(void **state)
{
    (void)state;
    char dsn[512], pa[512], pb[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *tmp = testenv_get("UNDERSTUDY_TEST_TMP");
    testenv_create_db("understudy_t_ingest_rewind", dsn, sizeof dsn);
    tmigrate(dsn);
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 1);
    struct tgen ga = {.kind = "state", .n = 1000, .first_id = 1, .prefix = "ra", .seed = 3};
    struct tgen gb = {.kind = "state", .n = 500, .first_id = 1, .prefix = "rb", .seed = 4};
    struct tgen_counts ca, cb;
    snprintf(pa, sizeof pa, "%s/rewind-a.jsonl", tmp);
    snprintf(pb, sizeof pb, "%s/rewind-b.jsonl", tmp);
    tgen_write(&ga, pa, &ca);
    tgen_write(&gb, pb, &cb);

    struct tdaemon d;
    tdaemon_config(&d, "rewind", m.brokers, "rewind", "ingest:\n  batch_messages: 100\n");
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_ready(&d, 45);
    treplay(bin, m.brokers, "ops.states", pa);
    PGconn *c = testenv_connect(dsn);
    struct offset_wait w = {c, 1000};
    assert_true(twait_until(offsets_reached, &w, 60));

    /* The database "loses" the last 400 acknowledged messages, and the
     * daemon's session with it. */
    char st[6];
    assert_int_equal(testenv_exec_status(c, "DELETE FROM state_events WHERE src_offset >= 600", st),
                     PGRES_COMMAND_OK);
    assert_int_equal(testenv_exec_status(c, "UPDATE ingest_offsets SET next_offset = 600", st),
                     PGRES_COMMAND_OK);
    char *v = testenv_query_value(c, "SELECT count(pg_terminate_backend(pid)) FROM "
                                     "pg_stat_activity WHERE application_name = 'understudy'"
                                     " AND datname = current_database()");
    assert_true(strtol(v, NULL, 10) >= 1);
    free(v);

    /* New messages make the daemon write, fail, reconnect and notice. */
    treplay(bin, m.brokers, "ops.states", pb);
    w.want = 1500;
    if (!twait_until(offsets_reached, &w, 60))
        fail_msg("the daemon did not catch up in 60 s; see %s", d.log);
    assert_true(log_contains(d.log, "lost acknowledged commits"));
    assert_int_equal(tcount(c, "state_events"), 1500);
    assert_int_equal(tcount(c, "state_events WHERE event_id LIKE 'ra-%'"), 1000);
    assert_int_equal(tcount(c, "(SELECT DISTINCT src_offset FROM state_events) s"), 1500);
    PQfinish(c);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 30), 0);
    assert_int_equal(tmock_stop(&m), 0);
}

/* The daemon refuses to start on a database without the schema. */
static void test_ingest_refuses_unmigrated_database(void **state)
{
    (void)state;
    char dsn[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    testenv_create_db("understudy_t_ingest_nomig", dsn, sizeof dsn);
    struct tdaemon d;
    tdaemon_config(&d, "nomig", "127.0.0.1:1", "nomig", NULL);
    setenv("UNDERSTUDY_PG_DSN", dsn, 1);
    const char *argv[] = {bin, "run", "-c", d.config, NULL};
    char *err = NULL;
    int rc = testenv_run(argv, NULL, NULL, &err);
    unsetenv("UNDERSTUDY_PG_DSN");
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "run `understudy migrate`"));
    free(err);
}

/* ---- the fast path and the staging path ---------------------------------- */

/*
 * Events for the path test: each a template whose one "%s" is the event id.
 * They cover what the two paths encode differently (binary COPY against
 * text COPY): timestamps with offsets, cut fractions, before 1970, at the
 * ends of the calendar and on a leap second; NULLs; exact doubles; 64-bit
 * ids; state text with escapes and non-ASCII; extras; and messages the
 * decoder reads with jansson rather than its own scanner.
 */
static const char *const path_states[] = {
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
    "\"campaign_id\":\"cmp-1\",\"entity_type\":\"campaign\",\"entity_id\":\"cmp-1\","
    "\"state\":{\"cpa\":31.2,\"n\":-3,\"ok\":true,\"no\":false,\"z\":null,"
    "\"s\":\"a\\\"b\\\\c\\td \\u00e9\\ud83d\\ude00 \xc3\xa9\",\"big\":123456789012345678,"
    "\"r\":0.30000000000000004,\"e\":1e300,\"m\":-0.0,\"k\":2.50}}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11.1234567+05:30\",\"operator_id\":null,"
    "\"campaign_id\":\"cmp-2\",\"entity_type\":\"ad_group\",\"entity_id\":\"ag-2\","
    "\"state\":{}}",
    "{\"event_id\":\"%s\",\"ts\":\"1969-12-31T23:59:59.5Z\",\"campaign_id\":\"cmp-3\","
    "\"entity_type\":\"creative\",\"entity_id\":\"cr-3\",\"state\":{\"a\":1}}",
    "{\"event_id\":\"%s\",\"ts\":\"0001-01-01T00:00:00Z\",\"operator_id\":\"op-04\","
    "\"campaign_id\":\"cmp-4\",\"entity_type\":\"keyword\",\"entity_id\":\"kw-4\","
    "\"state\":{\"a\":1}}",
    "{\"event_id\":\"%s\",\"ts\":\"9999-12-31T23:59:59.999999-00:00\",\"operator_id\":\"op-05\","
    "\"campaign_id\":\"cmp-5\",\"entity_type\":\"keyword\",\"entity_id\":\"kw-5\","
    "\"state\":{\"a\":1}}",
    "{\"event_id\":\"%s\",\"ts\":\"2016-12-31T23:59:60Z\",\"operator_id\":\"op-06\","
    "\"campaign_id\":\"cmp-6\",\"entity_type\":\"campaign\",\"entity_id\":\"cmp-6\","
    "\"state\":{\"a\":1}}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-07\","
    "\"campaign_id\":\"cmp-7\",\"entity_type\":\"campaign\",\"entity_id\":\"cmp-7\","
    "\"state\":{\"h\":-9223372036854775808}}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-08\","
    "\"campaign_id\":\"cmp-8\",\"entity_type\":\"campaign\",\"entity_id\":\"cmp-8\","
    "\"state\":{\"a\":1},\"source\":\"console\",\"audit\":{\"z\":[1,{\"y\":2}]}}",
    "{ \"event_id\" : \"%s\" , \"ts\" : \"2026-11-02T14:05:11Z\" , \"campaign_id\" : \"c-9\" ,"
    " \"entity_type\" : \"campaign\" , \"entity_id\" : \"c-9\" , \"state\" : { \"a\" : 1 } }",
};
static const char *const path_actions[] = {
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
    "\"campaign_id\":\"cmp-1\",\"entity_type\":\"ad_group\",\"entity_id\":\"ag-1\","
    "\"action\":\"bid_change\",\"delta_pct\":0.1,\"state\":{\"bid\":1.25}}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
    "\"campaign_id\":\"cmp-1\",\"entity_type\":\"ad_group\",\"entity_id\":\"ag-1\","
    "\"action\":\"bid_change\",\"delta_pct\":-99.99999999999999,\"state\":{}}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
    "\"campaign_id\":\"cmp-1\",\"entity_type\":\"campaign\",\"entity_id\":\"cmp-1\","
    "\"action\":\"budget_change\",\"delta_pct\":1000,\"state\":{}}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
    "\"campaign_id\":\"cmp-1\",\"entity_type\":\"campaign\",\"entity_id\":\"cmp-1\","
    "\"action\":\"budget_change\",\"delta_pct\":-12.5,\"state\":{},\"note\":\"x\"}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
    "\"campaign_id\":\"cmp-1\",\"entity_type\":\"creative\",\"entity_id\":\"cr-1\","
    "\"action\":\"creative_pause\",\"state\":{\"ctr\":0.001}}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T14:05:11Z\",\"operator_id\":\"op-01\","
    "\"campaign_id\":\"cmp-1\",\"entity_type\":\"creative\",\"entity_id\":\"cr-1\","
    "\"action\":\"creative_resume\",\"delta_pct\":null,\"state\":{}}",
};
static const char *const path_feedback[] = {
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"op-07\","
    "\"recommendation_id\":1,\"verdict\":\"accepted\"}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"op-07\","
    "\"recommendation_id\":9007199254740993,\"verdict\":\"rejected\"}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"op-07\","
    "\"recommendation_id\":3,\"verdict\":\"modified\",\"action\":\"hold\"}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"op-07\","
    "\"recommendation_id\":4,\"verdict\":\"modified\",\"action\":\"bid_change\","
    "\"delta_pct\":12.5}",
    "{\"event_id\":\"%s\",\"ts\":\"2026-11-02T15:00:00Z\",\"operator_id\":\"op-07\","
    "\"recommendation_id\":5,\"verdict\":\"modified\",\"action\":\"creative_pause\","
    "\"campaign_id\":\"cmp-1\"}",
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Writes the template with its "%s" replaced by the id, and a newline. */
static void path_line(FILE *f, const char *tmpl, const char *prefix, const char *tag, size_t i)
{
    const char *at = strstr(tmpl, "%s");
    assert_non_null(at);
    fprintf(f, "%.*s%s-%s%zu%s\n", (int)(at - tmpl), tmpl, prefix, tag, i, at + 2);
}

/*
 * Phase 1 ("x" ids): every event once, one of them twice in a row.  Phase 2
 * ("y" ids): the same events under new ids, each between two repeats of an
 * "x" id, so that every batch holding a "y" row also holds an id stored
 * before.  Returns the number of lines written.
 */
static size_t path_write(const char *path, const char *const *fmts, size_t n, const char *tag,
                         int phase)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    size_t lines = 0;
    for (size_t i = 0; i < n; i++) {
        if (phase == 1) {
            path_line(f, fmts[i], "x", tag, i);
            lines++;
            if (i == 0) { /* an in-batch duplicate, with other content */
                path_line(f, fmts[n - 1], "x", tag, i);
                lines++;
            }
        } else {
            path_line(f, fmts[(i + 1) % n], "x", tag, i);
            path_line(f, fmts[i], "y", tag, i);
            path_line(f, fmts[(i + 2) % n], "x", tag, (i + 1) % n);
            lines += 3;
        }
    }
    assert_int_equal(fclose(f), 0);
    return lines;
}

struct path_totals {
    struct tdaemon *d;
    long want;
};

static int path_consumed(void *ud)
{
    struct path_totals *t = ud;
    int code = 0;
    char *body = tdaemon_http(t->d, "/metrics", &code);
    long got = 0;
    static const char *const topics[] = {"ops.states", "ops.actions", "ops.feedback"};
    for (int i = 0; body && i < 3; i++) {
        char s[128];
        snprintf(s, sizeof s, "understudy_ingest_consumed_total{topic=\"%s\"}", topics[i]);
        got += (long)tdaemon_metric_value(body, s);
    }
    free(body);
    return got >= t->want;
}

static long path_metric(struct tdaemon *d, const char *family, const char *topic)
{
    int code = 0;
    char s[160];
    char *body = tdaemon_http(d, "/metrics", &code);
    assert_non_null(body);
    snprintf(s, sizeof s, "%s{topic=\"%s\"}", family, topic);
    long v = (long)tdaemon_metric_value(body, s);
    free(body);
    return v;
}

/* count(*) of a query with one text parameter. */
static long path_count1(PGconn *c, const char *sql, const char *p1)
{
    const char *params[1] = {p1};
    PGresult *r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/*
 * The fast path (binary COPY straight into the event table) and the staging
 * path it falls back to when an id was stored before store the same values,
 * with the same accounting: every event goes in once as "x" in a batch of
 * new ids and once as "y" in batches that hold repeats, and the two rows
 * must be equal in every column but the id.  The staging tables only exist
 * once the fallback was needed, which tells the paths apart.  Last, a ts
 * that an offset moves into year 0 is refused by PostgreSQL (22008) as it
 * always was, and the rest of its batch is stored.
 */
static void test_ingest_fast_and_staging_paths_store_the_same(void **state)
{
    (void)state;
    char dsn[512], ps[512], pa[512], pf[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *tmp = testenv_get("UNDERSTUDY_TEST_TMP");
    testenv_create_db("understudy_t_ingest_paths", dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 1);
    snprintf(ps, sizeof ps, "%s/paths-states.jsonl", tmp);
    snprintf(pa, sizeof pa, "%s/paths-actions.jsonl", tmp);
    snprintf(pf, sizeof pf, "%s/paths-feedback.jsonl", tmp);
    const size_t ns = N_OF(path_states), na = N_OF(path_actions), nf = N_OF(path_feedback);

    /* Phase 1: everything is there before the daemon starts: one batch. */
    size_t lines = path_write(ps, path_states, ns, "s", 1);
    lines += path_write(pa, path_actions, na, "a", 1);
    lines += path_write(pf, path_feedback, nf, "f", 1);
    treplay(bin, m.brokers, "ops.states", ps);
    treplay(bin, m.brokers, "ops.actions", pa);
    treplay(bin, m.brokers, "ops.feedback", pf);
    struct tdaemon d;
    tdaemon_config(&d, "paths", m.brokers, "paths",
                   "ingest:\n  batch_messages: 1000\n  batch_wait: 5s\n");
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_ready(&d, 30);
    struct path_totals t = {&d, (long)lines};
    if (!twait_until(path_consumed, &t, 60))
        fail_msg("phase 1 was not consumed in 60 s; see %s", d.log);
    assert_int_equal(tcount(c, "pg_class WHERE relname LIKE 'understudy_stage%'"), 0);
    assert_int_equal(tcount(c, "state_events"), (long)ns);
    assert_int_equal(path_metric(&d, "understudy_ingest_duplicates_total", "ops.states"), 1);
    assert_int_equal(path_metric(&d, "understudy_ingest_duplicates_total", "ops.actions"), 1);
    assert_int_equal(path_metric(&d, "understudy_ingest_duplicates_total", "ops.feedback"), 1);
    /* the first copy of the repeated id is the one stored */
    assert_int_equal(tcount(c, "state_events WHERE event_id = 'x-s0' AND src_offset = 0"
                               " AND entity_id = 'cmp-1'"),
                     1);

    /* Phase 2: new ids among repeats. */
    lines += path_write(ps, path_states, ns, "s", 2);
    lines += path_write(pa, path_actions, na, "a", 2);
    lines += path_write(pf, path_feedback, nf, "f", 2);
    treplay(bin, m.brokers, "ops.states", ps);
    treplay(bin, m.brokers, "ops.actions", pa);
    treplay(bin, m.brokers, "ops.feedback", pf);
    t.want = (long)lines;
    if (!twait_until(path_consumed, &t, 60))
        fail_msg("phase 2 was not consumed in 60 s; see %s", d.log);
    assert_true(tcount(c, "pg_class WHERE relname = 'understudy_stage_states'") > 0);
    struct {
        const char *topic, *table, *cols;
        size_t n;
    } k[] = {
        {"ops.states", "state_events",
         "ts, ts_text, operator_id, campaign_id, entity_type, entity_id, state, extra, src_topic,"
         " src_partition",
         ns},
        {"ops.actions", "action_events",
         "ts, ts_text, operator_id, campaign_id, entity_type, entity_id, action, delta_pct,"
         " decision, state, extra, src_topic, src_partition",
         na},
        {"ops.feedback", "feedback_events",
         "ts, ts_text, operator_id, recommendation_id, verdict, action, delta_pct, decision,"
         " extra, src_topic, src_partition",
         nf},
    };
    for (size_t i = 0; i < N_OF(k); i++) {
        char sql[1024];
        assert_int_equal(path_metric(&d, "understudy_ingest_stored_total", k[i].topic),
                         (long)(2 * k[i].n));
        assert_int_equal(path_metric(&d, "understudy_ingest_duplicates_total", k[i].topic),
                         (long)(2 * k[i].n + 1));
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM %s x JOIN %s y ON y.event_id = 'y' || substr(x.event_id, 2)"
                 " WHERE x.event_id LIKE 'x-%%'"
                 " AND (SELECT ROW(%s) FROM %s a WHERE a.id = x.id)"
                 " IS NOT DISTINCT FROM (SELECT ROW(%s) FROM %s b WHERE b.id = y.id)",
                 k[i].table, k[i].table, k[i].cols, k[i].table, k[i].cols, k[i].table);
        char *v = testenv_query_value(c, sql);
        assert_int_equal(strtol(v, NULL, 10), (long)k[i].n);
        free(v);
    }
    assert_int_equal(tcount(c, "dead_letters"), 0);

    /* Values, read back through PostgreSQL's own parsers. */
    assert_int_equal(tcount(c, "state_events WHERE ts = '2026-11-02 08:35:11.123456+00'"
                               " AND ts_text = '2026-11-02T14:05:11.1234567+05:30'"
                               " AND operator_id IS NULL"),
                     2);
    assert_int_equal(tcount(c, "state_events WHERE ts = '1969-12-31 23:59:59.5+00'"), 2);
    assert_int_equal(tcount(c, "state_events WHERE ts = '0001-01-01 00:00:00+00'"), 2);
    assert_int_equal(tcount(c, "state_events WHERE ts = '9999-12-31 23:59:59.999999+00'"), 2);
    assert_int_equal(tcount(c, "state_events WHERE ts = '2016-12-31 23:59:59.999999+00'"), 2);
    assert_int_equal(tcount(c, "state_events WHERE extra = '{\"source\":\"console\","
                               "\"audit\":{\"z\":[1,{\"y\":2}]}}'"),
                     2);
    const char *st0 = strstr(path_states[0], "\"state\":") + strlen("\"state\":");
    char st[512];
    snprintf(st, sizeof st, "%.*s", (int)(strlen(st0) - 1), st0);
    assert_int_equal(path_count1(c,
                                 "SELECT count(*) FROM state_events WHERE state = $1::jsonb"
                                 " AND event_id IN ('x-s0', 'y-s0')",
                                 st),
                     2);
    assert_int_equal(tcount(c, "action_events WHERE delta_pct = 0.1::float8"
                               " AND decision = 'bid_up'"),
                     2);
    assert_int_equal(tcount(c, "action_events WHERE delta_pct = -99.99999999999999::float8"
                               " AND decision = 'bid_down'"),
                     2);
    assert_int_equal(tcount(c, "action_events WHERE delta_pct IS NULL"), 4);
    assert_int_equal(tcount(c, "feedback_events WHERE recommendation_id = 9007199254740993"), 2);
    assert_int_equal(tcount(c, "feedback_events WHERE action = 'hold' AND decision = 'hold'"
                               " AND delta_pct IS NULL"),
                     2);

    /* Phase 3: year 0 after the offset.  The text path's verdict. */
    FILE *f = fopen(ps, "w");
    assert_non_null(f);
    fprintf(f, "{\"event_id\":\"z-1\",\"ts\":\"0001-01-01T00:00:00+01:00\",\"campaign_id\":\"c\","
               "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":{}}\n"
               "{\"event_id\":\"z-2\",\"ts\":\"2026-11-02T14:05:11Z\",\"campaign_id\":\"c\","
               "\"entity_type\":\"campaign\",\"entity_id\":\"c\",\"state\":{}}\n");
    assert_int_equal(fclose(f), 0);
    treplay(bin, m.brokers, "ops.states", ps);
    t.want = (long)lines + 2;
    if (!twait_until(path_consumed, &t, 60))
        fail_msg("phase 3 was not consumed in 60 s; see %s", d.log);
    assert_int_equal(tcount(c, "dead_letters WHERE sqlstate = '22008'"
                               " AND reason LIKE 'database refused the event: 22008:%'"
                               " AND convert_from(raw, 'UTF8') LIKE '%\"z-1\"%'"),
                     1);
    assert_int_equal(tcount(c, "state_events WHERE event_id LIKE 'z-%'"), 1);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 30), 0);
    PQfinish(c);
    assert_int_equal(tmock_stop(&m), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ingest_exact_accounting_50k),
        cmocka_unit_test(test_ingest_dead_letter_committed_before_offset_passes_it),
        cmocka_unit_test(test_ingest_sighup_reload_applies_valid_refuses_invalid),
        cmocka_unit_test(test_ingest_endpoints_answer),
        cmocka_unit_test(test_ingest_rows_refused_by_database_become_dead_letters),
        cmocka_unit_test(test_ingest_fast_and_staging_paths_store_the_same),
        cmocka_unit_test(test_ingest_rewinds_when_database_lost_commits),
        cmocka_unit_test(test_ingest_refuses_unmigrated_database),
    };
    return cmocka_run_group_tests_name("ingest", tests, NULL, NULL);
}
