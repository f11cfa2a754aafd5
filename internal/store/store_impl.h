/*
 * store: what the files of the store module share and nobody else sees.
 */
#ifndef UNDERSTUDY_STORE_IMPL_H
#define UNDERSTUDY_STORE_IMPL_H

#include <libpq-fe.h>

#include "util/util.h"

struct store {
    PGconn *conn;
    /* PQbackendPID of the session whose temporary staging tables exist;
     * 0 = none yet.  A reconnect gives a new backend, hence new tables. */
    int staging_backend;
};

/*
 * Returns 0 when r has status want; otherwise -1 with "SQLSTATE: message"
 * (or libpq's connection error) in err, first line only.  r may be NULL.
 */
int store_result_check(PGconn *conn, const PGresult *r, ExecStatusType want, char *err,
                       size_t errlen);

/* PQexec of a command without results; 0 or -1 with the reason. */
int store_exec(PGconn *conn, const char *sql, char *err, size_t errlen);

/*
 * Appends items[0..n) to b as a PostgreSQL text[] literal ("{...}", each
 * element double-quoted with " and \ escaped).  0, or -1 out of memory.
 */
int store_text_array(struct util_buf *b, const char *const *items, size_t n);

#endif
