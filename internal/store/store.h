/*
 * store: everything that talks to PostgreSQL (libpq).  Connections,
 * migrations, and (as the daemon grows) batches, offsets, the policy
 * registry and queries.  SQL only through PQexecParams, prepared statements
 * or COPY; never SQL text built from data.
 */
#ifndef UNDERSTUDY_STORE_H
#define UNDERSTUDY_STORE_H

#include <stddef.h>
#include <stdio.h>

struct store;

/*
 * Connects with a libpq conninfo string or URI ("" = libpq defaults and PG*
 * environment).  password_file (may be NULL) names a file whose first line is
 * the password.  application_name is set to "understudy".  Returns 0 and a
 * new handle in *out, or -1 with a reason in err (the password never appears
 * in it).
 */
int store_connect(const char *dsn, const char *password_file, struct store **out, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* Closes the connection; NULL is a no-op. */
void store_free(struct store *st);

/* The libpq connection, for modules of store itself and for tests. */
struct pg_conn *store_conn(struct store *st);

/* One embedded migration (generated from schema/NNNN_name.sql at build time). */
struct store_migration {
    int version;
    const char *name; /* "0001_init.sql" */
    const char *sql;
};
extern const struct store_migration store_migrations[];
extern const size_t store_n_migrations;

/*
 * Applies the pending migrations in order, each in its own transaction, under
 * a PostgreSQL advisory lock, recording each in schema_migrations.  Already
 * applied ones are skipped (so running twice is a no-op); an applied
 * migration whose text changed since is an error.  Progress lines go to
 * report (may be NULL).  *applied (may be NULL) gets the number applied.
 * On failure the failing migration is rolled back, and err names the file,
 * the line of the failing statement and PostgreSQL's message.
 */
int store_migrate(struct store *st, FILE *report, int *applied, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes one line per known migration: version, name, applied_at or "pending". */
int store_migrate_status(struct store *st, FILE *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
