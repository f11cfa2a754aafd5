/*
 * mockkafka: runs librdkafka's built-in mock Kafka cluster (rdkafka_mock.h)
 * in this process, for development and tests.  It speaks the Kafka protocol
 * on 127.0.0.1 (produce, fetch, consumer groups, offsets), keeps messages in
 * memory, and is gone when the process exits.  Production points at real
 * Kafka instead.
 */
#ifndef UNDERSTUDY_MOCKKAFKA_H
#define UNDERSTUDY_MOCKKAFKA_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

struct mockkafka_opts {
    int brokers;                /* 1..16 */
    int partitions;             /* per topic, 1..1024 */
    const char *topics;         /* comma-separated names; borrowed */
    const char *bootstrap_file; /* written atomically once ready; may be NULL */
};

/*
 * Starts the cluster, creates the topics, prints "bootstrap.servers=H:P,..."
 * on out (flushed), writes the same line to opts->bootstrap_file, then
 * serves until *stop becomes non-zero, and tears everything down (removing
 * the bootstrap file).  Returns 0 after a clean stop, or -1 with a reason in
 * err if the cluster could not be started.
 */
int mockkafka_run(const struct mockkafka_opts *opts, volatile sig_atomic_t *stop, FILE *out,
                  char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Checks a comma-separated topic list: non-empty names of at most 249
 * characters from [A-Za-z0-9._-], no empty elements.  Returns 0 or -1 with a
 * reason.
 */
int mockkafka_check_topics(const char *topics, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
