/*
 * testenv: helpers for integration tests.  scripts/devenv.sh starts a
 * throwaway PostgreSQL cluster and `understudy mock-kafka`, and exports:
 *
 *   UNDERSTUDY_BIN             the understudy binary under test
 *   UNDERSTUDY_TEST_PG_ADMIN   conninfo of the cluster's superuser (db postgres)
 *   UNDERSTUDY_TEST_PG_HOST    socket directory; UNDERSTUDY_TEST_PG_PORT port;
 *   UNDERSTUDY_TEST_PG_USER    the superuser name
 *   UNDERSTUDY_TEST_BOOTSTRAP  bootstrap.servers of the mock Kafka cluster
 *   UNDERSTUDY_TEST_TMP        a scratch directory removed at teardown
 *
 * A test run outside that environment fails (it does not skip).
 */
#ifndef UNDERSTUDY_TESTENV_H
#define UNDERSTUDY_TESTENV_H

#include <libpq-fe.h>
#include <stddef.h>

/* Returns the variable's value; fails the current test when it is unset. */
const char *testenv_get(const char *name);

/*
 * Runs argv (argv[0] is looked up in PATH) with stdin from in_path (NULL =
 * /dev/null), captures stdout and stderr (each NUL-terminated, caller frees;
 * pass NULL to discard) and returns the exit status (128+signal if killed),
 * or -1 if it could not be started.  A command still running after
 * $UNDERSTUDY_TEST_CMD_TIMEOUT seconds (default 300) is killed and fails the
 * test.
 */
int testenv_run(const char *const argv[], const char *in_path, char **out, char **err);

/*
 * Runs $UNDERSTUDY_BIN with args (NULL-terminated, at most 30, without the
 * program name) and, when dsn is not NULL, UNDERSTUDY_PG_DSN=dsn in its
 * environment.  Fails the test unless it exits with want (its stderr in
 * the message); returns its stdout (caller frees).
 */
char *testenv_run_bin(const char *dsn, const char *const *args, int want);

/* Connects with conninfo, failing the test on error. */
PGconn *testenv_connect(const char *conninfo);

/*
 * Creates a fresh database (dropping one of the same name) and writes its
 * conninfo into dsn.  Fails the test on error.
 */
void testenv_create_db(const char *name, char *dsn, size_t dsnlen);

/* Runs sql (no parameters) and returns the first column of the first row
 * as a newly allocated string ("" for no rows); fails the test on error. */
char *testenv_query_value(PGconn *conn, const char *sql);

/* Runs sql and returns its PGresult status and SQLSTATE (into state[6]). */
int testenv_exec_status(PGconn *conn, const char *sql, char state[6]);

/* Path of a file under the source tree's fixtures/ (for tests run from the
 * repository root, as make test does). */
const char *testenv_fixture(const char *rel, char *buf, size_t len);

#endif
