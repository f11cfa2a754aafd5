/*
 * ingest: see ingest.h for the guarantee.  How it is kept:
 *
 *  - enable.auto.offset.store=false: librdkafka stores an offset only when we
 *    call rd_kafka_offsets_store, which happens after the batch's COMMIT.
 *    enable.auto.commit then commits stored offsets periodically; they can
 *    only lag PostgreSQL's, never lead it.
 *  - On assignment each partition starts at ingest_offsets.next_offset when
 *    PostgreSQL has one (else at Kafka's committed offset, else earliest).
 *  - Consumed messages stay in memory (the rd_kafka_message_t and its decode)
 *    until their batch commits, so a failed write is retried with the very
 *    same rows; pausing purges librdkafka's prefetch queue and resuming
 *    restarts at the application's position, right after our batch.
 *  - Eager rebalancing (range assignor) revokes everything first: we try to
 *    write the in-flight batch; if the database is down we drop it (its
 *    offsets were never stored, so the next owner reads it again).
 *  - rd_kafka_consumer_poll, never the batch consume API (it loses offsets
 *    across pause/resume in librdkafka 2.0.x).
 */
#include "ingest/ingest.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "event/event.h"
#include "kafka/kafka.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "store/store.h"

#define N_KINDS       3
#define MAX_LAG_PARTS 256

enum dl_class {
    DL_SIZE = 0, /* larger than ingest.max_message_bytes */
    DL_ENCODING, /* not UTF-8, BOM, NUL */
    DL_JSON,     /* not JSON, or not an object */
    DL_CONTRACT, /* a field missing, of the wrong type or out of range */
    DL_DATABASE, /* decoded, but PostgreSQL refused the row */
    DL_CLASSES,
};

static const char *const dl_class_names[DL_CLASSES] = {"size", "encoding", "json", "contract",
                                                       "database"};

struct topic_stats {
    atomic_uint_fast64_t consumed, stored, duplicates, dead[DL_CLASSES];
};

struct lag_entry {
    char topic[128];
    int32_t partition;
    int64_t lag; /* -1 when unknown */
};

/* One consumed message of the in-flight batch. */
struct item {
    rd_kafka_message_t *msg;
    int kind;
    int decoded;
    struct event ev;
    char reason[EVENT_REASON_MAX];
};

struct committed_pos {
    int kind; /* index into topics[] */
    int32_t partition;
    int64_t next;
};

/* A batch of consumed messages and their rows for the store. */
struct batch {
    struct item *items;
    struct store_row *rows;
    size_t n, cap;
    size_t bytes;
    int64_t started_us;
};

/* The writer thread's state, guarded by wmu. */
enum writer_state {
    W_IDLE = 0,  /* nothing submitted; the loop owns `flight` */
    W_BUSY,      /* the writer owns `flight` and is writing it */
    W_DONE_OK,   /* committed; the loop moves `flight` to `spent` */
    W_DONE_FAIL, /* rolled back; `flight` is kept for a retry */
};

struct ingest {
    /* settings */
    char *group_id;
    char *topics[N_KINDS];
    struct event_limits limits;
    _Atomic int64_t batch_messages, batch_bytes, batch_wait_ms, retry_max_ms, drain_ms;

    struct store *store;
    rd_kafka_t *rk;

    /*
     * Two batches: the loop thread decodes new messages into `fill` while the
     * writer thread writes `flight` to PostgreSQL, so decoding and the
     * database work overlap.  At most one batch is in flight, and a batch is
     * handed over only after the previous one committed: commits stay in
     * consumption order.  The store connection is used by the writer only,
     * or by the loop while the writer is idle.  A committed batch moves to
     * `spent` and the loop frees its messages after handing the writer the
     * next batch, so the writer goes from COMMIT straight to the next COPY.
     */
    struct batch fill;
    struct batch flight;
    struct batch spent;
    pthread_t writer;
    int writer_started;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    enum writer_state wstate;
    int wquit;
    /*
     * The next offset this process saw committed, per partition (writer
     * thread, or the loop while the writer is idle).  After a reconnect the
     * database must still have at least these; if it has less, it lost
     * acknowledged commits (asynchronous commit, failover to a lagging
     * replica, a restore) and `rewind` asks the loop to drop what it holds
     * and read again from the database's offsets.
     */
    struct committed_pos *committed;
    size_t n_committed, cap_committed;
    int rewind;
    /* Where the time goes, for the shutdown log line (microseconds). */
    int64_t t_poll, t_decode, t_backpressure, t_write;

    /* database retry state (loop thread only) */
    int paused;
    int attempts;
    int64_t next_retry_us;
    int64_t paused_since_us;
    uint64_t rng;

    /* shared with the metrics thread */
    struct topic_stats stats[N_KINDS];
    atomic_uint_fast64_t polled, batches, retries, paused_us_total, kafka_errors;
    atomic_int paused_flag, db_ok, n_assigned;
    _Atomic int64_t last_tick_us;
    struct metrics_histogram commit_seconds;
    pthread_mutex_t lag_mu;
    struct lag_entry lag[MAX_LAG_PARTS];
    size_t n_lag;
    int64_t lag_updated_us;
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: jitter only, any decent generator will do. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static enum dl_class classify_reason(const char *reason)
{
    if (strncmp(reason, "message:", 8) == 0)
        return DL_SIZE;
    if (strstr(reason, "UTF-8") || strstr(reason, "byte order mark") || strstr(reason, "NUL"))
        return DL_ENCODING;
    if (strncmp(reason, "json:", 5) == 0)
        return DL_JSON;
    return DL_CONTRACT;
}

static int kind_of_topic(const struct ingest *ig, const char *topic)
{
    for (int k = 0; k < N_KINDS; k++) {
        if (strcmp(ig->topics[k], topic) == 0)
            return k;
    }
    return -1;
}

static void item_release(struct item *it)
{
    if (it->decoded)
        event_deinit(&it->ev);
    if (it->msg)
        rd_kafka_message_destroy(it->msg);
    memset(it, 0, sizeof *it);
}

static void batch_clear(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        item_release(&b->items[i]);
    b->n = 0;
    b->bytes = 0;
    b->started_us = 0;
}

static void batch_free(struct batch *b)
{
    batch_clear(b);
    free(b->items);
    free(b->rows);
    memset(b, 0, sizeof *b);
}

static void batch_swap(struct batch *a, struct batch *b)
{
    struct batch t = *a;
    *a = *b;
    *b = t;
}

/* ---- decoding ------------------------------------------------------------ */

/* Adds a consumed message to the batch (takes ownership of msg).  Returns 0,
 * or -1 when out of memory (msg is then destroyed and its partition will be
 * re-read: the offset is not stored). */
static int batch_add(struct ingest *ig, rd_kafka_message_t *msg)
{
    struct batch *b = &ig->fill;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        struct item *items = util_realloc(b->items, cap * sizeof *items);
        if (!items)
            goto oom;
        b->items = items;
        struct store_row *rows = util_realloc(b->rows, cap * sizeof *rows);
        if (!rows)
            goto oom;
        b->rows = rows;
        b->cap = cap;
    }
    struct item *it = &b->items[b->n];
    memset(it, 0, sizeof *it);
    it->msg = msg;
    it->kind = kind_of_topic(ig, rd_kafka_topic_name(msg->rkt));
    if (it->kind < 0) {
        util_fmt(it->reason, sizeof it->reason, "topic: not one of the configured topics");
    } else {
        int rc = event_decode((enum event_kind)it->kind, msg->payload ? msg->payload : "", msg->len,
                              &ig->limits, &it->ev, it->reason, sizeof it->reason);
        if (rc == -2)
            goto oom;
        it->decoded = rc == 0;
    }
    if (b->n == 0)
        b->started_us = util_now_mono_us();
    b->n++;
    b->bytes += msg->len + msg->key_len;
    return 0;
oom:
    log_error("ingest: out of memory; %s[%d]@%lld will be read again",
              rd_kafka_topic_name(msg->rkt), (int)msg->partition, (long long)msg->offset);
    rd_kafka_message_destroy(msg);
    return -1;
}

/* ---- writing a batch ---------------------------------------------------- */

static void fill_rows(struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        struct item *it = &b->items[i];
        struct store_row *r = &b->rows[i];
        memset(r, 0, sizeof *r);
        r->topic = rd_kafka_topic_name(it->msg->rkt);
        r->partition = it->msg->partition;
        r->offset = it->msg->offset;
        r->key = it->msg->key;
        r->keylen = it->msg->key_len;
        r->raw = it->msg->payload;
        r->rawlen = it->msg->len;
        r->ev = it->decoded ? &it->ev : NULL;
        r->reason = it->reason;
    }
}

static void note_committed(struct ingest *ig, const char *topic, int32_t partition, int64_t next)
{
    int k = kind_of_topic(ig, topic);
    if (k < 0)
        return;
    for (size_t i = 0; i < ig->n_committed; i++) {
        struct committed_pos *c = &ig->committed[i];
        if (c->kind == k && c->partition == partition) {
            if (next > c->next)
                c->next = next;
            return;
        }
    }
    if (ig->n_committed == ig->cap_committed) {
        size_t cap = ig->cap_committed ? ig->cap_committed * 2 : 64;
        struct committed_pos *p = util_realloc(ig->committed, cap * sizeof *p);
        if (!p)
            return; /* only weakens the after-reconnect check for this partition */
        ig->committed = p;
        ig->cap_committed = cap;
    }
    ig->committed[ig->n_committed++] = (struct committed_pos){k, partition, next};
}

/*
 * After a reconnect: does the database still have every position this
 * process saw committed?  Returns 0 when it does (or cannot tell), -1 when
 * it lost some (logged).
 */
static int check_positions(struct ingest *ig)
{
    char err[256];
    int lost = 0;
    for (size_t i = 0; i < ig->n_committed; i++) {
        struct committed_pos *c = &ig->committed[i];
        int64_t db = -1;
        if (store_load_offsets(ig->store, ig->group_id, ig->topics[c->kind], &c->partition, 1, &db,
                               err, sizeof err) != 0)
            return 0; /* the write will fail and retry */
        if (db < c->next) {
            log_error("ingest: %s[%d]: the database is back at offset %lld but this process "
                      "saw %lld committed: it lost acknowledged commits; reading again from "
                      "its position",
                      ig->topics[c->kind], (int)c->partition, (long long)db, (long long)c->next);
            lost = 1;
        }
    }
    return lost ? -1 : 0;
}

/* After COMMIT: counts outcomes and stores offset+1 per partition.  Runs on
 * the writer thread (librdkafka's offset store is thread-safe). */
static void after_commit(struct ingest *ig, const struct batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        const struct store_row *r = &b->rows[i];
        int k = b->items[i].kind;
        if (k < 0)
            k = 0; /* unknown topics cannot be subscribed; keep counts total */
        struct topic_stats *ts = &ig->stats[k];
        atomic_fetch_add(&ts->consumed, 1);
        switch (r->outcome) {
        case STORE_ROW_STORED:
            atomic_fetch_add(&ts->stored, 1);
            break;
        case STORE_ROW_DUPLICATE:
            atomic_fetch_add(&ts->duplicates, 1);
            break;
        case STORE_ROW_DEAD_LETTER:
            atomic_fetch_add(&ts->dead[classify_reason(r->reason)], 1);
            log_warn("ingest: %s[%d]@%lld: dead letter: %s", r->topic, (int)r->partition,
                     (long long)r->offset, r->reason);
            break;
        case STORE_ROW_DEAD_LETTER_DB:
            atomic_fetch_add(&ts->dead[DL_DATABASE], 1);
            break;
        case STORE_ROW_PENDING:
            break;
        }
    }
    FAILPOINT("ingest.after_commit");

    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    /* Messages come in runs from one partition: look the list up (by name)
     * only when the partition changes. */
    const rd_kafka_topic_t *last_rkt = NULL;
    int32_t last_part = -1;
    int at = -1;
    for (size_t i = 0; i < b->n; i++) {
        const rd_kafka_message_t *m = b->items[i].msg;
        if (at < 0 || m->rkt != last_rkt || m->partition != last_part) {
            const char *t = rd_kafka_topic_name(m->rkt);
            rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(l, t, m->partition);
            if (!p)
                p = rd_kafka_topic_partition_list_add(l, t, m->partition);
            at = (int)(p - l->elems);
            last_rkt = m->rkt;
            last_part = m->partition;
        }
        if (m->offset + 1 > l->elems[at].offset)
            l->elems[at].offset = m->offset + 1;
    }
    for (int i = 0; i < l->cnt; i++)
        note_committed(ig, l->elems[i].topic, l->elems[i].partition, l->elems[i].offset);
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(ig->rk, l);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__STATE)
        log_warn("ingest: storing offsets: %s", rd_kafka_err2str(e));
    for (int i = 0; i < l->cnt; i++) {
        /* _STATE: the partition was revoked meanwhile; harmless, since
         * PostgreSQL holds the position for the next owner. */
        if (l->elems[i].err && l->elems[i].err != RD_KAFKA_RESP_ERR__STATE)
            log_warn("ingest: storing offset %s[%d]: %s", l->elems[i].topic,
                     (int)l->elems[i].partition, rd_kafka_err2str(l->elems[i].err));
    }
    rd_kafka_topic_partition_list_destroy(l);
    FAILPOINT("ingest.after_offsets_store");
}

/* Writes b once (on the writer thread).  Returns 0 when committed (b is
 * left for the loop to clear) or -1 (b kept for a retry). */
static int write_batch(struct ingest *ig, struct batch *b)
{
    char err[512];
    if (b->n == 0)
        return 0;
    if (!atomic_load(&ig->db_ok)) {
        if (store_reconnect(ig->store, err, sizeof err) != 0) {
            log_warn("ingest: %s", err);
            return -1;
        }
        log_info("ingest: reconnected to PostgreSQL");
        atomic_store(&ig->db_ok, 1);
        if (check_positions(ig) != 0) {
            ig->rewind = 1;
            return -1;
        }
    }
    fill_rows(b);
    int64_t t0 = util_now_mono_us();
    if (store_write_batch(ig->store, ig->group_id, b->rows, b->n, err, sizeof err) != 0) {
        char perr[8];
        atomic_store(&ig->db_ok, store_ping(ig->store, perr, sizeof perr) == 0);
        log_warn("ingest: writing a batch of %zu failed (will retry): %s", b->n, err);
        return -1;
    }
    metrics_histogram_observe(&ig->commit_seconds, (double)(util_now_mono_us() - t0) / 1e6);
    atomic_fetch_add(&ig->batches, 1);
    atomic_store(&ig->db_ok, 1);
    after_commit(ig, b);
    log_debug("ingest: committed a batch of %zu", b->n);
    return 0;
}

/* ---- the writer thread ------------------------------------------------------ */

static void *writer_main(void *arg)
{
    struct ingest *ig = arg;
    pthread_mutex_lock(&ig->wmu);
    for (;;) {
        while (ig->wstate != W_BUSY && !ig->wquit)
            pthread_cond_wait(&ig->wcv, &ig->wmu);
        if (ig->wquit)
            break;
        pthread_mutex_unlock(&ig->wmu);
        int64_t t0 = util_now_mono_us();
        int rc = write_batch(ig, &ig->flight);
        ig->t_write += util_now_mono_us() - t0;
        pthread_mutex_lock(&ig->wmu);
        ig->wstate = rc == 0 ? W_DONE_OK : W_DONE_FAIL;
        pthread_cond_broadcast(&ig->wcv);
    }
    pthread_mutex_unlock(&ig->wmu);
    return NULL;
}

/* Hands `flight` to the writer.  The writer must be idle. */
static void writer_submit(struct ingest *ig)
{
    pthread_mutex_lock(&ig->wmu);
    ig->wstate = W_BUSY;
    pthread_cond_broadcast(&ig->wcv);
    pthread_mutex_unlock(&ig->wmu);
}

/* Waits up to timeout_ms (-1 = forever, 0 = just look) for the writer to
 * finish.  Returns its state, which is W_BUSY only when the wait timed out.
 * A zero timeout must not reach pthread_cond_timedwait: a deadline of "now"
 * still puts the thread to sleep until the kernel sees it has passed, one
 * context switch per message while the writer is busy. */
static enum writer_state writer_wait(struct ingest *ig, int timeout_ms)
{
    pthread_mutex_lock(&ig->wmu);
    if (timeout_ms < 0) {
        while (ig->wstate == W_BUSY)
            pthread_cond_wait(&ig->wcv, &ig->wmu);
    } else if (timeout_ms > 0 && ig->wstate == W_BUSY) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (ig->wstate == W_BUSY &&
               pthread_cond_timedwait(&ig->wcv, &ig->wmu, &ts) != ETIMEDOUT) {
        }
    }
    enum writer_state st = ig->wstate;
    pthread_mutex_unlock(&ig->wmu);
    return st;
}

static void set_paused(struct ingest *ig, int pause)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (ig->paused == pause)
        return;
    if (rd_kafka_assignment(ig->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        rd_kafka_resp_err_t e =
            pause ? rd_kafka_pause_partitions(ig->rk, a) : rd_kafka_resume_partitions(ig->rk, a);
        if (e)
            log_warn("ingest: %s partitions: %s", pause ? "pausing" : "resuming",
                     rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(a);
    }
    int64_t now = util_now_mono_us();
    if (pause) {
        ig->paused_since_us = now;
        log_warn("ingest: database unavailable: partitions paused, retrying the batch");
    } else {
        atomic_fetch_add(&ig->paused_us_total, (uint_fast64_t)(now - ig->paused_since_us));
        log_info("ingest: batch written after %d retr%s; partitions resumed", ig->attempts,
                 ig->attempts == 1 ? "y" : "ies");
    }
    ig->paused = pause;
    atomic_store(&ig->paused_flag, pause);
}

/* Schedules the next retry: exponential from 100 ms, capped, +-20 % jitter. */
static void schedule_retry(struct ingest *ig)
{
    int64_t cap = atomic_load(&ig->retry_max_ms) * 1000;
    int64_t d = 100000;
    for (int i = 0; i < ig->attempts && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    int64_t jitter = (int64_t)(rng_next(&ig->rng) % (uint64_t)(d / 5 + 1)) * 2 - d / 5;
    ig->next_retry_us = util_now_mono_us() + d + jitter;
    ig->attempts++;
    atomic_fetch_add(&ig->retries, 1);
}

/*
 * The database lost commits this process saw acknowledged (loop thread,
 * writer idle): drop everything held and seek every assigned partition back
 * to the database's offsets (the beginning where it has none), so the lost
 * messages are read and written again.
 */
static void rewind_to_database(struct ingest *ig)
{
    char err[256];
    rd_kafka_topic_partition_list_t *a = NULL;
    batch_clear(&ig->fill);
    batch_clear(&ig->flight);
    batch_clear(&ig->spent);
    if (ig->paused)
        set_paused(ig, 0);
    ig->attempts = 0;
    if (rd_kafka_assignment(ig->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        for (int i = 0; i < a->cnt; i++) {
            int64_t db = -1;
            if (store_load_offsets(ig->store, ig->group_id, a->elems[i].topic,
                                   &a->elems[i].partition, 1, &db, err, sizeof err) != 0) {
                log_error("ingest: rewind: %s", err);
                db = RD_KAFKA_OFFSET_BEGINNING;
            }
            a->elems[i].offset = db >= 0 ? db : RD_KAFKA_OFFSET_BEGINNING;
        }
        rd_kafka_error_t *e = rd_kafka_seek_partitions(ig->rk, a, 10000);
        if (e) {
            log_error("ingest: rewind: seek: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        for (int i = 0; i < a->cnt; i++) {
            if (a->elems[i].err)
                log_error("ingest: rewind: seek %s[%d]: %s", a->elems[i].topic,
                          (int)a->elems[i].partition, rd_kafka_err2str(a->elems[i].err));
        }
        rd_kafka_topic_partition_list_destroy(a);
    }
    ig->n_committed = 0; /* the database's positions are the truth again */
    ig->rewind = 0;
}

/*
 * Takes the writer's result when it has one (loop thread): on success the
 * partitions resume if they were paused; on failure they pause and a retry of
 * the same batch is scheduled.  Returns the writer's state after that.
 */
static enum writer_state writer_collect(struct ingest *ig)
{
    enum writer_state st = writer_wait(ig, 0);
    if (st == W_DONE_OK) {
        batch_clear(&ig->spent);
        batch_swap(&ig->flight, &ig->spent);
        if (ig->paused)
            set_paused(ig, 0);
        ig->attempts = 0;
    } else if (st == W_DONE_FAIL && ig->rewind) {
        rewind_to_database(ig);
    } else if (st == W_DONE_FAIL) {
        set_paused(ig, 1);
        schedule_retry(ig);
    } else {
        return st;
    }
    pthread_mutex_lock(&ig->wmu);
    ig->wstate = W_IDLE;
    pthread_mutex_unlock(&ig->wmu);
    return W_IDLE;
}

/*
 * Writes everything held, in order, and waits for it (loop thread): first a
 * batch kept from a failed write, then the filling one.  Returns 0 when both
 * are committed, -1 when a write failed (what failed stays in `flight`).
 */
static int flush_all_sync(struct ingest *ig)
{
    if (writer_wait(ig, -1) != W_IDLE)
        (void)writer_collect(ig);
    if (ig->flight.n > 0) {
        writer_submit(ig);
        enum writer_state st = writer_wait(ig, -1);
        (void)writer_collect(ig);
        if (st != W_DONE_OK)
            return -1;
    }
    if (ig->fill.n > 0) {
        batch_swap(&ig->fill, &ig->flight);
        writer_submit(ig);
        enum writer_state st = writer_wait(ig, -1);
        (void)writer_collect(ig);
        if (st != W_DONE_OK)
            return -1;
    }
    /* Hold no messages of partitions that may be going away. */
    batch_clear(&ig->spent);
    return 0;
}

/* ---- rebalancing ---------------------------------------------------------- */

/* Sets one assigned partition's start from its stored offset (rc 0) or
 * leaves Kafka's committed offset (rc -1, reason in err). */
static void seek_one(struct ingest *ig, rd_kafka_topic_partition_t *p, int rc, int64_t next,
                     const char *err)
{
    if (rc != 0) {
        atomic_store(&ig->db_ok, 0);
        log_warn("ingest: %s[%d]: cannot read the stored offset (%s); starting from "
                 "Kafka's committed offset",
                 p->topic, (int)p->partition, err);
        return;
    }
    p->offset = next >= 0 ? next : RD_KAFKA_OFFSET_INVALID;
    if (next >= 0)
        log_info("ingest: %s[%d] assigned, starting at offset %lld (from PostgreSQL)", p->topic,
                 (int)p->partition, (long long)next);
    else
        log_info("ingest: %s[%d] assigned, no stored offset: committed or earliest", p->topic,
                 (int)p->partition);
}

/* Positions the assigned partitions at PostgreSQL's offsets: one query per
 * topic (one per partition only when memory is short). */
static void seek_from_database(struct ingest *ig, rd_kafka_topic_partition_list_t *parts)
{
    char err[512] = "";
    size_t cap = (size_t)parts->cnt + 1;
    int32_t *pnum = util_calloc(cap, sizeof *pnum);
    int64_t *next = util_calloc(cap, sizeof *next);
    int *member = util_calloc(cap, sizeof *member);
    unsigned char *done = util_calloc(cap, 1);
    int grouped = pnum && next && member && done;

    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        if (!grouped) {
            int64_t one = -1;
            int rc = store_load_offsets(ig->store, ig->group_id, p->topic, &p->partition, 1, &one,
                                        err, sizeof err);
            seek_one(ig, p, rc, one, err);
            continue;
        }
        if (done[i])
            continue;
        size_t n = 0;
        for (int j = i; j < parts->cnt; j++) {
            if (!done[j] && strcmp(parts->elems[j].topic, p->topic) == 0) {
                done[j] = 1;
                member[n] = j;
                pnum[n++] = parts->elems[j].partition;
            }
        }
        int rc =
            store_load_offsets(ig->store, ig->group_id, p->topic, pnum, n, next, err, sizeof err);
        for (size_t k = 0; k < n; k++)
            seek_one(ig, &parts->elems[member[k]], rc, next[k], err);
    }
    free(pnum);
    free(next);
    free(member);
    free(done);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct ingest *ig = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* The store belongs to the loop only while the writer is idle. */
        (void)writer_wait(ig, -1);
        (void)writer_collect(ig);
        seek_from_database(ig, parts);
        rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
        if (e)
            log_error("ingest: assign: %s", rd_kafka_err2str(e));
        atomic_store(&ig->n_assigned, parts->cnt);
        if (ig->paused) {
            rd_kafka_pause_partitions(rk, parts);
        }
        return;
    }
    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        log_error("ingest: rebalance error: %s", rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
        atomic_store(&ig->n_assigned, 0);
        return;
    }
    int lost = rd_kafka_assignment_lost(rk);
    (void)writer_wait(ig, -1);
    (void)writer_collect(ig);
    size_t held = ig->fill.n + ig->flight.n;
    if (held > 0) {
        if (!lost && flush_all_sync(ig) == 0) {
            log_info("ingest: wrote the in-flight messages before giving up partitions");
        } else {
            log_warn("ingest: dropping %zu unwritten message(s) on revoke; their offsets "
                     "were not stored, so they will be read again",
                     ig->fill.n + ig->flight.n);
            batch_clear(&ig->fill);
            batch_clear(&ig->flight);
        }
    }
    batch_clear(&ig->spent);
    if (ig->paused) {
        ig->paused = 0; /* nothing left to retry; partitions are going away */
        atomic_store(&ig->paused_flag, 0);
        atomic_fetch_add(&ig->paused_us_total,
                         (uint_fast64_t)(util_now_mono_us() - ig->paused_since_us));
        ig->attempts = 0;
    }
    if (!lost) {
        rd_kafka_resp_err_t e = rd_kafka_commit(rk, NULL, 0);
        if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
            log_warn("ingest: committing offsets on revoke: %s", rd_kafka_err2str(e));
    }
    rd_kafka_assign(rk, NULL);
    atomic_store(&ig->n_assigned, 0);
    log_info("ingest: %d partition(s) revoked%s", parts->cnt, lost ? " (assignment lost)" : "");
}

/* ---- lag ------------------------------------------------------------------ */

static void update_lag(struct ingest *ig)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(ig->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return;
    if (rd_kafka_position(ig->rk, a) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(a);
        return;
    }
    pthread_mutex_lock(&ig->lag_mu);
    ig->n_lag = 0;
    for (int i = 0; i < a->cnt && ig->n_lag < MAX_LAG_PARTS; i++) {
        int64_t lo = -1, hi = -1;
        struct lag_entry *l = &ig->lag[ig->n_lag++];
        util_fmt(l->topic, sizeof l->topic, "%s", a->elems[i].topic);
        l->partition = a->elems[i].partition;
        l->lag = -1;
        if (rd_kafka_get_watermark_offsets(ig->rk, a->elems[i].topic, a->elems[i].partition, &lo,
                                           &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi >= 0 && a->elems[i].offset >= 0)
            l->lag = hi > a->elems[i].offset ? hi - a->elems[i].offset : 0;
    }
    pthread_mutex_unlock(&ig->lag_mu);
    rd_kafka_topic_partition_list_destroy(a);
}

/* ---- lifecycle ------------------------------------------------------------ */

void ingest_apply_config(struct ingest *ig, const struct cfg *cfg)
{
    atomic_store(&ig->batch_messages, cfg->ingest.batch_messages);
    atomic_store(&ig->batch_bytes, cfg->ingest.batch_bytes);
    atomic_store(&ig->batch_wait_ms, cfg->ingest.batch_wait_ms);
    atomic_store(&ig->retry_max_ms, cfg->ingest.retry_max_backoff_ms);
    atomic_store(&ig->drain_ms, cfg->ingest.drain_timeout_ms);
}

int ingest_new(const struct cfg *cfg, struct ingest **out, char *err, size_t errlen)
{
    static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5,   5};
    int rc = -1;
    char errstr[512];
    struct ingest *ig = util_calloc(1, sizeof *ig);

    *out = NULL;
    if (!ig) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&ig->lag_mu, NULL);
    pthread_mutex_init(&ig->wmu, NULL);
    pthread_cond_init(&ig->wcv, NULL);
    if (metrics_histogram_init(&ig->commit_seconds, bounds, sizeof bounds / sizeof bounds[0]) !=
        0) {
        util_fmt(err, errlen, "histogram bounds");
        goto out;
    }
    ig->group_id = util_strdup(cfg->kafka.group_id);
    ig->topics[0] = util_strdup(cfg->kafka.topic_actions);
    ig->topics[1] = util_strdup(cfg->kafka.topic_states);
    ig->topics[2] = util_strdup(cfg->kafka.topic_feedback);
    if (!ig->group_id || !ig->topics[0] || !ig->topics[1] || !ig->topics[2]) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    ig->limits.max_bytes = (size_t)cfg->ingest.max_message_bytes;
    /* The store writes state_json and never looks inside: no jansson tree,
     * which also lets the decoder take its fast path. */
    ig->limits.no_state_tree = true;
    ingest_apply_config(ig, cfg);
    ig->rng = (uint64_t)util_now_wall_us() | 1;
    atomic_store(&ig->last_tick_us, util_now_mono_us());

    if (store_connect(cfg->postgres.dsn, cfg->postgres.password_file, &ig->store, err, errlen) != 0)
        goto out;
    if (store_check_schema(ig->store, err, errlen) != 0)
        goto out;
    atomic_store(&ig->db_ok, 1);

    /* The settings the guarantee depends on; they override kafka.properties. */
    const char *overrides[] = {
        "group.id",
        cfg->kafka.group_id,
        "enable.auto.offset.store",
        "false",
        "enable.auto.commit",
        "true",
        "auto.offset.reset",
        "earliest",
        "partition.assignment.strategy",
        "range",
        "enable.partition.eof",
        "false",
        NULL,
    };
    rd_kafka_conf_t *conf = kafka_conf_new(cfg, overrides, err, errlen);
    if (!conf)
        goto out;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_opaque(conf, ig);
    ig->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!ig->rk) {
        rd_kafka_conf_destroy(conf);
        util_fmt(err, errlen, "kafka consumer: %s", errstr);
        goto out;
    }
    rd_kafka_poll_set_consumer(ig->rk);
    if (pthread_create(&ig->writer, NULL, writer_main, ig) != 0) {
        util_fmt(err, errlen, "cannot start the writer thread");
        goto out;
    }
    ig->writer_started = 1;
    *out = ig;
    ig = NULL;
    rc = 0;
out:
    ingest_free(ig);
    return rc;
}

static int subscribe(struct ingest *ig, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(N_KINDS);
    for (int k = 0; k < N_KINDS; k++)
        rd_kafka_topic_partition_list_add(t, ig->topics[k], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(ig->rk, t);
    rd_kafka_topic_partition_list_destroy(t);
    if (e) {
        util_fmt(err, errlen, "subscribe: %s", rd_kafka_err2str(e));
        return -1;
    }
    log_info("ingest: group %s subscribed to %s, %s, %s", ig->group_id, ig->topics[0],
             ig->topics[1], ig->topics[2]);
    return 0;
}

static int batch_full(const struct ingest *ig, const struct batch *b)
{
    return (int64_t)b->n >= atomic_load(&ig->batch_messages) ||
           (int64_t)b->bytes >= atomic_load(&ig->batch_bytes);
}

static int batch_due(const struct ingest *ig, const struct batch *b, int64_t now)
{
    if (b->n == 0)
        return 0;
    return batch_full(ig, b) || now - b->started_us >= atomic_load(&ig->batch_wait_ms) * 1000;
}

/* Handles one poll result.  Returns -1 on a fatal consumer error. */
static int handle_message(struct ingest *ig, rd_kafka_message_t *m, char *err, size_t errlen)
{
    if (!m->err) {
        atomic_fetch_add(&ig->polled, 1);
        (void)batch_add(ig, m);
        return 0;
    }
    rd_kafka_resp_err_t e = m->err;
    if (e == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        rd_kafka_message_destroy(m);
        return 0;
    }
    atomic_fetch_add(&ig->kafka_errors, 1);
    if (e == RD_KAFKA_RESP_ERR__FATAL) {
        char reason[512];
        rd_kafka_fatal_error(ig->rk, reason, sizeof reason);
        util_fmt(err, errlen, "kafka fatal error: %s", reason);
        rd_kafka_message_destroy(m);
        return -1;
    }
    log_warn("ingest: kafka: %s%s%s", rd_kafka_message_errstr(m), m->rkt ? " on " : "",
             m->rkt ? rd_kafka_topic_name(m->rkt) : "");
    rd_kafka_message_destroy(m);
    return 0;
}

/* Shutdown: write what is held, commit, close with a watchdog. */
static int drain(struct ingest *ig)
{
    int rc = 0;
    char err[256];
    int64_t deadline = util_now_mono_us() + atomic_load(&ig->drain_ms) * 1000;
    for (;;) {
        (void)writer_wait(ig, -1);
        (void)writer_collect(ig);
        if (ig->fill.n + ig->flight.n == 0)
            break;
        int64_t left_ms = (deadline - util_now_mono_us()) / 1000;
        if (left_ms > 0) {
            /* A write stuck on a lock must not outlive the drain timeout. */
            if (store_set_statement_timeout(ig->store, left_ms, err, sizeof err) != 0)
                log_warn("ingest: %s", err);
            if (flush_all_sync(ig) == 0)
                break;
        }
        if (util_now_mono_us() >= deadline) {
            log_error("ingest: could not write the last %zu message(s) before the drain "
                      "timeout; they were not acknowledged and will be read again",
                      ig->fill.n + ig->flight.n);
            batch_clear(&ig->fill);
            batch_clear(&ig->flight);
            rc = 1;
            break;
        }
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
    }
    batch_clear(&ig->spent);
    rd_kafka_resp_err_t e = rd_kafka_commit(ig->rk, NULL, 0);
    if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_warn("ingest: final offset commit: %s", rd_kafka_err2str(e));

    /* rd_kafka_consumer_close can hang on an unreachable cluster; close
     * asynchronously and give up after a deadline. */
    rd_kafka_queue_t *q = rd_kafka_queue_new(ig->rk);
    rd_kafka_error_t *cerr = rd_kafka_consumer_close_queue(ig->rk, q);
    if (cerr) {
        log_warn("ingest: close: %s", rd_kafka_error_string(cerr));
        rd_kafka_error_destroy(cerr);
    } else {
        int64_t close_deadline = util_now_mono_us() + 10000000;
        while (!rd_kafka_consumer_closed(ig->rk) && util_now_mono_us() < close_deadline) {
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (!ev)
                continue;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
                /* Revoke during close: same handling as in the loop. */
                rd_kafka_topic_partition_list_t *parts = rd_kafka_event_topic_partition_list(ev);
                on_rebalance(ig->rk, rd_kafka_event_error(ev), parts, ig);
            }
            rd_kafka_event_destroy(ev);
        }
        if (!rd_kafka_consumer_closed(ig->rk)) {
            log_error("ingest: consumer close did not finish in 10 s; leaving the group "
                      "without a clean close");
            rc = rc ? rc : 1;
        }
    }
    rd_kafka_queue_destroy(q);
    return rc;
}

int ingest_run(struct ingest *ig, volatile sig_atomic_t *stop, ingest_tick_fn tick, void *ud,
               char *err, size_t errlen)
{
    if (subscribe(ig, err, errlen) != 0)
        return -1;
    int64_t last_lag = 0;
    int fatal = 0;
    while (!*stop) {
        int64_t now = util_now_mono_us();
        atomic_store(&ig->last_tick_us, now);
        if (tick)
            tick(ig, ud);

        enum writer_state ws = writer_collect(ig);
        if (ws == W_IDLE) {
            if (ig->paused) {
                if (now >= ig->next_retry_us && ig->flight.n > 0)
                    writer_submit(ig);
                else if (ig->flight.n == 0)
                    set_paused(ig, 0); /* nothing left to retry (revoked) */
            } else if (ig->flight.n == 0 && batch_due(ig, &ig->fill, now)) {
                batch_swap(&ig->fill, &ig->flight);
                writer_submit(ig);
            }
        }
        if (ig->spent.n > 0)
            batch_clear(&ig->spent);
        if (now - last_lag > 1000000) {
            update_lag(ig);
            last_lag = now;
        }
        /* Back-pressure: with a full batch waiting behind a busy writer, wait
         * for the writer rather than read more.  Heartbeats go on in
         * librdkafka's own threads. */
        if (!ig->paused && batch_full(ig, &ig->fill) && writer_wait(ig, 0) == W_BUSY) {
            int64_t t0 = util_now_mono_us();
            (void)writer_wait(ig, 100);
            ig->t_backpressure += util_now_mono_us() - t0;
            continue;
        }

        int timeout = 100;
        if (!ig->paused && ig->fill.n > 0) {
            int64_t left =
                (ig->fill.started_us + atomic_load(&ig->batch_wait_ms) * 1000 - now) / 1000;
            timeout = left < 0 ? 0 : left < 100 ? (int)left : 100;
            /* Due, but the writer still has the previous batch: polling
             * with 0 would spin until it is done (batch_wait 0 made this a
             * busy loop); 1 ms returns as soon as a message arrives. */
            if (timeout == 0 && writer_wait(ig, 0) == W_BUSY)
                timeout = 1;
        }
        int64_t t0 = util_now_mono_us();
        rd_kafka_message_t *m = rd_kafka_consumer_poll(ig->rk, timeout);
        int64_t t1 = util_now_mono_us();
        ig->t_poll += t1 - t0;
        if (m && handle_message(ig, m, err, errlen) != 0) {
            fatal = 1;
            break;
        }
        ig->t_decode += util_now_mono_us() - t1;
    }
    log_info("ingest: stopping: draining %zu in-flight message(s)", ig->fill.n + ig->flight.n);
    log_info("ingest: loop time: %.1f s polling, %.1f s decoding, %.1f s waiting for the "
             "writer; writer: %.1f s writing",
             (double)ig->t_poll / 1e6, (double)ig->t_decode / 1e6, (double)ig->t_backpressure / 1e6,
             (double)ig->t_write / 1e6);
    int rc = drain(ig);
    return fatal ? -1 : rc;
}

void ingest_get_totals(const struct ingest *ig, int kind, struct ingest_totals *out)
{
    const struct topic_stats *ts = &ig->stats[kind];
    out->consumed = atomic_load(&ts->consumed);
    out->stored = atomic_load(&ts->stored);
    out->duplicates = atomic_load(&ts->duplicates);
    out->dead = 0;
    for (int c = 0; c < DL_CLASSES; c++)
        out->dead += atomic_load(&ts->dead[c]);
}

void ingest_free(struct ingest *ig)
{
    if (!ig)
        return;
    if (ig->writer_started) {
        pthread_mutex_lock(&ig->wmu);
        ig->wquit = 1;
        pthread_cond_broadcast(&ig->wcv);
        pthread_mutex_unlock(&ig->wmu);
        pthread_join(ig->writer, NULL);
    }
    batch_free(&ig->fill);
    batch_free(&ig->flight);
    batch_free(&ig->spent);
    free(ig->committed);
    if (ig->rk)
        rd_kafka_destroy_flags(ig->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    store_free(ig->store);
    free(ig->group_id);
    for (int k = 0; k < N_KINDS; k++)
        free(ig->topics[k]);
    pthread_mutex_destroy(&ig->lag_mu);
    pthread_mutex_destroy(&ig->wmu);
    pthread_cond_destroy(&ig->wcv);
    free(ig);
}

/* ---- metrics --------------------------------------------------------------- */

int ingest_render_metrics(struct util_buf *b, void *ud)
{
    struct ingest *ig = ud;
    static const struct {
        const char *name, *help;
        size_t off;
    } per_topic[] = {
        {"understudy_ingest_consumed_total", "Messages in committed batches, per topic.",
         offsetof(struct topic_stats, consumed)},
        {"understudy_ingest_stored_total", "New event rows stored, per topic.",
         offsetof(struct topic_stats, stored)},
        {"understudy_ingest_duplicates_total",
         "Events whose event_id was already stored (nothing changed), per topic.",
         offsetof(struct topic_stats, duplicates)},
    };
    int rc = 0;
    for (size_t f = 0; f < sizeof per_topic / sizeof per_topic[0]; f++) {
        rc |= metrics_write_family(b, per_topic[f].name, "counter", per_topic[f].help);
        for (int k = 0; k < N_KINDS; k++) {
            const atomic_uint_fast64_t *v =
                (const atomic_uint_fast64_t *)((const char *)&ig->stats[k] + per_topic[f].off);
            rc |= metrics_write_sample(b, per_topic[f].name, (double)atomic_load(v), "topic",
                                       ig->topics[k], METRICS_END);
        }
    }
    rc |= metrics_write_family(b, "understudy_ingest_dead_letters_total", "counter",
                               "Messages stored as dead letters, per topic and reason class.");
    for (int k = 0; k < N_KINDS; k++) {
        for (int c = 0; c < DL_CLASSES; c++)
            rc |= metrics_write_sample(b, "understudy_ingest_dead_letters_total",
                                       (double)atomic_load(&ig->stats[k].dead[c]), "topic",
                                       ig->topics[k], "reason", dl_class_names[c], METRICS_END);
    }
    rc |= metrics_write_scalar(b, "understudy_ingest_polled_total", "counter",
                               "Messages received from Kafka, including ones read again.",
                               (double)atomic_load(&ig->polled));
    rc |=
        metrics_write_scalar(b, "understudy_ingest_batches_committed_total", "counter",
                             "Batches committed to PostgreSQL.", (double)atomic_load(&ig->batches));
    rc |= metrics_write_family(b, "understudy_ingest_commit_seconds", "histogram",
                               "Time to write and commit one batch.");
    rc |= metrics_histogram_write(b, "understudy_ingest_commit_seconds", &ig->commit_seconds);
    rc |= metrics_write_scalar(b, "understudy_ingest_retries_total", "counter",
                               "Batch writes retried because the database was unavailable.",
                               (double)atomic_load(&ig->retries));
    rc |= metrics_write_scalar(b, "understudy_ingest_paused", "gauge",
                               "1 while partitions are paused waiting for the database.",
                               (double)atomic_load(&ig->paused_flag));
    rc |= metrics_write_scalar(b, "understudy_ingest_paused_seconds_total", "counter",
                               "Time spent paused waiting for the database.",
                               (double)atomic_load(&ig->paused_us_total) / 1e6);
    rc |= metrics_write_scalar(b, "understudy_ingest_kafka_errors_total", "counter",
                               "Errors reported by the Kafka client.",
                               (double)atomic_load(&ig->kafka_errors));
    rc |= metrics_write_scalar(b, "understudy_ingest_assigned_partitions", "gauge",
                               "Partitions assigned to this instance.",
                               (double)atomic_load(&ig->n_assigned));
    rc |= metrics_write_family(b, "understudy_ingest_lag", "gauge",
                               "Messages behind the partition's high watermark.");
    pthread_mutex_lock(&ig->lag_mu);
    for (size_t i = 0; i < ig->n_lag; i++) {
        if (ig->lag[i].lag < 0)
            continue;
        char part[16];
        util_fmt(part, sizeof part, "%d", (int)ig->lag[i].partition);
        rc |= metrics_write_sample(b, "understudy_ingest_lag", (double)ig->lag[i].lag, "topic",
                                   ig->lag[i].topic, "partition", part, METRICS_END);
    }
    pthread_mutex_unlock(&ig->lag_mu);
    return rc ? -1 : 0;
}

int ingest_ready(void *ud, char *why, size_t whylen)
{
    struct ingest *ig = ud;
    if (!atomic_load(&ig->db_ok) || atomic_load(&ig->paused_flag)) {
        util_fmt(why, whylen, "database unavailable");
        return 0;
    }
    if (atomic_load(&ig->n_assigned) == 0) {
        util_fmt(why, whylen, "no partitions assigned");
        return 0;
    }
    return 1;
}

int ingest_healthy(void *ud, char *why, size_t whylen)
{
    struct ingest *ig = ud;
    int64_t age = util_now_mono_us() - atomic_load(&ig->last_tick_us);
    if (age > 30000000) {
        util_fmt(why, whylen, "consumer loop stalled for %lld s", (long long)(age / 1000000));
        return 0;
    }
    return 1;
}
