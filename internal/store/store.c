/*
 * store: the connection.  Opens one libpq connection from a conninfo string
 * or URI plus an optional password file, and routes the server's notices
 * into our log instead of libpq's default of printing them to stderr.
 *
 * The password must never reach a log line or an error message.  libpq's
 * own connection errors do not quote it, but its parser errors quote pieces
 * of the connection string; so the string is parsed first, and when it may
 * hold a password the parser's message is replaced by a generic one.
 */
#include "store/store.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libpq-fe.h>

#include "log/log.h"
#include "store/store_impl.h"
#include "util/util.h"

/* Longest password accepted from a password file, in bytes. */
#define STORE_PASSWORD_MAX 1024

/* Server NOTICE/WARNING messages (e.g. "relation exists, skipping"). */
static void store_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg)
        return;
    if (sev && strcmp(sev, "WARNING") == 0)
        log_warn("store: server warning: %s", msg);
    else
        log_debug("store: server notice: %s", msg);
}

/* Case-insensitive strstr over ASCII. */
static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

/*
 * True when dsn may carry a password: a "password" keyword (or query
 * parameter) anywhere, or a URI whose user info has a ':'.
 */
static int dsn_may_hold_password(const char *dsn)
{
    if (contains_nocase(dsn, "password"))
        return 1;
    const char *p = strstr(dsn, "://");
    if (!p)
        return 0;
    p += 3;
    size_t auth = strcspn(p, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < auth; i++)
        if (p[i] == '@')
            at = p + i;
    return at && memchr(p, ':', (size_t)(at - p)) != NULL;
}

/* Copies msg into err with line breaks folded to "; " and the tail trimmed. */
static void fold_message(char *err, size_t errlen, const char *prefix, const char *msg)
{
    size_t o = 0;
    int n = snprintf(err, errlen, "%s", prefix);
    if (n < 0 || (size_t)n >= errlen)
        return;
    o = (size_t)n;
    size_t end = strlen(msg);
    while (end > 0 && isspace((unsigned char)msg[end - 1]))
        end--;
    for (size_t i = 0; i < end && o + 1 < errlen; i++) {
        if (msg[i] == '\n') {
            if (o + 3 >= errlen)
                break;
            err[o++] = ';';
            err[o++] = ' ';
            while (i + 1 < end && isspace((unsigned char)msg[i + 1]))
                i++;
        } else {
            err[o++] = msg[i];
        }
    }
    err[o] = '\0';
}

/* Overwrites a secret in a way the compiler may not drop. */
static void wipe(char *p, size_t n)
{
    volatile char *v = p;
    while (n--)
        *v++ = 0;
}

/*
 * Reads the first line of path into pw (without the line break).  Returns 0,
 * or -1 with a reason naming the file (never its content).
 */
static int read_password_file(const char *path, char *pw, size_t pwlen, char *err, size_t errlen)
{
    int rc = -1;
    FILE *f = fopen(path, "r");
    if (!f) {
        util_fmt(err, errlen, "password_file %s: %s", path, strerror(errno));
        goto out;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        log_warn("store: password_file %s is accessible to group or others; use chmod 600", path);
    if (!fgets(pw, (int)pwlen, f)) {
        if (ferror(f))
            util_fmt(err, errlen, "password_file %s: %s", path, strerror(errno));
        else
            util_fmt(err, errlen, "password_file %s: is empty", path);
        goto out;
    }
    size_t n = strlen(pw);
    if (n == pwlen - 1 && pw[n - 1] != '\n' && !feof(f)) {
        util_fmt(err, errlen, "password_file %s: first line is longer than %zu bytes", path,
                 pwlen - 2);
        goto out;
    }
    while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
        pw[--n] = '\0';
    if (n == 0) {
        util_fmt(err, errlen, "password_file %s: first line is empty", path);
        goto out;
    }
    rc = 0;
out:
    if (rc != 0)
        wipe(pw, pwlen);
    if (f)
        (void)fclose(f); /* read-only: nothing to lose */
    return rc;
}

int store_connect(const char *dsn, const char *password_file, struct store **out, char *err,
                  size_t errlen)
{
    int rc = -1;
    char pw[STORE_PASSWORD_MAX + 2];
    char *parse_err = NULL;
    PQconninfoOption *opts = NULL;
    PGconn *conn = NULL;
    struct store *st = NULL;

    memset(pw, 0, sizeof pw);
    *out = NULL;
    if (!dsn)
        dsn = "";

    opts = PQconninfoParse(dsn, &parse_err);
    if (!opts) {
        if (!parse_err)
            util_fmt(err, errlen, "postgres dsn: out of memory while parsing");
        else if (dsn_may_hold_password(dsn))
            util_fmt(err, errlen,
                     "postgres dsn: not a valid connection string or URI (libpq's message "
                     "is withheld because it may quote the password)");
        else
            fold_message(err, errlen, "postgres dsn: ", parse_err);
        goto out;
    }

    const char *keys[4] = {NULL};
    const char *vals[4] = {NULL};
    size_t k = 0;
    /* Before dbname so that the DSN may override it; after it, the password
     * from the file wins over one in the DSN. */
    keys[k] = "application_name";
    vals[k++] = "understudy";
    keys[k] = "dbname";
    vals[k++] = dsn;
    if (password_file && *password_file) {
        if (read_password_file(password_file, pw, sizeof pw, err, errlen) != 0)
            goto out;
        keys[k] = "password";
        vals[k++] = pw;
    }

    conn = PQconnectdbParams(keys, vals, 1);
    if (!conn) {
        util_fmt(err, errlen, "postgres: out of memory while connecting");
        goto out;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        fold_message(err, errlen, "postgres: cannot connect: ", PQerrorMessage(conn));
        goto out;
    }
    PQsetNoticeReceiver(conn, store_notice, NULL);

    st = util_calloc(1, sizeof *st);
    if (!st) {
        util_fmt(err, errlen, "postgres: out of memory");
        goto out;
    }
    st->conn = conn;
    conn = NULL;
    log_info("store: connected to database %s on %s port %s as %s", PQdb(st->conn),
             PQhost(st->conn), PQport(st->conn), PQuser(st->conn));
    *out = st;
    st = NULL;
    rc = 0;
out:
    wipe(pw, sizeof pw);
    if (conn)
        PQfinish(conn);
    if (opts)
        PQconninfoFree(opts);
    if (parse_err)
        PQfreemem(parse_err);
    return rc;
}

void store_free(struct store *st)
{
    if (!st)
        return;
    if (st->conn)
        PQfinish(st->conn);
    free(st);
}

struct pg_conn *store_conn(struct store *st)
{
    return st ? st->conn : NULL;
}
