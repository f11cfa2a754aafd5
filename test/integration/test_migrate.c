/*
 * Integration tests for store_connect and the migrations, against the real
 * PostgreSQL cluster of scripts/devenv.sh (see test/lib/testenv.h).  Each
 * test works in a database of its own, so the tests can run in any order.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "log/log.h"
#include "store/store.h"
#include "testenv.h"

#define DSN_LEN 512

/* Creates database name and connects a store to it. */
static struct store *open_fresh(const char *name, char *dsn)
{
    char err[1024];
    struct store *st = NULL;
    testenv_create_db(name, dsn, DSN_LEN);
    if (store_connect(dsn, NULL, &st, err, sizeof err) != 0)
        fail_msg("store_connect: %s", err);
    return st;
}

static void migrate_ok(struct store *st, int want_applied)
{
    char err[1024];
    int applied = -1;
    if (store_migrate(st, NULL, &applied, err, sizeof err) != 0)
        fail_msg("store_migrate: %s", err);
    assert_int_equal(applied, want_applied);
}

/* Asserts that a one-value query returns want. */
static void assert_value(PGconn *c, const char *sql, const char *want)
{
    char *v = testenv_query_value(c, sql);
    if (strcmp(v, want) != 0)
        fail_msg("%s: got \"%s\", want \"%s\"", sql, v, want);
    free(v);
}

/* Runs sql and asserts it fails with SQLSTATE want. */
static void assert_sqlstate(PGconn *c, const char *sql, const char *want)
{
    char state[6];
    int st = testenv_exec_status(c, sql, state);
    if (st != PGRES_FATAL_ERROR || strcmp(state, want) != 0)
        fail_msg("%s: status %d SQLSTATE \"%s\", want an error %s", sql, st, state, want);
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* The first column of every row, joined with ','. */
static void query_column(PGconn *c, const char *sql, char *out, size_t len)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++) {
        int n = snprintf(out + o, len - o, "%s%s", i ? "," : "", PQgetvalue(r, i, 0));
        assert_true(n >= 0 && (size_t)n < len - o);
        o += (size_t)n;
    }
    PQclear(r);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

static int newest_version(void)
{
    return store_migrations[store_n_migrations - 1].version;
}

/* ---- tests ------------------------------------------------------------- */

static void test_migrate_fresh_database_applies_all_then_nothing(void **state)
{
    (void)state;
    char dsn[DSN_LEN], want[32], before[8192], after[8192];
    struct store *st = open_fresh("understudy_t_migrate_fresh", dsn);
    PGconn *c = testenv_connect(dsn);
    const char *snapshot = "SELECT version || ' ' || name || ' ' || checksum || ' ' || applied_at"
                           " FROM schema_migrations ORDER BY version";

    assert_true(store_n_migrations >= 1);
    migrate_ok(st, (int)store_n_migrations);
    snprintf(want, sizeof want, "%zu", store_n_migrations);
    assert_value(c, "SELECT count(*) FROM schema_migrations", want);
    for (size_t i = 0; i < store_n_migrations; i++) {
        char sql[256], sum[17];
        store_migration_checksum(store_migrations[i].sql, sum);
        snprintf(sql, sizeof sql,
                 "SELECT name || ' ' || checksum FROM schema_migrations "
                 "WHERE version = %d",
                 store_migrations[i].version);
        char *v = testenv_query_value(c, sql);
        assert_true(strncmp(v, store_migrations[i].name, strlen(store_migrations[i].name)) == 0);
        assert_non_null(strstr(v, sum));
        free(v);
    }
    query_column(c, snapshot, before, sizeof before);

    migrate_ok(st, 0);
    query_column(c, snapshot, after, sizeof after);
    assert_string_equal(before, after);

    PQfinish(c);
    store_free(st);
}

static void test_migrate_binary_applies_then_is_noop(void **state)
{
    (void)state;
    char dsn[DSN_LEN], want[32];
    testenv_create_db("understudy_t_migrate_binary", dsn, sizeof dsn);
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *argv_migrate[] = {bin, "migrate", NULL};
    const char *argv_status[] = {bin, "migrate", "--status", NULL};
    char *out = NULL, *err = NULL;

    /* devenv.sh exports a DSN for the daemon; point the binary at ours. */
    const char *saved = getenv("UNDERSTUDY_PG_DSN");
    char *old_dsn = saved ? strdup(saved) : NULL;
    assert_int_equal(setenv("UNDERSTUDY_PG_DSN", dsn, 1), 0);
    assert_int_equal(unsetenv("UNDERSTUDY_CONFIG"), 0);

    int rc = testenv_run(argv_status, NULL, &out, &err);
    if (rc != 0)
        fail_msg("migrate --status exited %d: %s%s", rc, out, err);
    assert_contains(out, "pending");
    free(out);
    free(err);

    for (int round = 0; round < 2; round++) {
        rc = testenv_run(argv_migrate, NULL, &out, &err);
        if (rc != 0)
            fail_msg("migrate (round %d) exited %d: %s%s", round + 1, rc, out, err);
        if (round == 0)
            assert_contains(out, store_migrations[0].name);
        free(out);
        free(err);
    }

    rc = testenv_run(argv_status, NULL, &out, &err);
    if (rc != 0)
        fail_msg("migrate --status exited %d: %s%s", rc, out, err);
    assert_null(strstr(out, "pending"));
    for (size_t i = 0; i < store_n_migrations; i++)
        assert_contains(out, store_migrations[i].name);
    free(out);
    free(err);

    PGconn *c = testenv_connect(dsn);
    snprintf(want, sizeof want, "%zu", store_n_migrations);
    assert_value(c, "SELECT count(*) FROM schema_migrations", want);
    PQfinish(c);
    if (old_dsn)
        assert_int_equal(setenv("UNDERSTUDY_PG_DSN", old_dsn, 1), 0);
    else
        assert_int_equal(unsetenv("UNDERSTUDY_PG_DSN"), 0);
    free(old_dsn);
}

static void test_migrate_contract_surface_exists(void **state)
{
    (void)state;
    static const struct {
        const char *relation;
        const char *columns[20];
    } surface[] = {
        {"recommendations_open",
         {"id", "created_at", "entity_type", "entity_id", "campaign_id", "operator_id", "action",
          "delta_pct", "confidence", "explanation", "ood_score", "policy_version", NULL}},
        {"recommendations",
         {"id", "created_at", "entity_type", "entity_id", "campaign_id", "operator_id", "action",
          "delta_pct", "confidence", "explanation", "ood_score", "policy_version", "status", NULL}},
        {"audit_findings_latest",
         {"operator_id", "kind", "action", "region", "observed", "expected", "effect", "p_value",
          "q_value", "severity", "summary", NULL}},
    };
    char dsn[DSN_LEN], sql[512];
    struct store *st = open_fresh("understudy_t_migrate_surface", dsn);
    PGconn *c = testenv_connect(dsn);
    migrate_ok(st, (int)store_n_migrations);

    assert_value(c,
                 "SELECT string_agg(table_name || ':' || table_type, ',' ORDER BY table_name)"
                 " FROM information_schema.tables WHERE table_schema = current_schema()"
                 " AND table_name IN ('recommendations_open', 'recommendations',"
                 " 'audit_findings_latest')",
                 "audit_findings_latest:VIEW,recommendations:BASE TABLE,"
                 "recommendations_open:VIEW");
    for (size_t i = 0; i < sizeof surface / sizeof surface[0]; i++) {
        for (size_t k = 0; surface[i].columns[k]; k++) {
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM information_schema.columns WHERE table_schema ="
                     " current_schema() AND table_name = '%s' AND column_name = '%s'",
                     surface[i].relation, surface[i].columns[k]);
            char *v = testenv_query_value(c, sql);
            if (strcmp(v, "1") != 0)
                fail_msg("%s.%s is missing", surface[i].relation, surface[i].columns[k]);
            free(v);
        }
    }
    /* The contract says "(text)" for these. */
    assert_value(c,
                 "SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ','"
                 " ORDER BY table_name, column_name) FROM information_schema.columns"
                 " WHERE table_schema = current_schema() AND ((table_name ="
                 " 'recommendations_open' AND column_name = 'explanation') OR (table_name ="
                 " 'audit_findings_latest' AND column_name IN ('region', 'summary')))",
                 "audit_findings_latest.region:text,audit_findings_latest.summary:text,"
                 "recommendations_open.explanation:text");
    PQfinish(c);
    store_free(st);
}

static void test_migrate_comments_on_everything_dashboards_read(void **state)
{
    (void)state;
    char dsn[DSN_LEN];
    struct store *st = open_fresh("understudy_t_migrate_comments", dsn);
    PGconn *c = testenv_connect(dsn);
    migrate_ok(st, (int)store_n_migrations);

    /* Every table and view of ours has a comment, and so has every column. */
    assert_value(c,
                 "SELECT coalesce(string_agg(relname, ','), '') FROM pg_class"
                 " WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'v')"
                 " AND obj_description(oid, 'pg_class') IS NULL",
                 "");
    assert_value(c,
                 "SELECT coalesce(string_agg(c.relname || '.' || a.attname, ','), '')"
                 " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                 " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN"
                 " ('r', 'v') AND c.relname <> 'schema_migrations' AND a.attnum > 0 AND NOT"
                 " a.attisdropped AND col_description(c.oid, a.attnum) IS NULL",
                 "");
    PQfinish(c);
    store_free(st);
}

static void test_migrate_reader_role_is_read_only(void **state)
{
    (void)state;
    static const char *const readable[] = {"recommendations_open", "recommendations",
                                           "audit_findings_latest", "audit_operators_latest"};
    static const char *const hidden[] = {"action_events",    "state_events",   "feedback_events",
                                         "dead_letters",     "policies",       "ingest_offsets",
                                         "audit_runs",       "audit_findings", "audit_operators",
                                         "schema_migrations"};
    char dsn[DSN_LEN], sql[256], s[6];
    struct store *st = open_fresh("understudy_t_migrate_reader", dsn);
    PGconn *c = testenv_connect(dsn);
    migrate_ok(st, (int)store_n_migrations);

    assert_value(c, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'understudy_reader'", "f");
    exec_ok(c, "SET ROLE understudy_reader");
    assert_value(c, "SELECT current_user", "understudy_reader");
    for (size_t i = 0; i < sizeof readable / sizeof readable[0]; i++) {
        snprintf(sql, sizeof sql, "SELECT * FROM %s", readable[i]);
        if (testenv_exec_status(c, sql, s) != PGRES_TUPLES_OK)
            fail_msg("%s: SQLSTATE %s", sql, s);
    }
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
        snprintf(sql, sizeof sql, "SELECT * FROM %s", hidden[i]);
        assert_sqlstate(c, sql, "42501");
    }
    assert_sqlstate(c,
                    "INSERT INTO recommendations (state_event_id, entity_type, entity_id,"
                    " campaign_id, policy_version, action, probabilities, confidence,"
                    " explanation) VALUES ('s', 'campaign', 'e', 'c', 1, 'hold', '{}', 1, 'x')",
                    "42501");
    assert_sqlstate(c, "UPDATE recommendations SET status = 'expired'", "42501");
    assert_sqlstate(c, "DELETE FROM recommendations", "42501");
    assert_sqlstate(c, "TRUNCATE recommendations", "42501");
    assert_sqlstate(c, "CREATE TABLE reader_table (x int)", "42501");
    assert_sqlstate(c, "CREATE VIEW reader_view AS SELECT * FROM recommendations", "42501");
    exec_ok(c, "RESET ROLE");
    PQfinish(c);

    /* A second database migrated in the same cluster reuses the role. */
    char dsn2[DSN_LEN];
    struct store *st2 = open_fresh("understudy_t_migrate_reader2", dsn2);
    migrate_ok(st2, (int)store_n_migrations);
    store_free(st2);
    store_free(st);
}

/*
 * The usual production set-up: a database owned by a role that is neither
 * superuser nor CREATEROLE, with understudy_reader created beforehand.
 */
static void test_migrate_unprivileged_owner_with_existing_role(void **state)
{
    (void)state;
    char dsn[DSN_LEN], err[1024];
    struct store *st = open_fresh("understudy_t_migrate_owner_setup", dsn);
    migrate_ok(st, (int)store_n_migrations); /* makes sure the role exists */
    store_free(st);

    PGconn *admin = testenv_connect(testenv_get("UNDERSTUDY_TEST_PG_ADMIN"));
    exec_ok(admin, "DROP DATABASE IF EXISTS understudy_t_migrate_owner WITH (FORCE)");
    exec_ok(admin, "DROP ROLE IF EXISTS understudy_t_owner");
    exec_ok(admin, "CREATE ROLE understudy_t_owner LOGIN NOSUPERUSER NOCREATEROLE");
    exec_ok(admin, "CREATE DATABASE understudy_t_migrate_owner OWNER understudy_t_owner");

    snprintf(dsn, sizeof dsn, "host=%s port=%s user=understudy_t_owner dbname=%s",
             testenv_get("UNDERSTUDY_TEST_PG_HOST"), testenv_get("UNDERSTUDY_TEST_PG_PORT"),
             "understudy_t_migrate_owner");
    st = NULL;
    if (store_connect(dsn, NULL, &st, err, sizeof err) != 0)
        fail_msg("%s", err);
    migrate_ok(st, (int)store_n_migrations);
    store_free(st);

    /* Check the grants as the superuser acting as the reader. */
    snprintf(dsn, sizeof dsn, "host=%s port=%s user=%s dbname=%s",
             testenv_get("UNDERSTUDY_TEST_PG_HOST"), testenv_get("UNDERSTUDY_TEST_PG_PORT"),
             testenv_get("UNDERSTUDY_TEST_PG_USER"), "understudy_t_migrate_owner");
    PGconn *c = testenv_connect(dsn);
    assert_value(c, "SELECT tableowner FROM pg_tables WHERE tablename = 'recommendations'",
                 "understudy_t_owner");
    exec_ok(c, "SET ROLE understudy_reader");
    assert_value(c, "SELECT count(*) FROM recommendations_open", "0");
    assert_sqlstate(c, "SELECT * FROM action_events", "42501");
    PQfinish(c);

    exec_ok(admin, "DROP DATABASE understudy_t_migrate_owner WITH (FORCE)");
    exec_ok(admin, "DROP ROLE understudy_t_owner");
    PQfinish(admin);
}

static void test_migrate_failing_migration_leaves_database_unchanged(void **state)
{
    (void)state;
    static const char bad_sql[] = "-- a table, then a mistake\n"
                                  "CREATE TABLE t_first (x int);\n"
                                  "\n"
                                  "/* a comment spanning lines; with a semicolon\n"
                                  "   /* nested */ still inside */\n"
                                  "INSERT INTO t_first VALUES (1);\n"
                                  "SELECT 'it''s; fine', $$ ; $$, E'\\' ;';\n"
                                  "CREATE VIEW v_bad AS\n"
                                  "    SELECT * FROM no_such_table;\n"
                                  "CREATE TABLE t_never (x int);\n";
    static const char good_sql[] = "CREATE TABLE t_first (x int);\n";
    char dsn[DSN_LEN], err[1024];
    struct store *st = open_fresh("understudy_t_migrate_failing", dsn);
    PGconn *c = testenv_connect(dsn);
    struct store_migration list[2] = {store_migrations[0], {2, "0002_bad.sql", bad_sql}};
    int applied = -1;

    assert_int_equal(list[0].version, 1);
    assert_int_equal(store_migrate_list(st, list, 2, NULL, &applied, err, sizeof err), -1);
    assert_int_equal(applied, 1);
    assert_contains(err, "0002_bad.sql:8: ERROR:  relation \"no_such_table\" does not exist");
    assert_contains(err, "42P01");
    assert_contains(err, "(statement: CREATE VIEW v_bad AS SELECT * FROM no_such_table)");
    assert_value(c, "SELECT to_regclass('t_first') IS NULL", "t");
    assert_value(c, "SELECT to_regclass('t_never') IS NULL", "t");
    assert_value(c, "SELECT string_agg(version::text, ',') FROM schema_migrations", "1");
    /* The first migration did commit. */
    assert_value(c, "SELECT to_regclass('action_events') IS NOT NULL", "t");
    /* The migration lock was released: another session can take it. */
    assert_value(c, "SELECT pg_try_advisory_lock(8461811192601797753)", "t");
    exec_ok(c, "SELECT pg_advisory_unlock(8461811192601797753)");

    /* The connection is usable and a corrected migration applies. */
    list[1].sql = good_sql;
    applied = -1;
    if (store_migrate_list(st, list, 2, NULL, &applied, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(applied, 1);
    assert_value(c, "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
                 "1,2");
    PQfinish(c);
    store_free(st);
}

static void test_migrate_transaction_control_is_refused(void **state)
{
    (void)state;
    char dsn[DSN_LEN], err[1024];
    struct store *st = open_fresh("understudy_t_migrate_txn", dsn);
    PGconn *c = testenv_connect(dsn);
    struct store_migration list[1] = {
        {1, "0001_commit.sql", "CREATE TABLE t1 (x int);\nCOMMIT;\nCREATE TABLE t2 (x int);\n"}};
    assert_int_equal(store_migrate_list(st, list, 1, NULL, NULL, err, sizeof err), -1);
    assert_contains(err, "0001_commit.sql:2: transaction control is not allowed");
    assert_value(c, "SELECT to_regclass('t1') IS NULL", "t");
    assert_value(c, "SELECT count(*) FROM schema_migrations", "0");
    PQfinish(c);
    store_free(st);
}

static void test_migrate_checksum_mismatch_is_detected(void **state)
{
    (void)state;
    char dsn[DSN_LEN], err[1024];
    struct store *st = open_fresh("understudy_t_migrate_checksum", dsn);
    struct store_migration list[2] = {{1, "0001_a.sql", "CREATE TABLE a (x int);\n"},
                                      {2, "0002_b.sql", "CREATE TABLE b (x int);\n"}};
    int applied = -1;
    if (store_migrate_list(st, list, 2, NULL, &applied, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(applied, 2);

    list[0].sql = "CREATE TABLE a (x bigint);\n";
    assert_int_equal(store_migrate_list(st, list, 2, NULL, &applied, err, sizeof err), -1);
    assert_int_equal(applied, 0);
    assert_contains(err, "0001_a.sql: changed since it was applied");

    /* --status shows it too. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    if (store_migrate_status_list(st, list, 2, f, err, sizeof err) != 0)
        fail_msg("%s", err);
    fclose(f);
    assert_contains(buf, "checksum differs");
    free(buf);
    store_free(st);
}

static void test_migrate_newer_database_is_detected(void **state)
{
    (void)state;
    char dsn[DSN_LEN], err[1024], want[128];
    struct store *st = open_fresh("understudy_t_migrate_newer", dsn);
    migrate_ok(st, (int)store_n_migrations);

    assert_true(store_n_migrations >= 2);
    int applied = -1;
    assert_int_equal(store_migrate_list(st, store_migrations, store_n_migrations - 1, NULL,
                                        &applied, err, sizeof err),
                     -1);
    assert_int_equal(applied, 0);
    snprintf(want, sizeof want, "database is at schema version %d, newer than this binary's %d",
             newest_version(), store_migrations[store_n_migrations - 2].version);
    assert_string_equal(err, want);
    store_free(st);
}

static void test_migrate_out_of_order_pending_is_refused(void **state)
{
    (void)state;
    char dsn[DSN_LEN], err[1024];
    struct store *st = open_fresh("understudy_t_migrate_order", dsn);
    struct store_migration applied_list[2] = {{1, "0001_a.sql", "CREATE TABLE a (x int);\n"},
                                              {3, "0003_c.sql", "CREATE TABLE c (x int);\n"}};
    struct store_migration newer_list[3] = {
        applied_list[0], {2, "0002_b.sql", "CREATE TABLE b (x int);\n"}, applied_list[1]};
    if (store_migrate_list(st, applied_list, 2, NULL, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(store_migrate_list(st, newer_list, 3, NULL, NULL, err, sizeof err), -1);
    assert_contains(err, "0002_b.sql: pending, but the database is already at version 3");

    /* A list out of order is refused before touching the database. */
    struct store_migration unsorted[2] = {applied_list[1], applied_list[0]};
    assert_int_equal(store_migrate_list(st, unsorted, 2, NULL, NULL, err, sizeof err), -1);
    assert_contains(err, "0001_a.sql: version 1 does not follow");
    store_free(st);
}

struct worker {
    const char *dsn;
    int rc;
    int applied;
    char err[1024];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct store *st = NULL;
    w->rc = store_connect(w->dsn, NULL, &st, w->err, sizeof w->err);
    if (w->rc == 0)
        w->rc = store_migrate(st, NULL, &w->applied, w->err, sizeof w->err);
    store_free(st);
    return NULL;
}

static void test_migrate_concurrent_runs_apply_once(void **state)
{
    (void)state;
    char dsn[DSN_LEN], want[32];
    testenv_create_db("understudy_t_migrate_concurrent", dsn, sizeof dsn);
    PGconn *holder = testenv_connect(dsn);
    struct worker w[2] = {{.dsn = dsn, .rc = -1, .applied = -1},
                          {.dsn = dsn, .rc = -1, .applied = -1}};
    pthread_t th[2];

    /* Hold the lock so that both runs are certainly waiting at once. */
    exec_ok(holder, "SELECT pg_advisory_lock(8461811192601797753)");
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    int waiting = 0;
    for (int tries = 0; tries < 500 && waiting < 2; tries++) {
        char *v = testenv_query_value(
            holder, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())");
        waiting = atoi(v);
        free(v);
        if (waiting < 2) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    exec_ok(holder, "SELECT pg_advisory_unlock(8461811192601797753)");
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(waiting, 2);

    for (int i = 0; i < 2; i++)
        if (w[i].rc != 0)
            fail_msg("worker %d: %s", i, w[i].err);
    assert_int_equal(w[0].applied + w[1].applied, (int)store_n_migrations);
    assert_true(w[0].applied == 0 || w[1].applied == 0);
    snprintf(want, sizeof want, "%zu", store_n_migrations);
    assert_value(holder, "SELECT count(*) FROM schema_migrations", want);
    PQfinish(holder);
}

static void test_migrate_views_show_open_and_latest_only(void **state)
{
    (void)state;
    char dsn[DSN_LEN], got[1024];
    struct store *st = open_fresh("understudy_t_migrate_views", dsn);
    PGconn *c = testenv_connect(dsn);
    migrate_ok(st, (int)store_n_migrations);

    exec_ok(c, "INSERT INTO policies (version, status, model) VALUES (1, 'champion', '{}')");
    exec_ok(c, "INSERT INTO recommendations (created_at, state_event_id, entity_type, entity_id,"
               " campaign_id, operator_id, policy_version, action, probabilities, confidence,"
               " delta_pct, explanation, ood_score, status, expires_at, decided_at) VALUES"
               " (now() - interval '10 minutes', 's-open-old', 'campaign', 'c1', 'cmp1', 'op1', 1,"
               "  'bid_up', '{\"bid_up\": 0.8}', 0.8, 10, 'cpa below target', 0.1, 'open',"
               "  now() + interval '1 hour', NULL),"
               " (now() - interval '5 minutes', 's-open-new', 'keyword', 'k1', 'cmp1', NULL, 1,"
               "  'hold', '{\"hold\": 0.9}', 0.9, NULL, 'steady', 0, 'open', NULL, NULL),"
               " (now() - interval '2 hours', 's-expired', 'creative', 'cr1', 'cmp1', 'op1', 1,"
               "  'creative_pause', '{}', 0.7, NULL, 'cpa high', 0.2, 'open',"
               "  now() - interval '1 hour', NULL),"
               " (now() - interval '1 minute', 's-superseded', 'campaign', 'c2', 'cmp2', 'op2', 1,"
               "  'budget_down', '{}', 0.6, -5, 'overpacing', 0.3, 'superseded', NULL, now()),"
               " (now() - interval '3 minutes', 's-accepted', 'campaign', 'c3', 'cmp2', 'op2', 1,"
               "  'budget_up', '{}', 0.6, 5, 'underpacing', 0.3, 'accepted', NULL, now())");
    query_column(c, "SELECT state_event_id FROM recommendations_open", got, sizeof got);
    assert_string_equal(got, "s-open-new,s-open-old");
    assert_value(c, "SELECT count(*) FROM recommendations", "5");

    exec_ok(c, "INSERT INTO audit_runs (id, started_at, finished_at, status, error) VALUES"
               " (1, now() - interval '3 hours', now() - interval '170 minutes', 'finished', NULL),"
               " (2, now() - interval '1 hour', now() - interval '50 minutes', 'finished', NULL),"
               " (3, now() - interval '10 minutes', NULL, 'running', NULL),"
               " (4, now() - interval '5 minutes', now() - interval '4 minutes', 'failed', 'x')");
    exec_ok(c, "INSERT INTO audit_findings (run_id, operator_id, kind, action, region, observed,"
               " expected, effect, p_value, q_value, severity, summary) VALUES"
               " (1, 'op-a', 'deviation', 'bid_up', '', 0.5, 0.2, 0.3, 0.01, 0.02, 'high', 'a'),"
               " (2, 'op-c', 'deviation', 'hold', 'channel=search', 0.5, 0.4, 0.1, 0.04, 0.05,"
               "  'low', 'c'),"
               " (2, 'op-b', 'deviation', 'bid_down', '', 0.9, 0.2, 0.7, 0.001, 0.003, 'high',"
               "  'b'),"
               " (3, 'op-d', 'deviation', NULL, '', 0.5, 0.2, 0.3, 0.01, 0.02, 'high', 'd'),"
               " (4, 'op-e', 'deviation', NULL, '', 0.5, 0.2, 0.3, 0.01, 0.02, 'high', 'e')");
    query_column(c, "SELECT operator_id FROM audit_findings_latest", got, sizeof got);
    assert_string_equal(got, "op-b,op-c");

    /* Only the reader's grants matter to dashboards: the same as the reader. */
    exec_ok(c, "SET ROLE understudy_reader");
    query_column(c, "SELECT state_event_id FROM recommendations_open", got, sizeof got);
    assert_string_equal(got, "s-open-new,s-open-old");
    query_column(c, "SELECT summary FROM audit_findings_latest", got, sizeof got);
    assert_string_equal(got, "b,c");
    exec_ok(c, "RESET ROLE");
    PQfinish(c);
    store_free(st);
}

static void test_migrate_schema_enforces_contract(void **state)
{
    (void)state;
    char dsn[DSN_LEN];
    struct store *st = open_fresh("understudy_t_migrate_checks", dsn);
    PGconn *c = testenv_connect(dsn);
    migrate_ok(st, (int)store_n_migrations);
    const char *cols = "INSERT INTO action_events (event_id, ts, operator_id, campaign_id,"
                       " entity_type, entity_id, action, delta_pct, decision, state, src_topic,"
                       " src_partition, src_offset) VALUES ";
    char sql[1024];

#define ACTION(values) (snprintf(sql, sizeof sql, "%s%s", cols, values), sql)
    exec_ok(c, ACTION("('e1', now(), 'op', 'cmp', 'keyword', 'k', 'bid_change', 12.5, 'bid_up',"
                      " '{\"cpa\": 1, \"other\": [1]}', 'ops.actions', 0, 7)"));
    /* Duplicate event_id. */
    assert_sqlstate(c,
                    ACTION("('e1', now(), 'op', 'cmp', 'keyword', 'k', 'bid_change', 12.5,"
                           " 'bid_up', '{}', 'ops.actions', 0, 8)"),
                    "23505");
    /* delta_pct zero, out of range, missing; wrong decision; bad entity type. */
    assert_sqlstate(c,
                    ACTION("('e2', now(), 'op', 'cmp', 'keyword', 'k', 'bid_change', 0, 'bid_up',"
                           " '{}', 'ops.actions', 0, 9)"),
                    "23514");
    assert_sqlstate(c,
                    ACTION("('e2', now(), 'op', 'cmp', 'keyword', 'k', 'bid_change', -100,"
                           " 'bid_down', '{}', 'ops.actions', 0, 9)"),
                    "23514");
    assert_sqlstate(c,
                    ACTION("('e2', now(), 'op', 'cmp', 'keyword', 'k', 'budget_change', NULL,"
                           " 'budget_up', '{}', 'ops.actions', 0, 9)"),
                    "23514");
    assert_sqlstate(c,
                    ACTION("('e2', now(), 'op', 'cmp', 'keyword', 'k', 'bid_change', -5, 'bid_up',"
                           " '{}', 'ops.actions', 0, 9)"),
                    "23514");
    assert_sqlstate(c,
                    ACTION("('e2', now(), 'op', 'cmp', 'banner', 'k', 'creative_pause', NULL,"
                           " 'creative_pause', '{}', 'ops.actions', 0, 9)"),
                    "23514");
    exec_ok(c, ACTION("('e3', now(), 'op', 'cmp', 'creative', 'cr', 'creative_pause', NULL,"
                      " 'creative_pause', '{}', 'ops.actions', 0, 10)"));
    exec_ok(c, ACTION("('e4', now(), 'op', 'cmp', 'campaign', 'c', 'budget_change', 1000,"
                      " 'budget_up', '{}', 'ops.actions', 1, 10)"));
#undef ACTION

    /* Feedback: modified needs an action; hold is allowed there. */
    assert_sqlstate(c,
                    "INSERT INTO feedback_events (event_id, ts, operator_id, recommendation_id,"
                    " verdict, src_topic, src_partition, src_offset) VALUES ('f1', now(), 'op',"
                    " 42, 'modified', 'ops.feedback', 0, 1)",
                    "23514");
    exec_ok(c, "INSERT INTO feedback_events (event_id, ts, operator_id, recommendation_id,"
               " verdict, action, decision, src_topic, src_partition, src_offset) VALUES"
               " ('f1', now(), 'op', 42, 'modified', 'hold', 'hold', 'ops.feedback', 0, 1)");

    assert_sqlstate(c,
                    "INSERT INTO feedback_events (event_id, ts, operator_id, recommendation_id,"
                    " verdict, decision, src_topic, src_partition, src_offset) VALUES ('f2',"
                    " now(), 'op', 42, 'accepted', 'bid_up', 'ops.feedback', 0, 2)",
                    "23514");
    assert_sqlstate(c,
                    "INSERT INTO feedback_events (event_id, ts, operator_id, recommendation_id,"
                    " verdict, action, delta_pct, src_topic, src_partition, src_offset) VALUES"
                    " ('f2', now(), 'op', 42, 'modified', 'bid_change', -5, 'ops.feedback', 0, 2)",
                    "23514");
    exec_ok(c, "INSERT INTO feedback_events (event_id, ts, operator_id, recommendation_id,"
               " verdict, action, delta_pct, decision, src_topic, src_partition, src_offset)"
               " VALUES ('f2', now(), 'op', 42, 'modified', 'bid_change', -5, 'bid_down',"
               " 'ops.feedback', 0, 2)");

    /* One champion at most. */
    exec_ok(c, "INSERT INTO policies (status, model) VALUES ('champion', '{}')");
    assert_sqlstate(c, "INSERT INTO policies (status, model) VALUES ('champion', '{}')", "23505");

    /* One recommendation per snapshot and policy version. */
    const char *rec = "INSERT INTO recommendations (state_event_id, entity_type, entity_id,"
                      " campaign_id, policy_version, action, probabilities, confidence,"
                      " explanation) VALUES ('s1', 'campaign', 'c', 'cmp', 1, 'hold', '{}', 0.5,"
                      " 'x')";
    exec_ok(c, rec);
    assert_sqlstate(c, rec, "23505");
    assert_sqlstate(c, "UPDATE recommendations SET status = 'accepted'", "23514");
    exec_ok(c, "UPDATE recommendations SET status = 'accepted', decided_at = now()");

    /* Dead letters: one per position. */
    const char *dl = "INSERT INTO dead_letters (topic, partition, \"offset\", raw, reason)"
                     " VALUES ('ops.actions', 0, 5, '\\x7b', 'ts: missing')";
    exec_ok(c, dl);
    assert_sqlstate(c, dl, "23505");
    PQfinish(c);
    store_free(st);
}

static void test_migrate_status_lists_pending_then_applied(void **state)
{
    (void)state;
    char dsn[DSN_LEN], err[1024];
    struct store *st = open_fresh("understudy_t_migrate_status", dsn);
    char *buf = NULL;
    size_t len = 0;

    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    if (store_migrate_status(st, f, err, sizeof err) != 0)
        fail_msg("%s", err);
    fclose(f);
    for (size_t i = 0; i < store_n_migrations; i++)
        assert_contains(buf, store_migrations[i].name);
    assert_null(strstr(buf, "applied"));
    free(buf);

    migrate_ok(st, (int)store_n_migrations);
    buf = NULL;
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    if (store_migrate_status(st, f, err, sizeof err) != 0)
        fail_msg("%s", err);
    fclose(f);
    assert_null(strstr(buf, "pending"));
    assert_contains(buf, "0001  ");
    assert_contains(buf, "applied 2");
    free(buf);

    /* A version from a newer binary is listed as such. */
    struct store_migration older[1] = {store_migrations[0]};
    buf = NULL;
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    if (store_migrate_status_list(st, older, 1, f, err, sizeof err) != 0)
        fail_msg("%s", err);
    fclose(f);
    assert_contains(buf, "(not in this binary)");
    free(buf);
    store_free(st);
}

static void test_migrate_splitter_understands_quoting(void **state)
{
    (void)state;
    static const char sql[] =
        "-- leading comment; with a semicolon\n"
        "CREATE TABLE \"we;ird\" (\"a\"\"b\" text);\n"            /* line 2 */
        "INSERT INTO \"we;ird\" VALUES ('x;''y'), (E'p\\';q'),\n" /* line 3 */
        "  (U&'d\\0061t;a');\n"
        "/* outer /* inner; */ still; comment */ CREATE FUNCTION f() RETURNS text\n" /* 5 */
        "LANGUAGE plpgsql AS $body$\n"
        "BEGIN\n"
        "  RETURN $$a;b$$ || 'c;' ; -- $body not closed here\n"
        "END\n"
        "$body$;\n"
        ";;\n"
        "CREATE RULE r AS ON DELETE TO \"we;ird\" DO INSTEAD (SELECT 1; SELECT 2);\n" /* 12 */
        "SELECT $1x$ok$1x$ -- not a dollar quote: tag starts with a digit\n"
        "-- trailing comment without a newline";
    static const int want_lines[] = {2, 3, 5, 12, 13};
    struct store_sql_iter it;
    struct store_sql_stmt stmt;
    char err[256];
    int r, n = 0;

    store_sql_iter_init(&it, sql);
    while ((r = store_sql_iter_next(&it, &stmt, err, sizeof err)) == 1) {
        assert_true(n < 5);
        assert_int_equal(stmt.line, want_lines[n]);
        n++;
    }
    assert_int_equal(r, 0);
    assert_int_equal(n, 5);

    /* The statements before the last one run as intended. */
    char dsn[DSN_LEN];
    struct store *st = open_fresh("understudy_t_migrate_splitter", dsn);
    PGconn *c = testenv_connect(dsn);
    const char *cut = strstr(sql, "SELECT $1x$");
    assert_non_null(cut);
    char *head = strndup(sql, (size_t)(cut - sql));
    assert_non_null(head);
    struct store_migration list[1] = {{1, "0001_quoting.sql", head}};
    if (store_migrate_list(st, list, 1, NULL, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_value(c, "SELECT string_agg(\"a\"\"b\", '|' ORDER BY \"a\"\"b\") FROM \"we;ird\"",
                 "dat;a|p';q|x;'y");
    assert_value(c, "SELECT f()", "a;bc;");
    free(head);

    /* Unterminated constructs are reported with the line they start on. */
    static const struct {
        const char *sql;
        const char *want;
    } bad[] = {
        {"SELECT 1;\nSELECT 'abc;\n", "line 2: unterminated string literal"},
        {"SELECT 1;\n\nSELECT \"abc;\n", "line 3: unterminated quoted identifier"},
        {"/* a /* b */ c\n", "line 1: unterminated /* comment"},
        {"SELECT 1;\nDO $x$ BEGIN END $y$;\n", "line 2: unterminated dollar-quoted string $x$"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        store_sql_iter_init(&it, bad[i].sql);
        while ((r = store_sql_iter_next(&it, &stmt, err, sizeof err)) == 1) {
        }
        assert_int_equal(r, -1);
        assert_string_equal(err, bad[i].want);
    }

    /* Through store_migrate_list, the error names the file. */
    struct store_migration unterminated[1] = {{1, "0001_x.sql", "SELECT 1;\nSELECT 'abc;\n"}};
    char dsn2[DSN_LEN];
    struct store *st2 = open_fresh("understudy_t_migrate_splitter2", dsn2);
    assert_int_equal(store_migrate_list(st2, unterminated, 1, NULL, NULL, err, sizeof err), -1);
    assert_string_equal(err, "0001_x.sql:2: unterminated string literal");
    store_free(st2);
    PQfinish(c);
    store_free(st);
}

static void test_migrate_connect_password_file_missing_is_named(void **state)
{
    (void)state;
    char dsn[DSN_LEN], err[1024];
    struct store *st = NULL;
    testenv_create_db("understudy_t_migrate_pwfile", dsn, sizeof dsn);

    assert_int_equal(store_connect(dsn, "/nonexistent/understudy/pg.pass", &st, err, sizeof err),
                     -1);
    assert_null(st);
    assert_contains(err, "/nonexistent/understudy/pg.pass");

    /* A readable file (CRLF line end) is used; trust auth ignores it. */
    char path[512];
    snprintf(path, sizeof path, "%s/understudy-test-pg.pass", testenv_get("UNDERSTUDY_TEST_TMP"));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("s3cr3t-pw\r\nsecond line\n", f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
    if (store_connect(dsn, path, &st, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_non_null(store_conn(st));
    assert_value(store_conn(st), "SELECT current_setting('application_name')", "understudy");
    store_free(st);
    st = NULL;

    /* A failed connection's error does not carry the password. */
    char bad[DSN_LEN];
    snprintf(bad, sizeof bad, "host=%s port=1 user=nobody dbname=none",
             testenv_get("UNDERSTUDY_TEST_PG_HOST"));
    assert_int_equal(store_connect(bad, path, &st, err, sizeof err), -1);
    assert_null(strstr(err, "s3cr3t"));
    assert_null(strchr(err, '\n'));

    /* An empty file is refused, naming it. */
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(store_connect(dsn, path, &st, err, sizeof err), -1);
    assert_contains(err, path);
    remove(path);
}

static void test_migrate_connect_error_hides_password(void **state)
{
    (void)state;
    static const char *const dsns[] = {
        "host=/tmp password=hunter2 junk",
        "host=/tmp password='hunter2",
        "postgresql://u:hunter2@[::1/db",
        "postgresql://u:hunter2@host/db?bogus%zz=1",
    };
    char err[1024];
    struct store *st = NULL;
    for (size_t i = 0; i < sizeof dsns / sizeof dsns[0]; i++) {
        assert_int_equal(store_connect(dsns[i], NULL, &st, err, sizeof err), -1);
        assert_null(st);
        if (strstr(err, "hunter2"))
            fail_msg("dsn %zu: error quotes the password: %s", i, err);
    }
    /* Without a password, libpq's own explanation comes through. */
    assert_int_equal(store_connect("host=/tmp bogus_option=1", NULL, &st, err, sizeof err), -1);
    assert_contains(err, "bogus_option");
}

int main(void)
{
    log_setup(LOG_LEVEL_WARN, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_fresh_database_applies_all_then_nothing),
        cmocka_unit_test(test_migrate_binary_applies_then_is_noop),
        cmocka_unit_test(test_migrate_contract_surface_exists),
        cmocka_unit_test(test_migrate_comments_on_everything_dashboards_read),
        cmocka_unit_test(test_migrate_reader_role_is_read_only),
        cmocka_unit_test(test_migrate_unprivileged_owner_with_existing_role),
        cmocka_unit_test(test_migrate_failing_migration_leaves_database_unchanged),
        cmocka_unit_test(test_migrate_transaction_control_is_refused),
        cmocka_unit_test(test_migrate_checksum_mismatch_is_detected),
        cmocka_unit_test(test_migrate_newer_database_is_detected),
        cmocka_unit_test(test_migrate_out_of_order_pending_is_refused),
        cmocka_unit_test(test_migrate_concurrent_runs_apply_once),
        cmocka_unit_test(test_migrate_views_show_open_and_latest_only),
        cmocka_unit_test(test_migrate_schema_enforces_contract),
        cmocka_unit_test(test_migrate_status_lists_pending_then_applied),
        cmocka_unit_test(test_migrate_splitter_understands_quoting),
        cmocka_unit_test(test_migrate_connect_password_file_missing_is_named),
        cmocka_unit_test(test_migrate_connect_error_hides_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
