/*
 * metrics: see metrics.h.  libmicrohttpd runs one internal polling thread;
 * requests are tiny and rare (a scrape every few seconds), so rendering on
 * that thread is fine.  The listen address is resolved with getaddrinfo and
 * handed to libmicrohttpd as a sockaddr, so IPv4 and IPv6 both work.
 */
#include "metrics/metrics.h"

#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log/log.h"

struct metrics_server {
    struct MHD_Daemon *daemon;
    struct metrics_handlers h;
    int port;
};

int metrics_write_family(struct util_buf *b, const char *name, const char *type, const char *help)
{
    return util_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int write_value(struct util_buf *b, double v)
{
    if (isnan(v))
        return util_buf_puts(b, "NaN");
    if (isinf(v))
        return util_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    /* floor(v) <= v always, so "not above its floor" means integral. */
    if (fabs(v) < 9.007199254740992e15 && !(v > floor(v)))
        return util_buf_printf(b, "%.0f", v);
    /* The shortest precision that reads back as the same double. */
    char tmp[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (!(strtod(tmp, NULL) < v) && !(strtod(tmp, NULL) > v))
            break;
    }
    return util_buf_puts(b, tmp);
}

static int write_label_value(struct util_buf *b, const char *v)
{
    for (; *v; v++) {
        int rc;
        if (*v == '\\')
            rc = util_buf_puts(b, "\\\\");
        else if (*v == '"')
            rc = util_buf_puts(b, "\\\"");
        else if (*v == '\n')
            rc = util_buf_puts(b, "\\n");
        else
            rc = util_buf_append(b, v, 1);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int write_sample_va(struct util_buf *b, const char *name, double value, va_list ap)
{
    const char *k = va_arg(ap, const char *);
    if (util_buf_puts(b, name) != 0)
        return -1;
    if (k) {
        int first = 1;
        if (util_buf_puts(b, "{") != 0)
            return -1;
        while (k) {
            const char *v = va_arg(ap, const char *);
            if (util_buf_printf(b, "%s%s=\"", first ? "" : ",", k) != 0 ||
                write_label_value(b, v ? v : "") != 0 || util_buf_puts(b, "\"") != 0)
                return -1;
            first = 0;
            k = va_arg(ap, const char *);
        }
        if (util_buf_puts(b, "}") != 0)
            return -1;
    }
    if (util_buf_puts(b, " ") != 0 || write_value(b, value) != 0 || util_buf_puts(b, "\n") != 0)
        return -1;
    return 0;
}

int metrics_write_sample(struct util_buf *b, const char *name, double value, ...)
{
    va_list ap;
    va_start(ap, value);
    int rc = write_sample_va(b, name, value, ap);
    va_end(ap);
    return rc;
}

int metrics_write_scalar(struct util_buf *b, const char *name, const char *type, const char *help,
                         double value)
{
    if (metrics_write_family(b, name, type, help) != 0)
        return -1;
    return metrics_write_sample(b, name, value, METRICS_END);
}

int metrics_histogram_init(struct metrics_histogram *h, const double *bounds, size_t n)
{
    if (n > METRICS_MAX_BUCKETS)
        return -1;
    for (size_t i = 1; i < n; i++) {
        if (!(bounds[i] > bounds[i - 1]))
            return -1;
    }
    h->n_bounds = n;
    for (size_t i = 0; i < n; i++)
        h->bounds[i] = bounds[i];
    for (size_t i = 0; i <= METRICS_MAX_BUCKETS; i++)
        atomic_init(&h->counts[i], 0);
    atomic_init(&h->sum_micro, 0);
    return 0;
}

void metrics_histogram_observe(struct metrics_histogram *h, double v)
{
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    atomic_fetch_add(&h->counts[i], 1);
    if (v > 0)
        atomic_fetch_add(&h->sum_micro, (uint_fast64_t)llround(v * 1e6));
}

int metrics_histogram_write(struct util_buf *b, const char *name, const struct metrics_histogram *h)
{
    char bucket[256], le[64];
    uint64_t cum = 0;
    util_fmt(bucket, sizeof bucket, "%s_bucket", name);
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cum += atomic_load(&h->counts[i]);
        if (i < h->n_bounds)
            util_fmt(le, sizeof le, "%g", h->bounds[i]);
        else
            util_fmt(le, sizeof le, "+Inf");
        if (metrics_write_sample(b, bucket, (double)cum, "le", le, METRICS_END) != 0)
            return -1;
    }
    char sum[256], count[256];
    util_fmt(sum, sizeof sum, "%s_sum", name);
    util_fmt(count, sizeof count, "%s_count", name);
    if (metrics_write_sample(b, sum, (double)atomic_load(&h->sum_micro) / 1e6, METRICS_END) != 0 ||
        metrics_write_sample(b, count, (double)cum, METRICS_END) != 0)
        return -1;
    return 0;
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *ctype,
                               const char *body, size_t len)
{
    /* MUST_COPY: libmicrohttpd copies the body and never writes through the
     * pointer, whose const-ness its API does not express. */
    char *mutable_body;
    memcpy(&mutable_body, &body, sizeof body);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, mutable_body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (MHD_add_response_header(r, "Content-Type", ctype) != MHD_YES ||
        MHD_add_response_header(r, "Cache-Control", "no-store") != MHD_YES) {
        MHD_destroy_response(r);
        return MHD_NO;
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_check(struct MHD_Connection *conn, metrics_check_fn fn, void *ud,
                                     const char *ok_text)
{
    char why[512] = "", body[600];
    if (!fn || fn(ud, why, sizeof why)) {
        util_fmt(body, sizeof body, "%s\n", ok_text);
        return respond(conn, MHD_HTTP_OK, "text/plain; charset=utf-8", body, strlen(body));
    }
    util_fmt(body, sizeof body, "not %s: %s\n", ok_text, why[0] ? why : "unknown");
    return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", body,
                   strlen(body));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    struct metrics_server *s = cls;
    (void)version;
    (void)upload;
    (void)req_cls;

    if (*upload_size != 0)
        return MHD_NO;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "method not allowed\n";
        return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", msg, sizeof msg - 1);
    }
    if (strcmp(url, "/metrics") == 0) {
        struct util_buf b;
        util_buf_init(&b);
        enum MHD_Result ret;
        if (s->h.render && s->h.render(&b, s->h.ud) != 0) {
            static const char msg[] = "could not render metrics\n";
            ret = respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", msg, sizeof msg - 1);
        } else {
            ret = respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                          b.data ? b.data : "", b.len);
        }
        util_buf_deinit(&b);
        return ret;
    }
    if (strcmp(url, "/healthz") == 0)
        return respond_check(conn, s->h.healthy, s->h.ud, "ok");
    if (strcmp(url, "/readyz") == 0)
        return respond_check(conn, s->h.ready, s->h.ud, "ready");
    static const char msg[] = "not found: try /metrics, /healthz, /readyz\n";
    return respond(conn, MHD_HTTP_NOT_FOUND, "text/plain", msg, sizeof msg - 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT: format comes from libmicrohttpd */
    msg[strcspn(msg, "\n")] = '\0';
    log_warn("metrics: libmicrohttpd: %s", msg);
}

/* Splits "host:port" or "[v6]:port". */
static int split_listen(const char *listen, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return -1;
        util_fmt(host, hostlen, "%.*s", (int)(close - listen - 1), listen + 1);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            return -1;
        util_fmt(host, hostlen, "%.*s", (int)(colon - listen), listen);
    }
    util_fmt(port, portlen, "%s", colon + 1);
    return host[0] && port[0] ? 0 : -1;
}

int metrics_server_start(const char *listen, const struct metrics_handlers *h,
                         struct metrics_server **out, char *err, size_t errlen)
{
    int rc = -1;
    char host[256], port[32];
    struct addrinfo hints, *ai = NULL;
    struct metrics_server *s = NULL;

    *out = NULL;
    if (!listen || split_listen(listen, host, sizeof host, port, sizeof port) != 0) {
        util_fmt(err, errlen, "metrics.listen: '%s' is not host:port", listen ? listen : "");
        goto out;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        util_fmt(err, errlen, "metrics.listen: %s: %s", listen, gai_strerror(gai));
        goto out;
    }
    s = util_calloc(1, sizeof *s);
    if (!s) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    s->h = *h;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->daemon =
        /* The logger goes first so that it also receives messages about
         * the options after it. */
        MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
                         on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_CONNECTION_LIMIT, 64U, MHD_OPTION_CONNECTION_TIMEOUT, 10U,
                         MHD_OPTION_END);
    if (!s->daemon) {
        util_fmt(err, errlen, "metrics.listen: cannot listen on %s (in use or not local?)", listen);
        goto out;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? (int)info->port : (int)strtol(port, NULL, 10);
    *out = s;
    s = NULL;
    rc = 0;
out:
    if (ai)
        freeaddrinfo(ai);
    metrics_server_stop(s);
    return rc;
}

int metrics_server_port(const struct metrics_server *s)
{
    return s->port;
}

void metrics_server_stop(struct metrics_server *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    free(s);
}
