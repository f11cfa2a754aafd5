/* Unit tests for internal/metrics: exposition format, histogram, HTTP server
 * on a loopback ephemeral port with a minimal HTTP/1.0 client. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics/metrics.h"

static void test_metrics_write_sample_escapes_labels_and_formats_values(void **state)
{
    (void)state;
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(metrics_write_family(&b, "x_total", "counter", "Things."), 0);
    assert_int_equal(metrics_write_sample(&b, "x_total", 42.0, "topic", "a\"b\\c\nd", METRICS_END),
                     0);
    assert_int_equal(metrics_write_sample(&b, "x_ratio", 0.25, METRICS_END), 0);
    assert_int_equal(metrics_write_sample(&b, "x_big", 1e300, "a", "1", "b", "2", METRICS_END), 0);
    assert_int_equal(metrics_write_sample(&b, "x_nan", 0.0 / 0.0, METRICS_END), 0);
    assert_int_equal(metrics_write_sample(&b, "x_inf", -1.0 / 0.0, METRICS_END), 0);
    assert_string_equal(b.data, "# HELP x_total Things.\n"
                                "# TYPE x_total counter\n"
                                "x_total{topic=\"a\\\"b\\\\c\\nd\"} 42\n"
                                "x_ratio 0.25\n"
                                "x_big{a=\"1\",b=\"2\"} 1e+300\n"
                                "x_nan NaN\n"
                                "x_inf -Inf\n");
    util_buf_deinit(&b);
}

static void test_metrics_write_scalar_writes_family_and_one_sample(void **state)
{
    (void)state;
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(metrics_write_scalar(&b, "up", "gauge", "Is it up.", 1), 0);
    assert_string_equal(b.data, "# HELP up Is it up.\n# TYPE up gauge\nup 1\n");
    util_buf_deinit(&b);
}

static void test_metrics_histogram_is_cumulative_with_sum_and_count(void **state)
{
    (void)state;
    static const double bounds[] = {0.01, 0.1, 1};
    struct metrics_histogram h;
    assert_int_equal(metrics_histogram_init(&h, bounds, 3), 0);
    metrics_histogram_observe(&h, 0.005);
    metrics_histogram_observe(&h, 0.01); /* on the bound: counts in le=0.01 */
    metrics_histogram_observe(&h, 0.5);
    metrics_histogram_observe(&h, 7);
    struct util_buf b;
    util_buf_init(&b);
    assert_int_equal(metrics_histogram_write(&b, "lat_seconds", &h), 0);
    assert_string_equal(b.data, "lat_seconds_bucket{le=\"0.01\"} 2\n"
                                "lat_seconds_bucket{le=\"0.1\"} 2\n"
                                "lat_seconds_bucket{le=\"1\"} 3\n"
                                "lat_seconds_bucket{le=\"+Inf\"} 4\n"
                                "lat_seconds_sum 7.515\n"
                                "lat_seconds_count 4\n");
    util_buf_deinit(&b);
    static const double bad[] = {1, 1};
    assert_int_equal(metrics_histogram_init(&h, bad, 2), -1);
}

struct fake {
    int ready;
    int renders;
};

static int render(struct util_buf *out, void *ud)
{
    struct fake *f = ud;
    f->renders++;
    return metrics_write_sample(out, "understudy_up", 1, METRICS_END);
}

static int ready(void *ud, char *why, size_t whylen)
{
    struct fake *f = ud;
    if (!f->ready)
        snprintf(why, whylen, "no partitions assigned");
    return f->ready;
}

/* Sends one HTTP/1.0 request and returns the whole response (caller frees). */
static char *http(int port, const char *method, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* Checks the status code of an HTTP/1.x status line. */
static void assert_status(const char *resp, int code)
{
    int got = 0;
    assert_int_equal(sscanf(resp, "HTTP/1.%*d %d", &got), 1);
    assert_int_equal(got, code);
}

static void test_metrics_server_serves_metrics_health_and_readiness(void **state)
{
    (void)state;
    struct fake f = {.ready = 0, .renders = 0};
    struct metrics_handlers h = {.render = render, .healthy = NULL, .ready = ready, .ud = &f};
    struct metrics_server *s = NULL;
    char err[256];
    assert_int_equal(metrics_server_start("127.0.0.1:0", &h, &s, err, sizeof err), 0);
    int port = metrics_server_port(s);
    assert_true(port > 0);

    char *r = http(port, "GET", "/metrics");
    assert_status(r, 200);
    assert_non_null(strstr(r, "text/plain; version=0.0.4"));
    assert_non_null(strstr(r, "\r\n\r\nunderstudy_up 1\n"));
    free(r);
    assert_int_equal(f.renders, 1);

    r = http(port, "GET", "/healthz");
    assert_status(r, 200);
    free(r);

    r = http(port, "GET", "/readyz");
    assert_status(r, 503);
    assert_non_null(strstr(r, "not ready: no partitions assigned\n"));
    free(r);
    f.ready = 1;
    r = http(port, "GET", "/readyz");
    assert_status(r, 200);
    free(r);

    r = http(port, "GET", "/nope");
    assert_status(r, 404);
    free(r);
    r = http(port, "DELETE", "/metrics");
    assert_status(r, 405);
    free(r);
    metrics_server_stop(s);
}

static void test_metrics_server_start_rejects_bad_listen(void **state)
{
    (void)state;
    struct metrics_handlers h = {.render = render};
    struct metrics_server *s = (struct metrics_server *)1;
    char err[256];
    assert_int_equal(metrics_server_start("no-port", &h, &s, err, sizeof err), -1);
    assert_null(s);
    assert_string_equal(err, "metrics.listen: 'no-port' is not host:port");
    assert_int_equal(metrics_server_start("[::1:9", &h, &s, err, sizeof err), -1);
    assert_int_equal(metrics_server_start("256.1.1.1:80", &h, &s, err, sizeof err), -1);

    /* A port already in use is refused with a reason. */
    struct metrics_server *a = NULL;
    assert_int_equal(metrics_server_start("127.0.0.1:0", &h, &a, err, sizeof err), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", metrics_server_port(a));
    assert_int_equal(metrics_server_start(addr, &h, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot listen"));
    metrics_server_stop(a);
    metrics_server_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_write_sample_escapes_labels_and_formats_values),
        cmocka_unit_test(test_metrics_write_scalar_writes_family_and_one_sample),
        cmocka_unit_test(test_metrics_histogram_is_cumulative_with_sum_and_count),
        cmocka_unit_test(test_metrics_server_serves_metrics_health_and_readiness),
        cmocka_unit_test(test_metrics_server_start_rejects_bad_listen),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
