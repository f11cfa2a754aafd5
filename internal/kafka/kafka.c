/*
 * kafka: see kafka.h.  Properties are applied in a fixed order so that the
 * settings understudy relies on for its delivery guarantee (passed as
 * overrides) always win over kafka.properties.
 */
#include "kafka/kafka.h"

#include <string.h>

#include "config/config.h"
#include "log/log.h"
#include "util/util.h"

int kafka_log_level(int syslog_level)
{
    if (syslog_level <= 3)
        return LOG_LEVEL_ERROR;
    if (syslog_level == 4)
        return LOG_LEVEL_WARN;
    if (syslog_level <= 6)
        return LOG_LEVEL_INFO;
    return LOG_LEVEL_DEBUG;
}

void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    log_write((enum log_level)kafka_log_level(level), "kafka: %s: %s %s",
              rk ? rd_kafka_name(rk) : "-", fac, buf);
}

static int set_prop(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                    size_t errlen)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        /* errstr may quote the value; do not echo it for secret properties. */
        if (cfg_is_secret_property(name))
            util_fmt(err, errlen, "kafka.properties.%s: rejected by librdkafka", name);
        else
            util_fmt(err, errlen, "kafka.properties.%s: %s", name, errstr);
        return -1;
    }
    return 0;
}

rd_kafka_conf_t *kafka_conf_new(const struct cfg *cfg, const char *const *overrides, char *err,
                                size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        util_fmt(err, errlen, "out of memory");
        return NULL;
    }
    if (set_prop(conf, "bootstrap.servers", cfg->kafka.brokers, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < cfg->kafka.n_properties; i++) {
        for (size_t k = 0; overrides && overrides[k]; k += 2) {
            if (strcmp(overrides[k], cfg->kafka.properties[i].key) == 0)
                log_warn("kafka: kafka.properties.%s is ignored: understudy needs %s=%s here",
                         overrides[k], overrides[k], overrides[k + 1]);
        }
        if (set_prop(conf, cfg->kafka.properties[i].key, cfg->kafka.properties[i].value, err,
                     errlen) != 0)
            goto fail;
    }
    for (size_t i = 0; overrides && overrides[i]; i += 2) {
        if (set_prop(conf, overrides[i], overrides[i + 1], err, errlen) != 0)
            goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}
