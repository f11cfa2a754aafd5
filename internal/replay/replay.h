/*
 * replay: produces a JSONL file to a Kafka topic, one line per message, for
 * demos and backfills.  Lines are sent as they are (a line that is not valid
 * JSON still goes out, so the daemon's dead-letter path can be exercised);
 * the key is the line's entity_id (or recommendation_id for feedback), or a
 * field named by the caller, or empty when the line has none.  The producer
 * is idempotent with acks=all, so a retried send never duplicates a message.
 */
#ifndef UNDERSTUDY_REPLAY_H
#define UNDERSTUDY_REPLAY_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

struct cfg;

struct replay_opts {
    const char *topic;     /* borrowed */
    const char *path;      /* JSONL file, "-" for standard input */
    double rate;           /* messages per second; 0 = as fast as possible */
    const char *key_field; /* NULL = entity_id, else recommendation_id */
    int progress;          /* print a progress line to stderr (a terminal) */
};

struct replay_stats {
    uint64_t lines;     /* non-blank lines read */
    uint64_t delivered; /* acknowledged by the brokers */
    uint64_t failed;    /* delivery failed after librdkafka's retries */
    double seconds;
};

/*
 * Sends every non-blank line of opts->path to opts->topic and waits until all
 * are acknowledged or *stop is set.  Returns 0 when every message was
 * delivered, 1 when some failed or the run was stopped early (see *stats), or
 * -1 with a reason in err when it could not start or read the file.
 */
int replay_run(const struct cfg *cfg, const struct replay_opts *opts, volatile sig_atomic_t *stop,
               struct replay_stats *stats, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
