/*
 * tdaemon: see tdaemon.h.  Everything here fails the current cmocka test on
 * error, so tests read as a sequence of steps.
 */
#include "tdaemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "testenv.h"

void tsleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int twait_until(int (*cond)(void *ud), void *ud, int timeout_s)
{
    for (int i = 0; i < timeout_s * 10; i++) {
        if (cond(ud))
            return 1;
        tsleep_ms(100);
    }
    return cond(ud);
}

/* In the child: detach from the test's output, die with the parent. */
static void child_setup(const char *log_path)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int in = open("/dev/null", O_RDONLY);
    int out = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in >= 0)
        dup2(in, 0);
    if (out >= 0) {
        dup2(out, 1);
        dup2(out, 2);
    }
}

static int wait_exit(pid_t pid, int timeout_s, int *status)
{
    int st = 0;
    for (int i = 0; i < timeout_s * 20; i++) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            return 1;
        }
        tsleep_ms(50);
    }
    return 0;
}

/* ---- mock Kafka ------------------------------------------------------------ */

void tmock_start(struct tmock *m, const char *topics, int partitions)
{
    static int seq;
    char parts[16];
    snprintf(m->bootfile, sizeof m->bootfile, "%s/boot-%ld-%d", testenv_get("UNDERSTUDY_TEST_TMP"),
             (long)getpid(), seq++);
    snprintf(parts, sizeof parts, "%d", partitions);
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    fflush(NULL);
    m->pid = fork();
    assert_true(m->pid >= 0);
    if (m->pid == 0) {
        child_setup(NULL);
        execl(bin, bin, "mock-kafka", "--topics", topics, "--partitions", parts, "--bootstrap-file",
              m->bootfile, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(m->bootfile, "r");
        if (f) {
            char line[400] = "";
            char *ok = fgets(line, sizeof line, f);
            fclose(f);
            assert_non_null(ok);
            assert_int_equal(strncmp(line, "bootstrap.servers=", 18), 0);
            line[strcspn(line, "\n")] = '\0';
            snprintf(m->brokers, sizeof m->brokers, "%.300s", line + 18);
            return;
        }
        int st;
        if (waitpid(m->pid, &st, WNOHANG) == m->pid)
            fail_msg("mock-kafka exited early with status %d", st);
        tsleep_ms(50);
    }
    fail_msg("mock-kafka wrote no bootstrap file in 10 s");
}

int tmock_stop(struct tmock *m)
{
    int st = -1;
    assert_int_equal(kill(m->pid, SIGTERM), 0);
    if (!wait_exit(m->pid, 10, &st)) {
        kill(m->pid, SIGKILL);
        waitpid(m->pid, NULL, 0);
        fail_msg("mock-kafka ignored SIGTERM for 10 s");
    }
    return st;
}

/* ---- daemon ----------------------------------------------------------------- */

void tdaemon_config(struct tdaemon *d, const char *name, const char *brokers, const char *group,
                    const char *extra)
{
    memset(d, 0, sizeof *d);
    d->pid = -1;
    const char *tmp = testenv_get("UNDERSTUDY_TEST_TMP");
    snprintf(d->config, sizeof d->config, "%s/%s.yaml", tmp, name);
    snprintf(d->log, sizeof d->log, "%s/%s.log", tmp, name);
    unlink(d->log);
    FILE *f = fopen(d->config, "w");
    assert_non_null(f);
    fprintf(f,
            "kafka:\n  brokers: \"%s\"\n  group_id: \"%s\"\n"
            "  properties:\n    session.timeout.ms: \"6000\"\n"
            "    heartbeat.interval.ms: \"500\"\n"
            "metrics:\n  listen: \"127.0.0.1:0\"\n"
            "log:\n  level: info\n"
            "%s%s",
            brokers, group, extra ? extra : "",
            extra && strstr(extra, "train:") ? "" : "train:\n  enabled: false\n");
    assert_int_equal(fclose(f), 0);
}

/* The metrics port from the newest "metrics: listening on port N" line. */
static int port_from_log(const char *path, long from)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    if (fseek(f, from, SEEK_SET) != 0) {
        fclose(f);
        return 0;
    }
    char line[2048];
    int port = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "metrics: listening on port ");
        if (p)
            port = atoi(p + strlen("metrics: listening on port "));
    }
    fclose(f);
    return port;
}

void tdaemon_start(struct tdaemon *d, const char *bin, const char *dsn, const char *failpoint)
{
    struct stat sb;
    long from = stat(d->log, &sb) == 0 ? (long)sb.st_size : 0;
    fflush(NULL);
    d->port = 0;
    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid == 0) {
        child_setup(d->log);
        setenv("UNDERSTUDY_PG_DSN", dsn, 1);
        if (failpoint)
            setenv("UNDERSTUDY_FAILPOINT", failpoint, 1);
        else
            unsetenv("UNDERSTUDY_FAILPOINT");
        unsetenv("UNDERSTUDY_KAFKA_BROKERS");
        execl(bin, bin, "run", "-c", d->config, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        d->port = port_from_log(d->log, from);
        if (d->port > 0)
            return;
        int st;
        if (tdaemon_exited(d, &st))
            fail_msg("the daemon exited with status %d before serving; see %s", st, d->log);
        tsleep_ms(50);
    }
    fail_msg("the daemon did not report its metrics port in 20 s; see %s", d->log);
}

int tdaemon_exited(struct tdaemon *d, int *status)
{
    int st = 0;
    if (d->pid <= 0)
        return 0;
    if (waitpid(d->pid, &st, WNOHANG) != d->pid)
        return 0;
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    d->pid = -1;
    return 1;
}

char *tdaemon_http(const struct tdaemon *d, const char *path, int *code)
{
    *code = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)d->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    close(fd);
    buf[len] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", code) != 1) {
        free(buf);
        return NULL;
    }
    char *body = strstr(buf, "\r\n\r\n");
    char *out = strdup(body ? body + 4 : "");
    free(buf);
    assert_non_null(out);
    return out;
}

void tdaemon_wait_ready(struct tdaemon *d, int timeout_s)
{
    for (int i = 0; i < timeout_s * 10; i++) {
        int code = 0, st;
        char *b = tdaemon_http(d, "/readyz", &code);
        free(b);
        if (code == 200)
            return;
        if (tdaemon_exited(d, &st))
            fail_msg("the daemon exited with status %d; see %s", st, d->log);
        tsleep_ms(100);
    }
    fail_msg("the daemon was not ready in %d s; see %s", timeout_s, d->log);
}

int tdaemon_stop(struct tdaemon *d, int sig, int timeout_s)
{
    int st = -1;
    if (d->pid <= 0)
        return -1;
    kill(d->pid, sig);
    if (!wait_exit(d->pid, timeout_s, &st)) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        st = -1;
    }
    d->pid = -1;
    return st;
}

double tdaemon_metric_value(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = body; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

/* ---- events ------------------------------------------------------------------ */

static uint64_t rnd(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ULL;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s)
{
    return (double)(rnd(s) >> 11) / 9007199254740992.0;
}

static void write_event(FILE *f, const struct tgen *g, size_t id, uint64_t *s)
{
    size_t ents = g->entities ? g->entities : 200;
    size_t e = (size_t)(rnd(s) % ents);
    int op = (int)(rnd(s) % 5) + 1;
    int minute = (int)(id % 1440);
    double cpa = 10 + unif(s) * 40, target = 25;
    static const char *const channels[] = {"search", "social", "display"};
    fprintf(f,
            "{\"event_id\":\"%s-%zu\",\"ts\":\"2026-11-02T%02d:%02d:%02dZ\","
            "\"operator_id\":\"op-%02d\",\"campaign_id\":\"cmp-%zu\","
            "\"entity_type\":\"keyword\",\"entity_id\":\"kw-%zu\",",
            g->prefix, id, minute / 60, minute % 60, (int)(id % 60), op, e / 10, e);
    if (strcmp(g->kind, "action") == 0) {
        double d = (rnd(s) & 1) ? 5 + unif(s) * 20 : -(5 + unif(s) * 20);
        fprintf(f, "\"action\":\"bid_change\",\"delta_pct\":%.2f,", d);
    }
    fprintf(f,
            "\"state\":{\"cpa\":%.2f,\"target_cpa\":%.1f,\"cpa_ratio\":%.4f,\"pacing\":%.3f,"
            "\"channel\":\"%s\",\"vertical\":\"retail\",\"hour_of_day\":%d}}\n",
            cpa, target, cpa / target, 0.5 + unif(s), channels[rnd(s) % 3], minute / 60);
}

static void write_bad(FILE *f, size_t i)
{
    switch (i % 5) {
    case 0:
        fprintf(f, "not json %zu\n", i);
        break;
    case 1:
        fprintf(f, "{\"event_id\":\"bad-%zu\",\"ts\":\"yesterday\"}\n", i);
        break;
    case 2:
        fprintf(f,
                "{\"event_id\":\"bad-%zu\",\"ts\":\"2026-11-02T10:00:00Z\",\"operator_id\":"
                "\"op-01\",\"campaign_id\":\"c\",\"entity_type\":\"planet\",\"entity_id\":"
                "\"e\",\"action\":\"bid_change\",\"delta_pct\":1,\"state\":{}}\n",
                i);
        break;
    case 3:
        fprintf(f, "{\"event_id\":\"bad-%zu\",\"truncated\":\n", i);
        break;
    default:
        fprintf(f, "{\"event_id\":\"bad-%zu\xff\"}\n", i);
        break;
    }
}

void tgen_write(const struct tgen *g, const char *path, struct tgen_counts *out)
{
    uint64_t s = g->seed ? g->seed : 42;
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    memset(out, 0, sizeof *out);
    size_t next = g->first_id;
    for (size_t i = 0; i < g->n; i++) {
        double u = unif(&s);
        if (u < g->bad_rate) {
            write_bad(f, i);
            out->bad++;
        } else if (u < g->bad_rate + g->dup_rate && out->unique > 0) {
            /* Same event again: regenerate an earlier id with its own seed,
             * so the duplicate is byte-for-byte the same event. */
            size_t id = g->first_id + (size_t)(rnd(&s) % out->unique);
            uint64_t es = id * 7919 + 1;
            write_event(f, g, id, &es);
            out->duplicates++;
        } else {
            uint64_t es = next * 7919 + 1;
            write_event(f, g, next++, &es);
            out->unique++;
        }
        out->lines++;
    }
    assert_int_equal(fclose(f), 0);
}

pid_t treplay_start(const char *bin, const char *brokers, const char *topic, const char *path,
                    int rate, const char *log)
{
    char r[32];
    snprintf(r, sizeof r, "%d", rate);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        child_setup(log);
        setenv("UNDERSTUDY_KAFKA_BROKERS", brokers, 1);
        unsetenv("UNDERSTUDY_CONFIG");
        execl(bin, bin, "replay", "--topic", topic, "--rate", r, path, (char *)NULL);
        _exit(127);
    }
    return pid;
}

void treplay(const char *bin, const char *brokers, const char *topic, const char *path)
{
    char *out = NULL, *err = NULL;
    const char *argv[] = {bin, "replay", "--topic", topic, path, NULL};
    setenv("UNDERSTUDY_KAFKA_BROKERS", brokers, 1);
    int rc = testenv_run(argv, NULL, &out, &err);
    unsetenv("UNDERSTUDY_KAFKA_BROKERS");
    if (rc != 0)
        fail_msg("replay %s exited %d: %s %s", path, rc, out, err);
    free(out);
    free(err);
}

long tcount(PGconn *conn, const char *table)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    char *v = testenv_query_value(conn, sql);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

void tmigrate(const char *dsn)
{
    const char *argv[] = {testenv_get("UNDERSTUDY_BIN"), "migrate", NULL};
    char *err = NULL;
    setenv("UNDERSTUDY_PG_DSN", dsn, 1);
    int rc = testenv_run(argv, NULL, NULL, &err);
    unsetenv("UNDERSTUDY_PG_DSN");
    if (rc != 0)
        fail_msg("migrate exited %d: %s", rc, err);
    free(err);
}

double tdaemon_metric(const struct tdaemon *d, const char *series)
{
    int code = 0;
    char *body = tdaemon_http(d, "/metrics", &code);
    double v = body && code == 200 ? tdaemon_metric_value(body, series) : -1;
    free(body);
    return v;
}

struct metric_wait {
    const struct tdaemon *d;
    const char *series;
    double want, last;
};

static int metric_reached(void *ud)
{
    struct metric_wait *w = ud;
    w->last = tdaemon_metric(w->d, w->series);
    return fabs(w->last - w->want) < 1e-9;
}

void tdaemon_wait_metric(const struct tdaemon *d, const char *series, double want, int timeout_s)
{
    struct metric_wait w = {d, series, want, -1};
    if (!twait_until(metric_reached, &w, timeout_s))
        fail_msg("after %d s, %s is %g, not %g; see %s", timeout_s, series, w.last, want, d->log);
}
