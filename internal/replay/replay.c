/*
 * replay: see replay.h.  One producer, messages copied into librdkafka's
 * queue; on a full queue we serve delivery reports until there is room.
 * Rate limiting paces sends against a monotonic clock (no drift over long
 * runs).
 */
#include "replay/replay.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "kafka/kafka.h"
#include "log/log.h"
#include "util/util.h"

struct counters {
    uint64_t delivered;
    uint64_t failed;
    char first_error[256];
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct counters *c = opaque;
    (void)rk;
    if (m->err) {
        if (c->failed == 0)
            util_fmt(c->first_error, sizeof c->first_error, "%s", rd_kafka_err2str(m->err));
        c->failed++;
    } else {
        c->delivered++;
    }
}

/* Fills key with the line's key field as text; "" when absent. */
static void line_key(const char *line, size_t len, const char *field, char *key, size_t keylen)
{
    key[0] = '\0';
    json_t *root = json_loadb(line, len, 0, NULL);
    if (!json_is_object(root))
        goto out;
    const char *names[] = {field, NULL};
    if (!field) {
        names[0] = "entity_id";
        names[1] = "recommendation_id";
    }
    for (size_t i = 0; i < 2 && names[i]; i++) {
        json_t *v = json_object_get(root, names[i]);
        if (json_is_string(v)) {
            util_fmt(key, keylen, "%s", json_string_value(v));
            break;
        }
        if (json_is_integer(v)) {
            util_fmt(key, keylen, "%lld", (long long)json_integer_value(v));
            break;
        }
    }
out:
    json_decref(root);
}

static void sleep_us(int64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int replay_run(const struct cfg *cfg, const struct replay_opts *opts, volatile sig_atomic_t *stop,
               struct replay_stats *stats, char *err, size_t errlen)
{
    static const char *const overrides[] = {
        "enable.idempotence", "true", "acks", "all", "linger.ms", "5", NULL,
    };
    int rc = -1;
    FILE *in = NULL;
    char *line = NULL;
    size_t cap = 0;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    struct counters cnt;
    char errstr[512];
    int64_t start = util_now_mono_us(), last_progress = 0;

    memset(stats, 0, sizeof *stats);
    memset(&cnt, 0, sizeof cnt);

    if (strcmp(opts->path, "-") == 0) {
        in = stdin;
    } else if (!(in = fopen(opts->path, "r"))) {
        util_fmt(err, errlen, "%s: %s", opts->path, strerror(errno));
        goto out;
    }

    rd_kafka_conf_t *conf = kafka_conf_new(cfg, overrides, err, errlen);
    if (!conf)
        goto out;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &cnt);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        util_fmt(err, errlen, "kafka producer: %s", errstr);
        goto out;
    }
    rkt = rd_kafka_topic_new(rk, opts->topic, NULL);
    if (!rkt) {
        util_fmt(err, errlen, "topic %s: %s", opts->topic, rd_kafka_err2str(rd_kafka_last_error()));
        goto out;
    }

    ssize_t n;
    while (!*stop && (n = getline(&line, &cap, in)) != -1) {
        size_t len = (size_t)n;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        char key[256];
        line_key(line, len, opts->key_field, key, sizeof key);
        stats->lines++;

        if (opts->rate > 0) {
            int64_t due = start + (int64_t)((double)(stats->lines - 1) * 1e6 / opts->rate);
            int64_t now = util_now_mono_us();
            if (due > now)
                sleep_us(due - now);
        }
        for (;;) {
            if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, line, len,
                                 key[0] ? key : NULL, strlen(key), NULL) == 0)
                break;
            rd_kafka_resp_err_t e = rd_kafka_last_error();
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                util_fmt(err, errlen, "line %llu: %s", (unsigned long long)stats->lines,
                         rd_kafka_err2str(e));
                goto out;
            }
            rd_kafka_poll(rk, 50);
        }
        rd_kafka_poll(rk, 0);

        int64_t now = util_now_mono_us();
        if (opts->progress && now - last_progress > 250000) {
            double secs = (double)(now - start) / 1e6;
            fprintf(stderr, "\rreplay: %s: %llu sent, %llu acknowledged (%.0f/s)   ", opts->topic,
                    (unsigned long long)stats->lines, (unsigned long long)cnt.delivered,
                    secs > 0 ? (double)stats->lines / secs : 0.0);
            last_progress = now;
        }
    }
    if (ferror(in)) {
        util_fmt(err, errlen, "%s: read error", opts->path);
        goto out;
    }
    /* Wait for every acknowledgement (librdkafka retries internally). */
    while (cnt.delivered + cnt.failed < stats->lines && !*stop)
        rd_kafka_flush(rk, 200);
    if (opts->progress)
        fputc('\n', stderr);
    rc = (cnt.failed == 0 && cnt.delivered == stats->lines) ? 0 : 1;
    if (cnt.failed)
        log_error("replay: %s: %llu message(s) failed, first: %s", opts->topic,
                  (unsigned long long)cnt.failed, cnt.first_error);
out:
    stats->delivered = cnt.delivered;
    stats->failed = cnt.failed;
    stats->seconds = (double)(util_now_mono_us() - start) / 1e6;
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk) {
        rd_kafka_flush(rk, 5000);
        rd_kafka_destroy(rk);
    }
    free(line);
    if (in && in != stdin)
        fclose(in);
    return rc;
}
