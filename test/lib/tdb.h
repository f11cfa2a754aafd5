/*
 * tdb: PostgreSQL helpers for integration tests that read what the binary
 * wrote: copies of a prepared database, one-number queries, and waiting
 * until a query reaches a value.  Everything fails the current cmocka test
 * on error.  SQL text passed here is trusted test text.
 */
#ifndef UNDERSTUDY_TDB_H
#define UNDERSTUDY_TDB_H

#include <libpq-fe.h>
#include <stddef.h>

/* The conninfo of database db on the test cluster, into dsn. */
void tdb_dsn(const char *db, char *dsn, size_t len);

/*
 * Creates database name as a copy of template_db (CREATE DATABASE ...
 * TEMPLATE; a database of that name is dropped first) and writes its
 * conninfo into dsn.  Nobody may be connected to template_db.
 */
void tdb_clone(const char *template_db, const char *name, char *dsn, size_t len);

/* Runs sql, which must succeed without returning rows (SET, DDL, ...). */
void tdb_exec(PGconn *c, const char *sql);

/* The first column of the first row of sql as a number (0 for NULL or no
 * rows: check with a count when that matters). */
long tdb_long(PGconn *c, const char *sql);

/*
 * Polls sql (a one-number query) every 100 ms until it returns want; fails
 * the test after timeout_s, naming the last value and log (a file to look
 * at; may be NULL).
 */
void tdb_wait_long(PGconn *c, const char *sql, long want, int timeout_s, const char *log);

#endif
