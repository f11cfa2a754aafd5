/*
 * config: the validation table and everything it drives except the YAML
 * walk (config_yaml.c) and the dump and masking (config_dump.c).
 *
 * A load builds a brand-new struct cfg: defaults from the table, then the
 * file, then the environment.  Any error throws the new struct away, so a
 * caller's current configuration is never half-replaced.  Values are stored
 * through the table's offsets into struct cfg; enums are stored as int,
 * which the static assertions below check is their size.  Defaults are
 * kept as YAML text and go through the same parser and bounds checks as
 * the file, so a default that violates its own bounds fails every load
 * (and the unit tests).
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_impl.h"
#include "util/util.h"

_Static_assert(sizeof(enum log_level) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enums are stored as int");
_Static_assert(LOG_LEVEL_DEBUG == 0 && LOG_LEVEL_ERROR == 3, "level_names follows log.h");
_Static_assert(LOG_FORMAT_TEXT == 0 && LOG_FORMAT_JSON == 1, "format_names follows log.h");
_Static_assert(EVENT_FEATURE_NUMERIC == 0 && EVENT_FEATURE_CATEGORICAL == 1,
               "cfg_feature_kind_names follows event.h");
_Static_assert(CFG_N_CLASSES == EVENT_CLASS_COUNT && EVENT_CLASS_HOLD == 0 &&
                   EVENT_CLASS_BID_UP == 1 && EVENT_CLASS_BID_DOWN == 2 &&
                   EVENT_CLASS_BUDGET_UP == 3 && EVENT_CLASS_BUDGET_DOWN == 4 &&
                   EVENT_CLASS_CREATIVE_PAUSE == 5 && EVENT_CLASS_CREATIVE_RESUME == 6,
               "cfg_class_names follows event.h");
_Static_assert(CFG_N_CLASSES <= 32, "class masks are uint32_t");

static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const format_names[] = {"text", "json", NULL};
const char *const cfg_feature_kind_names[] = {"numeric", "categorical", NULL};

/* The feature list used when the file has no features key: the state keys
 * of the contract's example action event. */
static const struct {
    const char *name;
    enum event_feature_kind kind;
} default_features[] = {
    {"cpa", EVENT_FEATURE_NUMERIC},          {"target_cpa", EVENT_FEATURE_NUMERIC},
    {"cpa_ratio", EVENT_FEATURE_NUMERIC},    {"pacing", EVENT_FEATURE_NUMERIC},
    {"hour_of_day", EVENT_FEATURE_NUMERIC},  {"channel", EVENT_FEATURE_CATEGORICAL},
    {"vertical", EVENT_FEATURE_CATEGORICAL},
};

static int check_topic(const char *value, char *why, size_t whylen);
static int check_listen(const char *value, char *why, size_t whylen);
static int check_class_weight(const char *value, char *why, size_t whylen);
static int check_class_list(const char *value, char *why, size_t whylen);

#define CFG_SECOND   INT64_C(1000)
#define CFG_MINUTE   (60 * CFG_SECOND)
#define CFG_HOUR     (60 * CFG_MINUTE)
#define CFG_DAY      (24 * CFG_HOUR)
#define CFG_KIB      INT64_C(1024)
#define CFG_MIB      (1024 * CFG_KIB)
#define CFG_GIB      (1024 * CFG_MIB)
#define CFG_OFF(f)   .offset = offsetof(struct cfg, f)
#define CFG_COUNT(f) .count_offset = offsetof(struct cfg, f)

/*
 * The table.  Order is dump order; keys of one section must be contiguous
 * (cfg_dump opens a section when the path prefix changes).  Bounds are what
 * the consumers can live with: max_bins stops at 255 because bins are
 * uint8, batch sizes stop where one batch still fits comfortably in memory.
 * One row per key reads as a table; clang-format would put every field on
 * a line of its own, so it is kept off this block.
 */
/* clang-format off */
static const struct cfg_key table[] = {
    {.path = "kafka.brokers", .type = CFG_TYPE_STRING, .def = "localhost:9092",
     .flags = CFG_KEY_REQUIRED, .env = "UNDERSTUDY_KAFKA_BROKERS", CFG_OFF(kafka.brokers)},
    {.path = "kafka.group_id", .type = CFG_TYPE_STRING, .def = "understudy",
     .flags = CFG_KEY_REQUIRED, CFG_OFF(kafka.group_id)},
    {.path = "kafka.topics.actions", .type = CFG_TYPE_STRING, .def = "ops.actions",
     .flags = CFG_KEY_REQUIRED, .check = check_topic, CFG_OFF(kafka.topic_actions)},
    {.path = "kafka.topics.states", .type = CFG_TYPE_STRING, .def = "ops.states",
     .flags = CFG_KEY_REQUIRED, .check = check_topic, CFG_OFF(kafka.topic_states)},
    {.path = "kafka.topics.feedback", .type = CFG_TYPE_STRING, .def = "ops.feedback",
     .flags = CFG_KEY_REQUIRED, .check = check_topic, CFG_OFF(kafka.topic_feedback)},
    {.path = "kafka.topics.recommendations", .type = CFG_TYPE_STRING,
     .def = "ops.recommendations", .flags = CFG_KEY_REQUIRED, .check = check_topic,
     CFG_OFF(kafka.topic_recommendations)},
    {.path = "kafka.properties", .type = CFG_TYPE_MAP,
     CFG_OFF(kafka.properties), CFG_COUNT(kafka.n_properties)},

    {.path = "postgres.dsn", .type = CFG_TYPE_STRING, .def = "",
     .flags = CFG_KEY_CONNINFO, .env = "UNDERSTUDY_PG_DSN", CFG_OFF(postgres.dsn)},
    {.path = "postgres.password_file", .type = CFG_TYPE_STRING, .def = "",
     .flags = CFG_KEY_EMPTY_NULL, CFG_OFF(postgres.password_file)},

    {.path = "features", .type = CFG_TYPE_FEATURES, CFG_OFF(features), CFG_COUNT(n_features)},

    {.path = "labels.hold_window", .type = CFG_TYPE_DURATION, .def = "60m",
     .imin = CFG_SECOND, .imax = 30 * CFG_DAY, .reloadable = true, CFG_OFF(labels.hold_window_ms)},
    {.path = "labels.settle_window", .type = CFG_TYPE_DURATION, .def = "30m",
     .imin = 0, .imax = 30 * CFG_DAY, .reloadable = true, CFG_OFF(labels.settle_window_ms)},

    {.path = "ingest.max_message_bytes", .type = CFG_TYPE_SIZE, .def = "1MiB",
     .imin = CFG_KIB, .imax = 256 * CFG_MIB, CFG_OFF(ingest.max_message_bytes)},
    {.path = "ingest.batch_messages", .type = CFG_TYPE_INT, .def = "5000",
     .imin = 1, .imax = 1000000, .reloadable = true, CFG_OFF(ingest.batch_messages)},
    {.path = "ingest.batch_bytes", .type = CFG_TYPE_SIZE, .def = "16MiB",
     .imin = CFG_KIB, .imax = CFG_GIB, .reloadable = true, CFG_OFF(ingest.batch_bytes)},
    {.path = "ingest.batch_wait", .type = CFG_TYPE_DURATION, .def = "50ms",
     .imin = 0, .imax = CFG_MINUTE, .reloadable = true, CFG_OFF(ingest.batch_wait_ms)},
    {.path = "ingest.retry_max_backoff", .type = CFG_TYPE_DURATION, .def = "5s",
     .imin = 100, .imax = 10 * CFG_MINUTE, .reloadable = true,
     CFG_OFF(ingest.retry_max_backoff_ms)},
    {.path = "ingest.drain_timeout", .type = CFG_TYPE_DURATION, .def = "10s",
     .imin = 0, .imax = 10 * CFG_MINUTE, .reloadable = true, CFG_OFF(ingest.drain_timeout_ms)},

    {.path = "log.level", .type = CFG_TYPE_ENUM, .def = "info", .names = level_names,
     .reloadable = true, .env = "UNDERSTUDY_LOG_LEVEL", CFG_OFF(log.level)},
    {.path = "log.format", .type = CFG_TYPE_ENUM, .def = "text", .names = format_names,
     .reloadable = true, CFG_OFF(log.format)},

    {.path = "metrics.enabled", .type = CFG_TYPE_BOOL, .def = "true", CFG_OFF(metrics.enabled)},
    {.path = "metrics.listen", .type = CFG_TYPE_STRING, .def = "127.0.0.1:9464",
     .flags = CFG_KEY_REQUIRED, .check = check_listen, CFG_OFF(metrics.listen)},

    {.path = "train.enabled", .type = CFG_TYPE_BOOL, .def = "true",
     .reloadable = true, CFG_OFF(train.enabled)},
    {.path = "train.every", .type = CFG_TYPE_DURATION, .def = "6h",
     .imin = CFG_MINUTE, .imax = 365 * CFG_DAY, .reloadable = true, CFG_OFF(train.every_ms)},
    {.path = "train.after_new_actions", .type = CFG_TYPE_INT, .def = "5000",
     .imin = 0, .imax = INT64_C(1000000000), .reloadable = true, CFG_OFF(train.after_new_actions)},
    {.path = "train.rounds", .type = CFG_TYPE_INT, .def = "200",
     .imin = 1, .imax = 100000, .reloadable = true, CFG_OFF(train.rounds)},
    {.path = "train.learning_rate", .type = CFG_TYPE_DOUBLE, .def = "0.3",
     .dmin = 0.0, .dmax = 1.0, .flags = CFG_KEY_MIN_OPEN, .reloadable = true,
     CFG_OFF(train.learning_rate)},
    {.path = "train.max_bins", .type = CFG_TYPE_INT, .def = "255",
     .imin = 2, .imax = 255, .reloadable = true, CFG_OFF(train.max_bins)},
    {.path = "train.lambda", .type = CFG_TYPE_DOUBLE, .def = "1.0",
     .dmin = 0.0, .dmax = 1e6, .reloadable = true, CFG_OFF(train.lambda)},
    {.path = "train.min_child_weight", .type = CFG_TYPE_DOUBLE, .def = "1.0",
     .dmin = 0.0, .dmax = 1e6, .reloadable = true, CFG_OFF(train.min_child_weight)},
    {.path = "train.valid_fraction", .type = CFG_TYPE_DOUBLE, .def = "0.2",
     .dmin = 0.0, .dmax = 0.9, .reloadable = true, CFG_OFF(train.valid_fraction)},
    {.path = "train.early_stop", .type = CFG_TYPE_INT, .def = "20",
     .imin = 0, .imax = 100000, .reloadable = true, CFG_OFF(train.early_stop)},
    {.path = "train.threads", .type = CFG_TYPE_INT, .def = "2",
     .imin = 1, .imax = 256, .reloadable = true, CFG_OFF(train.threads)},
    {.path = "train.seed", .type = CFG_TYPE_INT, .def = "1",
     .imin = 0, .imax = 2147483647, .reloadable = true, CFG_OFF(train.seed)},
    {.path = "train.lookback", .type = CFG_TYPE_DURATION, .def = "0s",
     .imin = 0, .imax = 3650 * CFG_DAY, .reloadable = true, CFG_OFF(train.lookback_ms)},
    {.path = "train.half_life", .type = CFG_TYPE_DURATION, .def = "0s",
     .imin = 0, .imax = 3650 * CFG_DAY, .reloadable = true, CFG_OFF(train.half_life_ms)},
    {.path = "train.class_weight", .type = CFG_TYPE_STRING, .def = "none",
     .flags = CFG_KEY_REQUIRED, .check = check_class_weight, .reloadable = true,
     CFG_OFF(train.class_weight)},

    {.path = "recommend.enabled", .type = CFG_TYPE_BOOL, .def = "true",
     .reloadable = true, CFG_OFF(recommend.enabled)},
    {.path = "recommend.min_confidence", .type = CFG_TYPE_DOUBLE, .def = "0.5",
     .dmin = 0.0, .dmax = 1.0, .reloadable = true, CFG_OFF(recommend.min_confidence)},
    {.path = "recommend.ttl", .type = CFG_TYPE_DURATION, .def = "24h",
     .imin = CFG_MINUTE, .imax = 365 * CFG_DAY, .reloadable = true, CFG_OFF(recommend.ttl_ms)},
    {.path = "recommend.ood_threshold", .type = CFG_TYPE_DOUBLE, .def = "2.0",
     .dmin = 0.0, .dmax = 1e6, .reloadable = true, CFG_OFF(recommend.ood_threshold)},
    {.path = "recommend.kill_switch", .type = CFG_TYPE_BOOL, .def = "false",
     .reloadable = true, CFG_OFF(recommend.kill_switch)},
    {.path = "recommend.cooldown", .type = CFG_TYPE_DURATION, .def = "6h",
     .imin = 0, .imax = 30 * CFG_DAY, .reloadable = true, CFG_OFF(recommend.cooldown_ms)},
    {.path = "recommend.max_step_pct.bid_up", .type = CFG_TYPE_DOUBLE, .def = "20.0",
     .dmin = 0.0, .dmax = 1000.0, .reloadable = true,
     CFG_OFF(recommend.max_step_pct[CFG_SIZED_BID_UP])},
    {.path = "recommend.max_step_pct.bid_down", .type = CFG_TYPE_DOUBLE, .def = "20.0",
     .dmin = 0.0, .dmax = 1000.0, .reloadable = true,
     CFG_OFF(recommend.max_step_pct[CFG_SIZED_BID_DOWN])},
    {.path = "recommend.max_step_pct.budget_up", .type = CFG_TYPE_DOUBLE, .def = "20.0",
     .dmin = 0.0, .dmax = 1000.0, .reloadable = true,
     CFG_OFF(recommend.max_step_pct[CFG_SIZED_BUDGET_UP])},
    {.path = "recommend.max_step_pct.budget_down", .type = CFG_TYPE_DOUBLE, .def = "20.0",
     .dmin = 0.0, .dmax = 1000.0, .reloadable = true,
     CFG_OFF(recommend.max_step_pct[CFG_SIZED_BUDGET_DOWN])},
    {.path = "recommend.deadband_pct.bid_up", .type = CFG_TYPE_DOUBLE, .def = "1.0",
     .dmin = 0.0, .dmax = 100.0, .reloadable = true,
     CFG_OFF(recommend.deadband_pct[CFG_SIZED_BID_UP])},
    {.path = "recommend.deadband_pct.bid_down", .type = CFG_TYPE_DOUBLE, .def = "1.0",
     .dmin = 0.0, .dmax = 100.0, .reloadable = true,
     CFG_OFF(recommend.deadband_pct[CFG_SIZED_BID_DOWN])},
    {.path = "recommend.deadband_pct.budget_up", .type = CFG_TYPE_DOUBLE, .def = "1.0",
     .dmin = 0.0, .dmax = 100.0, .reloadable = true,
     CFG_OFF(recommend.deadband_pct[CFG_SIZED_BUDGET_UP])},
    {.path = "recommend.deadband_pct.budget_down", .type = CFG_TYPE_DOUBLE, .def = "1.0",
     .dmin = 0.0, .dmax = 100.0, .reloadable = true,
     CFG_OFF(recommend.deadband_pct[CFG_SIZED_BUDGET_DOWN])},
    {.path = "recommend.allowed.campaign", .type = CFG_TYPE_STRING, .def = "budget_up,budget_down",
     .check = check_class_list, .reloadable = true,
     CFG_OFF(recommend.allowed[EVENT_ENTITY_CAMPAIGN])},
    {.path = "recommend.allowed.ad_group", .type = CFG_TYPE_STRING, .def = "bid_up,bid_down",
     .check = check_class_list, .reloadable = true,
     CFG_OFF(recommend.allowed[EVENT_ENTITY_AD_GROUP])},
    {.path = "recommend.allowed.creative", .type = CFG_TYPE_STRING,
     .def = "creative_pause,creative_resume", .check = check_class_list, .reloadable = true,
     CFG_OFF(recommend.allowed[EVENT_ENTITY_CREATIVE])},
    {.path = "recommend.allowed.keyword", .type = CFG_TYPE_STRING, .def = "bid_up,bid_down",
     .check = check_class_list, .reloadable = true,
     CFG_OFF(recommend.allowed[EVENT_ENTITY_KEYWORD])},
    {.path = "recommend.batch", .type = CFG_TYPE_INT, .def = "1000",
     .imin = 1, .imax = 100000, .reloadable = true, CFG_OFF(recommend.batch)},
    {.path = "recommend.poll_interval", .type = CFG_TYPE_DURATION, .def = "1s",
     .imin = 10, .imax = CFG_MINUTE, .reloadable = true, CFG_OFF(recommend.poll_interval_ms)},
    {.path = "recommend.publish", .type = CFG_TYPE_BOOL, .def = "false",
     CFG_OFF(recommend.publish)},

    {.path = "audit.every", .type = CFG_TYPE_DURATION, .def = "24h",
     .imin = CFG_MINUTE, .imax = 365 * CFG_DAY, .reloadable = true, CFG_OFF(audit.every_ms)},
    {.path = "audit.fdr_q", .type = CFG_TYPE_DOUBLE, .def = "0.05",
     .dmin = 0.0, .dmax = 0.5, .flags = CFG_KEY_MIN_OPEN, .reloadable = true, CFG_OFF(audit.fdr_q)},
    {.path = "audit.min_support", .type = CFG_TYPE_INT, .def = "30",
     .imin = 1, .imax = INT64_C(1000000000), .reloadable = true, CFG_OFF(audit.min_support)},
    {.path = "audit.enabled", .type = CFG_TYPE_BOOL, .def = "true", .reloadable = true,
     CFG_OFF(audit.enabled)},
    {.path = "audit.lookback", .type = CFG_TYPE_DURATION, .def = "30d",
     .imin = 0, .imax = 3650 * CFG_DAY, .reloadable = true, CFG_OFF(audit.lookback_ms)},
    {.path = "audit.tolerance", .type = CFG_TYPE_DOUBLE, .def = "1.1",
     .dmin = 1.0, .dmax = 10.0, .reloadable = true, CFG_OFF(audit.tolerance)},
    {.path = "audit.reference_rows", .type = CFG_TYPE_INT, .def = "150000",
     .imin = 1000, .imax = INT64_C(100000000), .reloadable = true, CFG_OFF(audit.reference_rows)},
    {.path = "audit.report_dir", .type = CFG_TYPE_STRING, .def = "",
     .flags = CFG_KEY_EMPTY_NULL, .reloadable = true, CFG_OFF(audit.report_dir)},
};
/* clang-format on */

#define CFG_N_KEYS (sizeof table / sizeof table[0])
_Static_assert(CFG_N_KEYS <= CFG_KEYS_MAX, "raise CFG_KEYS_MAX");

const struct cfg_key *cfg_keys(size_t *n)
{
    *n = CFG_N_KEYS;
    return table;
}

const struct cfg_key *cfg_key_find(const char *path)
{
    for (size_t i = 0; path && i < CFG_N_KEYS; i++) {
        if (strcmp(table[i].path, path) == 0)
            return &table[i];
    }
    return NULL;
}

const char *cfg_type_name(enum cfg_type type)
{
    static const char *const names[] = {"string", "bool", "int", "double",  "duration",
                                        "size",   "enum", "map", "features"};
    return (unsigned)type < sizeof names / sizeof names[0] ? names[type] : "?";
}

/* ---- field access --------------------------------------------------------- */

static void *field_of(struct cfg *cfg, const struct cfg_key *k)
{
    return (char *)cfg + k->offset;
}

static const void *cfield_of(const struct cfg *cfg, const struct cfg_key *k)
{
    return (const char *)cfg + k->offset;
}

static size_t *count_of(struct cfg *cfg, const struct cfg_key *k)
{
    return (size_t *)(void *)((char *)cfg + k->count_offset);
}

static size_t ccount_of(const struct cfg *cfg, const struct cfg_key *k)
{
    size_t n;
    memcpy(&n, (const char *)cfg + k->count_offset, sizeof n);
    return n;
}

/* ---- scalar parsers --------------------------------------------------------- */

/* Decimal int64 with an optional sign; no spaces, no fractions, no
 * exponent, no overflow. */
static int parse_int(const char *s, int64_t *out, char *why, size_t whylen)
{
    const char *p = s;
    bool neg = false;
    uint64_t v = 0;

    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (!isdigit((unsigned char)*p)) {
        util_fmt(why, whylen, "'%s' is not an integer", s);
        return -1;
    }
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (limit - d) / 10) {
            util_fmt(why, whylen, "'%s' is too %s", s, neg ? "small" : "large");
            return -1;
        }
        v = v * 10 + d;
    }
    if (*p != '\0') {
        util_fmt(why, whylen, "'%s' is not an integer", s);
        return -1;
    }
    if (neg)
        *out = v > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return 0;
}

/* A finite decimal number.  strtod alone would also take "nan", "inf" and
 * hex floats, so the spelling is checked first. */
static int parse_double(const char *s, double *out, char *why, size_t whylen)
{
    static const char *const nonfinite[] = {"nan", ".nan", "inf", ".inf", "infinity", NULL};
    const char *p = s + (*s == '+' || *s == '-');
    bool digit = false;
    char *end = NULL;

    for (size_t i = 0; nonfinite[i]; i++) {
        if (strcasecmp(p, nonfinite[i]) == 0) {
            util_fmt(why, whylen, "'%s' is not a finite number", s);
            return -1;
        }
    }
    for (const char *q = s; *q; q++)
        digit = digit || isdigit((unsigned char)*q);
    if (!digit || strspn(s, "0123456789+-.eE") != strlen(s)) {
        util_fmt(why, whylen, "'%s' is not a number", s);
        return -1;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0') {
        util_fmt(why, whylen, "'%s' is not a number", s);
        return -1;
    }
    if (errno == ERANGE || !isfinite(v)) {
        util_fmt(why, whylen, "'%s' is out of range", s);
        return -1;
    }
    *out = v;
    return 0;
}

/* YAML 1.2 core spellings only: "yes", "on" and friends are refused rather
 * than guessed at. */
static int parse_bool(const char *s, bool *out, char *why, size_t whylen)
{
    static const char *const t[] = {"true", "True", "TRUE"};
    static const char *const f[] = {"false", "False", "FALSE"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, t[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, f[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    util_fmt(why, whylen, "must be true or false");
    return -1;
}

int cfg_enum_parse(const char *const *names, const char *s, int *out, char *why, size_t whylen)
{
    size_t n = 0;
    for (; names[n]; n++) {
        if (strcmp(s, names[n]) == 0) {
            *out = (int)n;
            return 0;
        }
    }
    if (n == 2) {
        util_fmt(why, whylen, "must be %s or %s", names[0], names[1]);
        return -1;
    }
    size_t off = 0;
    util_fmt(why, whylen, "must be one of ");
    off = strlen(why);
    for (size_t i = 0; i < n && off < whylen; i++) {
        util_fmt(why + off, whylen - off, "%s%s", i ? ", " : "", names[i]);
        off += strlen(why + off);
    }
    return -1;
}

char *cfg_format_size(int64_t bytes, char *dst, size_t size)
{
    if (bytes > 0 && bytes % CFG_GIB == 0)
        util_fmt(dst, size, "%lldGiB", (long long)(bytes / CFG_GIB));
    else if (bytes > 0 && bytes % CFG_MIB == 0)
        util_fmt(dst, size, "%lldMiB", (long long)(bytes / CFG_MIB));
    else if (bytes > 0 && bytes % CFG_KIB == 0)
        util_fmt(dst, size, "%lldKiB", (long long)(bytes / CFG_KIB));
    else
        util_fmt(dst, size, "%lld", (long long)bytes);
    return dst;
}

char *cfg_format_double(double v, char *dst, size_t size)
{
    char buf[64];
    (void)snprintf(buf, sizeof buf, "%.15g", v);
    double back = strtod(buf, NULL);
    if (back < v || back > v)
        (void)snprintf(buf, sizeof buf, "%.17g", v);
    /* "1" would read back as a double too, but "1.0" says what it is. */
    if (!strpbrk(buf, ".eEn"))
        util_fmt(dst, size, "%s.0", buf);
    else
        util_fmt(dst, size, "%s", buf);
    return dst;
}

static const char *format_bound(const struct cfg_key *k, int64_t v, char *dst, size_t size)
{
    if (k->type == CFG_TYPE_DURATION)
        return util_format_duration(v, dst, size);
    if (k->type == CFG_TYPE_SIZE)
        return cfg_format_size(v, dst, size);
    util_fmt(dst, size, "%lld", (long long)v);
    return dst;
}

static int check_int_bounds(const struct cfg_key *k, int64_t v, char *why, size_t whylen)
{
    char lo[48], hi[48];
    if (v >= k->imin && v <= k->imax)
        return 0;
    util_fmt(why, whylen, "must be between %s and %s", format_bound(k, k->imin, lo, sizeof lo),
             format_bound(k, k->imax, hi, sizeof hi));
    return -1;
}

static int check_double_bounds(const struct cfg_key *k, double v, char *why, size_t whylen)
{
    bool open = (k->flags & CFG_KEY_MIN_OPEN) != 0;
    bool low_ok = open ? v > k->dmin : v >= k->dmin;
    if (low_ok && v <= k->dmax)
        return 0;
    if (open)
        util_fmt(why, whylen, "must be greater than %.15g and at most %.15g", k->dmin, k->dmax);
    else
        util_fmt(why, whylen, "must be between %.15g and %.15g", k->dmin, k->dmax);
    return -1;
}

/* Kafka's own rule for topic names. */
static int check_topic(const char *value, char *why, size_t whylen)
{
    size_t len = strlen(value);
    if (len > 249 || strcmp(value, ".") == 0 || strcmp(value, "..") == 0 ||
        strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len) {
        util_fmt(why, whylen,
                 "not a valid topic name (up to 249 letters, digits, '.', '_' and '-')");
        return -1;
    }
    return 0;
}

/* host:port, host possibly a bracketed IPv6 address. */
static int check_listen(const char *value, char *why, size_t whylen)
{
    const char *colon = strrchr(value, ':');
    int64_t port = 0;
    char tmp[8];

    if (!colon || colon == value || strlen(colon + 1) >= sizeof tmp ||
        parse_int(colon + 1, &port, tmp, sizeof tmp) != 0 || !isdigit((unsigned char)colon[1]) ||
        port < 0 || port > 65535) {
        util_fmt(why, whylen, "must be host:port with a port from 0 (any free port) to 65535");
        return -1;
    }
    return 0;
}

const char *const cfg_class_names[CFG_N_CLASSES] = {
    "hold", "bid_up", "bid_down", "budget_up", "budget_down", "creative_pause", "creative_resume",
};

int cfg_parse_class_weight(const char *s, enum cfg_class_weight_mode *mode,
                           double weights[CFG_N_CLASSES], char *why, size_t whylen)
{
    for (size_t c = 0; c < CFG_N_CLASSES; c++)
        weights[c] = 1.0;
    if (strcmp(s, "none") == 0 || strcmp(s, "balanced") == 0) {
        *mode = s[0] == 'n' ? CFG_CLASS_WEIGHT_NONE : CFG_CLASS_WEIGHT_BALANCED;
        return 0;
    }
    *mode = CFG_CLASS_WEIGHT_MAP;
    const char *p = s;
    while (*p) {
        const char *eq = strchr(p, '=');
        const char *comma = strchr(p, ',');
        if (!comma)
            comma = p + strlen(p);
        if (!eq || eq > comma) {
            util_fmt(why, whylen,
                     "must be none, balanced or class=weight[,class=weight...], not \"%.*s\"",
                     (int)(comma - p), p);
            return -1;
        }
        size_t c = 0;
        while (c < CFG_N_CLASSES && (strlen(cfg_class_names[c]) != (size_t)(eq - p) ||
                                     strncmp(cfg_class_names[c], p, (size_t)(eq - p)) != 0))
            c++;
        if (c == CFG_N_CLASSES) {
            util_fmt(why, whylen,
                     "unknown class \"%.*s\" (classes: hold, bid_up, bid_down, "
                     "budget_up, budget_down, creative_pause, creative_resume)",
                     (int)(eq - p), p);
            return -1;
        }
        char num[64], *end;
        size_t len = (size_t)(comma - eq - 1);
        if (len == 0 || len >= sizeof num) {
            util_fmt(why, whylen, "%s: weight must be a positive number", cfg_class_names[c]);
            return -1;
        }
        memcpy(num, eq + 1, len);
        num[len] = '\0';
        double w = strtod(num, &end);
        if (*end != '\0' || !isfinite(w) || !(w > 0)) {
            util_fmt(why, whylen, "%s: weight must be a positive number, not \"%s\"",
                     cfg_class_names[c], num);
            return -1;
        }
        weights[c] = w;
        p = *comma ? comma + 1 : comma;
    }
    return 0;
}

static int check_class_weight(const char *value, char *why, size_t whylen)
{
    enum cfg_class_weight_mode mode;
    double w[CFG_N_CLASSES];
    return cfg_parse_class_weight(value, &mode, w, why, whylen);
}

/* Spaces and tabs around a list element are not part of it. */
static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int cfg_parse_class_list(const char *s, uint32_t *mask, char *why, size_t whylen)
{
    uint32_t m = UINT32_C(1); /* hold is always allowed */
    uint32_t listed = 0;
    const char *p = s ? s : "";
    size_t element = 0;

    while (is_blank(*p))
        p++;
    if (*p == '\0') {
        *mask = m;
        return 0;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *b = p, *e = end;
        element++;
        while (b < e && is_blank(*b))
            b++;
        while (e > b && is_blank(e[-1]))
            e--;
        if (b == e) {
            util_fmt(why, whylen, "element %zu of the list is empty", element);
            return -1;
        }
        size_t len = (size_t)(e - b), c = 0;
        while (c < CFG_N_CLASSES &&
               (strlen(cfg_class_names[c]) != len || strncmp(cfg_class_names[c], b, len) != 0))
            c++;
        if (c == CFG_N_CLASSES) {
            util_fmt(why, whylen,
                     "unknown class \"%.*s\" (classes: hold, bid_up, bid_down, "
                     "budget_up, budget_down, creative_pause, creative_resume)",
                     (int)len, b);
            return -1;
        }
        if (listed & (UINT32_C(1) << c)) {
            util_fmt(why, whylen, "class \"%s\" is listed twice", cfg_class_names[c]);
            return -1;
        }
        listed |= UINT32_C(1) << c;
        if (!comma)
            break;
        p = comma + 1;
    }
    *mask = m | listed;
    return 0;
}

static int check_class_list(const char *value, char *why, size_t whylen)
{
    uint32_t mask;
    return cfg_parse_class_list(value, &mask, why, whylen);
}

int cfg_value_set(struct cfg *cfg, const struct cfg_key *k, const char *text, bool is_null,
                  char *why, size_t whylen)
{
    void *field = field_of(cfg, k);
    int64_t iv = 0;
    double dv = 0;
    bool bv = false;
    int ev = 0;

    if (k->type == CFG_TYPE_STRING) {
        const char *s = is_null ? "" : text;
        char *copy = NULL;
        if (*s == '\0' && (k->flags & CFG_KEY_REQUIRED)) {
            util_fmt(why, whylen, "must not be empty");
            return -1;
        }
        if (*s != '\0' && k->check && k->check(s, why, whylen) != 0)
            return -1;
        if (*s != '\0' || !(k->flags & CFG_KEY_EMPTY_NULL)) {
            copy = util_strdup(s);
            if (!copy) {
                util_fmt(why, whylen, "out of memory");
                return -1;
            }
        }
        char **slot = field;
        free(*slot);
        *slot = copy;
        return 0;
    }
    if (is_null) {
        util_fmt(why, whylen, "needs a value");
        return -1;
    }
    switch (k->type) {
    case CFG_TYPE_BOOL:
        if (parse_bool(text, &bv, why, whylen) != 0)
            return -1;
        memcpy(field, &bv, sizeof bv);
        return 0;
    case CFG_TYPE_INT:
    case CFG_TYPE_DURATION:
    case CFG_TYPE_SIZE:
        if (k->type == CFG_TYPE_INT && parse_int(text, &iv, why, whylen) != 0)
            return -1;
        if (k->type == CFG_TYPE_DURATION && util_parse_duration(text, &iv, why, whylen) != 0)
            return -1;
        if (k->type == CFG_TYPE_SIZE && util_parse_size(text, &iv, why, whylen) != 0)
            return -1;
        if (check_int_bounds(k, iv, why, whylen) != 0)
            return -1;
        memcpy(field, &iv, sizeof iv);
        return 0;
    case CFG_TYPE_DOUBLE:
        if (parse_double(text, &dv, why, whylen) != 0 ||
            check_double_bounds(k, dv, why, whylen) != 0)
            return -1;
        memcpy(field, &dv, sizeof dv);
        return 0;
    case CFG_TYPE_ENUM:
        if (cfg_enum_parse(k->names, text, &ev, why, whylen) != 0)
            return -1;
        memcpy(field, &ev, sizeof ev);
        return 0;
    default:
        util_fmt(why, whylen, "not a scalar key");
        return -1;
    }
}

/* ---- lists ------------------------------------------------------------------ */

int cfg_property_name_check(const char *name, char *why, size_t whylen)
{
    if (*name == '\0') {
        util_fmt(why, whylen, "property names must not be empty");
        return -1;
    }
    /* These two have their own keys; allowing both would leave two truths. */
    if (strcmp(name, "bootstrap.servers") == 0 || strcmp(name, "metadata.broker.list") == 0) {
        util_fmt(why, whylen, "set kafka.brokers instead");
        return -1;
    }
    if (strcmp(name, "group.id") == 0) {
        util_fmt(why, whylen, "set kafka.group_id instead");
        return -1;
    }
    return 0;
}

int cfg_feature_name_check(const char *name, char *why, size_t whylen)
{
    if (*name == '\0') {
        util_fmt(why, whylen, "must not be empty");
        return -1;
    }
    if (strlen(name) > CFG_FEATURE_NAME_MAX) {
        util_fmt(why, whylen, "must be at most %d bytes", CFG_FEATURE_NAME_MAX);
        return -1;
    }
    return 0;
}

int cfg_kv_append(struct cfg_kv **arr, size_t *n, const char *key, const char *value)
{
    int rc = -1;
    char *k = util_strdup(key), *v = util_strdup(value);
    if (!k || !v)
        goto out;
    struct cfg_kv *grown = util_realloc(*arr, (*n + 1) * sizeof **arr);
    if (!grown)
        goto out;
    *arr = grown;
    grown[*n].key = k;
    grown[*n].value = v;
    (*n)++;
    k = v = NULL;
    rc = 0;
out:
    free(k);
    free(v);
    return rc;
}

int cfg_feature_append(struct event_feature_spec **arr, size_t *n, const char *name,
                       enum event_feature_kind kind)
{
    int rc = -1;
    char *copy = util_strdup(name);
    if (!copy)
        goto out;
    struct event_feature_spec *grown = util_realloc(*arr, (*n + 1) * sizeof **arr);
    if (!grown)
        goto out;
    *arr = grown;
    grown[*n].name = copy;
    grown[*n].kind = kind;
    (*n)++;
    copy = NULL;
    rc = 0;
out:
    free(copy);
    return rc;
}

void cfg_kv_free(struct cfg_kv *arr, size_t n)
{
    for (size_t i = 0; arr && i < n; i++) {
        free(arr[i].key);
        free(arr[i].value);
    }
    free(arr);
}

void cfg_features_free(struct event_feature_spec *arr, size_t n)
{
    for (size_t i = 0; arr && i < n; i++)
        free(arr[i].name);
    free(arr);
}

void cfg_list_install(struct cfg *cfg, const struct cfg_key *k, void *arr, size_t n)
{
    void **slot = field_of(cfg, k);
    size_t *count = count_of(cfg, k);
    if (k->type == CFG_TYPE_MAP)
        cfg_kv_free(*slot, *count);
    else
        cfg_features_free(*slot, *count);
    *slot = arr;
    *count = n;
}

void cfg_one_line(char *s)
{
    for (; s && *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
    }
}

/* ---- defaults, environment, load -------------------------------------------- */

static int apply_defaults(struct cfg *cfg, char *err, size_t errlen)
{
    char why[256];
    struct event_feature_spec *feats = NULL;
    size_t n_feats = 0;
    int rc = -1;

    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        const struct cfg_key *k = &table[i];
        if (k->type == CFG_TYPE_MAP)
            continue; /* empty: calloc'd */
        if (k->type == CFG_TYPE_FEATURES) {
            for (size_t j = 0; j < sizeof default_features / sizeof default_features[0]; j++) {
                if (cfg_feature_append(&feats, &n_feats, default_features[j].name,
                                       default_features[j].kind) != 0) {
                    util_fmt(err, errlen, "%s: out of memory", k->path);
                    goto out;
                }
            }
            cfg_list_install(cfg, k, feats, n_feats);
            feats = NULL;
            continue;
        }
        if (cfg_value_set(cfg, k, k->def, false, why, sizeof why) != 0) {
            util_fmt(err, errlen, "%s: default: %s", k->path, why);
            goto out;
        }
    }
    rc = 0;
out:
    cfg_features_free(feats, n_feats);
    return rc;
}

static int apply_env(struct cfg *cfg, char *err, size_t errlen)
{
    char why[256];
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        const struct cfg_key *k = &table[i];
        const char *v = k->env ? getenv(k->env) : NULL;
        if (!v)
            continue;
        if (!util_utf8_valid((const unsigned char *)v, strlen(v), NULL)) {
            util_fmt(err, errlen, "%s: not valid UTF-8", k->env);
            return -1;
        }
        if (cfg_value_set(cfg, k, v, false, why, sizeof why) != 0) {
            util_fmt(err, errlen, "%s: %s", k->env, why);
            cfg_one_line(err);
            return -1;
        }
    }
    return 0;
}

/* The common path of both loaders; path (may be NULL) is stored in the
 * result, name is used in messages and text may be NULL when len is 0. */
static int load(const char *path, const char *name, const char *text, size_t len, struct cfg **out,
                char *err, size_t errlen)
{
    struct cfg *cfg = util_calloc(1, sizeof *cfg);
    int rc = -1;

    *out = NULL;
    if (!cfg) {
        util_fmt(err, errlen, "%s: out of memory", name);
        goto out;
    }
    if (path) {
        cfg->path = util_strdup(path);
        if (!cfg->path) {
            util_fmt(err, errlen, "%s: out of memory", name);
            goto out;
        }
    }
    if (apply_defaults(cfg, err, errlen) != 0)
        goto out;
    if (text && cfg_yaml_apply(cfg, name, text, len, err, errlen) != 0)
        goto out;
    if (apply_env(cfg, err, errlen) != 0)
        goto out;
    *out = cfg;
    cfg = NULL;
    rc = 0;
out:
    cfg_free(cfg);
    return rc;
}

int cfg_load_string(const char *name, const char *text, size_t len, struct cfg **out, char *err,
                    size_t errlen)
{
    if (!name)
        name = "<string>";
    return load(name, name, text ? text : "", text ? len : 0, out, err, errlen);
}

/* Reads the whole file into *text (caller frees).  0, or -1 with
 * "path: reason" in err. */
static int read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    struct util_buf b;
    char chunk[8192];
    int rc = -1;
    FILE *f = fopen(path, "rb");

    util_buf_init(&b);
    if (!f) {
        util_fmt(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        size_t n = fread(chunk, 1, sizeof chunk, f);
        if (n == 0)
            break;
        if (b.len + n > CFG_FILE_MAX) {
            util_fmt(err, errlen, "%s: larger than %zu bytes", path, (size_t)CFG_FILE_MAX);
            goto out;
        }
        if (util_buf_append(&b, chunk, n) != 0) {
            util_fmt(err, errlen, "%s: out of memory", path);
            goto out;
        }
    }
    if (ferror(f)) {
        util_fmt(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    *len = b.len;
    *text = util_buf_steal(&b);
    rc = 0;
out:
    if (f)
        (void)fclose(f); /* read-only: nothing to lose */
    util_buf_deinit(&b);
    return rc;
}

int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = -1;

    *out = NULL;
    if (!path)
        return load(NULL, "<defaults>", NULL, 0, out, err, errlen);
    if (read_file(path, &text, &len, err, errlen) != 0)
        goto out;
    rc = load(path, path, text ? text : "", len, out, err, errlen);
out:
    free(text);
    return rc;
}

void cfg_free(struct cfg *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        const struct cfg_key *k = &table[i];
        if (k->type == CFG_TYPE_STRING) {
            char **slot = field_of(cfg, k);
            free(*slot);
        } else if (k->type == CFG_TYPE_MAP || k->type == CFG_TYPE_FEATURES) {
            cfg_list_install(cfg, k, NULL, 0);
        }
    }
    free(cfg->path);
    free(cfg);
}

/* ---- comparison --------------------------------------------------------------- */

static bool value_equal(const struct cfg *a, const struct cfg *b, const struct cfg_key *k)
{
    const void *fa = cfield_of(a, k), *fb = cfield_of(b, k);
    size_t na, nb;

    switch (k->type) {
    case CFG_TYPE_STRING: {
        const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
        return strcmp(sa ? sa : "", sb ? sb : "") == 0;
    }
    case CFG_TYPE_BOOL:
        return memcmp(fa, fb, sizeof(bool)) == 0;
    case CFG_TYPE_INT:
    case CFG_TYPE_DURATION:
    case CFG_TYPE_SIZE:
        return memcmp(fa, fb, sizeof(int64_t)) == 0;
    case CFG_TYPE_DOUBLE: {
        double da, db;
        memcpy(&da, fa, sizeof da);
        memcpy(&db, fb, sizeof db);
        return !(da < db) && !(da > db);
    }
    case CFG_TYPE_ENUM:
        return memcmp(fa, fb, sizeof(int)) == 0;
    case CFG_TYPE_MAP: {
        const struct cfg_kv *ka = *(struct cfg_kv *const *)fa, *kb = *(struct cfg_kv *const *)fb;
        na = ccount_of(a, k);
        nb = ccount_of(b, k);
        if (na != nb)
            return false;
        for (size_t i = 0; i < na; i++) {
            if (strcmp(ka[i].key, kb[i].key) != 0 || strcmp(ka[i].value, kb[i].value) != 0)
                return false;
        }
        return true;
    }
    case CFG_TYPE_FEATURES: {
        const struct event_feature_spec *xa = *(struct event_feature_spec *const *)fa;
        const struct event_feature_spec *xb = *(struct event_feature_spec *const *)fb;
        na = ccount_of(a, k);
        nb = ccount_of(b, k);
        if (na != nb)
            return false;
        for (size_t i = 0; i < na; i++) {
            if (strcmp(xa[i].name, xb[i].name) != 0 || xa[i].kind != xb[i].kind)
                return false;
        }
        return true;
    }
    }
    return false;
}

bool cfg_equal(const struct cfg *a, const struct cfg *b)
{
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        if (!value_equal(a, b, &table[i]))
            return false;
    }
    return true;
}

int cfg_diff_nonreloadable(const struct cfg *cur, const struct cfg *next, char *err, size_t errlen)
{
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        if (!table[i].reloadable && !value_equal(cur, next, &table[i])) {
            util_fmt(err, errlen, "%s: changed; restart to apply", table[i].path);
            return -1;
        }
    }
    return 0;
}
