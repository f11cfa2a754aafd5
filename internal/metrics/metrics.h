/*
 * metrics: the daemon's HTTP endpoints (libmicrohttpd) and helpers that write
 * the Prometheus text exposition format (version 0.0.4).
 *
 * The server owns no metrics: each request calls back into the owner, which
 * renders its own counters (kept as atomics, updated per batch) into a
 * buffer.  Endpoints: GET /metrics, /healthz (the process is alive and its
 * threads answer), /readyz (ready to do its job, e.g. database reachable and
 * partitions assigned).
 */
#ifndef UNDERSTUDY_METRICS_H
#define UNDERSTUDY_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

/* ---- exposition --------------------------------------------------------- */

/* Writes "# HELP name help" and "# TYPE name type".  0 or -1 (out of memory). */
int metrics_write_family(struct util_buf *b, const char *name, const char *type,
                         const char *help) UTIL_WUR;

/*
 * Writes one sample line: name{k1="v1",k2="v2"} value.  The variadic part is
 * label name/value string pairs terminated by METRICS_END; values are escaped.
 * Integral values print without a fraction; NaN/Inf print as Prometheus
 * expects.  Returns 0 or -1 (out of memory).
 */
/* A typed NULL: a plain NULL may be an int in a variadic call. */
#define METRICS_END ((const char *)NULL)

int metrics_write_sample(struct util_buf *b, const char *name, double value, ...) UTIL_WUR
    __attribute__((sentinel));

/* A family with one unlabelled sample: HELP, TYPE and the value.  0 or -1. */
int metrics_write_scalar(struct util_buf *b, const char *name, const char *type, const char *help,
                         double value) UTIL_WUR;

#define METRICS_MAX_BUCKETS 24

/*
 * A cumulative histogram safe to observe from any thread.  Bounds are upper
 * bounds in increasing order; +Inf is implicit.  The sum is kept in
 * millionths so it can be an integer atomic.
 */
struct metrics_histogram {
    size_t n_bounds;
    double bounds[METRICS_MAX_BUCKETS];
    atomic_uint_fast64_t counts[METRICS_MAX_BUCKETS + 1];
    atomic_uint_fast64_t sum_micro;
};

/* Sets the bounds (copied) and zeroes the counts.  Returns 0, or -1 when n is
 * above METRICS_MAX_BUCKETS or the bounds do not increase. */
int metrics_histogram_init(struct metrics_histogram *h, const double *bounds, size_t n) UTIL_WUR;
void metrics_histogram_observe(struct metrics_histogram *h, double v);
/* Writes the _bucket, _sum and _count lines (no HELP/TYPE). */
int metrics_histogram_write(struct util_buf *b, const char *name,
                            const struct metrics_histogram *h) UTIL_WUR;

/* ---- server ------------------------------------------------------------- */

/* Renders all metrics into out.  Returns 0, or -1 to answer 500. */
typedef int (*metrics_render_fn)(struct util_buf *out, void *ud);
/* Returns 1 when healthy/ready, 0 otherwise with a one-line reason in why. */
typedef int (*metrics_check_fn)(void *ud, char *why, size_t whylen);

struct metrics_handlers {
    metrics_render_fn render;
    metrics_check_fn healthy; /* NULL = always healthy */
    metrics_check_fn ready;   /* NULL = always ready */
    void *ud;
};

struct metrics_server;

/*
 * Listens on "host:port" ("127.0.0.1:9464", "[::1]:9464", port 0 picks a free
 * port) and serves from an internal thread.  The handlers are copied; ud is
 * borrowed and must outlive the server.  Returns 0 and the server in *out, or
 * -1 with a reason in err.
 */
int metrics_server_start(const char *listen, const struct metrics_handlers *h,
                         struct metrics_server **out, char *err, size_t errlen) UTIL_WUR;
/* The port actually bound. */
int metrics_server_port(const struct metrics_server *s);
/* Stops serving and frees; NULL is a no-op. */
void metrics_server_stop(struct metrics_server *s);

#endif
