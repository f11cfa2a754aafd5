/*
 * store: small libpq helpers the store files share (result checks, text
 * array literals for parameters).
 */
#include "store/store_impl.h"

#include <string.h>

int store_result_check(PGconn *conn, const PGresult *r, ExecStatusType want, char *err,
                       size_t errlen)
{
    if (r && PQresultStatus(r) == want)
        return 0;
    const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *c = conn ? PQerrorMessage(conn) : "";
    util_fmt(err, errlen, "%s%s%s", s ? s : "", s ? ": " : "", m ? m : (c[0] ? c : "no result"));
    err[strcspn(err, "\n")] = '\0';
    return -1;
}

int store_exec(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    int rc = store_result_check(conn, r, PGRES_COMMAND_OK, err, errlen);
    PQclear(r);
    return rc;
}

int store_text_array(struct util_buf *b, const char *const *items, size_t n)
{
    if (util_buf_puts(b, "{") != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (util_buf_puts(b, i ? ",\"" : "\"") != 0)
            return -1;
        for (const char *p = items[i]; *p; p++) {
            if ((*p == '"' || *p == '\\') && util_buf_append(b, "\\", 1) != 0)
                return -1;
            if (util_buf_append(b, p, 1) != 0)
                return -1;
        }
        if (util_buf_puts(b, "\"") != 0)
            return -1;
    }
    return util_buf_puts(b, "}");
}
