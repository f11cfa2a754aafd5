/*
 * testenv: see testenv.h.  Uses cmocka's fail_msg so a missing environment
 * or a failed command shows up as a failed test with the reason.
 */
#include "testenv.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

const char *testenv_get(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("%s is not set: run integration tests through `make test` "
                 "(scripts/devenv.sh sets up PostgreSQL and mock Kafka)",
                 name);
    return v;
}

static char *slurp_fd(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (cap - len < 2048) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

int testenv_run(const char *const argv[], const char *in_path, char **out, char **err)
{
    char outname[] = "/tmp/understudy-test-out.XXXXXX";
    char errname[] = "/tmp/understudy-test-err.XXXXXX";
    int ofd = mkstemp(outname), efd = mkstemp(errname);
    assert_true(ofd >= 0 && efd >= 0);
    unlink(outname);
    unlink(errname);

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int ifd = open(in_path ? in_path : "/dev/null", O_RDONLY);
        if (ifd < 0)
            _exit(126);
        dup2(ifd, 0);
        dup2(ofd, 1);
        dup2(efd, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    /* A hung child must fail the test, not hang the suite. */
    int status = 0, waited_ms = 0;
    const char *lim = getenv("UNDERSTUDY_TEST_CMD_TIMEOUT");
    int limit_ms = (lim && atoi(lim) > 0 ? atoi(lim) : 300) * 1000;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            break;
        if (waited_ms >= limit_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("%s did not finish in %d s", argv[0], limit_ms / 1000);
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
        waited_ms += 20;
    }
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    char *o = slurp_fd(ofd), *e = slurp_fd(efd);
    close(ofd);
    close(efd);
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

static void quiet_notices(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

char *testenv_run_bin(const char *dsn, const char *const *args, int want)
{
    const char *argv[32] = {testenv_get("UNDERSTUDY_BIN")};
    size_t n = 1;
    for (; *args && n < 31; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    if (dsn)
        setenv("UNDERSTUDY_PG_DSN", dsn, 1);
    int st = testenv_run(argv, NULL, &out, &err);
    if (dsn)
        unsetenv("UNDERSTUDY_PG_DSN");
    if (st != want)
        fail_msg("understudy %s exited %d, not %d: %s", n > 1 ? argv[1] : "", st, want, err);
    free(err);
    return out;
}

PGconn *testenv_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet_notices, NULL);
    return c;
}

void testenv_create_db(const char *name, char *dsn, size_t dsnlen)
{
    PGconn *admin = testenv_connect(testenv_get("UNDERSTUDY_TEST_PG_ADMIN"));
    char *quoted = PQescapeIdentifier(admin, name, strlen(name));
    assert_non_null(quoted);
    char sql[512];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", quoted);
    PGresult *r = PQexec(admin, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(admin));
    PQclear(r);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", quoted);
    r = PQexec(admin, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(admin));
    PQclear(r);
    PQfreemem(quoted);
    PQfinish(admin);
    snprintf(dsn, dsnlen, "host=%s port=%s user=%s dbname=%s",
             testenv_get("UNDERSTUDY_TEST_PG_HOST"), testenv_get("UNDERSTUDY_TEST_PG_PORT"),
             testenv_get("UNDERSTUDY_TEST_PG_USER"), name);
}

char *testenv_query_value(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    char *v = strdup(PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    assert_non_null(v);
    return v;
}

int testenv_exec_status(PGconn *conn, const char *sql, char state[6])
{
    PGresult *r = PQexec(conn, sql);
    int st = (int)PQresultStatus(r);
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, 6, "%s", s ? s : "");
    PQclear(r);
    return st;
}

const char *testenv_fixture(const char *rel, char *buf, size_t len)
{
    snprintf(buf, len, "fixtures/%s", rel);
    return buf;
}
