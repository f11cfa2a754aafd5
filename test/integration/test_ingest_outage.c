/*
 * Integration: the ingest daemon through outages, against real PostgreSQL
 * and a private mock Kafka cluster per test.
 *
 *  - PostgreSQL stopped with `pg_ctl stop -m immediate` for 20 s while a
 *    rate-limited replay keeps the stream going: the daemon pauses, stays
 *    alive and healthy but not ready, resumes by itself once the database is
 *    back, and loses nothing.
 *  - Two daemons in one consumer group, one of them stopped mid-stream
 *    (SIGTERM, then SIGKILL in a second test): the survivor takes over the
 *    partitions, nothing is lost and nothing is stored twice.
 *
 * The cluster is shared with the other integration binaries, so the fixture's
 * teardown starts PostgreSQL again whenever a test left it down, and kills
 * whatever children a failed test left running.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tdaemon.h"
#include "testenv.h"

#define TOPICS "ops.actions,ops.states,ops.feedback"

/* What one test started; the teardown cleans up after a failed test. */
struct outage_fx {
    struct tmock mock;
    int mock_up;
    struct tdaemon d[2];
    pid_t replay[2];
    int pg_down; /* set before stopping the cluster, cleared once it is up */
};

/* ---- processes ------------------------------------------------------------ */

static int fx_setup(void **state)
{
    struct outage_fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->d[0].pid = f->d[1].pid = -1;
    f->replay[0] = f->replay[1] = -1;
    *state = f;
    return 0;
}

static int pg_accepts_connections(void)
{
    const char *admin = getenv("UNDERSTUDY_TEST_PG_ADMIN");
    return admin && PQping(admin) == PQPING_OK;
}

/* Runs the environment's pg_ctl wrapper with "start" or "stop -m immediate";
 * returns its exit status and keeps its output for a failure message. */
static int pg_ctl(const char *action, char *out, size_t outlen)
{
    const char *ctl = testenv_get("UNDERSTUDY_TEST_PG_CTL");
    const char *start[] = {ctl, "start", NULL};
    const char *stop[] = {ctl, "stop", "-m", "immediate", NULL};
    char *o = NULL, *e = NULL;
    int rc = testenv_run(strcmp(action, "start") == 0 ? start : stop, NULL, &o, &e);
    snprintf(out, outlen, "%s%s", o ? o : "", e ? e : "");
    free(o);
    free(e);
    return rc;
}

static int fx_teardown(void **state)
{
    struct outage_fx *f = *state;
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        if (f->replay[i] > 0) {
            kill(f->replay[i], SIGKILL);
            waitpid(f->replay[i], NULL, 0);
        }
        if (f->d[i].pid > 0)
            (void)tdaemon_stop(&f->d[i], SIGKILL, 10);
    }
    if (f->mock_up) {
        kill(f->mock.pid, SIGKILL);
        waitpid(f->mock.pid, NULL, 0);
    }
    if (f->pg_down && !pg_accepts_connections()) {
        char out[2048];
        if (pg_ctl("start", out, sizeof out) != 0 || !pg_accepts_connections()) {
            fprintf(stderr, "teardown: PostgreSQL did not start again: %s\n", out);
            rc = -1;
        }
    }
    free(f);
    return rc;
}

/* Waits for a background replay; returns its exit status, or -1 after
 * timeout_s (the replay is then killed).  Clears *pid either way. */
static int replay_wait(pid_t *pid, int timeout_s)
{
    int st = 0;
    for (int i = 0; i < timeout_s * 10; i++) {
        pid_t r = waitpid(*pid, &st, WNOHANG);
        if (r == *pid) {
            *pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0 && errno != EINTR)
            break;
        tsleep_ms(100);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = -1;
    return -1;
}

/* The last len-1 bytes of a file, for failure messages. */
static const char *file_tail(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return buf;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > (long)len - 1 ? size - ((long)len - 1) : 0;
        if (fseek(f, from, SEEK_SET) == 0) {
            size_t n = fread(buf, 1, len - 1, f);
            buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

struct ready_wait {
    struct tdaemon *d;
    int code;
    int exited, status;
    char body[256];
};

static int ready_cond(void *ud)
{
    struct ready_wait *w = ud;
    if (w->exited || tdaemon_exited(w->d, &w->status)) {
        w->exited = 1;
        return 1;
    }
    char *b = tdaemon_http(w->d, "/readyz", &w->code);
    snprintf(w->body, sizeof w->body, "%s", b ? b : "(no answer)");
    free(b);
    return w->code == 200;
}

/* Like tdaemon_wait_ready, but the failure names /readyz's last answer and
 * quotes the daemon's log, which lives in a directory removed after the run. */
static void wait_ready(struct tdaemon *d, int timeout_s)
{
    char tail[2048];
    struct ready_wait w = {d, 0, 0, 0, ""};
    int ok = twait_until(ready_cond, &w, timeout_s);
    if (w.exited)
        fail_msg("the daemon exited with status %d: %s", w.status,
                 file_tail(d->log, tail, sizeof tail));
    if (!ok)
        fail_msg("the daemon was not ready in %d s (/readyz: %d %s): %s", timeout_s, w.code, w.body,
                 file_tail(d->log, tail, sizeof tail));
}

/* ---- metrics ---------------------------------------------------------------- */

/* A per-topic counter, e.g. family "understudy_ingest_consumed_total". */
static double topic_metric(const char *body, const char *family, const char *topic)
{
    char s[256];
    snprintf(s, sizeof s, "%s{topic=\"%s\"}", family, topic);
    return tdaemon_metric_value(body, s);
}

static double dead_metric(const char *body, const char *topic, const char *reason)
{
    char s[256];
    snprintf(s, sizeof s, "understudy_ingest_dead_letters_total{topic=\"%s\",reason=\"%s\"}", topic,
             reason);
    return tdaemon_metric_value(body, s);
}

static double dead_metric_sum(const char *body, const char *topic)
{
    static const char *const reasons[] = {"size", "encoding", "json", "contract", "database"};
    double sum = 0;
    for (size_t r = 0; r < sizeof reasons / sizeof reasons[0]; r++) {
        double v = dead_metric(body, topic, reasons[r]);
        if (v > 0)
            sum += v;
    }
    return sum;
}

/* Per-topic totals of one daemon, from /metrics or from its exit log line. */
struct totals {
    long consumed, stored, duplicates, dead;
};

static int totals_from_metrics(const struct tdaemon *d, const char *topic, struct totals *t)
{
    int code = 0;
    char *body = tdaemon_http(d, "/metrics", &code);
    if (!body || code != 200) {
        free(body);
        return -1;
    }
    t->consumed = (long)topic_metric(body, "understudy_ingest_consumed_total", topic);
    t->stored = (long)topic_metric(body, "understudy_ingest_stored_total", topic);
    t->duplicates = (long)topic_metric(body, "understudy_ingest_duplicates_total", topic);
    t->dead = (long)dead_metric_sum(body, topic);
    free(body);
    return 0;
}

/* The daemon logs "run: TOPIC: N consumed, N stored, N duplicates, N dead
 * letters" per topic when it exits; the last such line of its log. */
static int totals_from_exit_log(const char *log, const char *topic, struct totals *t)
{
    char needle[160], line[4096];
    int found = 0;
    snprintf(needle, sizeof needle, "run: %s: ", topic);
    FILE *f = fopen(log, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, needle);
        if (p && sscanf(p + strlen(needle), "%ld consumed, %ld stored, %ld duplicates, %ld dead",
                        &t->consumed, &t->stored, &t->duplicates, &t->dead) == 4)
            found = 1;
    }
    fclose(f);
    return found ? 0 : -1;
}

/* ---- database checks ---------------------------------------------------------- */

/* What one topic was fed, and where its events land. */
struct stream {
    const char *topic;
    const char *table;
    const char *prefix; /* event ids are "<prefix>-<1..unique>" */
    struct tgen_counts c;
};

static long query_long(PGconn *c, const char *sql)
{
    char *v = testenv_query_value(c, sql);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

static long next_offset_sum(PGconn *c, const char *group, const char *topic)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(sum(next_offset), 0) FROM ingest_offsets"
             " WHERE group_id = '%s' AND topic = '%s'",
             group, topic);
    return query_long(c, sql);
}

/*
 * Exact accounting of one topic in PostgreSQL: every unique event present
 * (0 lost), one row per event id, one dead letter per bad line and none
 * blaming the database, and the stored positions covering every message.
 */
static void assert_stream_exact(PGconn *c, const char *group, const struct stream *s)
{
    char sql[1024], where[512];
    long rows = tcount(c, s->table);
    snprintf(sql, sizeof sql,
             "SELECT count(DISTINCT event_id) FROM %s WHERE event_id ~ '^%s-[0-9]+$'"
             " AND substr(event_id, %zu)::bigint BETWEEN 1 AND %zu",
             s->table, s->prefix, strlen(s->prefix) + 2, s->c.unique);
    long expected_ids = query_long(c, sql);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT event_id) FROM %s", s->table);
    long distinct = query_long(c, sql);
    if (rows != (long)s->c.unique || expected_ids != (long)s->c.unique || distinct != rows) {
        /* Name the hole: after a lost batch it is one run of ids. */
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(min(i) || '..' || max(i), 'none') FROM generate_series(1, %zu) i"
                 " WHERE NOT EXISTS (SELECT 1 FROM %s WHERE event_id = '%s-' || i)",
                 s->c.unique, s->table, s->prefix);
        char *missing = testenv_query_value(c, sql);
        fail_msg("%s: %ld rows, %ld distinct ids, %ld of the %zu expected ids (lost %ld: ids "
                 "%s-%s missing); the stored positions cover %ld of %zu messages",
                 s->table, rows, distinct, expected_ids, s->c.unique,
                 (long)s->c.unique - expected_ids, s->prefix, missing,
                 next_offset_sum(c, group, s->topic), s->c.lines);
    }

    /* A message is never dead-lettered because the database was down; checked
     * before the count so that such a letter is named. */
    snprintf(where, sizeof where,
             "dead_letters WHERE topic = '%s' AND (sqlstate IS NOT NULL"
             " OR reason ILIKE '%%database%%' OR reason ILIKE '%%postgres%%'"
             " OR reason ILIKE '%%connection%%' OR reason ILIKE '%%server%%')",
             s->topic);
    long db_dead = tcount(c, where);
    if (db_dead != 0) {
        snprintf(sql, sizeof sql, "SELECT reason FROM %s ORDER BY id LIMIT 1", where);
        fail_msg("%ld dead letter(s) of %s blame the database, e.g. \"%s\"", db_dead, s->topic,
                 testenv_query_value(c, sql));
    }
    snprintf(where, sizeof where, "dead_letters WHERE topic = '%s'", s->topic);
    assert_int_equal(tcount(c, where), (long)s->c.bad);
    assert_int_equal(next_offset_sum(c, group, s->topic), (long)s->c.lines);
}

struct offsets_wait {
    PGconn *conn;
    const char *group;
    const struct stream *s;
    size_t n;
};

/* True when the positions stored in PostgreSQL cover every message. */
static int offsets_complete(void *ud)
{
    struct offsets_wait *w = ud;
    for (size_t i = 0; i < w->n; i++) {
        if (next_offset_sum(w->conn, w->group, w->s[i].topic) < (long)w->s[i].c.lines)
            return 0;
    }
    return 1;
}

/* ---- issue test 3: PostgreSQL down for 20 s mid-stream --------------------- */

#define OUTAGE_SECONDS 20

/* What the test saw while PostgreSQL was down; asserted only after the
 * cluster is up again, so a failure never leaves it stopped. */
struct outage_obs {
    int samples;      /* one a second */
    int late_samples; /* after a grace period of 3 s */
    int dead;         /* the daemon exited (status in dead_status) */
    int dead_status;
    int not_paused;  /* late samples without understudy_ingest_paused 1 */
    int not_503;     /* late samples where /readyz did not answer 503 */
    int no_db_why;   /* late 503s that did not say "database unavailable" */
    int not_healthy; /* samples where /healthz did not answer 200 */
    double consumed_at_stop;
    double retries_early, retries_late; /* at 3 s and at the end */
    double db_dead_letters;             /* the "database" dead-letter class */
    char readyz_body[256];
};

static void observe_outage(struct tdaemon *d, const char *topic, struct outage_obs *o)
{
    char series[256];
    snprintf(series, sizeof series,
             "understudy_ingest_dead_letters_total{topic=\"%s\","
             "reason=\"database\"}",
             topic);
    for (int s = 1; s <= OUTAGE_SECONDS; s++) {
        tsleep_ms(1000);
        o->samples++;
        if (tdaemon_exited(d, &o->dead_status)) {
            o->dead = 1;
            return;
        }
        int code = 0;
        char *b = tdaemon_http(d, "/healthz", &code);
        free(b);
        if (code != 200)
            o->not_healthy++;
        if (s < 3)
            continue;
        o->late_samples++;
        b = tdaemon_http(d, "/readyz", &code);
        if (code != 503) {
            o->not_503++;
        } else if (!b || !strstr(b, "database unavailable")) {
            o->no_db_why++;
        }
        snprintf(o->readyz_body, sizeof o->readyz_body, "%d %s", code, b ? b : "(no answer)");
        free(b);
        b = tdaemon_http(d, "/metrics", &code);
        if (!b || code != 200) {
            o->not_paused++;
        } else {
            /* tdaemon_metric_value returns -1 for an absent series; 0.5
             * separates the gauge's two values without comparing floats. */
            if (!(tdaemon_metric_value(b, "understudy_ingest_paused") > 0.5))
                o->not_paused++;
            double r = tdaemon_metric_value(b, "understudy_ingest_retries_total");
            if (s == 3)
                o->retries_early = r;
            o->retries_late = r;
            o->db_dead_letters = tdaemon_metric_value(b, series);
        }
        free(b);
    }
}

struct resume_wait {
    struct tdaemon *d;
    const char *topic;
    double lines;
};

/* Resumed and done: not paused, every line consumed. */
static int resumed_and_done(void *ud)
{
    struct resume_wait *w = ud;
    int code = 0;
    char *b = tdaemon_http(w->d, "/metrics", &code);
    int ok = b && code == 200 && tdaemon_metric_value(b, "understudy_ingest_paused") < 0.5 &&
             tdaemon_metric_value(b, "understudy_ingest_paused") > -0.5 &&
             topic_metric(b, "understudy_ingest_consumed_total", w->topic) >= w->lines;
    free(b);
    return ok;
}

struct consumed_wait {
    struct tdaemon *d[2];
    const struct stream *s;
    size_t n;
    double want;
    double seen;
};

/* Sum of understudy_ingest_consumed_total over the daemons and streams. */
static int consumed_at_least(void *ud)
{
    struct consumed_wait *w = ud;
    double sum = 0;
    for (int i = 0; i < 2 && w->d[i]; i++) {
        int code = 0;
        char *b = tdaemon_http(w->d[i], "/metrics", &code);
        for (size_t k = 0; b && code == 200 && k < w->n; k++) {
            double v = topic_metric(b, "understudy_ingest_consumed_total", w->s[k].topic);
            if (v > 0)
                sum += v;
        }
        free(b);
    }
    w->seen = sum;
    return sum >= w->want;
}

static void test_ingest_outage_postgres_down_20s_pauses_resumes_loses_nothing(void **state)
{
    struct outage_fx *f = *state;
    char dsn[512], path[512], rlog[512], tail[2048], out[2048];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *tmp = testenv_get("UNDERSTUDY_TEST_TMP");
    testenv_create_db("understudy_t_outage_pg", dsn, sizeof dsn);
    tmigrate(dsn);
    tmock_start(&f->mock, TOPICS, 3);
    f->mock_up = 1;

    struct stream s = {"ops.states", "state_events", "pgo", {0}};
    struct tgen g = {.kind = "state",
                     .n = 30000,
                     .first_id = 1,
                     .prefix = s.prefix,
                     .dup_rate = 0.02,
                     .bad_rate = 0.01,
                     .seed = 31};
    snprintf(path, sizeof path, "%s/outage-states.jsonl", tmp);
    snprintf(rlog, sizeof rlog, "%s/outage-replay.log", tmp);
    tgen_write(&g, path, &s.c);
    assert_true(s.c.duplicates > 300 && s.c.bad > 150);

    struct tdaemon *d = &f->d[0];
    tdaemon_config(d, "outage-pg", f->mock.brokers, "outage-pg",
                   "ingest:\n  batch_messages: 200\n  retry_max_backoff: 1s\n");
    tdaemon_start(d, bin, dsn, NULL);
    wait_ready(d, 45);

    /* 1000 lines a second: the replay is still producing when PostgreSQL
     * comes back, so the stream runs before, during and after the outage. */
    f->replay[0] =
        treplay_start(testenv_get("UNDERSTUDY_BIN"), f->mock.brokers, s.topic, path, 1000, rlog);
    struct consumed_wait cw = {{d, NULL}, &s, 1, 2000, 0};
    if (!twait_until(consumed_at_least, &cw, 30))
        fail_msg("only %.0f consumed in 30 s; daemon log: %s", cw.seen,
                 file_tail(d->log, tail, sizeof tail));

    struct outage_obs o;
    memset(&o, 0, sizeof o);
    o.consumed_at_stop =
        tdaemon_metric(d, "understudy_ingest_consumed_total{topic=\"ops.states\"}");
    f->pg_down = 1;
    int stop_rc = pg_ctl("stop", out, sizeof out);
    if (stop_rc == 0)
        observe_outage(d, s.topic, &o);
    int start_rc = pg_ctl("start", out + strlen(out), sizeof out - strlen(out));
    if (start_rc == 0)
        f->pg_down = 0;

    /* PostgreSQL is up again (or the teardown will retry): now judge. */
    if (stop_rc != 0 || start_rc != 0)
        fail_msg("pg_ctl stop exited %d, start exited %d: %s", stop_rc, start_rc, out);
    file_tail(d->log, tail, sizeof tail);
    if (o.dead)
        fail_msg("the daemon exited with status %d during the outage: %s", o.dead_status, tail);
    assert_true(o.consumed_at_stop > 0);
    if (!(o.consumed_at_stop < (double)s.c.lines))
        fail_msg("the stream was over before the outage (%.0f consumed)", o.consumed_at_stop);
    assert_int_equal(o.samples, OUTAGE_SECONDS);
    if (o.not_healthy)
        fail_msg("/healthz failed %d time(s) during the outage: %s", o.not_healthy, tail);
    if (o.not_503 || o.no_db_why)
        fail_msg("/readyz was not 503 \"database unavailable\" in %d of %d samples (last: %s): %s",
                 o.not_503 + o.no_db_why, o.late_samples, o.readyz_body, tail);
    if (o.not_paused)
        fail_msg("understudy_ingest_paused was not 1 in %d of %d samples: %s", o.not_paused,
                 o.late_samples, tail);
    if (!(o.retries_early > 0) || !(o.retries_late > o.retries_early))
        fail_msg("retries did not increase during the outage (%.0f, then %.0f): %s",
                 o.retries_early, o.retries_late, tail);
    if (o.db_dead_letters > 0.5)
        fail_msg("%.0f message(s) dead-lettered while the database was down: %s", o.db_dead_letters,
                 tail);

    /* It resumes by itself: nothing is done to the daemon. */
    struct resume_wait rw = {d, s.topic, (double)s.c.lines};
    if (!twait_until(resumed_and_done, &rw, 60))
        fail_msg("the daemon did not resume and finish in 60 s after the restart: %s",
                 file_tail(d->log, tail, sizeof tail));
    int rrc = replay_wait(&f->replay[0], 30);
    if (rrc != 0)
        fail_msg("replay exited %d: %s", rrc, file_tail(rlog, tail, sizeof tail));
    wait_ready(d, 10);

    /* The database: 0 lost, no duplicate rows, exact dead letters. */
    PGconn *c = testenv_connect(dsn);
    assert_stream_exact(c, "outage-pg", &s);
    PQfinish(c);

    /* The metrics: exact accounting across the pause, and the time paused. */
    int code = 0;
    char *b = tdaemon_http(d, "/metrics", &code);
    assert_int_equal(code, 200);
    assert_non_null(b);
    assert_int_equal((long)topic_metric(b, "understudy_ingest_consumed_total", s.topic),
                     (long)s.c.lines);
    assert_int_equal((long)topic_metric(b, "understudy_ingest_stored_total", s.topic),
                     (long)s.c.unique);
    assert_int_equal((long)topic_metric(b, "understudy_ingest_duplicates_total", s.topic),
                     (long)s.c.duplicates);
    assert_int_equal((long)dead_metric_sum(b, s.topic), (long)s.c.bad);
    assert_int_equal((long)dead_metric(b, s.topic, "database"), 0);
    double paused_s = tdaemon_metric_value(b, "understudy_ingest_paused_seconds_total");
    if (!(paused_s >= OUTAGE_SECONDS - 5))
        fail_msg("understudy_ingest_paused_seconds_total is %.1f after a %d s outage", paused_s,
                 OUTAGE_SECONDS);
    free(b);

    assert_int_equal(tdaemon_stop(d, SIGTERM, 30), 0);
    f->mock_up = 0;
    assert_int_equal(tmock_stop(&f->mock), 0);
}

/* ---- issue test 6: two daemons in one group, one stopped mid-stream -------- */

#define GROUP_PARTITIONS 6 /* per topic; 3 topics */

struct assigned_wait {
    struct tdaemon *d[2];
    double want[2];
    double seen[2];
};

/* Every listed daemon reports exactly the wanted number of partitions. */
static int assigned_equal(void *ud)
{
    struct assigned_wait *w = ud;
    int ok = 1;
    for (int i = 0; i < 2 && w->d[i]; i++) {
        w->seen[i] = tdaemon_metric(w->d[i], "understudy_ingest_assigned_partitions");
        ok = ok && (long)w->seen[i] == (long)w->want[i];
    }
    return ok;
}

static void group_handover(struct outage_fx *f, const char *name, int sig)
{
    char dsn[512], db[96], cfg_a[64], cfg_b[64], tail[2048];
    char path[2][512], rlog[2][512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *tmp = testenv_get("UNDERSTUDY_TEST_TMP");
    snprintf(db, sizeof db, "understudy_t_outage_%s", name);
    testenv_create_db(db, dsn, sizeof dsn);
    tmigrate(dsn);
    tmock_start(&f->mock, TOPICS, GROUP_PARTITIONS);
    f->mock_up = 1;

    struct stream s[2] = {{"ops.states", "state_events", "gs", {0}},
                          {"ops.actions", "action_events", "ga", {0}}};
    const struct tgen g[2] = {{.kind = "state",
                               .n = 24000,
                               .first_id = 1,
                               .prefix = s[0].prefix,
                               .dup_rate = 0.02,
                               .bad_rate = 0.01,
                               .seed = 61},
                              {.kind = "action",
                               .n = 16000,
                               .first_id = 1,
                               .prefix = s[1].prefix,
                               .dup_rate = 0.02,
                               .bad_rate = 0.01,
                               .seed = 62}};
    for (int k = 0; k < 2; k++) {
        snprintf(path[k], sizeof path[k], "%s/%s-%s.jsonl", tmp, name, g[k].kind);
        snprintf(rlog[k], sizeof rlog[k], "%s/%s-replay-%s.log", tmp, name, g[k].kind);
        tgen_write(&g[k], path[k], &s[k].c);
        assert_true(s[k].c.duplicates > 150 && s[k].c.bad > 80);
    }

    /* Same group, same brokers; the group is named after the test. */
    struct tdaemon *a = &f->d[0], *b = &f->d[1];
    snprintf(cfg_a, sizeof cfg_a, "%s-a", name);
    snprintf(cfg_b, sizeof cfg_b, "%s-b", name);
    tdaemon_config(a, cfg_a, f->mock.brokers, name, "ingest:\n  batch_messages: 200\n");
    tdaemon_config(b, cfg_b, f->mock.brokers, name, "ingest:\n  batch_messages: 200\n");
    tdaemon_start(a, bin, dsn, NULL);
    wait_ready(a, 45);
    tdaemon_start(b, bin, dsn, NULL);
    wait_ready(b, 45);
    const double all = 3 * GROUP_PARTITIONS;
    struct assigned_wait aw = {{a, b}, {all / 2, all / 2}, {0, 0}};
    if (!twait_until(assigned_equal, &aw, 45))
        fail_msg("partitions not split between the two daemons in 45 s (%.0f and %.0f)", aw.seen[0],
                 aw.seen[1]);
    wait_ready(a, 10);
    wait_ready(b, 10);

    /* About 10 s of stream on both topics. */
    f->replay[0] = treplay_start(testenv_get("UNDERSTUDY_BIN"), f->mock.brokers, s[0].topic,
                                 path[0], 2400, rlog[0]);
    f->replay[1] = treplay_start(testenv_get("UNDERSTUDY_BIN"), f->mock.brokers, s[1].topic,
                                 path[1], 1600, rlog[1]);
    double total = (double)(s[0].c.lines + s[1].c.lines);
    struct consumed_wait cw = {{a, b}, s, 2, total / 4, 0};
    if (!twait_until(consumed_at_least, &cw, 30))
        fail_msg("only %.0f of %.0f consumed in 30 s; log of a: %s", cw.seen, total,
                 file_tail(a->log, tail, sizeof tail));
    /* Both took part before the stop. */
    assert_true(tdaemon_metric(b, "understudy_ingest_batches_committed_total") > 0);
    assert_true(tdaemon_metric(a, "understudy_ingest_batches_committed_total") > 0);

    (void)consumed_at_least(&cw);
    if (!(cw.seen < total))
        fail_msg("the stream was over before the stop (%.0f consumed)", cw.seen);
    int st = tdaemon_stop(b, sig, 30);
    if (st != (sig == SIGTERM ? 0 : 128 + SIGKILL))
        fail_msg("the stopped daemon exited with status %d: %s", st,
                 file_tail(b->log, tail, sizeof tail));

    /* The survivor takes over every partition (after the session timeout
     * of 6 s when the other was killed). */
    struct assigned_wait tw = {{a, NULL}, {all, 0}, {0, 0}};
    if (!twait_until(assigned_equal, &tw, 45))
        fail_msg("the survivor has %.0f of %.0f partitions 45 s after the stop: %s", tw.seen[0],
                 all, file_tail(a->log, tail, sizeof tail));
    for (int k = 0; k < 2; k++) {
        int rc = replay_wait(&f->replay[k], 60);
        if (rc != 0)
            fail_msg("replay of %s exited %d: %s", s[k].topic, rc,
                     file_tail(rlog[k], tail, sizeof tail));
    }
    PGconn *c = testenv_connect(dsn);
    struct offsets_wait ow = {c, name, s, 2};
    if (!twait_until(offsets_complete, &ow, 60))
        fail_msg("stored positions cover %ld of %zu and %ld of %zu after 60 s: %s",
                 next_offset_sum(c, name, s[0].topic), s[0].c.lines,
                 next_offset_sum(c, name, s[1].topic), s[1].c.lines,
                 file_tail(a->log, tail, sizeof tail));
    for (int k = 0; k < 2; k++)
        assert_stream_exact(c, name, &s[k]);
    /* One position row per partition of the two topics that had traffic. */
    char where[256];
    snprintf(where, sizeof where, "ingest_offsets WHERE group_id = '%s'", name);
    assert_int_equal(tcount(c, where), 2 * GROUP_PARTITIONS);
    PQfinish(c);

    if (sig == SIGTERM) {
        /* A clean handover reads nothing twice: the two daemons' totals add
         * up to the stream exactly. */
        for (int k = 0; k < 2; k++) {
            struct totals ta = {0, 0, 0, 0}, tb = {0, 0, 0, 0};
            if (totals_from_metrics(a, s[k].topic, &ta) != 0)
                fail_msg("the survivor does not answer /metrics");
            if (totals_from_exit_log(b->log, s[k].topic, &tb) != 0)
                fail_msg("no exit totals for %s in %s: %s", s[k].topic, b->log,
                         file_tail(b->log, tail, sizeof tail));
            if (ta.stored + tb.stored != (long)s[k].c.unique ||
                ta.consumed + tb.consumed != (long)s[k].c.lines ||
                ta.duplicates + tb.duplicates != (long)s[k].c.duplicates ||
                ta.dead + tb.dead != (long)s[k].c.bad)
                fail_msg("%s: consumed %ld+%ld (want %zu), stored %ld+%ld (want %zu), "
                         "duplicates %ld+%ld (want %zu), dead %ld+%ld (want %zu)",
                         s[k].topic, ta.consumed, tb.consumed, s[k].c.lines, ta.stored, tb.stored,
                         s[k].c.unique, ta.duplicates, tb.duplicates, s[k].c.duplicates, ta.dead,
                         tb.dead, s[k].c.bad);
        }
    }
    for (int k = 0; k < 2; k++) {
        int code = 0;
        char *body = tdaemon_http(a, "/metrics", &code);
        assert_non_null(body);
        assert_int_equal((long)dead_metric(body, s[k].topic, "database"), 0);
        free(body);
    }
    assert_int_equal(tdaemon_stop(a, SIGTERM, 30), 0);
    f->mock_up = 0;
    assert_int_equal(tmock_stop(&f->mock), 0);
}

static void test_ingest_group_member_sigterm_mid_stream_no_loss_no_duplicates(void **state)
{
    group_handover(*state, "group_term", SIGTERM);
}

static void test_ingest_group_member_sigkill_mid_stream_no_loss_no_duplicates(void **state)
{
    group_handover(*state, "group_kill", SIGKILL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_ingest_outage_postgres_down_20s_pauses_resumes_loses_nothing, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_ingest_group_member_sigterm_mid_stream_no_loss_no_duplicates, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_ingest_group_member_sigkill_mid_stream_no_loss_no_duplicates, fx_setup,
            fx_teardown),
    };
    return cmocka_run_group_tests_name("ingest_outage", tests, NULL, NULL);
}
