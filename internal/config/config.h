/*
 * config: the YAML configuration file (libyaml) as a plain, validated struct.
 *
 * Every key has a default (the embedded defaults are what `understudy`
 * runs on without -c); a file overrides them, then the environment
 * (UNDERSTUDY_PG_DSN, UNDERSTUDY_KAFKA_BROKERS, UNDERSTUDY_LOG_LEVEL).  One
 * validation table drives parsing, defaults, bounds and the dump.  A bad file
 * is refused whole with "file:line:col: key.path: reason"; unknown keys,
 * wrong types, out-of-range values and duplicate keys are errors.
 */
#ifndef UNDERSTUDY_CONFIG_H
#define UNDERSTUDY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "event/event.h"
#include "log/log.h"

struct cfg_kv {
    char *key;
    char *value;
};

struct cfg {
    char *path; /* the file loaded, or NULL for embedded defaults */

    struct {
        char *brokers;        /* bootstrap.servers */
        char *group_id;
        char *topic_actions;
        char *topic_states;
        char *topic_feedback;
        struct cfg_kv *properties; /* passed to librdkafka as is */
        size_t n_properties;
    } kafka;

    struct {
        char *dsn;           /* libpq conninfo or URI; "" = libpq defaults/env */
        char *password_file; /* optional: file whose first line is the password */
    } postgres;

    struct event_feature_spec *features;
    size_t n_features;

    struct {
        int64_t hold_window_ms;   /* default 60m */
        int64_t settle_window_ms; /* default 30m */
    } labels;

    struct {
        int64_t max_message_bytes; /* default 1 MiB */
        int64_t batch_messages;    /* default 5000 */
        int64_t batch_bytes;       /* default 16 MiB */
        int64_t batch_wait_ms;     /* default 200ms */
    } ingest;

    struct {
        enum log_level level;
        enum log_format format;
    } log;

    struct {
        bool enabled;
        char *listen; /* host:port, default 127.0.0.1:9464 */
    } metrics;

    struct {
        int64_t every_ms;          /* retrain schedule, default 6h */
        int64_t after_new_actions; /* retrain after N new actions, default 5000 */
        int64_t rounds;
        double learning_rate;
        int64_t max_bins;
        double lambda;
        double min_child_weight;
        double valid_fraction;
        int64_t early_stop;
        int64_t threads;
    } train;

    struct {
        bool enabled;
        double min_confidence;
        int64_t ttl_ms;
        double ood_threshold;
    } recommend;

    struct {
        int64_t every_ms;
        double fdr_q;
        int64_t min_support;
    } audit;
};

/*
 * Loads path (NULL = embedded defaults only), applies the environment
 * overrides and validates.  On success *out owns a new config (cfg_free) and
 * 0 is returned.  On failure returns -1, *out is NULL and err holds
 * "file:line:col: key: reason" (or "UNDERSTUDY_X: reason" for environment).
 */
int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Same, from a string in memory; name is used in error messages. */
int cfg_load_string(const char *name, const char *text, size_t len, struct cfg **out,
                    char *err, size_t errlen) __attribute__((warn_unused_result));

void cfg_free(struct cfg *cfg);

/*
 * Writes the effective configuration as YAML to f, secrets masked
 * (passwords in the DSN, sasl/ssl passwords in kafka.properties).
 * Returns 0 or -1 on a write error.
 */
int cfg_dump(const struct cfg *cfg, FILE *f);

/*
 * Copies conninfo with any password masked as "********", for logs.
 * Always terminates dst.
 */
void cfg_mask_dsn(const char *dsn, char *dst, size_t size);

/* True for kafka property names that hold secrets (sasl.password, ...). */
bool cfg_is_secret_property(const char *name);

#endif
