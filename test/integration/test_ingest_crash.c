/*
 * Integration: crash safety of the ingest daemon, against real PostgreSQL
 * and a private mock Kafka cluster per scenario.
 *
 * The expected outcome does not come from the daemon: after the stream is
 * produced, kcat reads every message back with its partition and offset,
 * and the contract decoder (event_decode, a pure function) says what each
 * one must become.  From
 * that the test knows, for any per-partition position, exactly which events
 * (at the position of their first copy) and which dead letters (position,
 * key, raw bytes, reason) PostgreSQL must hold.  After every crash the
 * database must be such an exact prefix, and at the end the whole stream:
 * nothing lost, nothing duplicated, dead letters identical whatever crashed.
 *
 * Restarts rejoin the same consumer group (offsets are per group, so a fresh
 * group would bypass what is under test); each one waits for the dead
 * member's session to expire.  The four failpoint scenarios therefore run
 * side by side, each with its own database, mock cluster and daemon, so the
 * waits overlap.
 *
 * SIGTERM: a drain in the middle of a stream that is still being produced,
 * and two drains made deterministic by holding the batch's write on a table
 * lock: a second SIGTERM must end the daemon at once, and a single one must
 * end it after ingest.drain_timeout.
 *
 * Randomness (failpoint hit counts, kill moments, generated streams) comes
 * from one seed, printed at the start; UNDERSTUDY_TEST_SEED repeats a run.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "event/event.h"
#include "tdaemon.h"
#include "testenv.h"
#include "util/util.h"

#define STATUS_SIGABRT (128 + SIGABRT)
#define STATUS_SIGKILL (128 + SIGKILL)
#define STATUS_SIGTERM (128 + SIGTERM)

/* ---- small helpers ---------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* splitmix64: the test's only source of randomness, seeded explicitly. */
static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ULL;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int rng_between(uint64_t *s, int lo, int hi)
{
    return lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* The run's seed: $UNDERSTUDY_TEST_SEED to replay a failure, else the clock.
 * Every failure message carries it. */
static uint64_t run_seed(void)
{
    static uint64_t seed;
    if (seed == 0) {
        const char *env = getenv("UNDERSTUDY_TEST_SEED");
        seed = env && *env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
        if (seed == 0)
            seed = 1;
        print_message("test_ingest_crash: seed %llu (UNDERSTUDY_TEST_SEED to repeat)\n",
                      (unsigned long long)seed);
    }
    return seed;
}

static void buf_add(struct util_buf *b, const void *p, size_t n)
{
    assert_int_equal(util_buf_append(b, p, n), 0);
}

static void buf_str(struct util_buf *b, const char *s)
{
    assert_int_equal(util_buf_puts(b, s), 0);
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

/* Occurrences of needle in the lines of path from byte `from` on. */
static int log_count(const char *path, long from, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    char line[4096];
    if (fseek(f, from, SEEK_SET) == 0) {
        while (fgets(line, sizeof line, f))
            n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

/*
 * Prints the last lines of a log to stderr (the logs live in a directory
 * that is deleted with the environment) and returns a note for the failure
 * message, which cmocka cuts at about 1 KiB.  Dead-letter lines are skipped:
 * there are hundreds and they say nothing about a failure.
 */
static const char *log_tail(const char *path)
{
    enum { KEEP = 30, WIDTH = 300 };
    static char ring[KEEP][WIDTH];
    char line[4096];
    int n = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return "(no log)";
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, ": dead letter: "))
            continue;
        size_t len = strcspn(line, "\n");
        len = len < WIDTH - 1 ? len : WIDTH - 1;
        memcpy(ring[n % KEEP], line, len);
        ring[n % KEEP][len] = '\0';
        n++;
    }
    fclose(f);
    fprintf(stderr, "--- %s, last %d lines without dead letters:\n", path, n < KEEP ? n : KEEP);
    for (int i = n < KEEP ? 0 : n - KEEP; i < n; i++)
        fprintf(stderr, "  | %s\n", ring[i % KEEP]);
    fflush(stderr);
    return "(its last lines are printed above)";
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* First column of the first row of sql with $1 = param, as a long. */
static long query_long1(PGconn *c, const char *sql, const char *param)
{
    const char *params[1] = {param};
    PGresult *r = PQexecParams(c, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* One sample of the daemon's /metrics; -1 when it does not answer. */
static double daemon_metric(const struct tdaemon *d, const char *series)
{
    int code = 0;
    char *body = tdaemon_http(d, "/metrics", &code);
    double v = body && code == 200 ? tdaemon_metric_value(body, series) : -1;
    free(body);
    return v;
}

/* The daemon's "run: <topic>: N consumed" summary lines after byte `from`,
 * summed over the two topics under test. */
static long log_consumed_total(const char *path, long from)
{
    FILE *f = fopen(path, "r");
    long total = 0;
    char line[4096];
    assert_non_null(f);
    if (fseek(f, from, SEEK_SET) == 0) {
        while (fgets(line, sizeof line, f)) {
            static const char *const keys[] = {"run: ops.states: ", "run: ops.actions: "};
            for (size_t k = 0; k < 2; k++) {
                const char *p = strstr(line, keys[k]);
                if (p)
                    total += strtol(p + strlen(keys[k]), NULL, 10);
            }
        }
    }
    fclose(f);
    return total;
}

/* ---- the oracle: what Kafka holds and what each message must become ------------ */

static const char schema_sql[] =
    "CREATE SCHEMA t_crash;"
    /* Every message in Kafka: an event (event_id set) or a dead letter
     * (reason set: what the decoder says about these bytes). */
    "CREATE TABLE t_crash.msgs (topic text NOT NULL, partition integer NOT NULL,"
    " \"offset\" bigint NOT NULL, key bytea, raw bytea NOT NULL, event_id text, reason text,"
    " PRIMARY KEY (topic, partition, \"offset\"),"
    " CHECK ((event_id IS NULL) <> (reason IS NULL)));"
    /* What the database held after each crash, to prove it never changes. */
    "CREATE TABLE t_crash.snap_dl (id bigint PRIMARY KEY, topic text, partition integer,"
    " \"offset\" bigint, raw_md5 text, reason text, received_at timestamptz);"
    "CREATE TABLE t_crash.snap_ev (tbl text, id bigint, event_id text, src_partition integer,"
    " src_offset bigint, ingested_at timestamptz, PRIMARY KEY (tbl, id));";

static void copy_text_field(struct util_buf *b, const char *s)
{
    if (!s) {
        buf_str(b, "\\N");
        return;
    }
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            buf_str(b, "\\\\");
            break;
        case '\t':
            buf_str(b, "\\t");
            break;
        case '\n':
            buf_str(b, "\\n");
            break;
        case '\r':
            buf_str(b, "\\r");
            break;
        default:
            buf_add(b, s, 1);
        }
    }
}

static void copy_bytea_field(struct util_buf *b, const unsigned char *p, long n)
{
    static const char hex[] = "0123456789abcdef";
    if (n < 0) {
        buf_str(b, "\\N");
        return;
    }
    buf_str(b, "\\\\x");
    for (long i = 0; i < n; i++) {
        char pair[2] = {hex[p[i] >> 4], hex[p[i] & 15]};
        buf_add(b, pair, 2);
    }
}

/*
 * Reads the whole topic back with kcat (an independent client), decodes each
 * message with the contract decoder and loads the result into t_crash.msgs.
 * Returns the number of messages.
 */
static long oracle_load_topic(PGconn *c, const char *brokers, const char *topic,
                              enum event_kind kind)
{
    const char *argv[] = {"kcat", "-C",        "-b", brokers, "-t", topic,
                          "-o",   "beginning", "-e", "-q",    "-f", "%p %o %K %S\n%k%s\n",
                          NULL};
    char *out = NULL, *err = NULL;
    int rc = testenv_run(argv, NULL, &out, &err);
    if (rc != 0)
        fail_msg("kcat -C %s exited %d: %s", topic, rc, err);
    free(err);

    struct util_buf b;
    util_buf_init(&b);
    long n = 0;
    size_t total = strlen(out);
    const char *p = out, *end = out + total;
    while (p < end) {
        int part = -1;
        long long off = -1;
        long klen = -2, vlen = -2;
        const char *nl = strchr(p, '\n');
        if (!nl || sscanf(p, "%d %lld %ld %ld", &part, &off, &klen, &vlen) != 4)
            fail_msg("kcat output for %s: cannot parse a header at byte %ld", topic,
                     (long)(p - out));
        p = nl + 1;
        const unsigned char *key = (const unsigned char *)p;
        p += klen > 0 ? klen : 0;
        const char *val = p;
        p += vlen > 0 ? vlen : 0;
        if (p >= end || *p != '\n' || vlen < 0)
            fail_msg("kcat output for %s: message %d/%lld is cut", topic, part, off);
        p++;

        struct event ev;
        char reason[EVENT_REASON_MAX];
        memset(&ev, 0, sizeof ev);
        int d = event_decode(kind, val, (size_t)vlen, NULL, &ev, reason, sizeof reason);
        assert_true(d == 0 || d == -1);
        assert_int_equal(util_buf_printf(&b, "%s\t%d\t%lld\t", topic, part, off), 0);
        copy_bytea_field(&b, key, klen);
        buf_str(&b, "\t");
        copy_bytea_field(&b, (const unsigned char *)val, vlen);
        buf_str(&b, "\t");
        copy_text_field(&b, d == 0 ? ev.event_id : NULL);
        buf_str(&b, "\t");
        copy_text_field(&b, d == 0 ? NULL : reason);
        buf_str(&b, "\n");
        event_deinit(&ev);
        n++;
    }
    free(out);

    PGresult *r = PQexec(c, "COPY t_crash.msgs (topic, partition, \"offset\", key, raw,"
                            " event_id, reason) FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN)
        fail_msg("COPY t_crash.msgs: %s", PQerrorMessage(c));
    PQclear(r);
    if (b.len > 0 && PQputCopyData(c, b.data, (int)b.len) != 1)
        fail_msg("COPY t_crash.msgs: %s", PQerrorMessage(c));
    if (PQputCopyEnd(c, NULL) != 1)
        fail_msg("COPY t_crash.msgs: %s", PQerrorMessage(c));
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fail_msg("COPY t_crash.msgs: %s", PQerrorMessage(c));
        PQclear(r);
    }
    util_buf_deinit(&b);
    return n;
}

/*
 * Checks that Kafka holds exactly what the generator wrote for one topic:
 * the line count, the bad lines, and every event id of the generator's range
 * (unique ones plus duplicates), each id's copies in one partition (the key
 * is the entity, so "first copy" is well defined).
 */
static void oracle_check_topic(PGconn *c, const char *topic, const char *prefix,
                               const struct tgen_counts *g)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM t_crash.msgs WHERE topic = $1");
    assert_int_equal(query_long1(c, sql, topic), (long)g->lines);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM t_crash.msgs WHERE topic = $1 AND event_id IS NULL");
    assert_int_equal(query_long1(c, sql, topic), (long)g->bad);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM t_crash.msgs WHERE topic = $1 AND event_id IS NOT NULL");
    assert_int_equal(query_long1(c, sql, topic), (long)(g->unique + g->duplicates));
    snprintf(sql, sizeof sql,
             "SELECT count(DISTINCT event_id) FROM t_crash.msgs WHERE topic = $1"
             " AND event_id ~ '^%s-[0-9]+$' AND substr(event_id, %zu)::bigint BETWEEN 1 AND %zu",
             prefix, strlen(prefix) + 2, g->unique);
    assert_int_equal(query_long1(c, sql, topic), (long)g->unique);
    assert_int_equal(query_long1(c,
                                 "SELECT count(*) FROM (SELECT event_id FROM t_crash.msgs"
                                 " WHERE topic = $1 AND event_id IS NOT NULL GROUP BY event_id"
                                 " HAVING count(DISTINCT partition) > 1) x",
                                 topic),
                     0);
}

/* ---- checking the database against the oracle ---------------------------------- */

/*
 * pos: each partition's next offset for the group (0 when none is stored).
 * first: each event's first copy.  The database must hold exactly the first
 * copies and the bad messages below each partition's position.
 */
static const char check_sql[] =
    "WITH pos AS ("
    "  SELECT p.topic, p.partition, coalesce(o.next_offset, 0) AS next"
    "  FROM (SELECT DISTINCT topic, partition FROM t_crash.msgs) p"
    "  LEFT JOIN ingest_offsets o"
    "    ON o.group_id = $1 AND o.topic = p.topic AND o.partition = p.partition),"
    " first AS ("
    "  SELECT DISTINCT ON (topic, event_id) topic, partition, \"offset\", event_id"
    "  FROM t_crash.msgs WHERE event_id IS NOT NULL ORDER BY topic, event_id, \"offset\"),"
    " exp_ev AS ("
    "  SELECT f.topic, f.partition, f.\"offset\", f.event_id FROM first f"
    "  JOIN pos USING (topic, partition) WHERE f.\"offset\" < pos.next),"
    " got_ev AS ("
    "  SELECT src_topic, src_partition, src_offset, event_id FROM state_events"
    "  UNION ALL SELECT src_topic, src_partition, src_offset, event_id FROM action_events"
    "  UNION ALL SELECT src_topic, src_partition, src_offset, event_id FROM feedback_events),"
    " exp_dl AS ("
    "  SELECT m.topic, m.partition, m.\"offset\", m.key, m.raw, m.reason FROM t_crash.msgs m"
    "  JOIN pos USING (topic, partition) WHERE m.event_id IS NULL AND m.\"offset\" < pos.next),"
    " got_dl AS (SELECT topic, partition, \"offset\", key, raw, reason FROM dead_letters)"
    " SELECT"
    "  (SELECT count(*) FROM (SELECT * FROM exp_ev EXCEPT ALL SELECT * FROM got_ev) x),"
    "  (SELECT count(*) FROM (SELECT * FROM got_ev EXCEPT ALL SELECT * FROM exp_ev) x),"
    "  (SELECT count(*) FROM (SELECT * FROM exp_dl EXCEPT ALL SELECT * FROM got_dl) x),"
    "  (SELECT count(*) FROM (SELECT * FROM got_dl EXCEPT ALL SELECT * FROM exp_dl) x),"
    "  (SELECT count(*) FROM dead_letters WHERE sqlstate IS NOT NULL),"
    "  (SELECT count(*) FROM ingest_offsets o WHERE o.group_id <> $1 OR NOT EXISTS ("
    "     SELECT 1 FROM t_crash.msgs m WHERE m.topic = o.topic AND m.partition = o.partition"
    "     AND m.\"offset\" = o.next_offset - 1)),"
    "  (SELECT coalesce(sum(next), 0) FROM pos)";

struct db_state {
    long ev_missing; /* events that should be stored (first copy below the position) */
    long ev_extra;   /* stored events that should not be, or at the wrong position */
    long dl_missing; /* bad messages below the position without their dead letter */
    long dl_extra;   /* dead letters that differ from the oracle or are past it */
    long dl_db;      /* dead letters blamed on the database (none expected) */
    long bad_pos;    /* positions of another group, or not right after a real message */
    long progress;   /* sum of next offsets */
};

static void db_state_read(PGconn *c, const char *group, struct db_state *s)
{
    const char *params[1] = {group};
    PGresult *r = PQexecParams(c, check_sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("check query: %s", PQerrorMessage(c));
    long *f[] = {&s->ev_missing, &s->ev_extra, &s->dl_missing, &s->dl_extra,
                 &s->dl_db,      &s->bad_pos,  &s->progress};
    for (int i = 0; i < 7; i++)
        *f[i] = strtol(PQgetvalue(r, 0, i), NULL, 10);
    PQclear(r);
}

/* Fails unless the database is an exact prefix of the stream. */
static void db_state_assert_exact(const struct db_state *s, const char *what, const char *log)
{
    if (s->ev_missing || s->ev_extra || s->dl_missing || s->dl_extra || s->dl_db || s->bad_pos)
        fail_msg("%s (seed %llu): the database is not the exact prefix of the stream at its "
                 "positions: %ld events missing, %ld events extra or misplaced, %ld dead letters "
                 "missing, %ld dead letters extra or different, %ld database dead letters, %ld "
                 "bad positions (progress %ld); daemon log %s",
                 what, (unsigned long long)run_seed(), s->ev_missing, s->ev_extra, s->dl_missing,
                 s->dl_extra, s->dl_db, s->bad_pos, s->progress, log_tail(log));
}

/* Remembers every event and dead letter as they are now. */
static void snapshot_take(PGconn *c)
{
    exec_ok(c, "INSERT INTO t_crash.snap_dl SELECT id, topic, partition, \"offset\", md5(raw),"
               " reason, received_at FROM dead_letters ON CONFLICT (id) DO NOTHING");
    exec_ok(c, "INSERT INTO t_crash.snap_ev SELECT 'state', id, event_id, src_partition,"
               " src_offset, ingested_at FROM state_events ON CONFLICT DO NOTHING");
    exec_ok(c, "INSERT INTO t_crash.snap_ev SELECT 'action', id, event_id, src_partition,"
               " src_offset, ingested_at FROM action_events ON CONFLICT DO NOTHING");
}

/* Rows remembered by snapshot_take that are gone or changed. */
static long snapshot_changed(PGconn *c)
{
    return query_long1(
        c,
        "SELECT (SELECT count(*) FROM t_crash.snap_dl s WHERE NOT EXISTS ("
        "   SELECT 1 FROM dead_letters d WHERE d.id = s.id AND d.topic = s.topic"
        "   AND d.partition = s.partition AND d.\"offset\" = s.\"offset\""
        "   AND md5(d.raw) = s.raw_md5 AND d.reason = s.reason AND d.received_at = s.received_at))"
        " + (SELECT count(*) FROM t_crash.snap_ev s WHERE NOT EXISTS ("
        "   SELECT 1 FROM state_events e WHERE s.tbl = 'state' AND e.id = s.id"
        "   AND e.event_id = s.event_id AND e.src_partition = s.src_partition"
        "   AND e.src_offset = s.src_offset AND e.ingested_at = s.ingested_at"
        "   UNION ALL SELECT 1 FROM action_events e WHERE s.tbl = 'action' AND e.id = s.id"
        "   AND e.event_id = s.event_id AND e.src_partition = s.src_partition"
        "   AND e.src_offset = s.src_offset AND e.ingested_at = s.ingested_at))",
        NULL);
}

/* The end state: the whole stream, exactly, and nothing remembered changed. */
static void assert_complete(PGconn *c, const char *group, const struct tgen_counts *cs,
                            const struct tgen_counts *ca, const char *what, const char *log)
{
    struct db_state s;
    db_state_read(c, group, &s);
    db_state_assert_exact(&s, what, log);
    long lines = (long)(cs->lines + (ca ? ca->lines : 0));
    assert_int_equal(s.progress, lines);

    long st = tcount(c, "state_events"), ac = tcount(c, "action_events");
    long dl = tcount(c, "dead_letters");
    /* 0 lost and 0 duplicated, in plain counts as well. */
    assert_int_equal(st, (long)cs->unique);
    assert_int_equal(tcount(c, "(SELECT DISTINCT event_id FROM state_events) x"), st);
    assert_int_equal(ac, ca ? (long)ca->unique : 0);
    assert_int_equal(tcount(c, "(SELECT DISTINCT event_id FROM action_events) x"), ac);
    assert_int_equal(tcount(c, "dead_letters WHERE topic = 'ops.states'"), (long)cs->bad);
    assert_int_equal(tcount(c, "dead_letters WHERE topic = 'ops.actions'"), ca ? (long)ca->bad : 0);
    assert_int_equal(
        tcount(c, "(SELECT DISTINCT topic, partition, \"offset\" FROM dead_letters) x"), dl);
    long dups = (long)(cs->duplicates + (ca ? ca->duplicates : 0));
    assert_int_equal(st + ac + dl + dups, lines);
    long changed = snapshot_changed(c);
    if (changed != 0)
        fail_msg("%s (seed %llu): %ld rows stored before a crash were changed or removed", what,
                 (unsigned long long)run_seed(), changed);
}

/* ---- processes ------------------------------------------------------------------ */

/* Children still running when a test fails are killed by the teardown. */
#define MAX_CHILDREN 32
static pid_t children[MAX_CHILDREN];

static void child_forget(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] == pid)
            children[i] = 0;
    }
}

static void child_remember(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
    }
    fail_msg("too many child processes");
}

static void daemon_start(struct tdaemon *d, const char *bin, const char *dsn, const char *fp)
{
    tdaemon_start(d, bin, dsn, fp);
    child_remember(d->pid);
}

static int daemon_stop(struct tdaemon *d, int sig, int timeout_s)
{
    pid_t pid = d->pid;
    int st = tdaemon_stop(d, sig, timeout_s);
    child_forget(pid);
    return st;
}

static int daemon_exited(struct tdaemon *d, int *st)
{
    pid_t pid = d->pid;
    if (!tdaemon_exited(d, st))
        return 0;
    child_forget(pid);
    return 1;
}

static void mock_start(struct tmock *m)
{
    tmock_start(m, "ops.actions,ops.states,ops.feedback", 3);
    child_remember(m->pid);
}

static void mock_stop(struct tmock *m)
{
    assert_int_equal(tmock_stop(m), 0);
    child_forget(m->pid);
}

/* `understudy replay --rate` in the background, while the daemon runs. */
static pid_t replay_start(const char *bin, const char *brokers, const char *topic, const char *path,
                          int rate, const char *log)
{
    pid_t pid = treplay_start(bin, brokers, topic, path, rate, log);
    child_remember(pid);
    return pid;
}

static void replay_wait(pid_t pid, const char *log)
{
    int st = 0;
    for (int i = 0; i < 60 * 20; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            child_forget(pid);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("background replay failed (status %d): log %s", st, log_tail(log));
            return;
        }
        tsleep_ms(50);
    }
    fail_msg("background replay did not finish in 60 s: log %s", log_tail(log));
}

static int teardown_children(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    }
    return 0;
}

static int setup_group(void **state)
{
    (void)state;
    /* Aborts on purpose must not leave core files in the source tree. */
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    (void)run_seed();
    return 0;
}

/* A fresh database with the schema and the oracle's tables. */
static PGconn *db_create(const char *name, char *dsn, size_t dsnlen)
{
    testenv_create_db(name, dsn, dsnlen);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);
    exec_ok(c, schema_sql);
    return c;
}

static long progress_of(PGconn *c, const char *group)
{
    return query_long1(c,
                       "SELECT coalesce(sum(next_offset), 0) FROM ingest_offsets"
                       " WHERE group_id = $1",
                       group);
}

/* ---- issue test 2: failpoints ----------------------------------------------------- */

#define N_STATES  12000
#define N_ACTIONS 8000
#define MAX_STEPS 5

/* A step of a scenario's plan: crash at the Nth hit of the failpoint, or be
 * killed by the test after K committed batches, or run to the end. */
enum step_kind { STEP_FAILPOINT, STEP_SIGKILL, STEP_FINAL };

struct step {
    enum step_kind kind;
    int n; /* the hit (failpoint) or the batches to wait for (SIGKILL) */
};

struct scenario {
    const char *fp;
    char name[64];
    char dsn[512];
    struct tmock m;
    struct tdaemon d;
    PGconn *conn;
    struct tgen_counts cs, ca;
    long lines;
    uint64_t rng;
    struct step plan[MAX_STEPS];
    int step;
    int running;
    long progress;    /* sum of next offsets before the current step */
    int hits;         /* "failpoint hit" lines in the log so far */
    int64_t deadline; /* the current step must end by then */
    int64_t started;  /* when the scenario's setup began */
    long final_from;  /* log size when the final daemon started */
    int done;
    char history[768]; /* what happened so far, for failure messages */
};

static void scenario_note(struct scenario *sc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void scenario_note(struct scenario *sc, const char *fmt, ...)
{
    size_t len = strlen(sc->history);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sc->history + len, sizeof sc->history - len, fmt, ap);
    va_end(ap);
}

/* Seconds since the scenario began, for its history. */
static double scenario_clock(const struct scenario *sc)
{
    return (double)(now_ms() - sc->started) / 1000;
}

static void scenario_fail(struct scenario *sc, const char *what)
{
    fail_msg("%s: %s (seed %llu; steps printed above); daemon log %s", sc->name, what,
             (unsigned long long)run_seed(), log_tail(sc->d.log));
}

static void scenario_setup(struct scenario *sc, const char *fp, int idx, const char *path_s,
                           const char *path_a, const struct tgen_counts *cs,
                           const struct tgen_counts *ca)
{
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char db[96];
    memset(sc, 0, sizeof *sc);
    sc->fp = fp;
    sc->started = now_ms();
    snprintf(sc->name, sizeof sc->name, "crash-fp-%d", idx);
    snprintf(db, sizeof db, "understudy_t_crash_fp%d", idx);
    sc->conn = db_create(db, sc->dsn, sizeof sc->dsn);
    sc->cs = *cs;
    sc->ca = *ca;
    sc->lines = (long)(cs->lines + ca->lines);
    mock_start(&sc->m);
    treplay(bin, sc->m.brokers, "ops.states", path_s);
    treplay(bin, sc->m.brokers, "ops.actions", path_a);
    assert_int_equal(oracle_load_topic(sc->conn, sc->m.brokers, "ops.states", EVENT_KIND_STATE),
                     (long)cs->lines);
    assert_int_equal(oracle_load_topic(sc->conn, sc->m.brokers, "ops.actions", EVENT_KIND_ACTION),
                     (long)ca->lines);
    oracle_check_topic(sc->conn, "ops.states", "s", cs);
    oracle_check_topic(sc->conn, "ops.actions", "a", ca);
    tdaemon_config(&sc->d, sc->name, sc->m.brokers, sc->name, "ingest:\n  batch_messages: 500\n");

    /* Three crashes at the failpoint and one SIGKILL after them or between
     * them.  A crash at the Nth hit commits at most N batches, the SIGKILL
     * comes a few batches in, so the stream (40 batches and more) is never
     * exhausted before a crash is due.  Store failpoints hit up to twice per
     * batch (once per kind), so N >= 3 means at least one batch committed. */
    sc->rng = run_seed() * 1000003u + (uint64_t)idx;
    int kill_pos = rng_between(&sc->rng, 1, 3);
    for (int i = 0; i < 4; i++) {
        if (i == kill_pos) {
            sc->plan[i].kind = STEP_SIGKILL;
            sc->plan[i].n = rng_between(&sc->rng, 1, 3);
        } else {
            sc->plan[i].kind = STEP_FAILPOINT;
            sc->plan[i].n = rng_between(&sc->rng, 3, 6);
        }
    }
    sc->plan[4].kind = STEP_FINAL;
}

static void scenario_start_step(struct scenario *sc)
{
    const struct step *st = &sc->plan[sc->step];
    char fp[128];
    sc->progress = progress_of(sc->conn, sc->name);
    sc->deadline = now_ms() + 90000;
    switch (st->kind) {
    case STEP_FAILPOINT:
        snprintf(fp, sizeof fp, "%s:%d", sc->fp, st->n);
        daemon_start(&sc->d, testenv_get("UNDERSTUDY_FP_BIN"), sc->dsn, fp);
        scenario_note(sc, "[%.1fs %s", scenario_clock(sc), fp);
        break;
    case STEP_SIGKILL:
        /* The failpoint build, no failpoint armed: only the test kills it. */
        daemon_start(&sc->d, testenv_get("UNDERSTUDY_FP_BIN"), sc->dsn, NULL);
        scenario_note(sc, "[%.1fs SIGKILL after %d batches", scenario_clock(sc), st->n);
        break;
    case STEP_FINAL:
        sc->final_from = file_size(sc->d.log);
        daemon_start(&sc->d, testenv_get("UNDERSTUDY_BIN"), sc->dsn, NULL);
        scenario_note(sc, "[%.1fs final", scenario_clock(sc));
        break;
    }
    sc->running = 1;
}

/* After a crash or a kill: mid-stream, progress made, an exact prefix. */
static void scenario_after_crash(struct scenario *sc, int status, int want)
{
    char what[160];
    sc->running = 0;
    scenario_note(sc, " -> %.1fs status %d", scenario_clock(sc), status);
    if (status != want) {
        snprintf(what, sizeof what, "the daemon exited with status %d, expected %d", status, want);
        scenario_fail(sc, what);
    }
    if (sc->plan[sc->step].kind == STEP_FAILPOINT) {
        int hits = log_count(sc->d.log, 0, "failpoint hit: crashing on purpose");
        if (hits != sc->hits + 1)
            scenario_fail(sc, "the abort was not the failpoint's");
        sc->hits = hits;
    }
    struct db_state s;
    db_state_read(sc->conn, sc->name, &s);
    scenario_note(sc, ", progress %ld]", s.progress);
    snprintf(what, sizeof what, "%s: after step %d", sc->name, sc->step + 1);
    db_state_assert_exact(&s, what, sc->d.log);
    if (s.progress <= sc->progress)
        scenario_fail(sc, "the crashed run committed nothing (the crash was not mid-stream)");
    if (s.progress >= sc->lines)
        scenario_fail(sc, "the crashed run consumed the whole stream (not mid-stream)");
    snapshot_take(sc->conn);
    sc->step++;
}

static void scenario_finish(struct scenario *sc)
{
    /* The final run reads exactly what was not committed, once. */
    double consumed =
        daemon_metric(&sc->d, "understudy_ingest_consumed_total{topic=\"ops.states\"}") +
        daemon_metric(&sc->d, "understudy_ingest_consumed_total{topic=\"ops.actions\"}");
    int st = daemon_stop(&sc->d, SIGTERM, 30);
    sc->running = 0;
    scenario_note(sc, " -> %.1fs status %d]", scenario_clock(sc), st);
    if (st != 0)
        scenario_fail(sc, "the final daemon did not stop cleanly on SIGTERM");
    char what[96];
    snprintf(what, sizeof what, "%s: at the end", sc->name);
    assert_complete(sc->conn, sc->name, &sc->cs, &sc->ca, what, sc->d.log);
    if ((long)consumed != sc->lines - sc->progress) {
        char msg[160];
        snprintf(msg, sizeof msg, "the final run consumed %.0f messages, expected the %ld left",
                 consumed, sc->lines - sc->progress);
        scenario_fail(sc, msg);
    }
    assert_int_equal(log_consumed_total(sc->d.log, sc->final_from), sc->lines - sc->progress);
    PQfinish(sc->conn);
    sc->conn = NULL;
    mock_stop(&sc->m);
    sc->done = 1;
}

/* One look at a scenario; never blocks for long. */
static void scenario_advance(struct scenario *sc)
{
    int st;
    if (sc->done)
        return;
    if (!sc->running) {
        scenario_start_step(sc);
        return;
    }
    const struct step *step = &sc->plan[sc->step];
    int64_t now = now_ms();
    if (now > sc->deadline)
        scenario_fail(sc, "a step did not finish in 90 s");
    switch (step->kind) {
    case STEP_FAILPOINT:
        if (daemon_exited(&sc->d, &st))
            scenario_after_crash(sc, st, STATUS_SIGABRT);
        break;
    case STEP_SIGKILL:
        if (daemon_exited(&sc->d, &st))
            scenario_fail(sc, "the daemon exited before it was killed");
        if (daemon_metric(&sc->d, "understudy_ingest_batches_committed_total") >= step->n) {
            /* Somewhere in the next batch: polling, writing or committing. */
            tsleep_ms(rng_between(&sc->rng, 0, 60));
            scenario_after_crash(sc, daemon_stop(&sc->d, SIGKILL, 10), STATUS_SIGKILL);
        }
        break;
    case STEP_FINAL:
        if (daemon_exited(&sc->d, &st))
            scenario_fail(sc, "the final daemon exited on its own");
        if (progress_of(sc->conn, sc->name) >= sc->lines)
            scenario_finish(sc);
        break;
    }
}

#define N_FP 4
static const char *const failpoints[N_FP] = {"store.after_copy", "store.after_insert",
                                             "ingest.after_commit", "ingest.after_offsets_store"};
static struct scenario scenarios[N_FP];
static int scenarios_active;

/* On failure, what every scenario went through, then the usual cleanup. */
static int teardown_scenarios(void **state)
{
    if (scenarios_active) {
        for (int i = 0; i < N_FP; i++)
            fprintf(stderr, "%s %s: %s\n", scenarios[i].name, failpoints[i], scenarios[i].history);
        for (int i = 0; i < N_FP; i++) {
            PQfinish(scenarios[i].conn);
            scenarios[i].conn = NULL;
        }
        scenarios_active = 0;
    }
    return teardown_children(state);
}

/* Issue test 2: for each failpoint (abort after COPY, after INSERT, after
 * COMMIT before the offsets are stored, after storing them), crash the
 * daemon repeatedly mid-stream, with a SIGKILL at a random moment among the
 * crashes, then let a normal daemon finish: 0 lost, 0 duplicated, dead
 * letters exactly those of the stream, and after every crash the database is
 * an exact prefix of the stream that later runs never change. */
static void test_ingest_crash_failpoints_lose_and_duplicate_nothing(void **state)
{
    (void)state;
    struct scenario *sc = scenarios;
    char path_s[512], path_a[512];
    const char *tmp = testenv_get("UNDERSTUDY_TEST_TMP");
    (void)testenv_get("UNDERSTUDY_FP_BIN");

    struct tgen gs = {.kind = "state",
                      .n = N_STATES,
                      .first_id = 1,
                      .prefix = "s",
                      .dup_rate = 0.05,
                      .bad_rate = 0.02,
                      .seed = run_seed() | 1};
    struct tgen ga = {.kind = "action",
                      .n = N_ACTIONS,
                      .first_id = 1,
                      .prefix = "a",
                      .dup_rate = 0.05,
                      .bad_rate = 0.02,
                      .seed = run_seed() + 2};
    struct tgen_counts cs, ca;
    snprintf(path_s, sizeof path_s, "%s/crash-states.jsonl", tmp);
    snprintf(path_a, sizeof path_a, "%s/crash-actions.jsonl", tmp);
    tgen_write(&gs, path_s, &cs);
    tgen_write(&ga, path_a, &ca);
    assert_true(cs.duplicates > 300 && cs.bad > 100 && ca.duplicates > 200 && ca.bad > 80);

    /* Each scenario's first daemon joins its group while the next one is
     * being set up. */
    int64_t t0 = now_ms();
    scenarios_active = 1;
    for (int i = 0; i < N_FP; i++) {
        scenario_setup(&sc[i], failpoints[i], i, path_s, path_a, &cs, &ca);
        scenario_advance(&sc[i]);
    }
    for (;;) {
        int done = 0;
        for (int i = 0; i < N_FP; i++) {
            scenario_advance(&sc[i]);
            done += sc[i].done;
        }
        if (done == N_FP)
            break;
        tsleep_ms(20);
    }
    for (int i = 0; i < N_FP; i++)
        print_message("%s %s: %s\n", sc[i].name, sc[i].fp, sc[i].history);
    print_message("failpoint scenarios: %.1f s\n", (double)(now_ms() - t0) / 1000);
    scenarios_active = 0;
}

/* ---- issue test 5: SIGTERM ---------------------------------------------------------- */

struct progress_wait {
    PGconn *conn;
    const char *group;
    long want;
};

static int progress_reached(void *ud)
{
    struct progress_wait *w = ud;
    return progress_of(w->conn, w->group) >= w->want;
}

/* Issue test 5: SIGTERM while the stream is still being produced: the daemon
 * drains (writes what is in flight), exits 0, and what it acknowledged is
 * exactly what is in the database; a restart finishes the stream with 0
 * lost and 0 duplicated. */
static void test_ingest_crash_sigterm_mid_stream_drains_and_resumes(void **state)
{
    (void)state;
    char dsn[512], path_s[512], path_a[512], rlog_s[512], rlog_a[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    const char *tmp = testenv_get("UNDERSTUDY_TEST_TMP");
    const char *group = "crash-term";
    PGconn *c = db_create("understudy_t_crash_term", dsn, sizeof dsn);
    struct tmock m;
    mock_start(&m);

    struct tgen gs = {.kind = "state",
                      .n = 6000,
                      .first_id = 1,
                      .prefix = "s",
                      .dup_rate = 0.05,
                      .bad_rate = 0.02,
                      .seed = run_seed() + 3};
    struct tgen ga = {.kind = "action",
                      .n = 4000,
                      .first_id = 1,
                      .prefix = "a",
                      .dup_rate = 0.05,
                      .bad_rate = 0.02,
                      .seed = run_seed() + 4};
    struct tgen_counts cs, ca;
    snprintf(path_s, sizeof path_s, "%s/term-states.jsonl", tmp);
    snprintf(path_a, sizeof path_a, "%s/term-actions.jsonl", tmp);
    snprintf(rlog_s, sizeof rlog_s, "%s/term-replay-states.log", tmp);
    snprintf(rlog_a, sizeof rlog_a, "%s/term-replay-actions.log", tmp);
    tgen_write(&gs, path_s, &cs);
    tgen_write(&ga, path_a, &ca);
    long lines = (long)(cs.lines + ca.lines);

    struct tdaemon d;
    tdaemon_config(&d, group, m.brokers, group, "ingest:\n  batch_messages: 200\n");
    daemon_start(&d, bin, dsn, NULL);
    tdaemon_wait_ready(&d, 30);

    /* About 2.5 s of production; the daemon is stopped a quarter in. */
    pid_t rs = replay_start(bin, m.brokers, "ops.states", path_s, 2400, rlog_s);
    pid_t ra = replay_start(bin, m.brokers, "ops.actions", path_a, 1600, rlog_a);
    struct progress_wait pw = {c, group, lines / 4};
    if (!twait_until(progress_reached, &pw, 30))
        fail_msg("the daemon committed less than %ld messages in 30 s; daemon log %s", lines / 4,
                 log_tail(d.log));
    long term_from = file_size(d.log);
    int st = daemon_stop(&d, SIGTERM, 30);
    if (st != 0)
        fail_msg("SIGTERM: exit status %d, expected 0; daemon log %s", st, log_tail(d.log));
    assert_int_equal(log_count(d.log, term_from, "ingest: stopping: draining"), 1);
    assert_int_equal(log_count(d.log, term_from, "understudy stopped"), 1);
    long after_stop = progress_of(c, group);
    /* A clean drain: everything the run consumed was committed. */
    assert_int_equal(log_consumed_total(d.log, term_from), after_stop);

    replay_wait(rs, rlog_s);
    replay_wait(ra, rlog_a);
    if (after_stop >= lines)
        fail_msg("the daemon had consumed everything (%ld) before SIGTERM took effect: not "
                 "mid-stream",
                 after_stop);
    assert_int_equal(oracle_load_topic(c, m.brokers, "ops.states", EVENT_KIND_STATE),
                     (long)cs.lines);
    assert_int_equal(oracle_load_topic(c, m.brokers, "ops.actions", EVENT_KIND_ACTION),
                     (long)ca.lines);
    oracle_check_topic(c, "ops.states", "s", &cs);
    oracle_check_topic(c, "ops.actions", "a", &ca);
    struct db_state s;
    db_state_read(c, group, &s);
    db_state_assert_exact(&s, "after SIGTERM", d.log);
    assert_int_equal(s.progress, after_stop);
    snapshot_take(c);

    /* Restart: the rest, once. */
    long restart_from = file_size(d.log);
    daemon_start(&d, bin, dsn, NULL);
    pw.want = lines;
    if (!twait_until(progress_reached, &pw, 60))
        fail_msg("the restarted daemon did not finish in 60 s; daemon log %s", log_tail(d.log));
    assert_int_equal(daemon_stop(&d, SIGTERM, 30), 0);
    assert_complete(c, group, &cs, &ca, "after the restart", d.log);
    /* ... having read only what the first run had not acknowledged. */
    assert_int_equal(log_consumed_total(d.log, restart_from), lines - after_stop);
    PQfinish(c);
    mock_stop(&m);
}

struct lock_wait {
    PGconn *conn;
};

/* A backend of another session waits for a lock in this database. */
static int daemon_blocked_on_lock(void *ud)
{
    struct lock_wait *w = ud;
    return query_long1(w->conn,
                       "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
                       NULL) > 0;
}

static int others_gone(void *ud)
{
    struct lock_wait *w = ud;
    return query_long1(w->conn,
                       "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                       NULL) == 0;
}

struct polled_wait {
    struct tdaemon *d;
    double want;
};

static int all_polled(void *ud)
{
    struct polled_wait *w = ud;
    return daemon_metric(w->d, "understudy_ingest_polled_total") >= w->want;
}

/*
 * A stream of one topic sitting whole in one in-flight batch (a long
 * batch_wait), ready for a drain whose write the test holds on a lock.
 */
struct held {
    char dsn[512];
    const char *group;
    PGconn *conn;   /* the test's view */
    PGconn *locker; /* holds the lock the drain's write waits for */
    struct tmock m;
    struct tgen_counts cs;
    struct tdaemon d;
};

static void held_setup(struct held *h, const char *db, const char *group, const char *extra,
                       uint64_t seed)
{
    char path[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    memset(h, 0, sizeof *h);
    h->group = group;
    h->conn = db_create(db, h->dsn, sizeof h->dsn);
    h->locker = testenv_connect(h->dsn);
    mock_start(&h->m);
    struct tgen gs = {.kind = "state",
                      .n = 3000,
                      .first_id = 1,
                      .prefix = "s",
                      .dup_rate = 0.05,
                      .bad_rate = 0.02,
                      .seed = seed};
    snprintf(path, sizeof path, "%s/%s.jsonl", testenv_get("UNDERSTUDY_TEST_TMP"), group);
    tgen_write(&gs, path, &h->cs);
    treplay(bin, h->m.brokers, "ops.states", path);
    assert_int_equal(oracle_load_topic(h->conn, h->m.brokers, "ops.states", EVENT_KIND_STATE),
                     (long)h->cs.lines);
    oracle_check_topic(h->conn, "ops.states", "s", &h->cs);

    tdaemon_config(&h->d, group, h->m.brokers, group, extra);
    daemon_start(&h->d, bin, h->dsn, NULL);
    tdaemon_wait_ready(&h->d, 30);
    struct polled_wait pw = {&h->d, (double)h->cs.lines};
    if (!twait_until(all_polled, &pw, 30))
        fail_msg("the daemon did not read the stream in 30 s; daemon log %s", log_tail(h->d.log));
    assert_int_equal((long)daemon_metric(&h->d, "understudy_ingest_batches_committed_total"), 0);
}

/* Locks the offsets table (the last statement of a batch waits for it),
 * sends SIGTERM and waits until the drain's write is blocked. */
static void held_sigterm_into_blocked_drain(struct held *h)
{
    exec_ok(h->locker, "BEGIN");
    exec_ok(h->locker, "LOCK TABLE ingest_offsets IN EXCLUSIVE MODE");
    long from = file_size(h->d.log);
    assert_int_equal(kill(h->d.pid, SIGTERM), 0);
    char line[96];
    snprintf(line, sizeof line, "ingest: stopping: draining %zu in-flight message(s)", h->cs.lines);
    for (int i = 0; i < 100 && log_count(h->d.log, from, line) == 0; i++)
        tsleep_ms(50);
    if (log_count(h->d.log, from, line) != 1)
        fail_msg("no \"%s\" after SIGTERM; daemon log %s", line, log_tail(h->d.log));
    struct lock_wait lw = {h->conn};
    if (!twait_until(daemon_blocked_on_lock, &lw, 10))
        fail_msg("the drain's write never waited for the lock; daemon log %s", log_tail(h->d.log));
}

static void held_release(struct held *h)
{
    exec_ok(h->locker, "ROLLBACK");
    PQfinish(h->locker);
    h->locker = NULL;
}

/* After the daemon died without finishing its batch: nothing of it was
 * committed; a restart in the same group reads it all again, once. */
static void held_verify_then_restart(struct held *h, const char *restart_name)
{
    struct lock_wait lw = {h->conn};
    /* The abandoned transaction never commits. */
    if (!twait_until(others_gone, &lw, 10))
        fail_msg("the dead daemon's session is still there after 10 s");
    assert_int_equal(progress_of(h->conn, h->group), 0);
    assert_int_equal(tcount(h->conn, "state_events"), 0);
    assert_int_equal(tcount(h->conn, "dead_letters"), 0);

    struct tdaemon d2;
    tdaemon_config(&d2, restart_name, h->m.brokers, h->group, NULL);
    daemon_start(&d2, testenv_get("UNDERSTUDY_BIN"), h->dsn, NULL);
    struct progress_wait prw = {h->conn, h->group, (long)h->cs.lines};
    if (!twait_until(progress_reached, &prw, 60))
        fail_msg("the restarted daemon did not finish in 60 s; daemon log %s", log_tail(d2.log));
    assert_int_equal(daemon_stop(&d2, SIGTERM, 30), 0);
    assert_complete(h->conn, h->group, &h->cs, NULL, "after the restart", d2.log);
    assert_int_equal(log_consumed_total(d2.log, 0), (long)h->cs.lines);
    PQfinish(h->conn);
    h->conn = NULL;
    mock_stop(&h->m);
}

/* Issue test 5, second part: a second SIGTERM while the daemon is draining
 * exits at once with 128+15, and nothing of the unfinished batch is
 * acknowledged.  Deterministic: the whole stream sits in one in-flight batch
 * and the drain's write is held on a table lock. */
static void test_ingest_crash_second_sigterm_while_draining_exits_at_once(void **state)
{
    (void)state;
    struct held h;
    held_setup(&h, "understudy_t_crash_term2", "crash-term2",
               "ingest:\n  batch_messages: 1000000\n  batch_wait: 60s\n", run_seed() + 5);
    held_sigterm_into_blocked_drain(&h);
    int st;
    assert_int_equal(daemon_exited(&h.d, &st), 0);

    int64_t t0 = now_ms();
    st = daemon_stop(&h.d, SIGTERM, 10);
    int64_t waited = now_ms() - t0;
    held_release(&h);
    if (st != STATUS_SIGTERM)
        fail_msg("second SIGTERM: exit status %d, expected %d; daemon log %s", st, STATUS_SIGTERM,
                 log_tail(h.d.log));
    assert_true(waited < 3000);
    held_verify_then_restart(&h, "crash-term2-restart");
}

/* ingest.drain_timeout bounds the drain ("how long to keep trying to write
 * the in-flight batch before giving up"), also when the write does not fail
 * but hangs: with the drain's write held on a lock, a single SIGTERM must
 * end the daemon soon after the timeout, with status 1 (ingest_run: the
 * batch could not be written before the deadline) and nothing acknowledged. */
static void test_ingest_crash_drain_timeout_bounds_a_blocked_write(void **state)
{
    (void)state;
    struct held h;
    held_setup(&h, "understudy_t_crash_drain", "crash-drain",
               "ingest:\n  batch_messages: 1000000\n  batch_wait: 60s\n  drain_timeout: 1s\n",
               run_seed() + 6);
    int64_t t0 = now_ms();
    held_sigterm_into_blocked_drain(&h);
    /* 1 s to give up, then the consumer's close (mock cluster: well under
     * a second); 8 s is generous. */
    int st = -1, exited = 0;
    while (!(exited = daemon_exited(&h.d, &st)) && now_ms() - t0 < 8000)
        tsleep_ms(50);
    if (!exited) {
        double secs = (double)(now_ms() - t0) / 1000;
        (void)daemon_stop(&h.d, SIGKILL, 10);
        held_release(&h);
        fail_msg("with ingest.drain_timeout 1s the daemon was still draining %.1f s after "
                 "SIGTERM, its batch write waiting for a lock; daemon log %s",
                 secs, log_tail(h.d.log));
    }
    held_release(&h);
    if (st != 1)
        fail_msg("after the drain timeout: exit status %d, expected 1; daemon log %s", st,
                 log_tail(h.d.log));
    char line[160];
    snprintf(line, sizeof line, "could not write the last %zu message(s) before the drain timeout",
             h.cs.lines);
    assert_int_equal(log_count(h.d.log, 0, line), 1);
    held_verify_then_restart(&h, "crash-drain-restart");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ingest_crash_failpoints_lose_and_duplicate_nothing,
                                  teardown_scenarios),
        cmocka_unit_test_teardown(test_ingest_crash_sigterm_mid_stream_drains_and_resumes,
                                  teardown_children),
        cmocka_unit_test_teardown(test_ingest_crash_second_sigterm_while_draining_exits_at_once,
                                  teardown_children),
        cmocka_unit_test_teardown(test_ingest_crash_drain_timeout_bounds_a_blocked_write,
                                  teardown_children),
    };
    return cmocka_run_group_tests_name("ingest_crash", tests, setup_group, NULL);
}
