/*
 * recommender: scoring stored snapshots in batches, and the daemon's
 * recommender thread (see recommender.h for the design).
 *
 * A batch is one SELECT (the snapshots rebuilt as wire events, with their
 * cooldown times), one decode and score per row, and one write
 * transaction.  Within a batch an entity can appear more than once (its
 * snapshots come in id order, which for one entity is its partition's
 * order); an open row earlier in the batch counts for the cooldown of the
 * later ones exactly as a stored recommendation would.
 *
 * The thread's position: `seen` (memory) is the largest id the fast path
 * has read; recommender_progress.scored_through (W) is an id below which
 * everything was read.  Ids are assigned before commit, so a transaction
 * can commit an id below `seen` later: the ranges the fast path stepped
 * over are read again on every wake for SETTLE_MS, and every
 * CATCHUP_INTERVAL_MS W moves to just below the lowest range still
 * watched (else to `seen`).  After a restart the fast path starts at W and
 * reads everything after it again; what was written before is skipped,
 * what a crash left unscored is scored.  A snapshot whose ingest
 * transaction commits more than SETTLE_MS after taking its id is not
 * scored by the daemon (`recommend --from-db` scores what has no row).
 * While there is no champion the positions move without scoring:
 * snapshots of that time are not scored later.
 */
#include "recommend/recommender.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "gbm/gbm.h"
#include "kafka/kafka.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "util/util.h"

/* How often W moves and the expiry sweep runs. */
#define CATCHUP_INTERVAL_MS 30000
/* An ingest transaction is assumed to commit within this long of taking
 * its ids. */
#define SETTLE_MS 60000
/* Ranges of ids the fast path stepped over, watched for SETTLE_MS. */
#define MAX_GAPS 256
/* Wait between attempts to reach the database or take the lock. */
#define RETRY_MS 5000
/* Snapshot size accepted when decoding stored rows (they passed ingest). */
#define STORED_EVENT_MAX ((size_t)64 << 20)

/* ---- guardrails from the configuration --------------------------------- */

int recommend_guardrails_from_cfg(const struct cfg *cfg, struct recommend_guardrails *g, char *err,
                                  size_t errlen)
{
    recommend_guardrails_default(g);
    g->kill_switch = cfg->recommend.kill_switch;
    g->min_confidence = cfg->recommend.min_confidence;
    g->ood_threshold = cfg->recommend.ood_threshold;
    g->cooldown_ms = cfg->recommend.cooldown_ms;
    _Static_assert((int)CFG_N_SIZED == (int)RECOMMEND_SIZED_COUNT, "sized classes differ");
    for (int i = 0; i < RECOMMEND_SIZED_COUNT; i++) {
        g->max_step_pct[i] = cfg->recommend.max_step_pct[i];
        g->deadband_pct[i] = cfg->recommend.deadband_pct[i];
    }
    _Static_assert((int)CFG_N_CLASSES == (int)EVENT_CLASS_COUNT, "class lists differ");
    for (int e = 0; e < EVENT_ENTITY_COUNT; e++) {
        char why[256];
        uint32_t mask = 0;
        if (cfg_parse_class_list(cfg->recommend.allowed[e], &mask, why, sizeof why) != 0) {
            util_fmt(err, errlen, "recommend.allowed.%s: %s",
                     event_entity_name((enum event_entity)e), why);
            return -1;
        }
        g->allowed[e] = mask | RECOMMEND_CLASS_BIT(EVENT_CLASS_HOLD);
    }
    return 0;
}

/* ---- a batch ------------------------------------------------------------ */

/* Per entity, the snapshot times of its open rows in this batch (an
 * entity's snapshots may be stored out of time order, so the cooldown of
 * each needs the newest one before it, not the newest overall). */
struct seen_entity {
    char *key; /* "type/id"; NULL = empty slot */
    int64_t *ts_us;
    size_t n, cap;
};

struct batch_ctx {
    const struct recommend_batch_args *a;
    struct recommend_batch_stats *stats;
    json_t *rows;
    struct recommend_result res;
    struct seen_entity *map;
    size_t map_cap; /* a power of two, at least twice the batch limit */
};

static uint64_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* The slot of key (an empty one when absent). */
static struct seen_entity *map_slot(struct batch_ctx *c, const char *key)
{
    size_t i = (size_t)key_hash(key) & (c->map_cap - 1);
    while (c->map[i].key && strcmp(c->map[i].key, key) != 0)
        i = (i + 1) & (c->map_cap - 1);
    return &c->map[i];
}

static int score_row(void *arg, const struct store_snapshot *s, char *err, size_t errlen)
{
    struct batch_ctx *c = arg;
    const struct recommend_batch_args *a = c->a;
    struct event ev;
    struct event_limits lim = {.max_bytes = STORED_EVENT_MAX};
    char why[EVENT_REASON_MAX], key[300];
    int rc = -1;

    if (c->stats->ids && c->stats->read < (size_t)c->a->query.limit)
        c->stats->ids[c->stats->read] = s->id;
    c->stats->read++;
    if (s->id > c->stats->max_id)
        c->stats->max_id = s->id;
    memset(&ev, 0, sizeof ev);
    int d = event_decode(EVENT_KIND_STATE, s->event_json, s->event_len, &lim, &ev, why, sizeof why);
    if (d == -2) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    if (d != 0) {
        /* Only a snapshot ingest would refuse today can get here (a
         * stored row predating a stricter decoder): skip it, loudly. */
        log_warn("recommend: state_events.id %lld is not a valid snapshot any more: %s",
                 (long long)s->id, why);
        c->stats->bad++;
        return 0;
    }
    util_fmt(key, sizeof key, "%s/%s", event_entity_name(ev.entity_type), ev.entity_id);
    struct seen_entity *slot = map_slot(c, key);
    int64_t last_rec = s->last_rec_us;
    for (size_t i = 0; slot->key && i < slot->n; i++) {
        if (slot->ts_us[i] < ev.ts_us && slot->ts_us[i] > last_rec)
            last_rec = slot->ts_us[i];
    }
    struct recommend_input in = {
        .snapshot = &ev,
        .now_us = ev.ts_us,
        .last_action_us = s->last_action_us,
        .last_recommendation_us = last_rec,
    };
    if (recommend_score(a->scorer, a->guardrails, &in, &c->res, err, errlen) != 0)
        goto out;
    if (c->res.status == RECOMMEND_OPEN) {
        if (!slot->key && !(slot->key = util_strdup(key))) {
            util_fmt(err, errlen, "out of memory");
            goto out;
        }
        if (slot->n == slot->cap) {
            size_t cap = slot->cap ? slot->cap * 2 : 2;
            int64_t *t = util_realloc(slot->ts_us, cap * sizeof *t);
            if (!t) {
                util_fmt(err, errlen, "out of memory");
                goto out;
            }
            slot->ts_us = t;
            slot->cap = cap;
        }
        slot->ts_us[slot->n++] = ev.ts_us;
        c->stats->opened++;
    } else {
        c->stats->abstained++;
        c->stats->by_reason[c->res.reason]++;
    }
    if (a->print) {
        int w = recommend_result_print(a->print, a->scorer, &ev, a->version, &c->res);
        if (w != 0) {
            util_fmt(err, errlen, w == -2 ? "out of memory" : "write error");
            goto out;
        }
        rc = 0;
        goto out;
    }
    json_t *row = recommend_result_json(a->scorer, &ev, a->version, &c->res);
    if (!row) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    if (json_array_append_new(c->rows, row) != 0) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    event_deinit(&ev);
    return rc;
}

int recommend_batch(const struct recommend_batch_args *a, struct recommend_batch_stats *stats,
                    char *err, size_t errlen)
{
    struct batch_ctx c = {.a = a, .stats = stats};
    char *text = NULL;
    size_t n = 0;
    int rc = -1;
    size_t opened0 = stats->opened, abstained0 = stats->abstained;
    size_t reasons0[RECOMMEND_REASON_COUNT];
    memcpy(reasons0, stats->by_reason, sizeof reasons0);

    recommend_result_init(&c.res);
    c.map_cap = 16;
    while (c.map_cap < (size_t)a->query.limit * 2)
        c.map_cap *= 2;
    c.map = util_calloc(c.map_cap, sizeof *c.map);
    c.rows = a->print ? NULL : json_array();
    if (!c.map || (!a->print && !c.rows)) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    if (store_load_snapshots(a->store, &a->query, score_row, &c, &n, err, errlen) != 0)
        goto out;
    if (a->print || (json_array_size(c.rows) == 0 && a->progress < 0)) {
        rc = 0;
        goto out;
    }
    if (!(text = json_dumps(c.rows, JSON_COMPACT | JSON_REAL_PRECISION(17)))) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    struct store_recs_written w;
    if (store_recs_write(a->store, text, a->ttl_ms, a->progress, a->published, &w, err, errlen) !=
        0)
        goto out;
    /* Count what was written, not what was scored again after a replay. */
    stats->opened = opened0 + (size_t)w.opened;
    stats->abstained = abstained0 + (size_t)w.abstained;
    stats->superseded += (size_t)w.superseded;
    memcpy(stats->by_reason, reasons0, sizeof reasons0);
    for (size_t i = 0; i < w.n_reasons; i++) {
        for (int k = 1; k < RECOMMEND_REASON_COUNT; k++) {
            if (strcmp(w.reasons[i].reason, recommend_reason_name((enum recommend_reason)k)) == 0)
                stats->by_reason[k] += (size_t)w.reasons[i].n;
        }
    }
    rc = 0;
out:
    for (size_t i = 0; c.map && i < c.map_cap; i++) {
        free(c.map[i].key);
        free(c.map[i].ts_us);
    }
    free(c.map);
    free(text);
    json_decref(c.rows);
    recommend_result_deinit(&c.res);
    return rc;
}

/* ---- the daemon's thread -------------------------------------------------- */

struct recommender {
    pthread_t thread;
    bool started;
    int wake[2]; /* self-pipe: stop and reload wake the thread */
    atomic_bool stop;

    pthread_mutex_t mu;
    struct rec_conf {
        bool enabled;
        struct recommend_guardrails g;
        int64_t ttl_ms, batch, poll_ms;
    } conf; /* under mu */
    char *dsn, *password_file;

    rd_kafka_t *producer; /* recommend.publish */
    rd_kafka_topic_t *topic;

    /* For /metrics. */
    atomic_int leader, version;
    atomic_uint_fast64_t n_open, n_superseded, n_expired, n_errors, n_published, n_publish_failed;
    atomic_uint_fast64_t n_reason[RECOMMEND_REASON_COUNT];
    struct metrics_histogram batch_seconds;
};

static void copy_conf(struct recommender *r, const struct cfg *cfg)
{
    char err[256];
    struct recommend_guardrails g;
    if (recommend_guardrails_from_cfg(cfg, &g, err, sizeof err) != 0) {
        log_error("recommend: %s; keeping the previous guardrails", err);
        g = r->conf.g;
    }
    r->conf.enabled = cfg->recommend.enabled;
    r->conf.g = g;
    r->conf.ttl_ms = cfg->recommend.ttl_ms;
    r->conf.batch = cfg->recommend.batch;
    r->conf.poll_ms = cfg->recommend.poll_interval_ms;
}

/* The thread's state between iterations. */
struct loop {
    struct store *st;
    bool leader;
    int version;
    struct gbm_model *model;
    struct recommend_scorer *scorer;
    bool reload;
    int64_t seen;            /* -1: read W first */
    int64_t next_catchup_us; /* monotonic */
    /*
     * Ids are taken before commit, so with several ingesting instances a
     * smaller id often commits after the fast path has read past it.  The
     * ranges it stepped over are read again on every wake until they fill
     * or SETTLE_MS passes; they
     * hold only unread ids, so each re-read is a few index probes.
     */
    struct gap {
        int64_t lo, hi, until_us;
    } gaps[MAX_GAPS];
    size_t n_gaps;
};

static void gap_add(struct loop *l, int64_t lo, int64_t hi, int64_t until_us)
{
    if (l->n_gaps == MAX_GAPS) {
        /* Full: widen the newest (it may then cover read ids; re-reading
         * those only finds their rows already written). */
        struct gap *g = &l->gaps[MAX_GAPS - 1];
        g->hi = hi;
        g->until_us = until_us;
        return;
    }
    l->gaps[l->n_gaps++] = (struct gap){lo, hi, until_us};
}

/* Removes ids[0..n) (ascending) and expired ranges from the gaps. */
static void gaps_update(struct loop *l, const int64_t *ids, size_t n, int64_t now_us)
{
    struct gap out[MAX_GAPS] = {{0, 0, 0}};
    size_t m = 0, k = 0;
    for (size_t i = 0; i < l->n_gaps; i++) {
        struct gap g = l->gaps[i];
        if (g.until_us <= now_us)
            continue;
        while (k < n && ids[k] < g.lo)
            k++;
        for (; k < n && ids[k] <= g.hi; k++) {
            if (ids[k] > g.lo && m < MAX_GAPS)
                out[m++] = (struct gap){g.lo, ids[k] - 1, g.until_us};
            g.lo = ids[k] + 1;
        }
        if (g.lo <= g.hi && m < MAX_GAPS)
            out[m++] = g;
    }
    memcpy(l->gaps, out, m * sizeof out[0]);
    l->n_gaps = m;
}

static void loop_drop_policy(struct loop *l)
{
    recommend_scorer_free(l->scorer);
    gbm_model_free(l->model);
    l->scorer = NULL;
    l->model = NULL;
    l->version = 0;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct recommender *r = opaque;
    (void)rk;
    if (m->err) {
        atomic_fetch_add(&r->n_publish_failed, 1);
        log_warn("recommend: publishing a recommendation failed: %s", rd_kafka_err2str(m->err));
    } else {
        atomic_fetch_add(&r->n_published, 1);
    }
}

/* Hands each published line (one recommendation row) to the producer,
 * keyed by entity_id. */
static void publish(struct recommender *r, const struct util_buf *lines)
{
    const char *p = lines->data, *end = lines->data + lines->len;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        json_t *row = json_loadb(p, len, 0, NULL);
        const char *key = row ? json_string_value(json_object_get(row, "entity_id")) : NULL;
        if (rd_kafka_produce(r->topic, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, (void *)p, len,
                             key, key ? strlen(key) : 0, NULL) != 0) {
            atomic_fetch_add(&r->n_publish_failed, 1);
            log_warn("recommend: publishing a recommendation failed: %s",
                     rd_kafka_err2str(rd_kafka_last_error()));
        }
        json_decref(row);
        p = nl ? nl + 1 : end;
    }
    rd_kafka_poll(r->producer, 0);
}

static void account(struct recommender *r, const struct recommend_batch_stats *s)
{
    atomic_fetch_add(&r->n_open, s->opened);
    atomic_fetch_add(&r->n_superseded, s->superseded);
    for (int i = 0; i < RECOMMEND_REASON_COUNT; i++)
        atomic_fetch_add(&r->n_reason[i], s->by_reason[i]);
}

/* Scores query's selection in pages until it runs dry (or stop).  On
 * return *max_id is the largest id read.  0 or -1. */
static int score_all(struct recommender *r, struct loop *l, const struct rec_conf *c,
                     struct store_snapshot_query q, int64_t *max_id, char *err, size_t errlen)
{
    struct util_buf pub;
    util_buf_init(&pub);
    int rc = 0;
    bool fast = q.by == STORE_SNAP_AFTER_ID, ranges = q.by == STORE_SNAP_IN_RANGES;
    int64_t *ids = NULL;
    if ((fast || ranges) && !(ids = util_calloc((size_t)q.limit, sizeof *ids))) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    for (;;) {
        struct recommend_batch_stats s;
        memset(&s, 0, sizeof s);
        s.max_id = q.after_id;
        s.ids = ids;
        struct recommend_batch_args a = {
            .store = l->st,
            .scorer = l->scorer,
            .version = l->version,
            .guardrails = &c->g,
            .query = q,
            .ttl_ms = c->ttl_ms,
            .progress = -1,
            .published = r->producer ? &pub : NULL,
        };
        int64_t t0 = util_now_mono_us();
        util_buf_reset(&pub);
        if (recommend_batch(&a, &s, err, errlen) != 0) {
            rc = -1;
            break;
        }
        if (s.read > 0) {
            metrics_histogram_observe(&r->batch_seconds, (double)(util_now_mono_us() - t0) / 1e6);
            account(r, &s);
            log_debug("recommend: %zu snapshot(s): %zu open, %zu abstained, %zu superseded", s.read,
                      s.opened, s.abstained, s.superseded);
        }
        if (r->producer && pub.len > 0)
            publish(r, &pub);
        size_t n = s.read < (size_t)q.limit ? s.read : (size_t)q.limit;
        int64_t now = util_now_mono_us();
        if (fast) {
            int64_t prev = q.after_id;
            for (size_t i = 0; i < n; i++) {
                if (ids[i] > prev + 1)
                    gap_add(l, prev + 1, ids[i] - 1, now + SETTLE_MS * INT64_C(1000));
                prev = ids[i];
            }
        } else if (ranges) {
            gaps_update(l, ids, n, now);
        }
        q.after_id = s.max_id;
        if ((int64_t)s.read < q.limit || atomic_load(&r->stop))
            break;
    }
    *max_id = q.after_id;
    free(ids);
    util_buf_deinit(&pub);
    return rc;
}

/* Reads the ranges the fast path stepped over again.  0 or -1. */
static int score_gaps(struct recommender *r, struct loop *l, const struct rec_conf *c, char *err,
                      size_t errlen)
{
    int64_t ranges[MAX_GAPS][2], last = 0;
    gaps_update(l, NULL, 0, util_now_mono_us()); /* drop the expired */
    if (l->n_gaps == 0)
        return 0;
    for (size_t i = 0; i < l->n_gaps; i++) {
        ranges[i][0] = l->gaps[i].lo;
        ranges[i][1] = l->gaps[i].hi;
    }
    struct store_snapshot_query q = {
        .by = STORE_SNAP_IN_RANGES,
        .after_id = 0,
        .limit = c->batch,
        .ranges = (const int64_t(*)[2])ranges,
        .n_ranges = l->n_gaps,
    };
    return score_all(r, l, c, q, &last, err, errlen);
}

/* Loads the champion when it changed; re-scores open recommendations of
 * other versions.  0 or -1 (database). */
static int reload_policy(struct recommender *r, struct loop *l, const struct rec_conf *c, char *err,
                         size_t errlen)
{
    int version = 0;
    char *text = NULL;
    if (store_policy_champion(l->st, &version, &text, err, errlen) != 0)
        return -1;
    l->reload = false;
    if (version == l->version) {
        free(text);
        return 0;
    }
    struct gbm_model *m = NULL;
    struct recommend_scorer *sc = NULL;
    char why[512];
    if (version && (gbm_model_from_json(text, strlen(text), &m, why, sizeof why) != 0 ||
                    recommend_scorer_new(m, &sc, why, sizeof why) != 0)) {
        /* A champion this build cannot use: keep scoring with the old one. */
        log_error("recommend: policy version %d cannot be used (%s); keeping version %d", version,
                  why, l->version);
        gbm_model_free(m);
        free(text);
        return 0;
    }
    free(text);
    int old = l->version;
    loop_drop_policy(l);
    l->model = m;
    l->scorer = sc;
    l->version = version;
    atomic_store(&r->version, version);
    if (!version) {
        log_warn("recommend: there is no champion policy; not recommending");
        return 0;
    }
    log_info("recommend: scoring with policy version %d (was %d)", version, old);
    struct store_snapshot_query q = {
        .by = STORE_SNAP_OPEN_OTHER, .after_id = 0, .version = version, .limit = c->batch};
    int64_t last = 0;
    int64_t t0 = util_now_mono_us();
    uint64_t before = atomic_load(&r->n_superseded);
    if (score_all(r, l, c, q, &last, err, errlen) != 0)
        return -1;
    log_info("recommend: re-scored the snapshots of open recommendations of other versions in "
             "%.2f s (%llu superseded)",
             (double)(util_now_mono_us() - t0) / 1e6,
             (unsigned long long)(atomic_load(&r->n_superseded) - before));
    return 0;
}

/* Moves W and expires what is due.  0 or -1. */
static int maintain(struct recommender *r, struct loop *l, char *err, size_t errlen)
{
    int64_t w = 0, max_id = 0, expired = 0;
    if (store_recs_progress(l->st, &w, &max_id, err, errlen) != 0)
        return -1;
    /* Everything up to seen was read, except the ranges still watched. */
    int64_t next = l->seen;
    for (size_t i = 0; i < l->n_gaps; i++) {
        if (l->gaps[i].lo - 1 < next)
            next = l->gaps[i].lo - 1;
    }
    if (next > w && store_recs_set_progress(l->st, next, err, errlen) != 0)
        return -1;
    if (store_recs_expire(l->st, &expired, err, errlen) != 0)
        return -1;
    if (expired > 0) {
        atomic_fetch_add(&r->n_expired, (uint64_t)expired);
        log_info("recommend: %lld open recommendation(s) expired", (long long)expired);
    }
    return 0;
}

/* One iteration as the leader.  0 or -1 (database). */
static int lead(struct recommender *r, struct loop *l, const struct rec_conf *c, char *err,
                size_t errlen)
{
    if (l->reload && reload_policy(r, l, c, err, errlen) != 0)
        return -1;
    if (l->seen < 0) {
        int64_t w = 0, max_id = 0;
        if (store_recs_progress(l->st, &w, &max_id, err, errlen) != 0)
            return -1;
        if (w < 0) {
            /* First start: begin with what arrives from now on. */
            w = max_id;
            if (store_recs_set_progress(l->st, w, err, errlen) != 0)
                return -1;
            log_info("recommend: starting after state_events.id %lld", (long long)w);
        }
        /* Anything after W that was scored before a restart is skipped by
         * the unique keys; what was not is scored now. */
        l->seen = w;
        l->next_catchup_us = util_now_mono_us() + CATCHUP_INTERVAL_MS * INT64_C(1000);
    }
    if (l->scorer) {
        struct store_snapshot_query q = {
            .by = STORE_SNAP_AFTER_ID, .after_id = l->seen, .limit = c->batch};
        if (score_gaps(r, l, c, err, errlen) != 0 ||
            score_all(r, l, c, q, &l->seen, err, errlen) != 0)
            return -1;
    } else {
        int64_t w = 0, max_id = 0;
        if (store_recs_progress(l->st, &w, &max_id, err, errlen) != 0)
            return -1;
        if (max_id > l->seen)
            l->seen = max_id;
    }
    if (util_now_mono_us() >= l->next_catchup_us) {
        if (maintain(r, l, err, errlen) != 0)
            return -1;
        l->next_catchup_us = util_now_mono_us() + CATCHUP_INTERVAL_MS * INT64_C(1000);
    }
    return 0;
}

static void drain_pipe(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

/* Sleeps ms on the pipe alone (no database session), or until stop. */
static void sleep_on_pipe(struct recommender *r, int ms)
{
    int64_t until = util_now_mono_us() + (int64_t)ms * 1000;
    while (!atomic_load(&r->stop)) {
        int64_t left = until - util_now_mono_us();
        if (left <= 0)
            break;
        struct pollfd p = {.fd = r->wake[0], .events = POLLIN};
        if (poll(&p, 1, (int)((left + 999) / 1000)) > 0)
            drain_pipe(r->wake[0]);
    }
}

static void *recommender_main(void *arg)
{
    struct recommender *r = arg;
    struct loop l = {.seen = -1, .reload = true};
    char err[1024];

    while (!atomic_load(&r->stop)) {
        pthread_mutex_lock(&r->mu);
        struct rec_conf c = r->conf;
        pthread_mutex_unlock(&r->mu);
        if (!l.st) {
            if (store_connect(r->dsn, r->password_file, &l.st, err, sizeof err) != 0 ||
                store_listen(l.st, STORE_POLICY_CHANNEL, err, sizeof err) != 0 ||
                store_listen(l.st, STORE_STATES_CHANNEL, err, sizeof err) != 0) {
                log_warn("recommend: %s; retrying", err);
                store_free(l.st);
                l.st = NULL;
                sleep_on_pipe(r, RETRY_MS);
                continue;
            }
        }
        int wait_ms = (int)c.poll_ms;
        if (!c.enabled && l.leader) {
            /* Let another instance recommend. */
            if (store_advisory_unlock(l.st, STORE_RECOMMEND_LOCK_KEY, err, sizeof err) != 0)
                goto db_error;
            l.leader = false;
            atomic_store(&r->leader, 0);
            log_info("recommend: recommend.enabled is false; released the recommend lock");
        }
        if (c.enabled && !l.leader) {
            int got = 0;
            if (store_try_advisory_lock(l.st, STORE_RECOMMEND_LOCK_KEY, &got, err, sizeof err) != 0)
                goto db_error;
            if (got) {
                l.leader = true;
                l.reload = true;
                l.seen = -1;
                l.n_gaps = 0;
                atomic_store(&r->leader, 1);
                log_info("recommend: this instance recommends (it holds the recommend lock)");
            } else {
                wait_ms = RETRY_MS;
            }
        }
        if (c.enabled && l.leader && lead(r, &l, &c, err, sizeof err) != 0) {
            atomic_fetch_add(&r->n_errors, 1);
            goto db_error;
        }
        unsigned got = 0;
        if (store_wait_notify(l.st, r->wake[0], wait_ms, &got, err, sizeof err) != 0)
            goto db_error;
        if (got & STORE_NOTIFY_POLICY)
            l.reload = true;
        if (got & STORE_NOTIFY_WAKE)
            drain_pipe(r->wake[0]);
        if (r->producer)
            rd_kafka_poll(r->producer, 0);
        continue;
    db_error:
        log_warn("recommend: database: %s; reconnecting", err);
        store_free(l.st);
        l.st = NULL;
        l.leader = false;
        l.seen = -1;
        l.n_gaps = 0;
        l.reload = true;
        atomic_store(&r->leader, 0);
        sleep_on_pipe(r, 1000);
    }
    loop_drop_policy(&l);
    store_free(l.st);
    return NULL;
}

static int start_producer(struct recommender *r, const struct cfg *cfg, char *err, size_t errlen)
{
    static const char *const overrides[] = {"enable.idempotence", "true", "acks", "all", NULL};
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new(cfg, overrides, err, errlen);
    if (!conf)
        return -1;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, r);
    r->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!r->producer) {
        rd_kafka_conf_destroy(conf);
        util_fmt(err, errlen, "kafka producer: %s", errstr);
        return -1;
    }
    r->topic = rd_kafka_topic_new(r->producer, cfg->kafka.topic_recommendations, NULL);
    if (!r->topic) {
        util_fmt(err, errlen, "topic %s: %s", cfg->kafka.topic_recommendations,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    return 0;
}

int recommender_start(const struct cfg *cfg, struct recommender **out, char *err, size_t errlen)
{
    static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5,   5};
    struct recommender *r = util_calloc(1, sizeof *r);
    *out = NULL;
    if (!r) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    r->wake[0] = r->wake[1] = -1;
    pthread_mutex_init(&r->mu, NULL);
    if (metrics_histogram_init(&r->batch_seconds, bounds, sizeof bounds / sizeof bounds[0]) != 0 ||
        recommend_guardrails_from_cfg(cfg, &r->conf.g, err, errlen) != 0)
        goto fail;
    copy_conf(r, cfg);
    r->dsn = util_strdup(cfg->postgres.dsn);
    r->password_file =
        cfg->postgres.password_file ? util_strdup(cfg->postgres.password_file) : NULL;
    if (!r->dsn || (cfg->postgres.password_file && !r->password_file)) {
        util_fmt(err, errlen, "out of memory");
        goto fail;
    }
    if (pipe(r->wake) != 0 || fcntl(r->wake[0], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(r->wake[1], F_SETFL, O_NONBLOCK) != 0) {
        util_fmt(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    if (cfg->recommend.publish && start_producer(r, cfg, err, errlen) != 0)
        goto fail;
    if (pthread_create(&r->thread, NULL, recommender_main, r) != 0) {
        util_fmt(err, errlen, "cannot start the recommender thread");
        goto fail;
    }
    r->started = true;
    *out = r;
    return 0;
fail:
    recommender_stop(r);
    return -1;
}

void recommender_apply_config(struct recommender *r, const struct cfg *cfg)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    copy_conf(r, cfg);
    pthread_mutex_unlock(&r->mu);
    if (write(r->wake[1], "c", 1) < 0) {
        /* The pipe is full: the thread is being woken already. */
    }
}

void recommender_stop(struct recommender *r)
{
    if (!r)
        return;
    if (r->started) {
        atomic_store(&r->stop, true);
        if (write(r->wake[1], "s", 1) < 0) {
            /* Full: a wake-up is pending anyway. */
        }
        pthread_join(r->thread, NULL);
    }
    if (r->producer) {
        rd_kafka_resp_err_t e = rd_kafka_flush(r->producer, 5000);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            log_warn("recommend: %d recommendation(s) not published at shutdown: %s",
                     rd_kafka_outq_len(r->producer), rd_kafka_err2str(e));
    }
    if (r->topic)
        rd_kafka_topic_destroy(r->topic);
    if (r->producer)
        rd_kafka_destroy(r->producer);
    for (int i = 0; i < 2; i++) {
        if (r->wake[i] >= 0)
            close(r->wake[i]);
    }
    free(r->dsn);
    free(r->password_file);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int recommender_render_metrics(struct util_buf *b, void *ud)
{
    struct recommender *r = ud;
    int rc = 0;
    rc |= metrics_write_scalar(b, "understudy_recommend_leader", "gauge",
                               "1 when this instance holds the recommend lock and scores.",
                               (double)atomic_load(&r->leader));
    rc |= metrics_write_scalar(b, "understudy_recommend_policy_version", "gauge",
                               "Policy version the recommender scores with (0 = none).",
                               (double)atomic_load(&r->version));
    rc |= metrics_write_scalar(b, "understudy_recommend_open_total", "counter",
                               "Open recommendations written.", (double)atomic_load(&r->n_open));
    rc |= metrics_write_family(b, "understudy_recommend_abstentions_total", "counter",
                               "Snapshots scored without an open recommendation, by reason.");
    for (int i = 1; i < RECOMMEND_REASON_COUNT; i++)
        rc |= metrics_write_sample(b, "understudy_recommend_abstentions_total",
                                   (double)atomic_load(&r->n_reason[i]), "reason",
                                   recommend_reason_name((enum recommend_reason)i), METRICS_END);
    rc |= metrics_write_scalar(b, "understudy_recommend_superseded_total", "counter",
                               "Open recommendations replaced by a newer one.",
                               (double)atomic_load(&r->n_superseded));
    rc |= metrics_write_scalar(b, "understudy_recommend_expired_total", "counter",
                               "Open recommendations that passed expires_at.",
                               (double)atomic_load(&r->n_expired));
    rc |= metrics_write_scalar(b, "understudy_recommend_errors_total", "counter",
                               "Batches that failed (database errors); they are retried.",
                               (double)atomic_load(&r->n_errors));
    if (r->producer) {
        rc |= metrics_write_family(b, "understudy_recommend_published_total", "counter",
                                   "Recommendations published to Kafka, by result.");
        rc |= metrics_write_sample(b, "understudy_recommend_published_total",
                                   (double)atomic_load(&r->n_published), "result", "delivered",
                                   METRICS_END);
        rc |= metrics_write_sample(b, "understudy_recommend_published_total",
                                   (double)atomic_load(&r->n_publish_failed), "result", "failed",
                                   METRICS_END);
    }
    rc |= metrics_write_family(b, "understudy_recommend_batch_seconds", "histogram",
                               "Time to read, score and write one batch of snapshots.");
    rc |= metrics_histogram_write(b, "understudy_recommend_batch_seconds", &r->batch_seconds);
    return rc ? -1 : 0;
}
