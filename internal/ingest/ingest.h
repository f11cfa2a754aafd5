/*
 * ingest: the consumer loop of `understudy run`.  Reads the actions, states
 * and feedback topics in one consumer group, decodes every message, and
 * writes each batch (events, dead letters and the partitions' next offsets)
 * in one PostgreSQL transaction.  Only after COMMIT are the offsets stored in
 * librdkafka (and later committed to Kafka); on assignment each partition is
 * positioned at the next offset recorded in PostgreSQL, which is the source
 * of truth.  Every consumed message ends up as exactly one stored event, one
 * duplicate, or one dead letter.
 *
 * When the database is unavailable the loop rolls back, pauses its
 * partitions, keeps polling (so the group membership survives) and retries
 * the same in-memory batch with exponential backoff and jitter; it resumes by
 * itself.  A message is never dead-lettered because the database was down.
 *
 * Threads: ingest_run runs on the caller's thread; the render/ready/healthy
 * callbacks may be called from the metrics server's thread at any time.
 */
#ifndef UNDERSTUDY_INGEST_H
#define UNDERSTUDY_INGEST_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

struct cfg;
struct ingest;

/* Per-topic totals since start (for logs and tests). */
struct ingest_totals {
    uint64_t consumed;   /* messages in committed batches */
    uint64_t stored;     /* new event rows */
    uint64_t duplicates; /* already stored by event_id */
    uint64_t dead;       /* dead letters (decoder or database refusals) */
};

/*
 * Called on the loop's thread between polls (at least every 100 ms).  The
 * daemon uses it for SIGHUP reloads.  May be NULL.
 */
typedef void (*ingest_tick_fn)(struct ingest *ig, void *ud);

/*
 * Connects to PostgreSQL and creates the consumer (not yet subscribed).  cfg
 * is copied where needed; it may be freed after the call.  Returns 0 and the
 * handle, or -1 with a reason.
 */
int ingest_new(const struct cfg *cfg, struct ingest **out, char *err, size_t errlen) UTIL_WUR;

/*
 * Subscribes and runs until *stop becomes non-zero, then drains: writes the
 * in-flight batch (retrying for up to ingest.drain_timeout), commits offsets,
 * closes the consumer (with a watchdog) and returns.  Returns 0 after a clean
 * drain, -1 on a fatal consumer error (with a reason in err), 1 when the
 * in-flight batch could not be written before the deadline (nothing is lost:
 * its offsets were not stored, the next owner reads it again).
 */
int ingest_run(struct ingest *ig, volatile sig_atomic_t *stop, ingest_tick_fn tick, void *ud,
               char *err, size_t errlen) UTIL_WUR;

/* Applies the reloadable ingest settings (batch sizes and wait) of cfg. */
void ingest_apply_config(struct ingest *ig, const struct cfg *cfg);

/* Totals for topic kind k (0 actions, 1 states, 2 feedback). */
void ingest_get_totals(const struct ingest *ig, int kind, struct ingest_totals *out);

/* Frees everything; NULL is a no-op.  Call after ingest_run returned. */
void ingest_free(struct ingest *ig);

/* metrics_handlers callbacks; ud is the struct ingest. */
int ingest_render_metrics(struct util_buf *out, void *ud);
int ingest_ready(void *ud, char *why, size_t whylen);
int ingest_healthy(void *ud, char *why, size_t whylen);

#endif
