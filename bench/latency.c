/*
 * bench/latency.c: the measuring program of bench/latency (which compiles
 * it into build/bench/ and runs it next to a running `understudy run`).
 *
 * It reads a file of state snapshots (one JSON object a line, each with a
 * unique event_id and an entity_id), then does two things at once:
 *
 *  - the main thread produces the lines to a Kafka topic at a fixed rate,
 *    paced by CLOCK_MONOTONIC (line i is due at start + i / rate; a late
 *    line goes out at once, none is skipped), keyed by entity_id, acks=all,
 *    and records for each line the time just before rd_kafka_produce was
 *    called ("sent") and the time its delivery report arrived ("acked");
 *  - a second thread queries PostgreSQL every poll interval for rows added
 *    since its last query, in one statement: recommendations, abstentions
 *    and state_events by id.  For each of our event ids it records when its
 *    state_events row ("stored") and its recommendation or abstention row
 *    ("visible") were first seen.
 *
 * A row is recorded at the time the answer of the first query that saw it
 * arrived: the time a client could first see it, and an upper bound on its
 * commit.  The commit came after the previous query's snapshot, taken after
 * that query was sent, so the time recorded is late by at most the gap
 * between the two queries' sending plus the query's own duration (the
 * resolution: the program reports the mean and maximum of both).  Reading
 * "id > last id seen" assumes ids become visible in increasing order per
 * table, which holds while one transaction at a time inserts into each
 * table (ingest's writer, the leading recommender).  Should it not hold, a
 * final query looks up every event still unseen and counts the ones that
 * were in fact there as "missed by the poller" (with no time), apart from
 * the ones never written.
 *
 * Latency of a snapshot = visible - sent.  Printed: count, p50, p90, p99 and
 * max (nearest rank), the target and the verdict, the same for the stages
 * (sent -> acked, sent -> stored, stored -> visible), p99 per 5 s of the
 * run, the achieved production rate and the pacing lateness, and the CPU
 * time of this program and of its PostgreSQL backend (what measuring cost).  --out writes
 * one line per snapshot with the four times (µs since the first send; -1
 * when never seen) for further analysis.
 *
 * Exit status: 0 when every snapshot was delivered and got exactly one row
 * (whether or not the target was met), 1 when snapshots were lost, not
 * delivered or got no row or more than one, 2 for bad usage or input.
 *
 * A stand-alone program (libc, librdkafka, libpq): it is not linked with
 * the project's library, hence plain malloc here rather than util_malloc.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define WUR __attribute__((warn_unused_result))

/* Rows added since the ids given per table, read in one round trip. */
static const char poll_sql[] =
    "SELECT 0, id, state_event_id FROM recommendations WHERE id > $1::bigint"
    " UNION ALL SELECT 1, id, state_event_id FROM abstentions WHERE id > $2::bigint"
    " UNION ALL SELECT 2, id, event_id FROM state_events WHERE id > $3::bigint";

static const char start_sql[] = "SELECT (SELECT coalesce(max(id), 0) FROM recommendations),"
                                " (SELECT coalesce(max(id), 0) FROM abstentions),"
                                " (SELECT coalesce(max(id), 0) FROM state_events)";

/* After the run: which of the given ids have a row, in which table. */
static const char final_sql[] =
    "SELECT e.id, (SELECT count(*) FROM recommendations r WHERE r.state_event_id = e.id)"
    " + (SELECT count(*) FROM abstentions a WHERE a.state_event_id = e.id),"
    " EXISTS (SELECT 1 FROM state_events s WHERE s.event_id = e.id)"
    " FROM unnest($1::text[]) AS e(id)";

enum { T_REC = 0, T_ABST = 1, T_STATE = 2, N_TABLES = 3 };

#define WINDOW_S 5

struct snap {
    const char *line; /* into the file buffer; not terminated */
    size_t len;
    char *id;  /* event_id, terminated (in the file buffer) */
    char *key; /* entity_id, terminated copy */
    int64_t sent_us, acked_us, stored_us, visible_us; /* monotonic; -1 = never */
    int rows;                                         /* recommendation/abstention rows seen */
    int table;                                        /* T_REC or T_ABST */
};

struct opts {
    const char *brokers, *topic, *dsn, *file, *out;
    double rate;
    int64_t poll_us, timeout_us;
    double target_ms;
    const char *props[32]; /* -X key=value for the producer */
    int n_props;
};

struct bench {
    struct opts o;
    char *buf;
    size_t n;
    struct snap *s;
    size_t *slots; /* open addressing: index + 1, 0 = empty */
    size_t n_slots;

    atomic_bool producer_done, stop;
    _Atomic int64_t deadline_us;
    atomic_size_t n_visible;
    atomic_size_t n_delivered, n_failed;

    /* poller statistics (poller thread only until joined) */
    int64_t polls, gap_sum_us, gap_max_us, query_sum_us, query_max_us;
    int64_t foreign_rows; /* rows of other events (not ours) */
    int poll_error;
    char poll_err[512];
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_until_us(int64_t t)
{
    struct timespec ts = {.tv_sec = t / 1000000, .tv_nsec = (long)(t % 1000000) * 1000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The snapshot with this event id, or NULL. */
static struct snap *lookup(struct bench *b, const char *id)
{
    size_t i = (size_t)hash_str(id) & (b->n_slots - 1);
    while (b->slots[i]) {
        struct snap *s = &b->s[b->slots[i] - 1];
        if (strcmp(s->id, id) == 0)
            return s;
        i = (i + 1) & (b->n_slots - 1);
    }
    return NULL;
}

/* Finds "name" : "value" in line[0, len) and returns the value (not
 * terminated) and its length, or NULL.  The values read here (ids) carry no
 * escapes; one that does is refused. */
static const char *find_string_field(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *end = line + len;
    for (const char *p = line; p + nl + 2 < end; p++) {
        if (p[0] != '"' || memcmp(p + 1, name, nl) != 0 || p[nl + 1] != '"')
            continue;
        const char *q = p + nl + 2;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (q >= end || *q != ':')
            continue;
        q++;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (q >= end || *q != '"')
            return NULL;
        const char *v = ++q;
        while (q < end && *q != '"' && *q != '\\')
            q++;
        if (q >= end || *q != '"' || q == v)
            return NULL;
        *vlen = (size_t)(q - v);
        return v;
    }
    return NULL;
}

/* Reads the file and indexes its lines.  0 or -1 (message printed). */
static WUR int load_file(struct bench *b)
{
    FILE *f = fopen(b->o.file, "rb");
    size_t cap = 0, len = 0;
    int rc = -1;
    if (!f) {
        fprintf(stderr, "latency: %s: %s\n", b->o.file, strerror(errno));
        return -1;
    }
    for (;;) {
        if (len + 65536 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : (size_t)1 << 20;
            char *nb = realloc(b->buf, ncap);
            if (!nb) {
                fprintf(stderr, "latency: out of memory\n");
                goto out;
            }
            b->buf = nb;
            cap = ncap;
        }
        size_t got = fread(b->buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "latency: %s: read error\n", b->o.file);
        goto out;
    }
    if (!b->buf) {
        fprintf(stderr, "latency: %s: empty\n", b->o.file);
        goto out;
    }
    b->buf[len] = '\0';
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += b->buf[i] == '\n';
    lines++;
    b->s = calloc(lines, sizeof *b->s);
    b->n_slots = 16;
    while (b->n_slots < lines * 2)
        b->n_slots *= 2;
    b->slots = calloc(b->n_slots, sizeof *b->slots);
    if (!b->s || !b->slots) {
        fprintf(stderr, "latency: out of memory\n");
        goto out;
    }
    char *p = b->buf, *end = b->buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (l > 0) {
            struct snap *s = &b->s[b->n];
            size_t idl = 0, kl = 0;
            const char *id = find_string_field(p, l, "event_id", &idl);
            const char *key = find_string_field(p, l, "entity_id", &kl);
            if (!id || !key) {
                fprintf(stderr, "latency: %s:%zu: no event_id or entity_id string\n", b->o.file,
                        b->n + 1);
                goto out;
            }
            s->line = p;
            s->len = l;
            s->id = malloc(idl + 1);
            s->key = malloc(kl + 1);
            if (!s->id || !s->key) {
                fprintf(stderr, "latency: out of memory\n");
                goto out;
            }
            memcpy(s->id, id, idl);
            s->id[idl] = '\0';
            memcpy(s->key, key, kl);
            s->key[kl] = '\0';
            s->sent_us = s->acked_us = s->stored_us = s->visible_us = -1;
            if (lookup(b, s->id)) {
                fprintf(stderr, "latency: %s:%zu: event_id %s appears twice\n", b->o.file, b->n + 1,
                        s->id);
                goto out;
            }
            size_t i = (size_t)hash_str(s->id) & (b->n_slots - 1);
            while (b->slots[i])
                i = (i + 1) & (b->n_slots - 1);
            b->slots[i] = b->n + 1;
            b->n++;
        }
        p = nl ? nl + 1 : end;
    }
    if (b->n == 0) {
        fprintf(stderr, "latency: %s holds no lines\n", b->o.file);
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}

/* ---- the poller ---------------------------------------------------------- */

static WUR int pg_check(PGconn *c, PGresult *r, ExecStatusType want, char *err, size_t errlen)
{
    if (r && PQresultStatus(r) == want)
        return 0;
    snprintf(err, errlen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    size_t l = strlen(err);
    while (l > 0 && (err[l - 1] == '\n' || err[l - 1] == ' '))
        err[--l] = '\0';
    return -1;
}

struct poller {
    struct bench *b;
    PGconn *conn;
    int backend_pid;
    int64_t last[N_TABLES];
};

/* One query, sent at time t; records what it saw at the time its answer
 * arrived.  0 or -1. */
static WUR int poll_once(struct poller *p, int64_t t)
{
    struct bench *b = p->b;
    char v[N_TABLES][24];
    const char *params[N_TABLES];
    for (int i = 0; i < N_TABLES; i++) {
        snprintf(v[i], sizeof v[i], "%" PRId64, p->last[i]);
        params[i] = v[i];
    }
    PGresult *r = PQexecPrepared(p->conn, "poll", N_TABLES, params, NULL, NULL, 0);
    int64_t t_done = now_us();
    int rc = -1;
    if (pg_check(p->conn, r, PGRES_TUPLES_OK, b->poll_err, sizeof b->poll_err) != 0)
        goto out;
    b->query_sum_us += t_done - t;
    if (t_done - t > b->query_max_us)
        b->query_max_us = t_done - t;
    for (int i = 0; i < PQntuples(r); i++) {
        int table = atoi(PQgetvalue(r, i, 0));
        int64_t id = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        if (table < 0 || table >= N_TABLES)
            continue;
        if (id > p->last[table])
            p->last[table] = id;
        struct snap *s = lookup(b, PQgetvalue(r, i, 2));
        if (!s) {
            if (table != T_STATE)
                b->foreign_rows++;
            continue;
        }
        if (table == T_STATE) {
            if (s->stored_us < 0)
                s->stored_us = t_done;
            continue;
        }
        s->rows++;
        if (s->visible_us < 0) {
            s->visible_us = t_done;
            s->table = table;
            atomic_fetch_add(&b->n_visible, 1);
        }
    }
    rc = 0;
out:
    PQclear(r);
    return rc;
}

static void *poller_main(void *arg)
{
    struct poller *p = arg;
    struct bench *b = p->b;
    int64_t next = now_us(), prev = -1;
    while (!atomic_load(&b->stop)) {
        int64_t t = now_us();
        if (prev >= 0) {
            b->gap_sum_us += t - prev;
            if (t - prev > b->gap_max_us)
                b->gap_max_us = t - prev;
        }
        prev = t;
        if (poll_once(p, t) != 0) {
            b->poll_error = 1;
            break;
        }
        b->polls++;
        if (atomic_load(&b->n_visible) == b->n)
            break;
        if (atomic_load(&b->producer_done) && now_us() > atomic_load(&b->deadline_us))
            break;
        next += b->o.poll_us;
        int64_t now = now_us();
        if (next < now)
            next = now; /* a slow query: no burst of catch-up queries */
        sleep_until_us(next);
    }
    return NULL;
}

/* Connects and reads the starting ids.  0 or -1 (message printed). */
static WUR int poller_open(struct poller *p)
{
    char err[512];
    PGresult *r = NULL;
    int rc = -1;
    p->conn = PQconnectdb(p->b->o.dsn);
    if (PQstatus(p->conn) != CONNECTION_OK) {
        fprintf(stderr, "latency: postgres: %s", PQerrorMessage(p->conn));
        return -1;
    }
    p->backend_pid = PQbackendPID(p->conn);
    /* Its queries stay out of a statement log taken to study the daemon
     * (bench/latency --log-statements); refused for a non-superuser. */
    PQclear(PQexec(p->conn, "SET log_min_duration_statement = -1"));
    /* A generic plan would guess that "id > $1" keeps a third of each
     * table and scan them whole; planning per call walks the primary keys. */
    r = PQexec(p->conn, "SET plan_cache_mode = force_custom_plan");
    if (pg_check(p->conn, r, PGRES_COMMAND_OK, err, sizeof err) != 0)
        goto fail;
    PQclear(r);
    r = PQexec(p->conn, start_sql);
    if (pg_check(p->conn, r, PGRES_TUPLES_OK, err, sizeof err) != 0)
        goto fail;
    for (int i = 0; i < N_TABLES; i++)
        p->last[i] = strtoll(PQgetvalue(r, 0, i), NULL, 10);
    PQclear(r);
    r = PQprepare(p->conn, "poll", poll_sql, N_TABLES, NULL);
    if (pg_check(p->conn, r, PGRES_COMMAND_OK, err, sizeof err) != 0)
        goto fail;
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "latency: postgres: %s\n", err);
out:
    PQclear(r);
    return rc;
}

/* After the run: looks up every snapshot the poller did not see.  Sets
 * *missed (rows there but never seen by a poll) and *lost (no row at all),
 * *unstored (no state_events row).  0 or -1. */
static WUR int final_check(struct bench *b, PGconn *conn, size_t *missed, size_t *lost,
                           size_t *unstored)
{
    char err[512];
    size_t cap = 16, len = 0;
    char *arr = malloc(cap);
    PGresult *r = NULL;
    int rc = -1;
    *missed = *lost = *unstored = 0;
    if (!arr)
        goto oom;
    arr[len++] = '{';
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->s[i].visible_us >= 0)
            continue;
        size_t need = strlen(b->s[i].id) + 4;
        if (len + need + 2 > cap) {
            while (len + need + 2 > cap)
                cap *= 2;
            char *na = realloc(arr, cap);
            if (!na)
                goto oom;
            arr = na;
        }
        /* Ids hold no quote or backslash (find_string_field), and quoting
         * each element keeps commas and braces literal. */
        len += (size_t)sprintf(arr + len, "%s\"%s\"", k++ ? "," : "", b->s[i].id);
    }
    arr[len++] = '}';
    arr[len] = '\0';
    if (k == 0) {
        rc = 0;
        goto out;
    }
    const char *params[1] = {arr};
    r = PQexecParams(conn, final_sql, 1, NULL, params, NULL, NULL, 0);
    if (pg_check(conn, r, PGRES_TUPLES_OK, err, sizeof err) != 0) {
        fprintf(stderr, "latency: postgres: %s\n", err);
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        if (strtoll(PQgetvalue(r, i, 1), NULL, 10) > 0)
            (*missed)++;
        else
            (*lost)++;
        if (strcmp(PQgetvalue(r, i, 2), "t") != 0)
            (*unstored)++;
    }
    rc = 0;
    goto out;
oom:
    fprintf(stderr, "latency: out of memory\n");
out:
    PQclear(r);
    free(arr);
    return rc;
}

/* ---- the producer -------------------------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct bench *b = opaque;
    (void)rk;
    size_t i = (size_t)(uintptr_t)m->_private;
    if (m->err) {
        atomic_fetch_add(&b->n_failed, 1);
        fprintf(stderr, "latency: delivery of %s failed: %s\n", i < b->n ? b->s[i].id : "?",
                rd_kafka_err2str(m->err));
        return;
    }
    atomic_fetch_add(&b->n_delivered, 1);
    if (i < b->n)
        b->s[i].acked_us = now_us();
}

static WUR int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "latency: kafka property %s: %s\n", k, errstr);
        return -1;
    }
    return 0;
}

/* Creates the producer and waits for the topic's metadata, so that the
 * first timed message does not pay for it.  0 or -1 (message printed). */
static WUR int producer_open(struct bench *b, rd_kafka_t **rkp, rd_kafka_topic_t **rktp)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    const struct rd_kafka_metadata *md = NULL;
    if (conf_set(conf, "bootstrap.servers", b->o.brokers) != 0 ||
        conf_set(conf, "acks", "all") != 0 ||
        conf_set(conf, "client.id", "understudy-bench-latency") != 0)
        goto fail;
    for (int i = 0; i < b->o.n_props; i++) {
        char kv[512];
        snprintf(kv, sizeof kv, "%s", b->o.props[i]);
        char *eq = strchr(kv, '=');
        if (!eq) {
            fprintf(stderr, "latency: -X %s: expected key=value\n", b->o.props[i]);
            goto fail;
        }
        *eq = '\0';
        if (conf_set(conf, kv, eq + 1) != 0)
            goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, b);
    char linger[64];
    size_t ll = sizeof linger;
    if (rd_kafka_conf_get(conf, "linger.ms", linger, &ll) != RD_KAFKA_CONF_OK)
        snprintf(linger, sizeof linger, "?");
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "latency: kafka producer: %s\n", errstr);
        goto fail;
    }
    conf = NULL; /* owned by rk now */
    rkt = rd_kafka_topic_new(rk, b->o.topic, NULL);
    if (!rkt) {
        fprintf(stderr, "latency: topic %s: %s\n", b->o.topic,
                rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "latency: metadata of %s: %s\n", b->o.topic, rd_kafka_err2str(e));
        goto fail;
    }
    int parts = md->topic_cnt == 1 ? md->topics[0].partition_cnt : -1;
    rd_kafka_metadata_destroy(md);
    printf("producer   librdkafka %s, acks=all, linger.ms=%s, keyed by entity_id, %d partitions"
           " of %s\n",
           rd_kafka_version_str(), linger, parts, b->o.topic);
    *rkp = rk;
    *rktp = rkt;
    return 0;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk)
        rd_kafka_destroy(rk);
    return -1;
}

/* Produces every line at the configured rate.  Returns 0 or -1. */
static WUR int produce_all(struct bench *b, rd_kafka_t *rk, rd_kafka_topic_t *rkt,
                           int64_t *late_max_us)
{
    const double step_us = 1e6 / b->o.rate;
    int64_t start = now_us() + 1000;
    *late_max_us = 0;
    for (size_t i = 0; i < b->n; i++) {
        int64_t due = start + (int64_t)((double)i * step_us);
        if (now_us() < due)
            sleep_until_us(due);
        struct snap *s = &b->s[i];
        s->sent_us = now_us();
        if (s->sent_us - due > *late_max_us)
            *late_max_us = s->sent_us - due;
        for (;;) {
            if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)s->line,
                                 s->len, s->key, strlen(s->key), (void *)(uintptr_t)i) == 0)
                break;
            rd_kafka_resp_err_t e = rd_kafka_last_error();
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "latency: produce %s: %s\n", s->id, rd_kafka_err2str(e));
                return -1;
            }
            rd_kafka_poll(rk, 10);
        }
        rd_kafka_poll(rk, 0);
    }
    return 0;
}

/* ---- the report -------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank quantile of sorted v[0, n). */
static int64_t quantile(const int64_t *v, size_t n, double q)
{
    size_t k = (size_t)(q * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

struct summary {
    size_t n;
    double p50, p90, p99, max, mean; /* ms */
};

/* Sorts v and summarises it (µs in, ms out). */
static struct summary summarise(int64_t *v, size_t n)
{
    struct summary s = {.n = n};
    if (n == 0)
        return s;
    qsort(v, n, sizeof *v, cmp_i64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    s.p50 = (double)quantile(v, n, 0.50) / 1e3;
    s.p90 = (double)quantile(v, n, 0.90) / 1e3;
    s.p99 = (double)quantile(v, n, 0.99) / 1e3;
    s.max = (double)v[n - 1] / 1e3;
    s.mean = sum / (double)n / 1e3;
    return s;
}

static void print_row(const char *name, const struct summary *s)
{
    if (s->n == 0) {
        printf("  %-40s %7s\n", name, "none");
        return;
    }
    printf("  %-40s %7zu %8.1f %8.1f %8.1f %8.1f %8.1f\n", name, s->n, s->p50, s->p90, s->p99,
           s->max, s->mean);
}

enum stage { ST_TOTAL, ST_ACK, ST_STORED, ST_SCORED, N_STAGES };

/* The stage's duration for s into *v; false when a time is missing. */
static bool stage_value(const struct snap *s, enum stage st, int64_t *v)
{
    switch (st) {
    case ST_TOTAL:
        *v = s->visible_us - s->sent_us;
        return s->visible_us >= 0;
    case ST_ACK:
        *v = s->acked_us - s->sent_us;
        return s->acked_us >= 0;
    case ST_STORED:
        *v = s->stored_us - s->sent_us;
        return s->stored_us >= 0;
    case ST_SCORED:
        *v = s->visible_us - s->stored_us;
        return s->visible_us >= 0 && s->stored_us >= 0;
    case N_STAGES:
        break;
    }
    return false;
}

/* Prints the report; returns the number of snapshots without a time. */
static WUR int report(struct bench *b, int64_t late_max_us, size_t missed, size_t lost,
                      size_t unstored)
{
    static const char *const names[N_STAGES] = {
        "produce -> recommendation/abstention",
        "  produce -> delivery report (acks=all)",
        "  produce -> state_events row visible",
        "  state_events row -> recommendation",
    };
    int64_t *v = malloc(b->n * sizeof *v);
    if (!v) {
        fprintf(stderr, "latency: out of memory\n");
        return -1;
    }
    const struct snap *first = &b->s[0], *last = &b->s[b->n - 1];
    double span_s = (double)(last->sent_us - first->sent_us) / 1e6;
    double rate = span_s > 0 ? (double)(b->n - 1) / span_s : 0;
    size_t n_rec = 0, n_abst = 0, dup = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->s[i].visible_us >= 0) {
            n_rec += b->s[i].table == T_REC;
            n_abst += b->s[i].table == T_ABST;
        }
        dup += b->s[i].rows > 1;
    }
    printf("produced   %zu snapshots in %.3f s: %.1f/s (asked %.0f/s); latest send %.2f ms"
           " behind its schedule; delivered %zu, failed %zu\n",
           b->n, span_s, rate, b->o.rate, (double)late_max_us / 1e3, atomic_load(&b->n_delivered),
           atomic_load(&b->n_failed));
    printf("poller     %" PRId64 " queries (asked: one every %.1f ms), one every %.2f ms on average"
           " (max gap %.2f ms), %.2f ms each on average (max %.2f ms); a row is timed when the"
           " answer that first holds it arrives, at most one gap plus one query after its"
           " commit\n",
           b->polls, (double)b->o.poll_us / 1e3,
           b->polls > 1 ? (double)b->gap_sum_us / (double)(b->polls - 1) / 1e3 : 0.0,
           (double)b->gap_max_us / 1e3,
           b->polls ? (double)b->query_sum_us / (double)b->polls / 1e3 : 0.0,
           (double)b->query_max_us / 1e3);
    printf("rows       %zu recommendations, %zu abstentions; %zu snapshots with more than one"
           " row; %zu never seen (%zu had a row the poller missed, %zu had none, %zu not stored);"
           " %" PRId64 " rows of other snapshots\n",
           n_rec, n_abst, dup, b->n - n_rec - n_abst, missed, lost, unstored, b->foreign_rows);
    printf("\n  %-40s %7s %8s %8s %8s %8s %8s\n", "latency, ms", "count", "p50", "p90", "p99",
           "max", "mean");
    struct summary total = {0};
    for (int st = 0; st < N_STAGES; st++) {
        size_t k = 0;
        for (size_t i = 0; i < b->n; i++) {
            if (stage_value(&b->s[i], (enum stage)st, &v[k]))
                k++;
        }
        struct summary s = summarise(v, k);
        print_row(names[st], &s);
        if (st == ST_TOTAL)
            total = s;
    }
    /* p99 per window of send time: shows whether the tail is spread over
     * the run or comes from a few stalls. */
    int windows = (int)(span_s / WINDOW_S) + 1;
    printf("\n  p99 / max per %d s of the run, ms:", WINDOW_S);
    for (int w = 0; w < windows; w++) {
        size_t k = 0;
        int64_t lo = first->sent_us + (int64_t)w * WINDOW_S * 1000000;
        int64_t hi = lo + WINDOW_S * 1000000;
        for (size_t i = 0; i < b->n; i++) {
            if (b->s[i].sent_us >= lo && b->s[i].sent_us < hi && b->s[i].visible_us >= 0)
                v[k++] = b->s[i].visible_us - b->s[i].sent_us;
        }
        struct summary s = summarise(v, k);
        if (k)
            printf(" %.0f/%.0f", s.p99, s.max);
    }
    printf("\n\n");
    free(v);
    size_t unseen = b->n - n_rec - n_abst;
    if (total.n > 0) {
        printf("  p50 %.1f ms, p99 %.1f ms (target < %.0f ms): %s\n", total.p50, total.p99,
               b->o.target_ms, total.p99 < b->o.target_ms ? "PASS" : "MISSED");
    }
    if (unseen > 0)
        printf("  %zu snapshot(s) got no row within the timeout: FAILED\n", unseen);
    return (int)(unseen + dup);
}

static WUR int write_out(const struct bench *b)
{
    FILE *f = fopen(b->o.out, "w");
    if (!f) {
        fprintf(stderr, "latency: %s: %s\n", b->o.out, strerror(errno));
        return -1;
    }
    int64_t t0 = b->s[0].sent_us;
    fprintf(f, "event_id\tsent_us\tacked_us\tstored_us\tvisible_us\ttable\n");
    for (size_t i = 0; i < b->n; i++) {
        const struct snap *s = &b->s[i];
        fprintf(f, "%s\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%s\n", s->id,
                s->sent_us - t0, s->acked_us < 0 ? -1 : s->acked_us - t0,
                s->stored_us < 0 ? -1 : s->stored_us - t0,
                s->visible_us < 0 ? -1 : s->visible_us - t0,
                s->visible_us < 0   ? "-"
                : s->table == T_REC ? "recommendations"
                                    : "abstentions");
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "latency: %s: write error\n", b->o.out);
        return -1;
    }
    return 0;
}

/* CPU seconds (user + system) of process pid from /proc, -1 when unknown. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* After the name: state, then fields 4..13; utime and stime are 14, 15. */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? (double)(ut + st) / (double)hz : -1;
}

/* What measuring cost on the machine's cores. */
static void report_cost(const struct poller *p)
{
    struct rusage ru;
    double self = -1;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        self = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("  measuring cost: this program %.1f CPU s (producer, poller), its PostgreSQL backend"
           " %.1f CPU s\n",
           self, proc_cpu_s(p->backend_pid));
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: latency --brokers B --topic T --dsn DSN --file FILE.jsonl [--rate N]\n"
               "               [--poll-ms X] [--timeout S] [--target-ms X] [--out FILE.tsv]\n"
               "               [-X key=value ...]\n");
}

/* 0, 1 after --help (printed), -1 for bad usage (printed). */
static WUR int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"dsn", required_argument, NULL, 'd'},
        {"file", required_argument, NULL, 'f'},
        {"rate", required_argument, NULL, 'r'},
        {"poll-ms", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 'T'},
        {"target-ms", required_argument, NULL, 'g'},
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    double x;
    *o = (struct opts){.rate = 1000, .poll_us = 2000, .timeout_us = 30000000, .target_ms = 200};
    while ((c = getopt_long(argc, argv, "X:h", lo, NULL)) != -1) {
        switch (c) {
        case 'b':
            o->brokers = optarg;
            break;
        case 't':
            o->topic = optarg;
            break;
        case 'd':
            o->dsn = optarg;
            break;
        case 'f':
            o->file = optarg;
            break;
        case 'o':
            o->out = optarg;
            break;
        case 'X':
            if (o->n_props >= (int)(sizeof o->props / sizeof o->props[0])) {
                fprintf(stderr, "latency: too many -X\n");
                return -1;
            }
            o->props[o->n_props++] = optarg;
            break;
        case 'r':
        case 'p':
        case 'T':
        case 'g':
            errno = 0;
            x = strtod(optarg, &end);
            if (errno || *end || !(x > 0) || x > 1e7) {
                fprintf(stderr, "latency: --%s takes a positive number\n",
                        c == 'r'   ? "rate"
                        : c == 'p' ? "poll-ms"
                        : c == 'T' ? "timeout"
                                   : "target-ms");
                return -1;
            }
            if (c == 'r')
                o->rate = x;
            else if (c == 'p')
                o->poll_us = (int64_t)(x * 1e3);
            else if (c == 'T')
                o->timeout_us = (int64_t)(x * 1e6);
            else
                o->target_ms = x;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc || !o->brokers || !o->topic || !o->dsn || !o->file) {
        usage(stderr);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct bench b;
    struct poller p = {.b = &b};
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    pthread_t th;
    bool started = false;
    int64_t late_max_us = 0;
    size_t missed = 0, lost = 0, unstored = 0;
    int rc = 2;

    setvbuf(stdout, NULL, _IOLBF, 0);
    int pa = parse_args(argc, argv, &b.o);
    if (pa == 1)
        return 0;
    if (pa != 0 || load_file(&b) != 0)
        goto out;
    rc = 1;
    if (poller_open(&p) != 0 || producer_open(&b, &rk, &rkt) != 0)
        goto out;
    if (pthread_create(&th, NULL, poller_main, &p) != 0) {
        fprintf(stderr, "latency: cannot start the poller thread\n");
        goto out;
    }
    started = true;
    int prc = produce_all(&b, rk, rkt, &late_max_us);
    rd_kafka_resp_err_t fe = rd_kafka_flush(rk, 30000);
    if (fe != RD_KAFKA_RESP_ERR_NO_ERROR)
        fprintf(stderr, "latency: %d message(s) not delivered: %s\n", rd_kafka_outq_len(rk),
                rd_kafka_err2str(fe));
    atomic_store(&b.deadline_us, now_us() + b.o.timeout_us);
    atomic_store(&b.producer_done, true);
    if (prc != 0)
        atomic_store(&b.stop, true);
    pthread_join(th, NULL);
    started = false;
    if (b.poll_error) {
        fprintf(stderr, "latency: postgres: %s\n", b.poll_err);
        goto out;
    }
    if (prc != 0 || final_check(&b, p.conn, &missed, &lost, &unstored) != 0)
        goto out;
    if (b.o.out && write_out(&b) != 0)
        goto out;
    int bad = report(&b, late_max_us, missed, lost, unstored);
    report_cost(&p);
    if (bad == 0 && atomic_load(&b.n_failed) == 0 && atomic_load(&b.n_delivered) == b.n)
        rc = 0;
out:
    if (started) {
        atomic_store(&b.stop, true);
        pthread_join(th, NULL);
    }
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk)
        rd_kafka_destroy(rk);
    PQfinish(p.conn);
    for (size_t i = 0; i < b.n; i++) {
        free(b.s[i].id);
        free(b.s[i].key);
    }
    free(b.s);
    free(b.slots);
    free(b.buf);
    return rc;
}
