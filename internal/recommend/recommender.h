/*
 * recommender: the recommender of `understudy run` and of `understudy
 * recommend --from-db`, on top of the pure scoring core (recommend.h) and
 * the store.
 *
 * recommend_batch scores a selection of stored snapshots and writes them
 * (or prints them): each snapshot becomes one open recommendation or one
 * abstention for the policy version, idempotently.  The cooldown looks at
 * the entity's newest action at or before the snapshot and its newest
 * recommendation for an earlier snapshot, in the database and among the
 * batch's own earlier rows; times are the snapshots' ts (event time), so a
 * replay of old events behaves as it did live.
 *
 * The daemon's thread (recommender_start) keeps its own PostgreSQL
 * session.  Several daemons may run; only the one whose session holds the
 * recommend advisory lock scores, so every snapshot is scored once and
 * supersede sees one writer.  It LISTENs on understudy_states (sent by
 * ingest's batch transaction) and understudy_policy (promotion) and polls
 * every recommend.poll_interval besides.  On each wake it scores the
 * snapshots after the last one it read (the fast path) and those that
 * have since committed in the id ranges it stepped over (a transaction
 * that committed a smaller id later); every CATCHUP_INTERVAL_MS it moves
 * recommender_progress (from which a restart reads again, so a crash
 * between ingest's commit and scoring leaves nothing unscored) and expires
 * open recommendations past expires_at.  A promotion loads the new champion
 * without a restart and re-scores the snapshots of open recommendations of
 * other versions.
 */
#ifndef UNDERSTUDY_RECOMMENDER_H
#define UNDERSTUDY_RECOMMENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "recommend/recommend.h"
#include "store/store.h"

struct cfg;
struct util_buf;

/* The guardrails of cfg's recommend section.  0, or -1 with a reason (an
 * allowed list that does not parse; cfg_load refuses those already). */
int recommend_guardrails_from_cfg(const struct cfg *cfg, struct recommend_guardrails *g, char *err,
                                  size_t errlen) RECOMMEND_WUR;

struct recommend_batch_stats {
    size_t read;       /* snapshots read */
    size_t bad;        /* stored rows that did not decode as snapshots (logged) */
    size_t opened;     /* open recommendations (written: new ones only) */
    size_t abstained;  /* abstentions (written: new ones only) */
    size_t superseded; /* open recommendations that left open */
    size_t by_reason[RECOMMEND_REASON_COUNT]; /* scored abstentions by reason */
    int64_t max_id; /* the largest state_events.id read; unchanged when none */
    int64_t *ids;   /* when not NULL: the ids read, in order (room for query.limit) */
};

struct recommend_batch_args {
    struct store *store;
    const struct recommend_scorer *scorer;
    int version; /* the scorer's policy version; 0 only when printing */
    const struct recommend_guardrails *guardrails;
    struct store_snapshot_query query;
    int64_t ttl_ms;
    int64_t progress;           /* store_recs_write's; -1 = leave */
    FILE *print;                /* not NULL: print JSON lines instead of writing */
    struct util_buf *published; /* may be NULL: see store_recs_write */
};

/*
 * Reads the snapshots a->query selects (one round trip, at most limit),
 * scores them and writes them in one transaction, or prints them.
 * stats->max_id must be set by the caller (it only grows).  Returns 0, or
 * -1 with a reason (database, out of memory, write error).
 */
int recommend_batch(const struct recommend_batch_args *a, struct recommend_batch_stats *stats,
                    char *err, size_t errlen) RECOMMEND_WUR;

struct recommender;

/* Starts the thread (it connects on its own).  0 and the handle, or -1. */
int recommender_start(const struct cfg *cfg, struct recommender **out, char *err,
                      size_t errlen) RECOMMEND_WUR;

/* Applies the reloadable recommend.* keys of cfg (borrowed). */
void recommender_apply_config(struct recommender *r, const struct cfg *cfg);

/* Stops the thread after its current batch and frees r; NULL is a no-op. */
void recommender_stop(struct recommender *r);

/* Appends the recommender's metrics (Prometheus text).  0 or -1 (OOM). */
int recommender_render_metrics(struct util_buf *b, void *ud);

#endif
