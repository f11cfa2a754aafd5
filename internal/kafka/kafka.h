/*
 * kafka: what every librdkafka client of understudy shares: building an
 * rd_kafka_conf_t from the configuration (brokers plus the pass-through
 * kafka.properties, for TLS, SASL and tuning) and routing librdkafka's log
 * and error callbacks into our logger.  Used by ingest and the replay and
 * mock-kafka commands; nothing else talks to librdkafka.
 */
#ifndef UNDERSTUDY_KAFKA_H
#define UNDERSTUDY_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

struct cfg;

/*
 * Returns a new conf with bootstrap.servers = cfg->kafka.brokers, then every
 * kafka.properties entry, then `overrides` (NULL-terminated name/value pairs
 * that the caller needs for correctness and that users may not change), and
 * the log callback installed.  NULL on error with the property named in err
 * (secret values never appear in it).  Caller destroys or hands it to
 * rd_kafka_new.
 */
rd_kafka_conf_t *kafka_conf_new(const struct cfg *cfg, const char *const *overrides, char *err,
                                size_t errlen);

/* librdkafka log callback that writes through log_write, prefixed with the
 * client name. */
void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* Maps a syslog level (0..7, as librdkafka uses) to ours. */
int kafka_log_level(int syslog_level);

#endif
