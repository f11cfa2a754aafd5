/*
 * Integration tests of the recommender inside `understudy run`, against
 * real PostgreSQL, the mock Kafka cluster and the real binary: snapshots
 * replayed to ops.states are stored by ingest and scored by the leader with
 * the champion, exactly one row per (snapshot, policy version) in
 * recommendations or abstentions; a promotion is picked up without a
 * restart; a SIGKILL mid-stream loses and duplicates nothing; of two
 * daemons in one group only one scores.
 *
 * The snapshots come from one simulation (10000 rows, 60 entities, one
 * snapshot per entity every 2 h).  Its first 4800 snapshots and the
 * actions before the 4801st are "history"; later lines of the same
 * states.jsonl are "new" snapshots (their ids were never replayed into that
 * database), replayed without their actions.  Tests 2-4
 * start from a copy (CREATE DATABASE ... TEMPLATE) of one base database
 * holding the history and a champion trained on it, and no recommender
 * progress, so their daemons begin scoring at the end of the history.
 */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tdaemon.h"
#include "testenv.h"

#define SIM_ROWS        10000
#define SIM_SEED        "21"
#define HISTORY         4800 /* snapshots st-0000000001 .. st-0000004800 */
#define LAST_HISTORY_ID "st-0000004800"
#define TOPICS          "ops.actions,ops.states,ops.feedback"
#define BASE_DB         "understudy_t_recd_base"
/* Fast enough that waits below are short; NOTIFY wakes it anyway. */
#define REC_YAML "recommend:\n  poll_interval: 200ms\n"

/* ---- small helpers ---------------------------------------------------------- */

/* Seconds on the monotonic clock (for the timings the tests print). */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static PGresult *query_rows(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    return r;
}

static long query_long(PGconn *c, const char *sql)
{
    char *v = testenv_query_value(c, sql);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

static void exec_admin(PGconn *admin, const char *sql)
{
    PGresult *r = PQexec(admin, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(admin));
    PQclear(r);
}

static void dsn_of(const char *db, char *dsn, size_t len)
{
    snprintf(dsn, len, "host=%s port=%s user=%s dbname=%s", testenv_get("UNDERSTUDY_TEST_PG_HOST"),
             testenv_get("UNDERSTUDY_TEST_PG_PORT"), testenv_get("UNDERSTUDY_TEST_PG_USER"), db);
}

/* A fresh database copied from template (nobody may be connected to it). */
static void clone_db(const char *template_db, const char *name, char *dsn, size_t len)
{
    PGconn *admin = testenv_connect(testenv_get("UNDERSTUDY_TEST_PG_ADMIN"));
    char sql[512];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    exec_admin(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s", name, template_db);
    exec_admin(admin, sql);
    PQfinish(admin);
    dsn_of(name, dsn, len);
}

/* Runs bin with args and UNDERSTUDY_PG_DSN=dsn; fails unless it exits 0;
 * returns the JSON object on the first line of stdout (NULL when none). */
static json_t *run_json(const char *dsn, const char *const *args)
{
    char *out = testenv_run_bin(dsn, args, 0);
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    free(out);
    return j;
}

/* Copies lines [from, to] (1-based) of src into dst. */
static void copy_lines(const char *src, const char *dst, long from, long to)
{
    FILE *in = fopen(src, "r"), *out = fopen(dst, "w");
    assert_non_null(in);
    assert_non_null(out);
    char line[16384];
    long n = 0, written = 0;
    while (fgets(line, sizeof line, in)) {
        assert_non_null(strchr(line, '\n')); /* no line longer than the buffer */
        n++;
        if (n >= from && n <= to) {
            assert_true(fputs(line, out) >= 0);
            written++;
        }
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(written, to - from + 1);
}

struct sim_files {
    char actions[600]; /* the actions of the history: ts before the first new snapshot */
    char history[600], states[600];
    long n_actions;
};

/* The "ts" of a JSON line (caller frees). */
static char *line_ts(const char *line)
{
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    if (!j)
        fail_msg("not JSON (%s): %s", je.text, line);
    const char *ts = json_string_value(json_object_get(j, "ts"));
    assert_non_null(ts);
    char *out = strdup(ts);
    assert_non_null(out);
    json_decref(j);
    return out;
}

/* Copies the lines of src with a ts before `before` (both RFC 3339 in UTC
 * with the same layout, so they order as strings); returns how many. */
static long copy_before(const char *src, const char *dst, const char *before)
{
    FILE *in = fopen(src, "r"), *out = fopen(dst, "w");
    assert_non_null(in);
    assert_non_null(out);
    char line[16384];
    long n = 0;
    while (fgets(line, sizeof line, in)) {
        assert_non_null(strchr(line, '\n'));
        char *ts = line_ts(line);
        if (strcmp(ts, before) < 0) {
            assert_true(fputs(line, out) >= 0);
            n++;
        }
        free(ts);
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
    return n;
}

/* The simulation, written once per run; tail files are made on demand. */
static const struct sim_files *sim_files(void)
{
    static struct sim_files f;
    static bool done;
    if (done)
        return &f;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/recd-sim", testenv_get("UNDERSTUDY_TEST_TMP"));
    char rows[24];
    snprintf(rows, sizeof rows, "%d", SIM_ROWS);
    const char *sim[] = {"simulate", "--out", dir, "--rows", rows, "--seed", SIM_SEED, NULL};
    json_decref(run_json(NULL, sim));
    char all_actions[600];
    snprintf(all_actions, sizeof all_actions, "%s/actions.jsonl", dir);
    snprintf(f.actions, sizeof f.actions, "%s/history-actions.jsonl", dir);
    snprintf(f.states, sizeof f.states, "%s/states.jsonl", dir);
    snprintf(f.history, sizeof f.history, "%s/history.jsonl", dir);
    copy_lines(f.states, f.history, 1, HISTORY);
    /* The new snapshots' own actions come after them (the simulation acts
     * 1 to 20 minutes after a snapshot): they are not history. */
    FILE *in = fopen(f.states, "r");
    assert_non_null(in);
    char line[16384];
    for (int i = 0; i <= HISTORY; i++)
        assert_non_null(fgets(line, sizeof line, in));
    fclose(in);
    char *ts = line_ts(line);
    f.n_actions = copy_before(all_actions, f.actions, ts);
    free(ts);
    assert_true(f.n_actions > 1000);
    done = true;
    return &f;
}

/* Writes snapshots [from, to] of the simulation into a file named tag. */
static void sim_slice(const char *tag, long from, long to, char *path, size_t len)
{
    const struct sim_files *f = sim_files();
    snprintf(path, len, "%s/recd-sim/%s.jsonl", testenv_get("UNDERSTUDY_TEST_TMP"), tag);
    copy_lines(f->states, path, from, to);
}

struct sql_wait {
    PGconn *conn;
    const char *sql;
    long want;
    long last;
};

static int sql_reached(void *ud)
{
    struct sql_wait *w = ud;
    w->last = query_long(w->conn, w->sql);
    return w->last == w->want;
}

/* Polls sql until it returns want; fails the test after timeout_s. */
static void wait_sql(PGconn *c, const char *sql, long want, int timeout_s, const char *log)
{
    struct sql_wait w = {c, sql, want, -1};
    if (!twait_until(sql_reached, &w, timeout_s))
        fail_msg("after %d s, %s gives %ld, not %ld; see %s", timeout_s, sql, w.last, want,
                 log ? log : "(no log)");
}

/* Occurrences of needle in a file. */
static int count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, needle))
            n++;
    }
    fclose(f);
    return n;
}

/* ---- what is stored ------------------------------------------------------------ */

/* The rows of both tables, (state_event_id, policy_version) each. */
#define UNION_ROWS                                                                                 \
    "(SELECT state_event_id, policy_version FROM recommendations"                                  \
    " UNION ALL SELECT state_event_id, policy_version FROM abstentions)"

/* SQL counting the snapshots after `after` (event ids order like ids
 * here) that have a row of version v. */
static const char *scored_sql(char *buf, size_t len, const char *after, int v)
{
    snprintf(buf, len,
             "SELECT count(*) FROM state_events s WHERE s.event_id > '%s' AND s.event_id IN"
             " (SELECT state_event_id FROM " UNION_ROWS " u WHERE u.policy_version = %d)",
             after, v);
    return buf;
}

static long scored_after(PGconn *c, const char *after, int v)
{
    char sql[512];
    return query_long(c, scored_sql(sql, sizeof sql, after, v));
}

static void wait_scored(PGconn *c, const char *after, int v, long want, int timeout_s,
                        const char *log)
{
    char sql[512];
    wait_sql(c, scored_sql(sql, sizeof sql, after, v), want, timeout_s, log);
}

/* The invariants that hold after any run: no (snapshot, version) twice
 * across both tables, at most one open recommendation per entity. */
static void assert_no_duplicates(PGconn *c)
{
    assert_int_equal(query_long(c, "SELECT count(*) FROM (SELECT 1 FROM " UNION_ROWS
                                   " u GROUP BY state_event_id, policy_version"
                                   " HAVING count(*) > 1) d"),
                     0);
    assert_int_equal(query_long(c, "SELECT count(*) FROM (SELECT 1 FROM recommendations"
                                   " WHERE status = 'open' GROUP BY entity_type, entity_id"
                                   " HAVING count(*) > 1) d"),
                     0);
}

/* Recommendations of version v that break the cooldown (6 h by default):
 * made within 6 h after an action on the entity or after an earlier
 * snapshot's recommendation for it. */
static long cooldown_breaches(PGconn *c, int v)
{
    char sql[700];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM recommendations a JOIN recommendations b"
             " ON b.entity_type = a.entity_type AND b.entity_id = a.entity_id"
             " AND b.snapshot_ts > a.snapshot_ts"
             " AND b.snapshot_ts < a.snapshot_ts + interval '6 hours'"
             " WHERE a.policy_version = %d AND b.policy_version = %d",
             v, v);
    long n = query_long(c, sql);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM recommendations r WHERE r.policy_version = %d AND EXISTS"
             " (SELECT 1 FROM action_events a WHERE a.entity_type = r.entity_type"
             " AND a.entity_id = r.entity_id AND a.ts <= r.snapshot_ts"
             " AND a.ts > r.snapshot_ts - interval '6 hours')",
             v);
    return n + query_long(c, sql);
}

static void assert_cooldown(PGconn *c, int v)
{
    assert_int_equal(cooldown_breaches(c, v), 0);
}

/* Every snapshot after `after` has exactly one row of version v, and n of
 * them are stored. */
static void assert_one_row_each(PGconn *c, const char *after, int v, long n)
{
    char sql[600];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM state_events WHERE event_id > '%s'", after);
    assert_int_equal(query_long(c, sql), n);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM " UNION_ROWS " u JOIN state_events s"
             " ON s.event_id = u.state_event_id WHERE s.event_id > '%s' AND u.policy_version = %d",
             after, v);
    assert_int_equal(query_long(c, sql), n);
    assert_int_equal(scored_after(c, after, v), n);
}

static double jnum(const json_t *j)
{
    assert_true(json_is_number(j));
    return json_number_value(j);
}

static bool is_sized(const char *a)
{
    return strcmp(a, "bid_up") == 0 || strcmp(a, "bid_down") == 0 || strcmp(a, "budget_up") == 0 ||
           strcmp(a, "budget_down") == 0;
}

/* probabilities sum to 1 and confidence is probabilities[action]. */
static void check_probabilities(const char *text, const char *action, double confidence)
{
    json_error_t je;
    json_t *p = json_loads(text, 0, &je);
    if (!p)
        fail_msg("probabilities do not parse (%s): %s", je.text, text);
    double sum = 0;
    const char *k;
    json_t *v;
    json_object_foreach(p, k, v)
    {
        double x = jnum(v);
        assert_true(x >= 0 && x <= 1);
        sum += x;
    }
    assert_int_equal(json_object_size(p), 7);
    if (fabs(sum - 1) >= 1e-9)
        fail_msg("probabilities sum to %.17g: %s", sum, text);
    json_t *mine = json_object_get(p, action);
    assert_non_null(mine);
    if (fabs(jnum(mine) - confidence) >= 1e-9)
        fail_msg("confidence %.17g is not probabilities[%s] = %.17g", confidence, action,
                 jnum(mine));
    json_decref(p);
}

/* base + the features' contributions == margin, for the chosen class. */
static void check_contributions(const char *text, const char *action)
{
    json_error_t je;
    json_t *c = json_loads(text, 0, &je);
    if (!c)
        fail_msg("contributions do not parse (%s): %s", je.text, text);
    assert_string_equal(json_string_value(json_object_get(c, "class")), action);
    double sum = jnum(json_object_get(c, "base"));
    json_t *feats = json_object_get(c, "features");
    assert_true(json_object_size(feats) > 0);
    const char *k;
    json_t *v;
    json_object_foreach(feats, k, v)
    {
        sum += jnum(json_object_get(v, "contribution"));
    }
    double margin = jnum(json_object_get(c, "margin"));
    if (fabs(sum - margin) >= 1e-9)
        fail_msg("base + contributions = %.17g, margin %.17g", sum, margin);
    json_decref(c);
}

struct rec_summary {
    long rows, open, sized;
};

/* Checks every recommendation of version v row by row. */
static struct rec_summary check_recommendations(PGconn *c, int v)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT state_event_id, status, action, confidence, delta_pct IS NULL,"
             " coalesce(delta_pct, 0), explanation, probabilities::text,"
             " coalesce(contributions::text, '') FROM recommendations"
             " WHERE policy_version = %d ORDER BY id",
             v);
    PGresult *r = query_rows(c, sql);
    struct rec_summary s = {0, 0, 0};
    for (int i = 0; i < PQntuples(r); i++) {
        const char *id = PQgetvalue(r, i, 0), *status = PQgetvalue(r, i, 1);
        const char *action = PQgetvalue(r, i, 2);
        double conf = strtod(PQgetvalue(r, i, 3), NULL);
        bool no_delta = strcmp(PQgetvalue(r, i, 4), "t") == 0;
        double delta = strtod(PQgetvalue(r, i, 5), NULL);
        const char *expl = PQgetvalue(r, i, 6);
        if (!strstr(expl, " toward "))
            fail_msg("%s: explanation without ' toward ': '%s'", id, expl);
        assert_string_not_equal(action, "hold");
        check_probabilities(PQgetvalue(r, i, 7), action, conf);
        if (PQgetlength(r, i, 8) == 0)
            fail_msg("%s: no contributions", id);
        check_contributions(PQgetvalue(r, i, 8), action);
        if (strcmp(status, "open") == 0) {
            s.open++;
            if (conf < 0.5)
                fail_msg("%s: open with confidence %g", id, conf);
        } else if (strcmp(status, "superseded") != 0) {
            fail_msg("%s: status %s (nothing decided or expired here)", id, status);
        }
        if (is_sized(action)) {
            s.sized++;
            if (no_delta)
                fail_msg("%s: %s without delta_pct", id, action);
            bool up = strstr(action, "_up") != NULL;
            if (up ? !(delta > 0) : !(delta < 0))
                fail_msg("%s: %s with delta_pct %g", id, action, delta);
            if (fabs(delta) > 20 + 1e-9)
                fail_msg("%s: |delta_pct| %g above max_step 20", id, delta);
            if (fabs(delta) < 1 - 1e-9)
                fail_msg("%s: |delta_pct| %g inside the deadband 1", id, delta);
        } else if (!no_delta) {
            fail_msg("%s: %s with delta_pct %g", id, action, delta);
        }
        s.rows++;
    }
    PQclear(r);
    return s;
}

/* Checks every abstention of version v; returns how many there are. */
static long check_abstentions(PGconn *c, int v)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT state_event_id, reason, action, confidence, explanation,"
             " probabilities::text FROM abstentions WHERE policy_version = %d ORDER BY id",
             v);
    PGresult *r = query_rows(c, sql);
    long n = PQntuples(r);
    for (int i = 0; i < PQntuples(r); i++) {
        const char *id = PQgetvalue(r, i, 0), *reason = PQgetvalue(r, i, 1);
        const char *action = PQgetvalue(r, i, 2);
        double conf = strtod(PQgetvalue(r, i, 3), NULL);
        assert_true(strlen(reason) > 0);
        if (strcmp(reason, "hold") == 0)
            assert_string_equal(action, "hold");
        /* A hold is reported as such unless a rule before it fired. */
        if (strcmp(action, "hold") == 0 && strcmp(reason, "hold") != 0 &&
            strcmp(reason, "out_of_distribution") != 0)
            fail_msg("%s: hold abstained for %s", id, reason);
        if (!strstr(PQgetvalue(r, i, 4), " toward "))
            fail_msg("%s: explanation without ' toward ': '%s'", id, PQgetvalue(r, i, 4));
        check_probabilities(PQgetvalue(r, i, 5), action, conf);
    }
    PQclear(r);
    return n;
}

/* ---- setting up ---------------------------------------------------------------- */

/* Waits until the daemon stored `actions` actions and `states` snapshots. */
static void wait_stored(PGconn *c, long actions, long states, const char *log)
{
    wait_sql(c, "SELECT count(*) FROM action_events", actions, 60, log);
    wait_sql(c, "SELECT count(*) FROM state_events", states, 60, log);
}

/*
 * The base database, made once: the history ingested by a daemon whose
 * recommender is off (so there is no recommender_progress), then a
 * champion trained on it.  Returns the champion's version.
 */
static int base_db(void)
{
    static int version;
    if (version > 0)
        return version;
    const struct sim_files *f = sim_files();
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512];
    testenv_create_db(BASE_DB, dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);
    struct tmock m;
    tmock_start(&m, TOPICS, 3);
    treplay(bin, m.brokers, "ops.actions", f->actions);
    treplay(bin, m.brokers, "ops.states", f->history);
    struct tdaemon d;
    tdaemon_config(&d, "recd-base", m.brokers, "recd-base", "recommend:\n  enabled: false\n");
    tdaemon_start(&d, bin, dsn, NULL);
    wait_stored(c, f->n_actions, HISTORY, d.log);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 20), 0);
    tmock_stop(&m);
    assert_int_equal(tcount(c, "recommender_progress"), 0);

    const char *train[] = {"train", "--from-db", "--promote", "--rounds", "30", NULL};
    json_t *j = run_json(dsn, train);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "promoted")));
    int v = (int)json_integer_value(json_object_get(j, "version"));
    json_decref(j);
    assert_true(v > 0);
    assert_int_equal(query_long(c, "SELECT version FROM policies WHERE status = 'champion'"), v);
    PQfinish(c); /* a template may have no sessions */
    version = v;
    return version;
}

/* ---- 1: end to end ------------------------------------------------------------------ */

static void test_recommend_daemon_end_to_end(void **state)
{
    (void)state;
    double t0 = now_s();
    const struct sim_files *f = sim_files();
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512], fresh[600];
    sim_slice("e2e-new", HISTORY + 1, 6000, fresh, sizeof fresh);
    testenv_create_db("understudy_t_recd_e2e", dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);

    struct tmock m;
    tmock_start(&m, TOPICS, 3);
    treplay(bin, m.brokers, "ops.actions", f->actions);
    treplay(bin, m.brokers, "ops.states", f->history);
    struct tdaemon d;
    tdaemon_config(&d, "recd-e2e", m.brokers, "recd-e2e", REC_YAML);
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_metric(&d, "understudy_recommend_leader", 1, 20);
    wait_stored(c, f->n_actions, HISTORY, d.log);
    assert_int_equal((long)tdaemon_metric(&d, "understudy_recommend_policy_version"), 0);
    /* Let the recommender see the end of the history before a champion
     * exists (it polls every 200 ms and is woken by ingest's NOTIFY). */
    tsleep_ms(1500);

    const char *train[] = {"train", "--from-db", "--promote", "--rounds", "30", NULL};
    json_t *j = run_json(dsn, train);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "promoted")));
    int v = (int)json_integer_value(json_object_get(j, "version"));
    json_decref(j);
    assert_true(v > 0);
    tdaemon_wait_metric(&d, "understudy_recommend_policy_version", v, 20);

    /* The snapshots ingested before the promotion get nothing. */
    tsleep_ms(500);
    assert_int_equal(tcount(c, "recommendations") + tcount(c, "abstentions"), 0);

    treplay(bin, m.brokers, "ops.states", fresh);
    long n_new = 6000 - HISTORY;
    wait_scored(c, LAST_HISTORY_ID, v, n_new, 60, d.log);

    assert_one_row_each(c, LAST_HISTORY_ID, v, n_new);
    assert_no_duplicates(c);
    assert_cooldown(c, v);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM " UNION_ROWS " u WHERE u.state_event_id <= '%s'",
             LAST_HISTORY_ID);
    assert_int_equal(query_long(c, sql), 0);

    struct rec_summary s = check_recommendations(c, v);
    long abst = check_abstentions(c, v);
    assert_int_equal(s.rows + abst, n_new);
    assert_true(s.open > 0);
    assert_true(s.sized > 0);
    assert_int_equal(tcount(c, "recommendations_open"), s.open);
    assert_true(query_long(c, "SELECT count(*) FROM abstentions WHERE reason = 'hold'") > 0);
    assert_true(query_long(c, "SELECT count(*) FROM abstentions WHERE reason = 'cooldown'") > 0);
    /* Every open row is the entity's newest recommendation. */
    assert_int_equal(query_long(c, "SELECT count(*) FROM recommendations o WHERE o.status = 'open'"
                                   " AND EXISTS (SELECT 1 FROM recommendations n"
                                   " WHERE n.entity_type = o.entity_type"
                                   " AND n.entity_id = o.entity_id"
                                   " AND n.snapshot_ts > o.snapshot_ts)"),
                     0);

    /* The daemon's counters agree with the tables. */
    tdaemon_wait_metric(&d, "understudy_recommend_open_total", (double)s.rows, 10);
    PGresult *r = query_rows(c, "SELECT reason, count(*) FROM abstentions GROUP BY reason");
    for (int i = 0; i < PQntuples(r); i++) {
        char series[160];
        snprintf(series, sizeof series, "understudy_recommend_abstentions_total{reason=\"%s\"}",
                 PQgetvalue(r, i, 0));
        assert_int_equal((long)tdaemon_metric(&d, series), strtol(PQgetvalue(r, i, 1), NULL, 10));
    }
    PQclear(r);

    assert_int_equal(tdaemon_stop(&d, SIGTERM, 20), 0);
    tmock_stop(&m);
    PQfinish(c);
    print_message("took %.1f s\n", now_s() - t0);
}

/* ---- 2: SIGKILL mid-stream ----------------------------------------------------------------- */

static void test_recommend_daemon_sigkill_restart(void **state)
{
    (void)state;
    double t0 = now_s();
    int v = base_db();
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512], batch[600], rlog[600];
    sim_slice("kill-new", HISTORY + 1, SIM_ROWS, batch, sizeof batch);
    snprintf(rlog, sizeof rlog, "%s/recd-kill-replay.log", testenv_get("UNDERSTUDY_TEST_TMP"));
    clone_db(BASE_DB, "understudy_t_recd_kill", dsn, sizeof dsn);
    PGconn *c = testenv_connect(dsn);
    long n_new = SIM_ROWS - HISTORY;

    struct tmock m;
    tmock_start(&m, TOPICS, 3);
    struct tdaemon d;
    tdaemon_config(&d, "recd-kill", m.brokers, "recd-kill", REC_YAML);
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_metric(&d, "understudy_recommend_policy_version", v, 20);
    /* A first start begins at the end of what is stored. */
    assert_int_equal(query_long(c, "SELECT scored_through FROM recommender_progress"),
                     query_long(c, "SELECT max(id) FROM state_events"));

    pid_t rp = treplay_start(bin, m.brokers, "ops.states", batch, 500, rlog);
    /* Kill once scoring is under way and well before the batch is in. */
    long rows = 0;
    for (int i = 0; i < 600; i++) {
        rows = tcount(c, "recommendations") + tcount(c, "abstentions");
        if (rows >= 100)
            break;
        tsleep_ms(20);
    }
    assert_int_equal(tdaemon_stop(&d, SIGKILL, 10), 128 + SIGKILL);
    long rows_at_kill = tcount(c, "recommendations") + tcount(c, "abstentions");
    long stored_at_kill = tcount(c, "state_events") - HISTORY;
    print_message("killed with %ld of %ld snapshots stored, %ld scored\n", stored_at_kill, n_new,
                  rows_at_kill);
    assert_true(rows >= 100);
    assert_true(stored_at_kill < n_new - 1000);
    assert_true(rows_at_kill < n_new);

    tdaemon_start(&d, bin, dsn, NULL);
    wait_stored(c, sim_files()->n_actions, SIM_ROWS, d.log);
    wait_scored(c, LAST_HISTORY_ID, v, n_new, 60, d.log);
    int st = 0;
    assert_int_equal(waitpid(rp, &st, 0), rp);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    assert_one_row_each(c, LAST_HISTORY_ID, v, n_new);
    assert_no_duplicates(c);
    assert_cooldown(c, v);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM " UNION_ROWS " u WHERE u.state_event_id <= '%s'",
             LAST_HISTORY_ID);
    assert_int_equal(query_long(c, sql), 0);
    /* The restart resumed from the stored progress, not from a new end. */
    assert_int_equal(count_in_file(d.log, "recommend: starting after state_events.id"), 1);
    assert_true(tcount(c, "recommendations_open") > 0);

    assert_int_equal(tdaemon_stop(&d, SIGTERM, 20), 0);
    tmock_stop(&m);
    PQfinish(c);
    print_message("took %.1f s\n", now_s() - t0);
}

/* ---- 3: promotion without a restart --------------------------------------------------------- */

static void test_recommend_daemon_hot_reload(void **state)
{
    (void)state;
    double t0 = now_s();
    int v1 = base_db();
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512], first[600], second[600];
    sim_slice("reload-1", HISTORY + 1, 5400, first, sizeof first);
    sim_slice("reload-2", 5401, 6000, second, sizeof second);
    clone_db(BASE_DB, "understudy_t_recd_reload", dsn, sizeof dsn);
    PGconn *c = testenv_connect(dsn);

    struct tmock m;
    tmock_start(&m, TOPICS, 3);
    struct tdaemon d;
    tdaemon_config(&d, "recd-reload", m.brokers, "recd-reload", REC_YAML);
    tdaemon_start(&d, bin, dsn, NULL);
    pid_t pid = d.pid;
    tdaemon_wait_metric(&d, "understudy_recommend_policy_version", v1, 20);
    treplay(bin, m.brokers, "ops.states", first);
    wait_scored(c, LAST_HISTORY_ID, v1, 600, 60, d.log);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM recommendations WHERE status = 'open' AND policy_version = %d",
             v1);
    long open_v1 = query_long(c, sql);
    assert_true(open_v1 > 0);
    /* The snapshots whose v1 recommendation is open: re-scored at promotion. */
    assert_int_equal(
        query_long(c, "CREATE TEMPORARY TABLE was_open AS SELECT state_event_id FROM"
                      " recommendations WHERE status = 'open'; SELECT count(*) FROM was_open"),
        open_v1);

    /* A second version, registered without promotion: nothing changes. */
    const char *train[] = {"train", "--from-db", "--rounds", "45", NULL};
    json_t *j = run_json(dsn, train);
    assert_non_null(j);
    assert_true(json_is_false(json_object_get(j, "promoted")));
    int v2 = (int)json_integer_value(json_object_get(j, "version"));
    json_decref(j);
    assert_true(v2 > v1);
    tsleep_ms(500);
    assert_int_equal((long)tdaemon_metric(&d, "understudy_recommend_policy_version"), v1);

    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%d", v2);
    const char *promote[] = {"model", "promote", "--version", vbuf, NULL};
    json_decref(run_json(dsn, promote));
    tdaemon_wait_metric(&d, "understudy_recommend_policy_version", v2, 20);
    int st = 0;
    assert_false(tdaemon_exited(&d, &st));
    assert_int_equal(d.pid, pid);
    assert_int_equal(kill(pid, 0), 0);
    assert_int_equal(count_in_file(d.log, "metrics: listening on port"), 1);

    /* Re-scoring ends with no open v1 row; each re-scored snapshot has
     * exactly one v2 row and its v1 row is superseded. */
    wait_sql(c, sql, 0, 20, d.log);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM was_open w WHERE (SELECT count(*) FROM " UNION_ROWS
             " u WHERE u.state_event_id = w.state_event_id AND u.policy_version = %d) = 1",
             v2);
    assert_int_equal(query_long(c, sql), open_v1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM was_open w JOIN recommendations r USING (state_event_id)"
             " WHERE r.policy_version = %d AND r.status = 'superseded'",
             v1);
    assert_int_equal(query_long(c, sql), open_v1);
    /* Only those were re-scored. */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM " UNION_ROWS " u WHERE u.policy_version = %d",
             v2);
    assert_int_equal(query_long(c, sql), open_v1);

    /* New snapshots are scored with v2 only. */
    treplay(bin, m.brokers, "ops.states", second);
    wait_scored(c, "st-0000005400", v2, 600, 60, d.log);
    assert_one_row_each(c, "st-0000005400", v2, 600);
    assert_int_equal(scored_after(c, "st-0000005400", v1), 0);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM recommendations WHERE status = 'open' AND policy_version = %d",
             v1);
    assert_int_equal(query_long(c, sql), 0);
    assert_no_duplicates(c);
    assert_cooldown(c, v2);
    struct rec_summary s = check_recommendations(c, v2);
    check_abstentions(c, v2);
    assert_true(s.open > 0);
    assert_int_equal(d.pid, pid);

    assert_int_equal(tdaemon_stop(&d, SIGTERM, 20), 0);
    tmock_stop(&m);
    PQfinish(c);
    print_message("took %.1f s\n", now_s() - t0);
}

/* ---- 4: two daemons, one group ----------------------------------------------------------------
 */

static void test_recommend_daemon_one_leader(void **state)
{
    (void)state;
    double t0 = now_s();
    int v = base_db();
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512], first[600], second[600];
    sim_slice("pair-1", HISTORY + 1, 5400, first, sizeof first);
    sim_slice("pair-2", 5401, 6000, second, sizeof second);
    clone_db(BASE_DB, "understudy_t_recd_pair", dsn, sizeof dsn);
    PGconn *c = testenv_connect(dsn);

    struct tmock m;
    tmock_start(&m, TOPICS, 3);
    struct tdaemon a, b;
    tdaemon_config(&a, "recd-pair-a", m.brokers, "recd-pair", REC_YAML);
    tdaemon_config(&b, "recd-pair-b", m.brokers, "recd-pair", REC_YAML);
    tdaemon_start(&a, bin, dsn, NULL);
    tdaemon_start(&b, bin, dsn, NULL);
    /* One of them takes the lock and loads the champion. */
    double va = -1, vb = -1;
    for (int i = 0; i < 200; i++) {
        va = tdaemon_metric(&a, "understudy_recommend_policy_version");
        vb = tdaemon_metric(&b, "understudy_recommend_policy_version");
        if (fabs(va - v) < 1e-9 || fabs(vb - v) < 1e-9)
            break;
        tsleep_ms(100);
    }
    assert_true(fabs(va - v) < 1e-9 || fabs(vb - v) < 1e-9);

    treplay(bin, m.brokers, "ops.states", first);
    wait_scored(c, LAST_HISTORY_ID, v, 600, 60, a.log);
    double la = tdaemon_metric(&a, "understudy_recommend_leader");
    double lb = tdaemon_metric(&b, "understudy_recommend_leader");
    assert_true((fabs(la - 1) < 1e-9 && fabs(lb) < 1e-9) ||
                (fabs(lb - 1) < 1e-9 && fabs(la) < 1e-9));
    struct tdaemon *leader = la > 0.5 ? &a : &b, *other = la > 0.5 ? &b : &a;
    /* The other neither loaded a policy nor wrote anything. */
    assert_int_equal((long)tdaemon_metric(other, "understudy_recommend_policy_version"), 0);
    assert_int_equal((long)tdaemon_metric(other, "understudy_recommend_open_total"), 0);
    assert_int_equal((long)tdaemon_metric(leader, "understudy_recommend_open_total"),
                     tcount(c, "recommendations"));
    assert_one_row_each(c, LAST_HISTORY_ID, v, 600);
    assert_no_duplicates(c);
    /* A snapshot scored after a newer one of its entity (a late commit)
     * does not see that one in its cooldown.  Reported. */
    print_message("cooldown breaches: %ld\n", cooldown_breaches(c, v));
    /* Two ingesting instances commit ids out of order; the fast path
     * re-reads the ids it stepped over on every wake, so nothing waits for
     * the catch-up pass (every 30 s): nothing is scored 10 s late. */
    PGresult *lat = query_rows(
        c, "SELECT count(*) FILTER (WHERE u.created_at - s.ingested_at > interval '10 s'),"
           " coalesce(extract(epoch FROM max(u.created_at - s.ingested_at)), 0)"
           " FROM (SELECT state_event_id, created_at FROM recommendations UNION ALL"
           " SELECT state_event_id, created_at FROM abstentions) u"
           " JOIN state_events s ON s.event_id = u.state_event_id");
    print_message("%s of 600 snapshots scored more than 10 s after ingest (max %.1f s)\n",
                  PQgetvalue(lat, 0, 0), strtod(PQgetvalue(lat, 0, 1), NULL));
    assert_string_equal(PQgetvalue(lat, 0, 0), "0");
    PQclear(lat);

    /* The leader leaves: the other takes the lock over and scores what follows. */
    assert_int_equal(tdaemon_stop(leader, SIGTERM, 20), 0);
    tdaemon_wait_metric(other, "understudy_recommend_leader", 1, 20);
    tdaemon_wait_metric(other, "understudy_recommend_policy_version", v, 10);
    treplay(bin, m.brokers, "ops.states", second);
    wait_scored(c, LAST_HISTORY_ID, v, 1200, 60, other->log);
    assert_one_row_each(c, LAST_HISTORY_ID, v, 1200);
    assert_no_duplicates(c);
    print_message("cooldown breaches: %ld\n", cooldown_breaches(c, v));

    assert_int_equal(tdaemon_stop(other, SIGTERM, 20), 0);
    tmock_stop(&m);
    PQfinish(c);
    print_message("took %.1f s\n", now_s() - t0);
}

/*
 * recommend.publish: every recommendation still open when its batch
 * committed is produced once to ops.recommendations, keyed by entity_id,
 * as the row's JSON; kcat (an independent client) reads them back.
 */
static void test_recommend_daemon_publishes_open_recommendations(void **state)
{
    (void)state;
    int v = base_db();
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dsn[512], slice[600];
    sim_slice("publish", HISTORY + 1, 5400, slice, sizeof slice);
    clone_db(BASE_DB, "understudy_t_recd_publish", dsn, sizeof dsn);
    PGconn *c = testenv_connect(dsn);

    struct tmock m;
    tmock_start(&m, TOPICS ",ops.recommendations", 3);
    struct tdaemon d;
    tdaemon_config(&d, "recd-publish", m.brokers, "recd-publish",
                   "recommend:\n  poll_interval: 200ms\n  publish: true\n");
    tdaemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_metric(&d, "understudy_recommend_policy_version", v, 20);
    treplay(bin, m.brokers, "ops.states", slice);
    wait_scored(c, LAST_HISTORY_ID, v, 600, 60, d.log);
    long written = tcount(c, "recommendations");
    assert_true(written > 0);
    /* Deliveries are acknowledged after the commit; wait for them. */
    long open_now = query_long(c, "SELECT count(*) FROM recommendations WHERE status = 'open'");
    double delivered = 0;
    for (int i = 0; i < 100 && delivered < (double)open_now; i++) {
        delivered =
            tdaemon_metric(&d, "understudy_recommend_published_total{result=\"delivered\"}");
        if (delivered < (double)open_now)
            tsleep_ms(100);
    }
    assert_true(tdaemon_metric(&d, "understudy_recommend_published_total{result=\"failed\"}") <
                0.5);

    static long long ids[4096];
    const char *argv[] = {"kcat", "-C", "-b", m.brokers,  "-t", "ops.recommendations",
                          "-e",   "-q", "-f", "%k\t%s\n", NULL};
    char *out = NULL, *err = NULL;
    int rc = testenv_run(argv, NULL, &out, &err);
    if (rc != 0)
        fail_msg("kcat exited %d: %s", rc, err);
    long n = 0;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *tab = strchr(l, '\t');
        assert_non_null(tab);
        *tab = '\0';
        json_error_t je;
        json_t *j = json_loads(tab + 1, 0, &je);
        if (!j)
            fail_msg("message %ld is not JSON (%s): %s", n + 1, je.text, tab + 1);
        const char *entity = json_string_value(json_object_get(j, "entity_id"));
        assert_non_null(entity);
        assert_string_equal(l, entity); /* the key */
        assert_string_equal(json_string_value(json_object_get(j, "status")), "open");
        assert_int_equal(json_integer_value(json_object_get(j, "policy_version")), v);
        assert_non_null(json_string_value(json_object_get(j, "explanation")));
        /* The message is that row, and the row exists once. */
        long long id = (long long)json_integer_value(json_object_get(j, "id"));
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM recommendations WHERE id = %lld AND entity_id = '%s'", id,
                 entity);
        assert_int_equal(query_long(c, sql), 1);
        assert_true(n < (long)(sizeof ids / sizeof ids[0]));
        ids[n] = id;
        json_decref(j);
        n++;
    }
    free(out);
    free(err);
    assert_true(n > 0);
    assert_int_equal((long)delivered, n);
    /* Each row once, and every row open now was published. */
    char *list = malloc((size_t)n * 24 + 160);
    assert_non_null(list);
    size_t at = (size_t)sprintf(list, "SELECT count(*) FROM recommendations WHERE status = 'open'"
                                      " AND id <> ALL('{");
    for (long i = 0; i < n; i++) {
        for (long k = 0; k < i; k++)
            assert_true(ids[k] != ids[i]);
        at += (size_t)sprintf(list + at, "%s%lld", i ? "," : "", ids[i]);
    }
    strcpy(list + at, "}'::bigint[])");
    assert_int_equal(query_long(c, list), 0);
    free(list);
    assert_true(n <= written);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 20), 0);
    tmock_stop(&m);
    PQfinish(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recommend_daemon_end_to_end),
        cmocka_unit_test(test_recommend_daemon_sigkill_restart),
        cmocka_unit_test(test_recommend_daemon_hot_reload),
        cmocka_unit_test(test_recommend_daemon_one_leader),
        cmocka_unit_test(test_recommend_daemon_publishes_open_recommendations),
    };
    return cmocka_run_group_tests_name("recommend_daemon", tests, NULL, NULL);
}
