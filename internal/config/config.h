/*
 * config: the YAML configuration file (libyaml) as a plain, validated struct.
 *
 * Every key has a default (the embedded defaults are what `understudy`
 * runs on without -c); a file overrides them, then the environment
 * (UNDERSTUDY_PG_DSN, UNDERSTUDY_KAFKA_BROKERS, UNDERSTUDY_LOG_LEVEL).  One
 * validation table drives parsing, defaults, bounds and the dump.  A bad file
 * is refused whole with "file:line:col: key.path: reason"; unknown keys,
 * wrong types, out-of-range values and duplicate keys are errors.
 *
 * After a successful load every string field is non-NULL ("" when empty),
 * except postgres.password_file, which is NULL when unset.  docs/configuration.md
 * lists every key.
 */
#ifndef UNDERSTUDY_CONFIG_H
#define UNDERSTUDY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "event/event.h"
#include "log/log.h"

/* The four sized decision classes, which carry a delta_pct: the index of
 * recommend.max_step_pct and recommend.deadband_pct.  Plain integers rather
 * than an enum, so that other modules can check their own lists against
 * them without -Wenum-compare. */
#define CFG_SIZED_BID_UP      0
#define CFG_SIZED_BID_DOWN    1
#define CFG_SIZED_BUDGET_UP   2
#define CFG_SIZED_BUDGET_DOWN 3
#define CFG_N_SIZED           4

struct cfg_kv {
    char *key;
    char *value;
};

struct cfg {
    char *path; /* the file loaded, or NULL for embedded defaults */

    struct {
        char *brokers; /* bootstrap.servers */
        char *group_id;
        char *topic_actions;
        char *topic_states;
        char *topic_feedback;
        char *topic_recommendations; /* where recommend.publish writes */
        struct cfg_kv *properties;   /* passed to librdkafka as is */
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
        int64_t max_message_bytes;    /* default 1 MiB */
        int64_t batch_messages;       /* default 5000 */
        int64_t batch_bytes;          /* default 16 MiB */
        int64_t batch_wait_ms;        /* default 50ms */
        int64_t retry_max_backoff_ms; /* cap of the database retry backoff, default 5s */
        int64_t drain_timeout_ms;     /* how long shutdown tries to write the last batch */
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
        bool enabled;              /* retrain inside `understudy run`, default true */
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
        int64_t seed;
        int64_t lookback_ms;  /* train on the last this-long of events; 0 = all */
        int64_t half_life_ms; /* recency weighting; 0 = off */
        char *class_weight;   /* "none", "balanced" or "class=w,..." */
    } train;

    struct {
        bool enabled;
        double min_confidence;
        int64_t ttl_ms;
        double ood_threshold;
        bool kill_switch;    /* abstain on every snapshot, default false */
        int64_t cooldown_ms; /* per entity, after an action or a recommendation; 0 = off */
        double max_step_pct[CFG_N_SIZED]; /* cap on |delta_pct|; 0 = none; CFG_SIZED_* */
        double deadband_pct[CFG_N_SIZED]; /* abstain below this |delta_pct| */
        /* Per entity type (enum event_entity order): the classes that
         * may be recommended, as validated text; cfg_parse_class_list turns
         * one into a bit mask. */
        char *allowed[EVENT_ENTITY_COUNT];
        int64_t batch;            /* snapshots scored per transaction, default 1000 */
        int64_t poll_interval_ms; /* look for snapshots this often, default 1s */
        bool publish;             /* also write new recommendations to Kafka */
    } recommend;

    struct {
        int64_t every_ms;
        double fdr_q;
        int64_t min_support;
        bool enabled;           /* audit inside `understudy run` */
        int64_t lookback_ms;    /* audit the last this-long of decisions; 0 = all */
        double tolerance;       /* rate ratios within [1/t, t] are not findings */
        int64_t reference_rows; /* decisions a reference policy is fitted on, at most */
        char *report_dir;       /* where the daemon writes reports; NULL = none */
    } audit;
};

/*
 * Loads path (NULL = embedded defaults only), applies the environment
 * overrides and validates.  On success *out owns a new config (cfg_free) and
 * 0 is returned.  On failure returns -1, *out is NULL and err holds one
 * line: "file:line:col: key: reason", "file: reason" when the file cannot be
 * read, or "UNDERSTUDY_X: reason" for the environment.
 */
int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Same, from text[0..len) in memory (text may be NULL when len is 0: all
 * defaults).  name is used in error messages and becomes cfg->path
 * ("<string>" when NULL).  Returns 0 or -1 exactly like cfg_load.
 */
int cfg_load_string(const char *name, const char *text, size_t len, struct cfg **out, char *err,
                    size_t errlen) __attribute__((warn_unused_result));

/* Frees cfg and everything it owns.  NULL is a no-op. */
void cfg_free(struct cfg *cfg);

/*
 * Writes the effective configuration as YAML to f, secrets masked
 * (passwords in the DSN, sasl/ssl passwords in kafka.properties), in the
 * key layout of config/understudy.yaml; the output loads back to an equal
 * config (bar masked values).  Returns 0, or -1 on a write error (what was
 * written so far stays written).
 */
int cfg_dump(const struct cfg *cfg, FILE *f);

/*
 * Copies conninfo (key=value or postgresql:// URI; NULL reads as "") with
 * any password masked as "********", for logs.  Always terminates dst when
 * size > 0; a truncated copy never contains a password.  Can't fail.
 */
void cfg_mask_dsn(const char *dsn, char *dst, size_t size);

/* True for kafka property names that hold secrets (sasl.password, ...):
 * names containing "password", "passphrase" or "secret", ssl.key.pem and
 * sasl.oauthbearer.config.  False for NULL. */
bool cfg_is_secret_property(const char *name);

/*
 * True when every key of the table has the same value in a and b (cfg->path
 * is not compared).  Can't fail.
 */
bool cfg_equal(const struct cfg *a, const struct cfg *b);

/*
 * For a SIGHUP reload: returns 0 when next differs from cur only in
 * reloadable keys, or -1 with "key.path: changed; restart to apply" in err
 * for the first non-reloadable key (in table order) that differs.
 */
int cfg_diff_nonreloadable(const struct cfg *cur, const struct cfg *next, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The seven decision classes of the contract, in contract order. */
#define CFG_N_CLASSES 7
extern const char *const cfg_class_names[CFG_N_CLASSES];

enum cfg_class_weight_mode {
    CFG_CLASS_WEIGHT_NONE = 0,
    CFG_CLASS_WEIGHT_BALANCED,
    CFG_CLASS_WEIGHT_MAP,
};

/*
 * Parses a class-weight setting: "none", "balanced", or a list
 * "class=weight[,class=weight...]" of decision classes with positive finite
 * weights (classes not listed weigh 1).  Fills *mode and, for a map,
 * weights[] in cfg_class_names order.  Returns 0, or -1 with a reason.
 */
int cfg_parse_class_weight(const char *s, enum cfg_class_weight_mode *mode,
                           double weights[CFG_N_CLASSES], char *why, size_t whylen)
    __attribute__((warn_unused_result));

/*
 * Parses a recommend.allowed.* list: decision classes separated by commas,
 * spaces around each allowed ("bid_up, bid_down").  Sets *mask to the bits
 * (1u << i) of the listed cfg_class_names[i], plus bit 0 (hold), which is
 * always allowed and may be listed.  An empty or all-blank string (s NULL
 * reads as "") is hold only.  Returns 0, or -1 with a reason naming the bad
 * element (unknown class, duplicate, empty element as in "a,,b") and *mask
 * untouched.
 */
int cfg_parse_class_list(const char *s, uint32_t *mask, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* ---- the validation table ------------------------------------------------
 *
 * One row per key.  Parsing, defaults, bounds, environment overrides,
 * cfg_dump and cfg_diff_nonreloadable are all driven by it; docs and tests
 * walk it through cfg_keys().
 */

enum cfg_type {
    CFG_TYPE_STRING = 0,
    CFG_TYPE_BOOL,     /* true | false */
    CFG_TYPE_INT,      /* int64_t, decimal */
    CFG_TYPE_DOUBLE,   /* finite */
    CFG_TYPE_DURATION, /* int64_t milliseconds, written 30s, 15m, 2h, 1h30m, 250ms, 1d */
    CFG_TYPE_SIZE,     /* int64_t bytes, written 1048576 or 1MiB */
    CFG_TYPE_ENUM,     /* an int-sized enum; names[i] spells the value i */
    CFG_TYPE_MAP,      /* mapping of string -> string (struct cfg_kv array) */
    CFG_TYPE_FEATURES, /* sequence of {name, type} (struct event_feature_spec array) */
};

#define CFG_KEY_REQUIRED   (1u << 0) /* string: must not be empty */
#define CFG_KEY_MIN_OPEN   (1u << 1) /* number: the minimum itself is out of range */
#define CFG_KEY_EMPTY_NULL (1u << 2) /* string: empty is stored as NULL ("unset") */
#define CFG_KEY_CONNINFO   (1u << 3) /* string: a libpq conninfo, dumped via cfg_mask_dsn */

struct cfg_key {
    const char *path; /* dotted key path, e.g. "labels.hold_window" */
    enum cfg_type type;
    const char *def;          /* default as written in YAML ("60m"); NULL for MAP (empty)
                                 and FEATURES (the built-in list) */
    int64_t imin, imax;       /* INT, DURATION (ms) and SIZE (bytes) bounds, inclusive */
    double dmin, dmax;        /* DOUBLE bounds, inclusive unless CFG_KEY_MIN_OPEN */
    unsigned flags;           /* CFG_KEY_* */
    bool reloadable;          /* a SIGHUP reload may change it; otherwise restart */
    const char *env;          /* environment variable that overrides it, or NULL */
    const char *const *names; /* ENUM: allowed spellings, NULL-terminated */
    /* STRING: extra check of a non-empty value; 0 or -1 with a reason. */
    int (*check)(const char *value, char *why, size_t whylen);
    size_t offset;       /* of the value in struct cfg */
    size_t count_offset; /* MAP, FEATURES: of the size_t element count */
};

/* The table, in dump order, and its length in *n.  Can't fail. */
const struct cfg_key *cfg_keys(size_t *n);

/* The row for a dotted path, or NULL when there is none. */
const struct cfg_key *cfg_key_find(const char *path);

/* "string", "bool", "int", ... as used in the docs. */
const char *cfg_type_name(enum cfg_type type);

#endif
