/*
 * mockkafka: see mockkafka.h.  librdkafka's mock cluster needs an rd_kafka_t
 * for its bookkeeping; we create a producer that is never used to produce.
 * The bootstrap file is written to a temporary name and renamed, so a test
 * harness polling for it never reads half a line.
 */
#include "mockkafka/mockkafka.h"

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"
#include "util/util.h"

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* The bookkeeping handle has no bootstrap.servers on purpose. */
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers"))
        return;
    /* syslog levels: 0..3 error, 4 warning, 5..6 info, 7 debug */
    enum log_level lv = level <= 3   ? LOG_LEVEL_ERROR
                        : level == 4 ? LOG_LEVEL_WARN
                        : level <= 6 ? LOG_LEVEL_INFO
                                     : LOG_LEVEL_DEBUG;
    log_write(lv, "mock-kafka: librdkafka %s: %s", fac, buf);
}

int mockkafka_check_topics(const char *topics, char *err, size_t errlen)
{
    const char *p = topics;
    if (!topics || !*topics) {
        util_fmt(err, errlen, "topics: empty list");
        return -1;
    }
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 0) {
            util_fmt(err, errlen, "topics: empty topic name in '%s'", topics);
            return -1;
        }
        if (n > 249) {
            util_fmt(err, errlen, "topics: name longer than 249 characters");
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-')) {
                util_fmt(err, errlen, "topics: '%.*s' has a character outside [A-Za-z0-9._-]",
                         (int)n, p);
                return -1;
            }
        }
        p += n;
        if (*p == ',') {
            p++;
            if (!*p) {
                util_fmt(err, errlen, "topics: empty topic name in '%s'", topics);
                return -1;
            }
        }
    }
    return 0;
}

static int write_bootstrap_file(const char *path, const char *line, char *err, size_t errlen)
{
    int rc = -1;
    char *tmp = NULL;
    FILE *f = NULL;
    struct util_buf b;

    util_buf_init(&b);
    if (util_buf_printf(&b, "%s.tmp.%ld", path, (long)getpid()) != 0) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    tmp = util_buf_steal(&b);
    f = fopen(tmp, "w");
    if (!f) {
        util_fmt(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    if (fprintf(f, "%s\n", line) < 0 || fclose(f) != 0) {
        f = NULL;
        util_fmt(err, errlen, "%s: write failed", tmp);
        unlink(tmp);
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        util_fmt(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    if (f)
        fclose(f);
    free(tmp);
    return rc;
}

int mockkafka_run(const struct mockkafka_opts *opts, volatile sig_atomic_t *stop, FILE *out,
                  char *err, size_t errlen)
{
    int rc = -1;
    char errstr[512];
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    char *topics = NULL;
    int wrote_file = 0;

    if (opts->brokers < 1 || opts->brokers > 16) {
        util_fmt(err, errlen, "brokers: must be between 1 and 16");
        goto out;
    }
    if (opts->partitions < 1 || opts->partitions > 1024) {
        util_fmt(err, errlen, "partitions: must be between 1 and 1024");
        goto out;
    }
    if (mockkafka_check_topics(opts->topics, err, errlen) != 0)
        goto out;

    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "client.id", "understudy-mock-kafka", errstr, sizeof errstr) !=
        RD_KAFKA_CONF_OK) {
        util_fmt(err, errlen, "librdkafka conf: %s", errstr);
        goto out;
    }
    rd_kafka_conf_set_log_cb(conf, on_log);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        util_fmt(err, errlen, "librdkafka: %s", errstr);
        goto out;
    }
    conf = NULL; /* owned by rk now */

    mc = rd_kafka_mock_cluster_new(rk, opts->brokers);
    if (!mc) {
        util_fmt(err, errlen, "could not start the mock cluster");
        goto out;
    }

    topics = util_strdup(opts->topics);
    if (!topics) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    for (char *save = NULL, *t = strtok_r(topics, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        rd_kafka_resp_err_t e =
            rd_kafka_mock_topic_create(mc, t, opts->partitions, opts->brokers < 3 ? 1 : 3);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            util_fmt(err, errlen, "create topic %s: %s", t, rd_kafka_err2str(e));
            goto out;
        }
        log_info("mock-kafka: topic %s with %d partition(s)", t, opts->partitions);
    }

    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (opts->bootstrap_file) {
        char line[1024];
        util_fmt(line, sizeof line, "bootstrap.servers=%s", bootstraps);
        if (write_bootstrap_file(opts->bootstrap_file, line, err, errlen) != 0)
            goto out;
        wrote_file = 1;
    }
    fprintf(out, "bootstrap.servers=%s\n", bootstraps);
    fflush(out);
    log_info("mock-kafka: serving on %s (%d broker(s)); stop with SIGTERM", bootstraps,
             opts->brokers);

    while (!*stop)
        rd_kafka_poll(rk, 100);
    log_info("mock-kafka: stopping");
    rc = 0;
out:
    if (wrote_file)
        unlink(opts->bootstrap_file);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(topics);
    return rc;
}
