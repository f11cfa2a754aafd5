/*
 * Unit tests for internal/config: defaults, the shipped file, every value
 * type, bounds, environment overrides, masking, the dump, reload rules,
 * every bad config under fixtures/bad-configs (NAME.yaml with its exact
 * error line in NAME.expect) and every allocation failure.
 *
 * Run from the repository root: paths such as config/understudy.yaml and
 * fixtures/bad-configs are relative to it.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "util/util.h"

#define SHIPPED     "config/understudy.yaml"
#define BAD_DIR     "fixtures/bad-configs"
#define DOCS        "docs/configuration.md"
#define MIN_BAD     20
#define MAX_FIXTURE 256

static const char *const env_names[] = {"UNDERSTUDY_PG_DSN", "UNDERSTUDY_KAFKA_BROKERS",
                                        "UNDERSTUDY_LOG_LEVEL"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
        unsetenv(env_names[i]);
}

static int group_setup(void **state)
{
    (void)state;
    clear_env();
    util_alloc_fail_after(-1);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    clear_env();
    util_alloc_fail_after(-1);
    return 0;
}

/* Loads text, failing the test with the error when it does not load. */
static struct cfg *load_ok(const char *text)
{
    char err[1024] = "";
    struct cfg *cfg = NULL;
    if (cfg_load_string("test.yaml", text, strlen(text), &cfg, err, sizeof err) != 0)
        fail_msg("load failed: %s\n--- input ---\n%s", err, text);
    assert_non_null(cfg);
    return cfg;
}

/* Loads text that must fail; returns the error (static buffer). */
static const char *load_bad(const char *text)
{
    static char err[1024];
    struct cfg *cfg = (struct cfg *)&err; /* must be reset to NULL */
    err[0] = '\0';
    if (cfg_load_string("test.yaml", text, strlen(text), &cfg, err, sizeof err) == 0) {
        cfg_free(cfg);
        fail_msg("loaded but should not have:\n%s", text);
    }
    assert_null(cfg);
    assert_true(err[0] != '\0');
    return err;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (run tests from the repository root)", path);
    struct util_buf b;
    char chunk[4096];
    size_t n;
    util_buf_init(&b);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(util_buf_append(&b, chunk, n), 0);
    fclose(f);
    if (!b.data)
        assert_int_equal(util_buf_puts(&b, ""), 0);
    return util_buf_steal(&b);
}

static char *dump_to_string(const struct cfg *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(cfg_dump(cfg, f), 0);
    assert_int_equal(fclose(f), 0);
    return text;
}

static void assert_double(double got, double want)
{
    assert_true(got >= want - 1e-12 && got <= want + 1e-12);
}

/* The documented defaults, written out field by field on purpose: this is
 * the second, independent statement of them that the table is checked
 * against. */
static void assert_defaults(const struct cfg *c)
{
    static const struct {
        const char *name;
        enum event_feature_kind kind;
    } feats[] = {
        {"cpa", EVENT_FEATURE_NUMERIC},          {"target_cpa", EVENT_FEATURE_NUMERIC},
        {"cpa_ratio", EVENT_FEATURE_NUMERIC},    {"pacing", EVENT_FEATURE_NUMERIC},
        {"hour_of_day", EVENT_FEATURE_NUMERIC},  {"channel", EVENT_FEATURE_CATEGORICAL},
        {"vertical", EVENT_FEATURE_CATEGORICAL},
    };
    assert_string_equal(c->kafka.brokers, "localhost:9092");
    assert_string_equal(c->kafka.group_id, "understudy");
    assert_string_equal(c->kafka.topic_actions, "ops.actions");
    assert_string_equal(c->kafka.topic_states, "ops.states");
    assert_string_equal(c->kafka.topic_feedback, "ops.feedback");
    assert_string_equal(c->kafka.topic_recommendations, "ops.recommendations");
    assert_int_equal(c->kafka.n_properties, 0);
    assert_string_equal(c->postgres.dsn, "");
    assert_null(c->postgres.password_file);
    assert_int_equal(c->n_features, sizeof feats / sizeof feats[0]);
    for (size_t i = 0; i < c->n_features; i++) {
        assert_string_equal(c->features[i].name, feats[i].name);
        assert_int_equal(c->features[i].kind, feats[i].kind);
    }
    assert_int_equal(c->labels.hold_window_ms, 60 * 60000);
    assert_int_equal(c->labels.settle_window_ms, 30 * 60000);
    assert_int_equal(c->ingest.max_message_bytes, 1048576);
    assert_int_equal(c->ingest.batch_messages, 5000);
    assert_int_equal(c->ingest.batch_bytes, 16 * 1048576);
    assert_int_equal(c->ingest.batch_wait_ms, 50);
    assert_int_equal(c->log.level, LOG_LEVEL_INFO);
    assert_int_equal(c->log.format, LOG_FORMAT_TEXT);
    assert_true(c->metrics.enabled);
    assert_string_equal(c->metrics.listen, "127.0.0.1:9464");
    assert_int_equal(c->train.every_ms, 6 * 3600000);
    assert_int_equal(c->train.after_new_actions, 5000);
    assert_int_equal(c->train.rounds, 200);
    assert_double(c->train.learning_rate, 0.3);
    assert_int_equal(c->train.max_bins, 255);
    assert_double(c->train.lambda, 1.0);
    assert_double(c->train.min_child_weight, 1.0);
    assert_double(c->train.valid_fraction, 0.2);
    assert_int_equal(c->train.early_stop, 20);
    assert_int_equal(c->train.threads, 2);
    assert_true(c->recommend.enabled);
    assert_double(c->recommend.min_confidence, 0.5);
    assert_int_equal(c->recommend.ttl_ms, 24 * 3600000);
    assert_double(c->recommend.ood_threshold, 2.0);
    assert_false(c->recommend.kill_switch);
    assert_int_equal(c->recommend.cooldown_ms, 6 * 3600000);
    for (size_t i = 0; i < CFG_N_SIZED; i++) {
        assert_double(c->recommend.max_step_pct[i], 20.0);
        assert_double(c->recommend.deadband_pct[i], 1.0);
    }
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_CAMPAIGN], "budget_up,budget_down");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_AD_GROUP], "bid_up,bid_down");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_CREATIVE],
                        "creative_pause,creative_resume");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_KEYWORD], "bid_up,bid_down");
    assert_int_equal(c->recommend.batch, 1000);
    assert_int_equal(c->recommend.poll_interval_ms, 1000);
    assert_false(c->recommend.publish);
    assert_int_equal(c->audit.every_ms, 24 * 3600000);
    assert_double(c->audit.fdr_q, 0.05);
    assert_int_equal(c->audit.min_support, 30);
}

/* ---- defaults and the shipped file ------------------------------------------- */

static void test_config_load_defaults(void **state)
{
    char err[256];
    struct cfg *cfg = NULL;
    (void)state;
    assert_int_equal(cfg_load(NULL, &cfg, err, sizeof err), 0);
    assert_null(cfg->path);
    assert_defaults(cfg);
    cfg_free(cfg);
}

static void test_config_load_shipped_equals_defaults(void **state)
{
    char err[1024];
    struct cfg *shipped = NULL, *defaults = NULL;
    (void)state;
    if (cfg_load(SHIPPED, &shipped, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(shipped->path, SHIPPED);
    assert_defaults(shipped);
    assert_int_equal(cfg_load(NULL, &defaults, err, sizeof err), 0);
    assert_true(cfg_equal(shipped, defaults));
    cfg_free(shipped);
    cfg_free(defaults);
}

static void test_config_load_string_empty_is_defaults(void **state)
{
    static const char *const texts[] = {
        "",
        "# only a comment\n",
        "---\n",
        "~\n",
        "---\n...\n",
        "kafka:\nlabels:\ntrain: ~\n",
        "kafka:\n  topics:\n  properties:\n",
    };
    (void)state;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct cfg *cfg = load_ok(texts[i]);
        assert_defaults(cfg);
        cfg_free(cfg);
    }
    struct cfg *cfg = NULL;
    char err[64];
    assert_int_equal(cfg_load_string("x", NULL, 0, &cfg, err, sizeof err), 0);
    assert_defaults(cfg);
    cfg_free(cfg);
}

/* ---- every type --------------------------------------------------------------- */

static const char every_key[] =
    "kafka:\n"
    "  brokers: \"k1:9092,k2:9092\"\n"
    "  group_id: grp\n"
    "  topics: {actions: a.b, states: s_t, feedback: f-b, recommendations: r.e-c_s}\n"
    "  properties:\n"
    "    security.protocol: SASL_SSL\n"
    "    enable.idempotence: true\n"
    "    queued.max.messages.kbytes: 1024\n"
    "    ssl.endpoint.identification.algorithm: \"\"\n"
    "postgres:\n"
    "  dsn: 'host=db dbname=app'\n"
    "  password_file: /run/secrets/pg\n"
    "features:\n"
    "  - name: x\n"
    "    type: numeric\n"
    "  - {name: \"y z\", type: categorical}\n"
    "labels: {hold_window: 1h30m, settle_window: 0s}\n"
    "ingest:\n"
    "  max_message_bytes: 2048\n"
    "  batch_messages: \"7\"\n"
    "  batch_bytes: 1GiB\n"
    "  batch_wait: 1m\n"
    "log: {level: debug, format: json}\n"
    "metrics: {enabled: false, listen: \"[::1]:9100\"}\n"
    "train:\n"
    "  every: 1d\n"
    "  after_new_actions: 0\n"
    "  rounds: 1\n"
    "  learning_rate: 1\n"
    "  max_bins: 2\n"
    "  lambda: 2.5e2\n"
    "  min_child_weight: 0\n"
    "  valid_fraction: .5\n"
    "  early_stop: 0\n"
    "  threads: 256\n"
    "recommend:\n"
    "  enabled: False\n"
    "  min_confidence: 1.0\n"
    "  ttl: 90s\n"
    "  ood_threshold: 0\n"
    "  kill_switch: true\n"
    "  cooldown: 0s\n"
    "  max_step_pct: {bid_up: 0, bid_down: 5, budget_up: 1000, budget_down: 12.5}\n"
    "  deadband_pct:\n"
    "    bid_up: 0\n"
    "    bid_down: 0.5\n"
    "    budget_up: 100\n"
    "    budget_down: 2\n"
    "  allowed:\n"
    "    campaign: \"\"\n"
    "    ad_group: \" hold , bid_down\"\n"
    "    creative: creative_resume\n"
    "    keyword: \"bid_up,bid_down,budget_up,budget_down,creative_pause,creative_resume\"\n"
    "  batch: 100000\n"
    "  poll_interval: 10ms\n"
    "  publish: true\n"
    "audit: {every: 1m, fdr_q: 0.5, min_support: 1}\n";

static void test_config_load_string_every_type(void **state)
{
    (void)state;
    struct cfg *c = load_ok(every_key);
    assert_string_equal(c->path, "test.yaml");
    assert_string_equal(c->kafka.brokers, "k1:9092,k2:9092");
    assert_string_equal(c->kafka.group_id, "grp");
    assert_string_equal(c->kafka.topic_actions, "a.b");
    assert_string_equal(c->kafka.topic_states, "s_t");
    assert_string_equal(c->kafka.topic_feedback, "f-b");
    assert_string_equal(c->kafka.topic_recommendations, "r.e-c_s");
    assert_int_equal(c->kafka.n_properties, 4);
    assert_string_equal(c->kafka.properties[0].key, "security.protocol");
    assert_string_equal(c->kafka.properties[0].value, "SASL_SSL");
    assert_string_equal(c->kafka.properties[1].value, "true");
    assert_string_equal(c->kafka.properties[2].value, "1024");
    assert_string_equal(c->kafka.properties[3].key, "ssl.endpoint.identification.algorithm");
    assert_string_equal(c->kafka.properties[3].value, "");
    assert_string_equal(c->postgres.dsn, "host=db dbname=app");
    assert_string_equal(c->postgres.password_file, "/run/secrets/pg");
    assert_int_equal(c->n_features, 2);
    assert_string_equal(c->features[0].name, "x");
    assert_int_equal(c->features[0].kind, EVENT_FEATURE_NUMERIC);
    assert_string_equal(c->features[1].name, "y z");
    assert_int_equal(c->features[1].kind, EVENT_FEATURE_CATEGORICAL);
    assert_int_equal(c->labels.hold_window_ms, 90 * 60000);
    assert_int_equal(c->labels.settle_window_ms, 0);
    assert_int_equal(c->ingest.max_message_bytes, 2048);
    assert_int_equal(c->ingest.batch_messages, 7);
    assert_int_equal(c->ingest.batch_bytes, INT64_C(1) << 30);
    assert_int_equal(c->ingest.batch_wait_ms, 60000);
    assert_int_equal(c->log.level, LOG_LEVEL_DEBUG);
    assert_int_equal(c->log.format, LOG_FORMAT_JSON);
    assert_false(c->metrics.enabled);
    assert_string_equal(c->metrics.listen, "[::1]:9100");
    assert_int_equal(c->train.every_ms, 86400000);
    assert_int_equal(c->train.after_new_actions, 0);
    assert_int_equal(c->train.rounds, 1);
    assert_double(c->train.learning_rate, 1.0);
    assert_int_equal(c->train.max_bins, 2);
    assert_double(c->train.lambda, 250.0);
    assert_double(c->train.min_child_weight, 0.0);
    assert_double(c->train.valid_fraction, 0.5);
    assert_int_equal(c->train.early_stop, 0);
    assert_int_equal(c->train.threads, 256);
    assert_false(c->recommend.enabled);
    assert_double(c->recommend.min_confidence, 1.0);
    assert_int_equal(c->recommend.ttl_ms, 90000);
    assert_double(c->recommend.ood_threshold, 0.0);
    assert_true(c->recommend.kill_switch);
    assert_int_equal(c->recommend.cooldown_ms, 0);
    assert_double(c->recommend.max_step_pct[CFG_SIZED_BID_UP], 0.0);
    assert_double(c->recommend.max_step_pct[CFG_SIZED_BID_DOWN], 5.0);
    assert_double(c->recommend.max_step_pct[CFG_SIZED_BUDGET_UP], 1000.0);
    assert_double(c->recommend.max_step_pct[CFG_SIZED_BUDGET_DOWN], 12.5);
    assert_double(c->recommend.deadband_pct[CFG_SIZED_BID_UP], 0.0);
    assert_double(c->recommend.deadband_pct[CFG_SIZED_BID_DOWN], 0.5);
    assert_double(c->recommend.deadband_pct[CFG_SIZED_BUDGET_UP], 100.0);
    assert_double(c->recommend.deadband_pct[CFG_SIZED_BUDGET_DOWN], 2.0);
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_CAMPAIGN], "");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_AD_GROUP], " hold , bid_down");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_CREATIVE], "creative_resume");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_KEYWORD],
                        "bid_up,bid_down,budget_up,budget_down,creative_pause,creative_resume");
    assert_int_equal(c->recommend.batch, 100000);
    assert_int_equal(c->recommend.poll_interval_ms, 10);
    assert_true(c->recommend.publish);
    assert_int_equal(c->audit.every_ms, 60000);
    assert_double(c->audit.fdr_q, 0.5);
    assert_int_equal(c->audit.min_support, 1);
    cfg_free(c);
}

static void test_config_load_string_sizes_accept_numbers_and_units(void **state)
{
    static const struct {
        const char *text;
        int64_t want;
    } cases[] = {
        {"1024", 1024},        {"4096B", 4096}, {"512KiB", 512 * 1024},
        {"3MiB", 3 * 1048576}, {"2kB", 2000},   {"\"1MB\"", 1000000},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "ingest:\n  max_message_bytes: %s\n", cases[i].text);
        struct cfg *c = load_ok(text);
        assert_int_equal(c->ingest.max_message_bytes, cases[i].want);
        cfg_free(c);
    }
}

static void test_config_load_string_ints_strict(void **state)
{
    static const struct {
        const char *value;
        const char *reason;
    } bad[] = {
        {"1.0", "'1.0' is not an integer"},
        {"1e3", "'1e3' is not an integer"},
        {"0x10", "'0x10' is not an integer"},
        {"+", "'+' is not an integer"},
        {"\" 5\"", "' 5' is not an integer"},
        {"\"5 \"", "'5 ' is not an integer"},
        {"1_000", "'1_000' is not an integer"},
        {"9223372036854775808", "'9223372036854775808' is too large"},
        {"-9223372036854775809", "'-9223372036854775809' is too small"},
        {"9223372036854775807", "must be between 1 and 1000000000"},
        {"-9223372036854775808", "must be between 1 and 1000000000"},
        {"0", "must be between 1 and 1000000000"},
        {"~", "needs a value"},
        {"", "needs a value"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128], want[256];
        snprintf(text, sizeof text, "audit:\n  min_support: %s\n", bad[i].value);
        snprintf(want, sizeof want, "test.yaml:2:16: audit.min_support: %s", bad[i].reason);
        if (bad[i].value[0] == '\0') /* the empty value's node sits after the key */
            snprintf(want, sizeof want, "test.yaml:2:15: audit.min_support: %s", bad[i].reason);
        assert_string_equal(load_bad(text), want);
    }
    struct cfg *c = load_ok("audit:\n  min_support: +0012\n");
    assert_int_equal(c->audit.min_support, 12);
    cfg_free(c);
}

static void test_config_load_string_doubles_strict(void **state)
{
    static const char *const good[] = {"0.25", ".25", "25e-2", "+0.25", "2.5E-1"};
    static const struct {
        const char *value;
        const char *reason;
    } bad[] = {
        {"nan", "'nan' is not a finite number"},
        {"NaN", "'NaN' is not a finite number"},
        {".NaN", "'.NaN' is not a finite number"},
        {"inf", "'inf' is not a finite number"},
        {"-Infinity", "'-Infinity' is not a finite number"},
        {".inf", "'.inf' is not a finite number"},
        {"0x1p-2", "'0x1p-2' is not a number"},
        {"1e999", "'1e999' is out of range"},
        {"1e-999", "'1e-999' is out of range"},
        {"0.5x", "'0.5x' is not a number"},
        {"e", "'e' is not a number"},
        {"1e", "'1e' is not a number"},
        {"half", "'half' is not a number"},
        {"-0.1", "must be between 0 and 1"},
        {"1.0000001", "must be between 0 and 1"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "recommend:\n  min_confidence: %s\n", good[i]);
        struct cfg *c = load_ok(text);
        assert_double(c->recommend.min_confidence, 0.25);
        cfg_free(c);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128], want[256];
        snprintf(text, sizeof text, "recommend:\n  min_confidence: %s\n", bad[i].value);
        snprintf(want, sizeof want, "test.yaml:2:19: recommend.min_confidence: %s", bad[i].reason);
        assert_string_equal(load_bad(text), want);
    }
}

static void test_config_load_string_bools_strict(void **state)
{
    static const char *const yes[] = {"true", "True", "TRUE", "\"true\""};
    static const char *const no[] = {"yes", "on", "1", "y", "tru", "~"};
    (void)state;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "metrics: {enabled: false}\nrecommend:\n  enabled: %s\n",
                 yes[i]);
        struct cfg *c = load_ok(text);
        assert_true(c->recommend.enabled);
        assert_false(c->metrics.enabled);
        cfg_free(c);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "recommend:\n  enabled: %s\n", no[i]);
        const char *err = load_bad(text);
        assert_non_null(strstr(err, "test.yaml:2:12: recommend.enabled: "));
    }
}

static void test_config_load_string_strings(void **state)
{
    (void)state;
    /* Quoted empty is still empty; a null value is empty too. */
    assert_string_equal(load_bad("kafka:\n  group_id: ''\n"),
                        "test.yaml:2:13: kafka.group_id: must not be empty");
    assert_string_equal(load_bad("kafka:\n  group_id: ~\n"),
                        "test.yaml:2:13: kafka.group_id: must not be empty");
    assert_string_equal(load_bad("kafka:\n  topics:\n    actions: ''\n"),
                        "test.yaml:3:14: kafka.topics.actions: must not be empty");
    assert_string_equal(load_bad("metrics:\n  listen: \":0\"\n"),
                        "test.yaml:2:11: metrics.listen: must be host:port with a port from 0 "
                        "(any free port) to 65535");
    assert_string_equal(load_bad("metrics:\n  listen: \"h:70000\"\n"),
                        "test.yaml:2:11: metrics.listen: must be host:port with a port from 0 "
                        "(any free port) to 65535");

    /* Numbers and booleans are fine as strings; "null" quoted is a string. */
    struct cfg *c = load_ok("kafka:\n  group_id: 42\n  brokers: 'null'\npostgres:\n"
                            "  password_file: ''\n  dsn: ~\n");
    assert_string_equal(c->kafka.group_id, "42");
    assert_string_equal(c->kafka.brokers, "null");
    assert_null(c->postgres.password_file);
    assert_string_equal(c->postgres.dsn, "");
    cfg_free(c);

    /* A value that echoes a control character stays on one line. */
    const char *err = load_bad("labels:\n  hold_window: \"5\\nx\"\n");
    assert_null(strchr(err, '\n'));
    assert_string_equal(err, "test.yaml:2:16: labels.hold_window: '5?x' needs a unit: ms, s, m, "
                             "h or d");
}

static void test_config_load_string_enums(void **state)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    (void)state;
    for (size_t i = 0; i < 4; i++) {
        char text[64];
        enum log_level want;
        snprintf(text, sizeof text, "log:\n  level: %s\n", levels[i]);
        assert_int_equal(log_level_parse(levels[i], &want), 0);
        struct cfg *c = load_ok(text);
        assert_int_equal(c->log.level, want);
        cfg_free(c);
    }
    assert_string_equal(load_bad("log:\n  level: INFO\n"),
                        "test.yaml:2:10: log.level: must be one of debug, info, warn, error");
}

static void test_config_load_string_features(void **state)
{
    (void)state;
    struct cfg *c = load_ok("features:\n  - {type: categorical, name: region}\n");
    assert_int_equal(c->n_features, 1);
    assert_string_equal(c->features[0].name, "region");
    assert_int_equal(c->features[0].kind, EVENT_FEATURE_CATEGORICAL);
    cfg_free(c);

    assert_string_equal(load_bad("features:\n"),
                        "test.yaml:1:10: features: must list at least one feature");
    assert_string_equal(load_bad("features:\n  - cpa\n"),
                        "test.yaml:2:5: features[0]: expected a mapping with name and type, "
                        "found a scalar");
    assert_string_equal(load_bad("features:\n  - {name: a, name: b, type: numeric}\n"),
                        "test.yaml:2:15: features[0].name: duplicate key");
    assert_string_equal(load_bad("features:\n  - {type: numeric}\n"),
                        "test.yaml:2:5: features[0]: missing key 'name'");
    assert_string_equal(load_bad("features:\n  - {name: [a], type: numeric}\n"),
                        "test.yaml:2:12: features[0].name: expected a scalar, found a sequence");

    /* Name length limit: 128 bytes is fine, 129 is not. */
    char text[512], name[140];
    memset(name, 'n', 129);
    name[129] = '\0';
    snprintf(text, sizeof text, "features:\n  - {name: %s, type: numeric}\n", name);
    assert_string_equal(load_bad(text),
                        "test.yaml:2:12: features[0].name: must be at most 128 bytes");
    name[128] = '\0';
    snprintf(text, sizeof text, "features:\n  - {name: %s, type: numeric}\n", name);
    c = load_ok(text);
    assert_int_equal(strlen(c->features[0].name), 128);
    cfg_free(c);
}

static void test_config_load_string_properties(void **state)
{
    (void)state;
    assert_string_equal(load_bad("kafka:\n  properties: [a]\n"),
                        "test.yaml:2:15: kafka.properties: expected a mapping, found a sequence");
    assert_string_equal(load_bad("kafka:\n  properties:\n    bootstrap.servers: x:1\n"),
                        "test.yaml:3:5: kafka.properties.bootstrap.servers: set kafka.brokers "
                        "instead");
    assert_string_equal(load_bad("kafka:\n  properties:\n    '': x\n"),
                        "test.yaml:3:5: kafka.properties: property names must not be empty");
    assert_string_equal(load_bad("kafka:\n  properties:\n    a: {b: c}\n"),
                        "test.yaml:3:8: kafka.properties.a: expected a string, found a mapping");
}

static void test_config_load_string_refuses_dotted_and_odd_keys(void **state)
{
    (void)state;
    assert_string_equal(load_bad("log:\n  level.x: info\n"),
                        "test.yaml:2:3: log.level.x: unknown key");
    assert_string_equal(load_bad("log:\n  level:\n    x: 1\n"),
                        "test.yaml:3:5: log.level: expected a scalar, found a mapping");
    assert_string_equal(load_bad("? [a]\n: 1\n"), "test.yaml:1:3: keys must be scalars");
    assert_string_equal(load_bad("kafka: 5\n"),
                        "test.yaml:1:8: kafka: expected a mapping, found a scalar");
    assert_string_equal(load_bad("42\n"),
                        "test.yaml:1:1: the top level must be a mapping, found a scalar");

    /* A key far longer than any path is simply unknown. */
    char text[1200];
    memset(text, 'k', 1000);
    memcpy(text + 1000, ": 1\n", 5);
    const char *err = load_bad(text);
    assert_non_null(strstr(err, "test.yaml:1:1: kkkk"));
    assert_non_null(strstr(err, ": unknown key"));
}

/* Writes "a:\n  b:\n    c: value\n" for the dotted path a.b.c. */
static void nested_yaml(char *dst, size_t size, const char *path, const char *value)
{
    size_t off = 0, depth = 0;
    const char *p = path;
    for (;;) {
        size_t len = strcspn(p, ".");
        bool last = p[len] == '\0';
        int w = snprintf(dst + off, size - off, "%*s%.*s:%s%s\n", (int)(depth * 2), "", (int)len, p,
                         last ? " " : "", last ? value : "");
        assert_true(w > 0 && (size_t)w < size - off);
        off += (size_t)w;
        if (last)
            break;
        p += len + 1;
        depth++;
    }
}

static void test_config_nested_yaml_helper(void **state)
{
    char text[128];
    (void)state;
    nested_yaml(text, sizeof text, "recommend.max_step_pct.bid_up", "5");
    assert_string_equal(text, "recommend:\n  max_step_pct:\n    bid_up: 5\n");
    nested_yaml(text, sizeof text, "audit.every", "1h");
    assert_string_equal(text, "audit:\n  every: 1h\n");
}

/* Every numeric key accepts its bounds and refuses one step beyond them. */
static void test_config_load_string_bounds_from_table(void **state)
{
    size_t n, checked = 0, deep = 0;
    const struct cfg_key *keys = cfg_keys(&n);
    (void)state;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_key *k = &keys[i];
        char text[256], lo[64], hi[64], below[64], above[64];
        if (k->type == CFG_TYPE_INT || k->type == CFG_TYPE_SIZE || k->type == CFG_TYPE_DURATION) {
            const char *unit = k->type == CFG_TYPE_DURATION ? "ms" : "";
            snprintf(lo, sizeof lo, "%lld%s", (long long)k->imin, unit);
            snprintf(hi, sizeof hi, "%lld%s", (long long)k->imax, unit);
            snprintf(above, sizeof above, "%lld%s", (long long)k->imax + 1, unit);
            snprintf(below, sizeof below, "%lld%s", (long long)k->imin - 1, unit);
        } else if (k->type == CFG_TYPE_DOUBLE) {
            snprintf(lo, sizeof lo, "%.17g", k->dmin);
            snprintf(hi, sizeof hi, "%.17g", k->dmax);
            snprintf(above, sizeof above, "%.17g", k->dmax * 1.000001 + 1e-9);
            snprintf(below, sizeof below, "%.17g", k->dmin - 1e-9);
        } else {
            continue;
        }
        const char *ok[] = {lo, hi};
        for (size_t j = 0; j < 2; j++) {
            if (j == 0 && (k->flags & CFG_KEY_MIN_OPEN))
                continue;
            nested_yaml(text, sizeof text, k->path, ok[j]);
            cfg_free(load_ok(text));
        }
        const char *bad[] = {below, above, lo};
        size_t n_bad = (k->flags & CFG_KEY_MIN_OPEN) ? 3 : 2;
        for (size_t j = 0; j < n_bad; j++) {
            /* Durations and sizes refuse negatives before any bound. */
            if (bad[j][0] == '-' && k->type != CFG_TYPE_INT && k->type != CFG_TYPE_DOUBLE)
                continue;
            nested_yaml(text, sizeof text, k->path, bad[j]);
            const char *err = load_bad(text);
            if (!strstr(err, "must be between") && !strstr(err, "must be greater than"))
                fail_msg("%s = %s: %s", k->path, bad[j], err);
        }
        checked++;
        const char *dot = strchr(k->path, '.');
        deep += dot && strchr(dot + 1, '.') != NULL;
    }
    assert_true(checked > 30);
    assert_int_equal(deep, 2 * CFG_N_SIZED); /* recommend.max_step_pct.*, deadband_pct.* */
}

/* ---- recommend.allowed.* class lists ----------------------------------------------- */

#define BIT(c) (UINT32_C(1) << (c))

static void test_config_parse_class_list_good(void **state)
{
    static const struct {
        const char *text;
        uint32_t want;
    } cases[] = {
        {"", BIT(0)},
        {"   ", BIT(0)},
        {"hold", BIT(0)},
        {"bid_up", BIT(0) | BIT(1)},
        {"bid_up,bid_down", BIT(0) | BIT(1) | BIT(2)},
        {"budget_up,budget_down", BIT(0) | BIT(3) | BIT(4)},
        {"creative_pause,creative_resume", BIT(0) | BIT(5) | BIT(6)},
        {" bid_down ,\thold,  bid_up\t", BIT(0) | BIT(1) | BIT(2)},
        {"creative_resume,hold", BIT(0) | BIT(6)},
        {"hold,bid_up,bid_down,budget_up,budget_down,creative_pause,creative_resume", 0x7f},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[256] = "";
        uint32_t mask = 0xdead0000u;
        if (cfg_parse_class_list(cases[i].text, &mask, why, sizeof why) != 0)
            fail_msg("\"%s\": %s", cases[i].text, why);
        if (mask != cases[i].want)
            fail_msg("\"%s\": mask 0x%x, want 0x%x", cases[i].text, (unsigned)mask,
                     (unsigned)cases[i].want);
    }
    /* The bits follow cfg_class_names. */
    for (size_t c = 0; c < CFG_N_CLASSES; c++) {
        char why[64];
        uint32_t mask = 0;
        assert_int_equal(cfg_parse_class_list(cfg_class_names[c], &mask, why, sizeof why), 0);
        assert_int_equal(mask, BIT(0) | BIT(c));
    }
    uint32_t mask = 0;
    char why[64];
    assert_int_equal(cfg_parse_class_list(NULL, &mask, why, sizeof why), 0);
    assert_int_equal(mask, BIT(0));
}

static void test_config_parse_class_list_bad(void **state)
{
    static const char classes[] = "(classes: hold, bid_up, bid_down, budget_up, budget_down, "
                                  "creative_pause, creative_resume)";
    static const struct {
        const char *text, *reason;
    } cases[] = {
        {"bid_sideways", "unknown class \"bid_sideways\" "},
        {"bid_up,Bid_down", "unknown class \"Bid_down\" "},
        {"bid_up, bid down", "unknown class \"bid down\" "},
        {"bid_up;bid_down", "unknown class \"bid_up;bid_down\" "},
        {"bid_up,bid_up", "class \"bid_up\" is listed twice"},
        {"hold, bid_down ,hold", "class \"hold\" is listed twice"},
        {"bid_up,,bid_down", "element 2 of the list is empty"},
        {"bid_up, ,bid_down", "element 2 of the list is empty"},
        {",bid_up", "element 1 of the list is empty"},
        {"bid_up,", "element 2 of the list is empty"},
        {",", "element 1 of the list is empty"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[512] = "", want[512];
        uint32_t mask = 0xdeadbeefu;
        assert_int_equal(cfg_parse_class_list(cases[i].text, &mask, why, sizeof why), -1);
        assert_int_equal(mask, 0xdeadbeefu); /* untouched on failure */
        if (strncmp(cases[i].reason, "unknown", 7) == 0)
            snprintf(want, sizeof want, "%s%s", cases[i].reason, classes);
        else
            snprintf(want, sizeof want, "%s", cases[i].reason);
        assert_string_equal(why, want);
    }
}

/* Bad recommend and recommendations-topic values, with their position. */
static void test_config_load_string_recommend_bad_values(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"recommend:\n  max_step_pct:\n    bid_up: 1000.5\n",
         "test.yaml:3:13: recommend.max_step_pct.bid_up: must be between 0 and 1000"},
        {"recommend:\n  max_step_pct: {budget_down: -1}\n",
         "test.yaml:2:31: recommend.max_step_pct.budget_down: must be between 0 and 1000"},
        {"recommend:\n  deadband_pct:\n    budget_up: 101\n",
         "test.yaml:3:16: recommend.deadband_pct.budget_up: must be between 0 and 100"},
        {"recommend:\n  max_step_pct:\n    bid_sideways: 5\n",
         "test.yaml:3:5: recommend.max_step_pct.bid_sideways: unknown key"},
        {"recommend:\n  max_step_pct: 5\n",
         "test.yaml:2:17: recommend.max_step_pct: expected a mapping, found a scalar"},
        {"recommend:\n  allowed:\n    keyword: \"bid_up,bid_sideways\"\n",
         "test.yaml:3:14: recommend.allowed.keyword: unknown class \"bid_sideways\" (classes: "
         "hold, bid_up, bid_down, budget_up, budget_down, creative_pause, creative_resume)"},
        {"recommend:\n  allowed:\n    campaign: \"budget_up,,budget_down\"\n",
         "test.yaml:3:15: recommend.allowed.campaign: element 2 of the list is empty"},
        {"recommend:\n  allowed:\n    creative: creative_pause,creative_pause\n",
         "test.yaml:3:15: recommend.allowed.creative: class \"creative_pause\" is listed twice"},
        {"recommend:\n  allowed:\n    ad_group: [bid_up, bid_down]\n",
         "test.yaml:3:15: recommend.allowed.ad_group: expected a scalar, found a sequence"},
        {"recommend:\n  cooldown: 31d\n",
         "test.yaml:2:13: recommend.cooldown: must be between 0s and 30d"},
        {"recommend:\n  poll_interval: 5ms\n",
         "test.yaml:2:18: recommend.poll_interval: must be between 10ms and 1m"},
        {"recommend:\n  batch: 0\n",
         "test.yaml:2:10: recommend.batch: must be between 1 and 100000"},
        {"recommend:\n  kill_switch: yes\n",
         "test.yaml:2:16: recommend.kill_switch: must be true or false"},
        {"recommend:\n  publish: 1\n", "test.yaml:2:12: recommend.publish: must be true or false"},
        {"kafka:\n  topics:\n    recommendations: ''\n",
         "test.yaml:3:22: kafka.topics.recommendations: must not be empty"},
        {"kafka:\n  topics:\n    recommendations: ops/recs\n",
         "test.yaml:3:22: kafka.topics.recommendations: not a valid topic name (up to 249 "
         "letters, digits, '.', '_' and '-')"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(load_bad(cases[i].text), cases[i].want);

    /* A null or empty allowed list is valid: hold only. */
    struct cfg *c = load_ok("recommend:\n  allowed:\n    campaign: ~\n    keyword: ''\n");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_CAMPAIGN], "");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_KEYWORD], "");
    assert_string_equal(c->recommend.allowed[EVENT_ENTITY_AD_GROUP], "bid_up,bid_down");
    cfg_free(c);
}

/* The defaults of the allowed lists parse to the masks the recommender
 * expects: budgets on campaigns, bids on ad groups and keywords, pause and
 * resume on creatives, hold everywhere. */
static void test_config_allowed_defaults_parse(void **state)
{
    static const uint32_t want[EVENT_ENTITY_COUNT] = {
        [EVENT_ENTITY_CAMPAIGN] =
            BIT(EVENT_CLASS_HOLD) | BIT(EVENT_CLASS_BUDGET_UP) | BIT(EVENT_CLASS_BUDGET_DOWN),
        [EVENT_ENTITY_AD_GROUP] =
            BIT(EVENT_CLASS_HOLD) | BIT(EVENT_CLASS_BID_UP) | BIT(EVENT_CLASS_BID_DOWN),
        [EVENT_ENTITY_CREATIVE] = BIT(EVENT_CLASS_HOLD) | BIT(EVENT_CLASS_CREATIVE_PAUSE) |
                                  BIT(EVENT_CLASS_CREATIVE_RESUME),
        [EVENT_ENTITY_KEYWORD] =
            BIT(EVENT_CLASS_HOLD) | BIT(EVENT_CLASS_BID_UP) | BIT(EVENT_CLASS_BID_DOWN),
    };
    char err[256];
    struct cfg *c = NULL;
    (void)state;
    assert_int_equal(cfg_load(NULL, &c, err, sizeof err), 0);
    for (size_t e = 0; e < EVENT_ENTITY_COUNT; e++) {
        uint32_t mask = 0;
        assert_int_equal(cfg_parse_class_list(c->recommend.allowed[e], &mask, err, sizeof err), 0);
        assert_int_equal(mask, want[e]);
    }
    cfg_free(c);
}

/* ---- environment ------------------------------------------------------------------ */

static void test_config_load_env_overrides(void **state)
{
    char err[512];
    struct cfg *c = NULL;
    (void)state;
    setenv("UNDERSTUDY_PG_DSN", "host=pg password=hunter2", 1);
    setenv("UNDERSTUDY_KAFKA_BROKERS", "b1:9092,b2:9092", 1);
    setenv("UNDERSTUDY_LOG_LEVEL", "debug", 1);
    /* The environment wins over the file. */
    const char *text = "kafka: {brokers: file:1}\nlog: {level: error}\n";
    if (cfg_load_string("t", text, strlen(text), &c, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c->postgres.dsn, "host=pg password=hunter2");
    assert_string_equal(c->kafka.brokers, "b1:9092,b2:9092");
    assert_int_equal(c->log.level, LOG_LEVEL_DEBUG);
    cfg_free(c);

    /* ...and over the embedded defaults. */
    assert_int_equal(cfg_load(NULL, &c, err, sizeof err), 0);
    assert_string_equal(c->kafka.brokers, "b1:9092,b2:9092");
    cfg_free(c);

    /* An empty DSN is meaningful (libpq defaults). */
    setenv("UNDERSTUDY_PG_DSN", "", 1);
    assert_int_equal(cfg_load(NULL, &c, err, sizeof err), 0);
    assert_string_equal(c->postgres.dsn, "");
    cfg_free(c);
}

static void test_config_load_env_bad_values(void **state)
{
    static const struct {
        const char *name, *value, *want;
    } cases[] = {
        {"UNDERSTUDY_LOG_LEVEL", "loud",
         "UNDERSTUDY_LOG_LEVEL: must be one of debug, info, warn, error"},
        {"UNDERSTUDY_LOG_LEVEL", "",
         "UNDERSTUDY_LOG_LEVEL: must be one of debug, info, warn, error"},
        {"UNDERSTUDY_KAFKA_BROKERS", "", "UNDERSTUDY_KAFKA_BROKERS: must not be empty"},
        {"UNDERSTUDY_PG_DSN", "host=\xff", "UNDERSTUDY_PG_DSN: not valid UTF-8"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        struct cfg *c = (struct cfg *)err;
        clear_env();
        setenv(cases[i].name, cases[i].value, 1);
        assert_int_equal(cfg_load(SHIPPED, &c, err, sizeof err), -1);
        assert_null(c);
        assert_string_equal(err, cases[i].want);
    }
    /* A file error is reported before an environment error. */
    char err[512];
    struct cfg *c = NULL;
    assert_int_equal(cfg_load_string("t", "bogus: 1\n", 9, &c, err, sizeof err), -1);
    assert_string_equal(err, "t:1:1: bogus: unknown key");
}

/* ---- masking ------------------------------------------------------------------------ */

static const char *mask(const char *dsn)
{
    static char buf[512];
    cfg_mask_dsn(dsn, buf, sizeof buf);
    return buf;
}

static void test_config_mask_dsn_conninfo(void **state)
{
    (void)state;
    assert_string_equal(mask(""), "");
    assert_string_equal(mask(NULL), "");
    assert_string_equal(mask("host=db dbname=app"), "host=db dbname=app");
    assert_string_equal(mask("host=db password=s3cret dbname=app"),
                        "host=db password=******** dbname=app");
    assert_string_equal(mask("password = 'it\\'s secret' user=u"), "password = ******** user=u");
    assert_string_equal(mask("host=db PASSWORD=x"), "host=db PASSWORD=********");
    assert_string_equal(mask("user=a\\ b password=p\\ q host=h"),
                        "user=a\\ b password=******** host=h");
    /* Malformed tails are masked whole. */
    assert_string_equal(mask("host=db password='unterminated"), "host=db password=********");
    assert_string_equal(mask("host=db oops password=x"), "host=db ********");
    /* A dbname that is itself a connection string may carry a password. */
    assert_string_equal(mask("dbname='postgresql://u:p@h/d' host=x"), "dbname=******** host=x");
    assert_string_equal(mask("dbname='host=h password=p'"), "dbname=********");
    /* No '=' and no URI: nothing to hide. */
    assert_string_equal(mask("mydb"), "mydb");
}

static void test_config_mask_dsn_uri(void **state)
{
    (void)state;
    assert_string_equal(mask("postgresql://u:secret@db.example:5432/app?sslmode=require"),
                        "postgresql://u:********@db.example:5432/app?sslmode=require");
    assert_string_equal(mask("postgres://u:secret@db/app"), "postgres://u:********@db/app");
    assert_string_equal(mask("postgresql://u@db/app"), "postgresql://u@db/app");
    assert_string_equal(mask("postgresql://db/app"), "postgresql://db/app");
    assert_string_equal(mask("postgresql://u:p@ss@db/app"), "postgresql://u:********@db/app");
    assert_string_equal(mask("postgresql:///app?user=u&password=x&sslmode=verify-full"),
                        "postgresql:///app?user=u&password=********&sslmode=verify-full");
    assert_string_equal(mask("postgresql://db/app?pass%77ord=x"),
                        "postgresql://db/app?pass%77ord=********");
    assert_string_equal(mask("POSTGRESQL://u:pw@h,h2/d?password=y"),
                        "POSTGRESQL://u:********@h,h2/d?password=********");
    /* A password in both places, the query before the '@': both hidden. */
    const char *m = mask("postgresql://u:a?password=b@h/d");
    assert_null(strstr(m, "a?"));
    assert_null(strstr(m, "=b"));
}

static void test_config_mask_dsn_small_buffers(void **state)
{
    const char *dsn = "host=db password=topsecret user=u";
    char buf[64];
    (void)state;
    for (size_t size = 1; size <= sizeof buf; size++) {
        memset(buf, 'Z', sizeof buf);
        cfg_mask_dsn(dsn, buf, size);
        assert_true(strlen(buf) < size);
        assert_null(strstr(buf, "top"));
        assert_int_equal(strncmp(buf, "host=db password=******** user=u", strlen(buf)), 0);
    }
    buf[0] = 'Z';
    cfg_mask_dsn(dsn, buf, 0); /* nothing written, nothing crashed */
    assert_int_equal(buf[0], 'Z');
}

static void test_config_is_secret_property_names(void **state)
{
    static const char *const secret[] = {
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.truststore.password",
        "sasl.oauthbearer.client.secret",
        "foo.password",
        "SASL.PASSWORD",
        "my.secret.thing",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
    };
    static const char *const plain[] = {
        "sasl.username",   "security.protocol", "ssl.ca.location",  "ssl.certificate.location",
        "sasl.mechanisms", "client.id",         "ssl.key.location",
    };
    (void)state;
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++) {
        if (!cfg_is_secret_property(secret[i]))
            fail_msg("%s should be secret", secret[i]);
    }
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        if (cfg_is_secret_property(plain[i]))
            fail_msg("%s should not be secret", plain[i]);
    }
    assert_false(cfg_is_secret_property(NULL));
}

/* ---- dump --------------------------------------------------------------------------- */

static void test_config_dump_masks_secrets(void **state)
{
    (void)state;
    struct cfg *c = load_ok("kafka:\n  properties:\n"
                            "    sasl.username: alice\n"
                            "    sasl.password: pw-one\n"
                            "    ssl.key.password: pw-two\n"
                            "    sasl.oauthbearer.client.secret: pw-three\n"
                            "    custom.password: pw-four\n"
                            "postgres:\n"
                            "  dsn: postgresql://app:pw-five@db/app\n"
                            "  password_file: /run/secrets/pgpass\n");
    char *out = dump_to_string(c);
    assert_null(strstr(out, "pw-"));
    assert_non_null(strstr(out, "\"sasl.username\": \"alice\""));
    assert_non_null(strstr(out, "\"sasl.password\": \"********\""));
    assert_non_null(strstr(out, "\"ssl.key.password\": \"********\""));
    assert_non_null(strstr(out, "\"sasl.oauthbearer.client.secret\": \"********\""));
    assert_non_null(strstr(out, "\"custom.password\": \"********\""));
    assert_non_null(strstr(out, "dsn: \"postgresql://app:********@db/app\""));
    assert_non_null(strstr(out, "password_file: \"/run/secrets/pgpass\""));
    free(out);
    cfg_free(c);

    char err[256];
    setenv("UNDERSTUDY_PG_DSN", "host=db password=from-env", 1);
    assert_int_equal(cfg_load(NULL, &c, err, sizeof err), 0);
    out = dump_to_string(c);
    assert_null(strstr(out, "from-env"));
    assert_non_null(strstr(out, "dsn: \"host=db password=********\""));
    free(out);
    cfg_free(c);
}

/* A dump loads back to an equal config, for defaults and for a config that
 * changes every key. */
static void test_config_dump_round_trips(void **state)
{
    char err[1024];
    (void)state;
    const char *inputs[] = {"", every_key,
                            "kafka:\n  group_id: \"quote\\\" back\\\\slash\\ttab\\u00e9\"\n"
                            "features:\n  - {name: \"a\\\"b\", type: numeric}\n"
                            "train: {lambda: 0.1, learning_rate: 0.30000000000000004}\n"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        struct cfg *a = load_ok(inputs[i]), *b = NULL;
        char *text = dump_to_string(a);
        if (cfg_load_string("dump", text, strlen(text), &b, err, sizeof err) != 0)
            fail_msg("%s\n--- dump ---\n%s", err, text);
        assert_true(cfg_equal(a, b));
        free(text);
        cfg_free(a);
        cfg_free(b);
    }
}

/* Same keys and layout as the shipped file: every line of the dump that
 * opens a section or sets a scalar key appears, modulo value quoting, in
 * config/understudy.yaml. */
static void test_config_dump_layout_matches_shipped(void **state)
{
    char err[256];
    struct cfg *c = NULL;
    (void)state;
    assert_int_equal(cfg_load(NULL, &c, err, sizeof err), 0);
    char *dump = dump_to_string(c);
    char *shipped = read_all(SHIPPED);
    size_t n;
    const struct cfg_key *keys = cfg_keys(&n);
    for (size_t i = 0; i < n; i++) {
        const char *leaf = strrchr(keys[i].path, '.');
        leaf = leaf ? leaf + 1 : keys[i].path;
        size_t depth = 0;
        for (const char *p = keys[i].path; *p; p++)
            depth += *p == '.';
        char line[128];
        snprintf(line, sizeof line, "\n%*s%s:", (int)(depth * 2), "", leaf);
        if (!strstr(dump, line))
            fail_msg("dump lacks %s", keys[i].path);
        if (!strstr(shipped, line))
            fail_msg("%s lacks %s at the dump's indentation", SHIPPED, keys[i].path);
    }
    free(dump);
    free(shipped);
    cfg_free(c);
}

static void test_config_dump_write_error(void **state)
{
    char err[256];
    struct cfg *c = NULL;
    (void)state;
    FILE *f = fopen("/dev/full", "w");
    if (!f)
        skip();
    assert_int_equal(cfg_load(NULL, &c, err, sizeof err), 0);
    assert_int_equal(cfg_dump(c, f), -1);
    fclose(f);
    cfg_free(c);
}

/* ---- reload rules, table, lifecycle ------------------------------------------------------ */

static void test_config_diff_nonreloadable_changes(void **state)
{
    char err[256];
    (void)state;
    struct cfg *a = load_ok("");
    struct cfg *b = load_ok("log: {level: debug}\ntrain: {rounds: 7}\nlabels: {hold_window: 2h}\n"
                            "ingest: {batch_wait: 1s, batch_messages: 10, drain_timeout: 1m}\n");
    assert_int_equal(cfg_diff_nonreloadable(a, b, err, sizeof err), 0);
    assert_false(cfg_equal(a, b));
    cfg_free(b);

    /* Every recommender guardrail and the daemon's pacing reload, one at a
     * time (each differs from the defaults, so each is really compared). */
    static const char *const reloadable[] = {
        "recommend: {kill_switch: true}\n",
        "recommend: {cooldown: 0s}\n",
        "recommend: {max_step_pct: {bid_up: 5}}\n",
        "recommend: {max_step_pct: {bid_down: 5}}\n",
        "recommend: {max_step_pct: {budget_up: 0}}\n",
        "recommend: {max_step_pct: {budget_down: 50}}\n",
        "recommend: {deadband_pct: {bid_up: 0}}\n",
        "recommend: {deadband_pct: {bid_down: 2}}\n",
        "recommend: {deadband_pct: {budget_up: 3}}\n",
        "recommend: {deadband_pct: {budget_down: 4}}\n",
        "recommend: {allowed: {campaign: budget_down}}\n",
        "recommend: {allowed: {ad_group: ''}}\n",
        "recommend: {allowed: {creative: creative_pause}}\n",
        "recommend: {allowed: {keyword: 'bid_down, bid_up'}}\n",
        "recommend: {batch: 10}\n",
        "recommend: {poll_interval: 250ms}\n",
    };
    for (size_t i = 0; i < sizeof reloadable / sizeof reloadable[0]; i++) {
        b = load_ok(reloadable[i]);
        if (cfg_equal(a, b))
            fail_msg("%s does not change anything", reloadable[i]);
        if (cfg_diff_nonreloadable(a, b, err, sizeof err) != 0)
            fail_msg("%s: %s", reloadable[i], err);
        cfg_free(b);
    }

    static const struct {
        const char *text, *want;
    } cases[] = {
        {"kafka: {brokers: other:9092}\n", "kafka.brokers: changed; restart to apply"},
        {"kafka: {properties: {client.id: x}}\n", "kafka.properties: changed; restart to apply"},
        {"postgres: {password_file: /x}\n", "postgres.password_file: changed; restart to apply"},
        {"features: [{name: cpa, type: numeric}]\n", "features: changed; restart to apply"},
        {"features:\n- {name: cpa, type: categorical}\n- {name: target_cpa, type: numeric}\n"
         "- {name: cpa_ratio, type: numeric}\n- {name: pacing, type: numeric}\n"
         "- {name: hour_of_day, type: numeric}\n- {name: channel, type: categorical}\n"
         "- {name: vertical, type: categorical}\n",
         "features: changed; restart to apply"},
        {"metrics: {listen: '0.0.0.0:1'}\n", "metrics.listen: changed; restart to apply"},
        {"ingest: {max_message_bytes: 2MiB}\n",
         "ingest.max_message_bytes: changed; restart to apply"},
        {"recommend: {publish: true}\n", "recommend.publish: changed; restart to apply"},
        {"kafka: {topics: {recommendations: ops.recs}}\n",
         "kafka.topics.recommendations: changed; restart to apply"},
        /* The first non-reloadable key in table order is named. */
        {"recommend: {publish: true, kill_switch: true}\nkafka: {topics: {recommendations: x}}\n",
         "kafka.topics.recommendations: changed; restart to apply"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        b = load_ok(cases[i].text);
        assert_int_equal(cfg_diff_nonreloadable(a, b, err, sizeof err), -1);
        assert_string_equal(err, cases[i].want);
        cfg_free(b);
    }
    cfg_free(a);
}

/* The reload flags of the recommend section as the table declares them:
 * everything but publish (which opens a producer at start-up) reloads. */
static void test_config_keys_recommend_reload_flags(void **state)
{
    size_t n, n_recommend = 0;
    const struct cfg_key *keys = cfg_keys(&n);
    (void)state;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(keys[i].path, "recommend.", 10) != 0)
            continue;
        n_recommend++;
        bool want = strcmp(keys[i].path, "recommend.publish") != 0;
        if (keys[i].reloadable != want)
            fail_msg("%s: reloadable is %d", keys[i].path, keys[i].reloadable);
    }
    assert_int_equal(n_recommend, 4 + 17); /* the first four plus the guardrails and daemon */
    const struct cfg_key *k = cfg_key_find("kafka.topics.recommendations");
    assert_non_null(k);
    assert_false(k->reloadable);
    assert_true(k->flags & CFG_KEY_REQUIRED);
    assert_non_null(k->check);
    k = cfg_key_find("recommend.allowed.keyword");
    assert_non_null(k);
    assert_non_null(k->check);
    assert_false(k->flags & CFG_KEY_REQUIRED); /* empty is hold only */
}

static void test_config_keys_table_consistent(void **state)
{
    size_t n;
    const struct cfg_key *keys = cfg_keys(&n);
    char *docs = read_all(DOCS);
    (void)state;
    assert_true(n > 30);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(cfg_key_find(keys[i].path), &keys[i]);
        assert_string_not_equal(cfg_type_name(keys[i].type), "?");
        if (keys[i].type == CFG_TYPE_MAP || keys[i].type == CFG_TYPE_FEATURES)
            assert_null(keys[i].def);
        else
            assert_non_null(keys[i].def);
        /* Sections are contiguous: once left, a section never comes back. */
        const char *dot = strrchr(keys[i].path, '.');
        size_t sec = dot ? (size_t)(dot - keys[i].path) : 0;
        for (size_t j = 0; sec && j + 1 < i; j++) {
            if (strncmp(keys[j].path, keys[i].path, sec) == 0 && keys[j].path[sec] == '.' &&
                strncmp(keys[i - 1].path, keys[i].path, sec) != 0)
                fail_msg("section of %s is split", keys[i].path);
        }
        char needle[128];
        snprintf(needle, sizeof needle, "`%s`", keys[i].path);
        if (!strstr(docs, needle))
            fail_msg("%s does not document %s", DOCS, needle);
        if (keys[i].env) {
            snprintf(needle, sizeof needle, "`%s`", keys[i].env);
            if (!strstr(docs, needle))
                fail_msg("%s does not document %s", DOCS, needle);
        }
    }
    assert_null(cfg_key_find("kafka"));
    assert_null(cfg_key_find("kafka.nope"));
    assert_null(cfg_key_find(NULL));
    free(docs);
}

static void test_config_free_null(void **state)
{
    (void)state;
    cfg_free(NULL);
}

static void test_config_load_missing_file(void **state)
{
    char err[256];
    struct cfg *c = (struct cfg *)err;
    (void)state;
    assert_int_equal(cfg_load("fixtures/no/such.yaml", &c, err, sizeof err), -1);
    assert_null(c);
    assert_string_equal(err, "fixtures/no/such.yaml: No such file or directory");
    assert_int_equal(cfg_load("fixtures", &c, err, sizeof err), -1);
    assert_null(c);
    assert_string_equal(err, "fixtures: Is a directory");
}

/* ---- bad configs: fixtures/bad-configs/NAME.yaml + NAME.expect ----------------------------- */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_config_load_bad_fixtures(void **state)
{
    char *names[MAX_FIXTURE];
    size_t n = 0, failures = 0;
    struct dirent *de;
    (void)state;

    DIR *d = opendir(BAD_DIR);
    if (!d)
        fail_msg("cannot open %s (run tests from the repository root)", BAD_DIR);
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len > 5 && strcmp(de->d_name + len - 5, ".yaml") == 0) {
            assert_true(n < MAX_FIXTURE);
            names[n] = util_strndup(de->d_name, len - 5);
            assert_non_null(names[n]);
            n++;
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_names);
    if (n < MIN_BAD)
        fail_msg("only %zu bad configs in %s, want at least %d", n, BAD_DIR, MIN_BAD);

    for (size_t i = 0; i < n; i++) {
        char path[512], expect_path[512], err[1024] = "";
        struct cfg *c = (struct cfg *)err;
        snprintf(path, sizeof path, "%s/%s.yaml", BAD_DIR, names[i]);
        snprintf(expect_path, sizeof expect_path, "%s/%s.expect", BAD_DIR, names[i]);
        char *want = read_all(expect_path);
        want[strcspn(want, "\n")] = '\0';
        int rc = cfg_load(path, &c, err, sizeof err);
        if (rc != -1 || c != NULL || strcmp(err, want) != 0) {
            print_error("%s: rc %d\n   got: %s\n  want: %s\n", names[i], rc, err, want);
            failures++;
            if (rc == 0)
                cfg_free(c);
        }
        free(want);
        free(names[i]);
    }
    print_message("%zu bad configs checked\n", n);
    if (failures)
        fail_msg("%zu of %zu bad configs gave the wrong result", failures, n);
}

/* ---- allocation failures ------------------------------------------------------------------ */

static void walk_alloc_failures(const char *what,
                                int (*load)(const char *, struct cfg **, char *, size_t),
                                const char *arg)
{
    char err[512];
    long i = 0;
    for (;; i++) {
        struct cfg *c = (struct cfg *)err;
        util_alloc_fail_after(i);
        int rc = load(arg, &c, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc == 0) {
            assert_non_null(c);
            cfg_free(c);
            break;
        }
        assert_int_equal(rc, -1);
        assert_null(c);
        if (!strstr(err, "out of memory"))
            fail_msg("%s: allocation %ld failed with: %s", what, i, err);
        assert_true(i < 100000);
    }
    assert_true(i > 10); /* it did walk through the allocations */
}

static int load_text(const char *text, struct cfg **out, char *err, size_t errlen)
{
    return cfg_load_string("alloc.yaml", text, strlen(text), out, err, errlen);
}

static void test_config_load_string_alloc_failures(void **state)
{
    (void)state;
    walk_alloc_failures("every_key", load_text, every_key);
    walk_alloc_failures("shipped", cfg_load, SHIPPED);
    setenv("UNDERSTUDY_PG_DSN", "host=x", 1);
    walk_alloc_failures("defaults+env", cfg_load, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_config_load_defaults, test_teardown),
        cmocka_unit_test_teardown(test_config_load_shipped_equals_defaults, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_empty_is_defaults, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_every_type, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_sizes_accept_numbers_and_units,
                                  test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_ints_strict, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_doubles_strict, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_bools_strict, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_strings, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_enums, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_features, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_properties, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_refuses_dotted_and_odd_keys,
                                  test_teardown),
        cmocka_unit_test_teardown(test_config_nested_yaml_helper, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_bounds_from_table, test_teardown),
        cmocka_unit_test_teardown(test_config_parse_class_list_good, test_teardown),
        cmocka_unit_test_teardown(test_config_parse_class_list_bad, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_recommend_bad_values, test_teardown),
        cmocka_unit_test_teardown(test_config_allowed_defaults_parse, test_teardown),
        cmocka_unit_test_teardown(test_config_load_env_overrides, test_teardown),
        cmocka_unit_test_teardown(test_config_load_env_bad_values, test_teardown),
        cmocka_unit_test_teardown(test_config_mask_dsn_conninfo, test_teardown),
        cmocka_unit_test_teardown(test_config_mask_dsn_uri, test_teardown),
        cmocka_unit_test_teardown(test_config_mask_dsn_small_buffers, test_teardown),
        cmocka_unit_test_teardown(test_config_is_secret_property_names, test_teardown),
        cmocka_unit_test_teardown(test_config_dump_masks_secrets, test_teardown),
        cmocka_unit_test_teardown(test_config_dump_round_trips, test_teardown),
        cmocka_unit_test_teardown(test_config_dump_layout_matches_shipped, test_teardown),
        cmocka_unit_test_teardown(test_config_dump_write_error, test_teardown),
        cmocka_unit_test_teardown(test_config_diff_nonreloadable_changes, test_teardown),
        cmocka_unit_test_teardown(test_config_keys_recommend_reload_flags, test_teardown),
        cmocka_unit_test_teardown(test_config_keys_table_consistent, test_teardown),
        cmocka_unit_test_teardown(test_config_free_null, test_teardown),
        cmocka_unit_test_teardown(test_config_load_missing_file, test_teardown),
        cmocka_unit_test_teardown(test_config_load_bad_fixtures, test_teardown),
        cmocka_unit_test_teardown(test_config_load_string_alloc_failures, test_teardown),
    };
    return cmocka_run_group_tests_name("config", tests, group_setup, NULL);
}
