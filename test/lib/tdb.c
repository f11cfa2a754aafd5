/*
 * tdb: see tdb.h.  Connections come from testenv (admin conninfo for
 * CREATE DATABASE); waits go through twait_until, so a slow condition fails
 * with the value it had rather than hanging the suite.
 */
#include "tdb.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tdaemon.h"
#include "testenv.h"

void tdb_dsn(const char *db, char *dsn, size_t len)
{
    snprintf(dsn, len, "host=%s port=%s user=%s dbname=%s", testenv_get("UNDERSTUDY_TEST_PG_HOST"),
             testenv_get("UNDERSTUDY_TEST_PG_PORT"), testenv_get("UNDERSTUDY_TEST_PG_USER"), db);
}

void tdb_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

void tdb_clone(const char *template_db, const char *name, char *dsn, size_t len)
{
    PGconn *admin = testenv_connect(testenv_get("UNDERSTUDY_TEST_PG_ADMIN"));
    char *from = PQescapeIdentifier(admin, template_db, strlen(template_db));
    char *to = PQescapeIdentifier(admin, name, strlen(name));
    assert_non_null(from);
    assert_non_null(to);
    char sql[512];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", to);
    tdb_exec(admin, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s", to, from);
    tdb_exec(admin, sql);
    PQfreemem(from);
    PQfreemem(to);
    PQfinish(admin);
    tdb_dsn(name, dsn, len);
}

long tdb_long(PGconn *c, const char *sql)
{
    char *v = testenv_query_value(c, sql);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

struct wait_state {
    PGconn *c;
    const char *sql;
    long want, last;
};

static int reached(void *ud)
{
    struct wait_state *w = ud;
    w->last = tdb_long(w->c, w->sql);
    return w->last == w->want;
}

void tdb_wait_long(PGconn *c, const char *sql, long want, int timeout_s, const char *log)
{
    struct wait_state w = {c, sql, want, -1};
    if (!twait_until(reached, &w, timeout_s))
        fail_msg("after %d s, %s gives %ld, not %ld; see %s", timeout_s, sql, w.last, want,
                 log ? log : "(no log)");
}
