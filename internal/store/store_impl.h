/*
 * store: what the files of the store module share and nobody else sees.
 */
#ifndef UNDERSTUDY_STORE_IMPL_H
#define UNDERSTUDY_STORE_IMPL_H

#include <libpq-fe.h>

struct store {
    PGconn *conn;
    /* PQbackendPID of the session whose temporary staging tables exist;
     * 0 = none yet.  A reconnect gives a new backend, hence new tables. */
    int staging_backend;
};

#endif
