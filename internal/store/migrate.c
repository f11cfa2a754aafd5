/*
 * store: schema migrations.  The binary carries schema/NNNN_name.sql as
 * store_migrations[] (scripts/embed-sql.sh); `understudy migrate` applies
 * the ones the database lacks.
 *
 * Rules: migrations apply in version order, each in its own transaction,
 * under a session advisory lock (STORE_MIGRATE_LOCK_KEY) so that concurrent
 * runs against one database serialize and the second one finds nothing to
 * do.  schema_migrations records version, file name and an FNV-1a 64
 * checksum of the text; an applied migration whose text changed, a database
 * newer than the binary, and a pending migration older than the newest
 * applied one are errors, never silently skipped.  Statements are sent one
 * at a time so a failure can name its file and line.
 */
#include "store/store.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log/log.h"
#include "util/util.h"

/* How much of a failing statement an error message quotes. */
#define EXCERPT_CHARS 60

/* ---- statement splitter ------------------------------------------------ */

/* Characters that may continue an identifier (PostgreSQL's ident_cont). */
static int ident_cont(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

/* Characters that may start a dollar-quote tag (no digits, no '$'). */
static int tag_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static int tag_cont(unsigned char c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

void store_sql_iter_init(struct store_sql_iter *it, const char *sql)
{
    it->sql = sql;
    it->pos = 0;
    it->line = 1;
}

/* Skips a (nested) block comment starting at s[*i] == '/'.  0 or -1. */
static int skip_block_comment(const char *s, size_t *i, int *line, char *err, size_t errlen)
{
    int start_line = *line, depth = 0;
    size_t j = *i;
    for (;;) {
        if (s[j] == '\0') {
            util_fmt(err, errlen, "line %d: unterminated /* comment", start_line);
            return -1;
        }
        if (s[j] == '/' && s[j + 1] == '*') {
            depth++;
            j += 2;
        } else if (s[j] == '*' && s[j + 1] == '/') {
            j += 2;
            if (--depth == 0)
                break;
        } else {
            if (s[j] == '\n')
                (*line)++;
            j++;
        }
    }
    *i = j;
    return 0;
}

/*
 * Skips a quoted run starting at s[*i] (the opening quote q).  A doubled
 * quote stands for itself; with backslashes (E'...'), a backslash escapes the
 * next character.  0 or -1.
 */
static int skip_quoted(const char *s, size_t *i, int *line, char q, int backslashes, char *err,
                       size_t errlen)
{
    int start_line = *line;
    size_t j = *i + 1;
    for (;;) {
        char c = s[j];
        if (c == '\0') {
            util_fmt(err, errlen, "line %d: unterminated %s", start_line,
                     q == '"' ? "quoted identifier" : "string literal");
            return -1;
        }
        if (c == '\n')
            (*line)++;
        if (backslashes && c == '\\' && s[j + 1] != '\0') {
            if (s[j + 1] == '\n')
                (*line)++;
            j += 2;
            continue;
        }
        if (c == q) {
            if (s[j + 1] == q) {
                j += 2;
                continue;
            }
            j++;
            break;
        }
        j++;
    }
    *i = j;
    return 0;
}

/*
 * At s[*i] == '$': if a dollar quote opens here, skips to after its closing
 * tag and returns 1; returns 0 when this '$' opens no quote (a parameter
 * like $1, or part of an identifier); -1 when the quote is not closed.
 */
static int skip_dollar(const char *s, size_t start, size_t *i, int *line, char *err, size_t errlen)
{
    size_t j = *i + 1;
    if (*i > start && ident_cont((unsigned char)s[*i - 1]))
        return 0;
    if (s[j] != '$') {
        if (!tag_start((unsigned char)s[j]))
            return 0;
        while (tag_cont((unsigned char)s[j]))
            j++;
        if (s[j] != '$')
            return 0;
    }
    size_t taglen = j + 1 - *i;
    const char *tag = s + *i;
    int start_line = *line;
    for (size_t k = j + 1;; k++) {
        if (s[k] == '\0') {
            util_fmt(err, errlen, "line %d: unterminated dollar-quoted string %.*s", start_line,
                     (int)taglen, tag);
            return -1;
        }
        if (s[k] == '\n')
            (*line)++;
        if (s[k] == '$' && strncmp(s + k, tag, taglen) == 0) {
            *i = k + taglen;
            return 1;
        }
    }
}

int store_sql_iter_next(struct store_sql_iter *it, struct store_sql_stmt *out, char *err,
                        size_t errlen)
{
    const char *s = it->sql;
    size_t i = it->pos;
    int line = it->line;

    /* Blanks, comments and empty statements before the next token. */
    for (;;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\0') {
            it->pos = i;
            it->line = line;
            return 0;
        }
        if (c == '\n') {
            line++;
            i++;
        } else if (isspace(c) || c == ';') {
            i++;
        } else if (c == '-' && s[i + 1] == '-') {
            while (s[i] != '\0' && s[i] != '\n')
                i++;
        } else if (c == '/' && s[i + 1] == '*') {
            if (skip_block_comment(s, &i, &line, err, errlen) != 0)
                return -1;
        } else {
            break;
        }
    }

    size_t start = i, end;
    int start_line = line, parens = 0;
    for (;;) {
        char c = s[i];
        if (c == '\0') {
            end = i;
            break;
        }
        if (c == ';' && parens == 0) {
            end = i;
            i++;
            break;
        }
        if (c == '\n') {
            line++;
            i++;
        } else if (c == '-' && s[i + 1] == '-') {
            while (s[i] != '\0' && s[i] != '\n')
                i++;
        } else if (c == '/' && s[i + 1] == '*') {
            if (skip_block_comment(s, &i, &line, err, errlen) != 0)
                return -1;
        } else if (c == '\'') {
            /* E'...' (also e'...') when the E is a token of its own. */
            int esc = i > start && (s[i - 1] == 'E' || s[i - 1] == 'e') &&
                      (i - 1 == start || !ident_cont((unsigned char)s[i - 2]));
            if (skip_quoted(s, &i, &line, '\'', esc, err, errlen) != 0)
                return -1;
        } else if (c == '"') {
            if (skip_quoted(s, &i, &line, '"', 0, err, errlen) != 0)
                return -1;
        } else if (c == '$') {
            int r = skip_dollar(s, start, &i, &line, err, errlen);
            if (r < 0)
                return -1;
            if (r == 0)
                i++;
        } else {
            if (c == '(')
                parens++;
            else if (c == ')' && parens > 0)
                parens--;
            i++;
        }
    }
    while (end > start && isspace((unsigned char)s[end - 1]))
        end--;
    out->text = s + start;
    out->len = end - start;
    out->line = start_line;
    it->pos = i;
    it->line = line;
    return 1;
}

/* ---- helpers ------------------------------------------------------------ */

void store_migration_checksum(const char *sql, char out[17])
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        h ^= *p;
        h *= UINT64_C(0x100000001b3);
    }
    (void)snprintf(out, 17, "%016" PRIx64, h);
}

/*
 * The start of a statement with blank runs folded to one space, at most
 * EXCERPT_CHARS characters (never cutting a UTF-8 sequence), "..." when cut.
 */
static void excerpt(const struct store_sql_stmt *stmt, char *dst, size_t size)
{
    size_t o = 0, chars = 0, i = 0;
    int space = 0;
    while (i < stmt->len && o + 5 < size) {
        unsigned char c = (unsigned char)stmt->text[i];
        if (isspace(c)) {
            space = 1;
            i++;
            continue;
        }
        if (chars + (size_t)space >= EXCERPT_CHARS)
            break;
        if (space) {
            dst[o++] = ' ';
            chars++;
            space = 0;
        }
        size_t n = 1;
        if (c >= 0xf0)
            n = 4;
        else if (c >= 0xe0)
            n = 3;
        else if (c >= 0xc0)
            n = 2;
        if (i + n > stmt->len || o + n + 4 >= size)
            break;
        memcpy(dst + o, stmt->text + i, n);
        o += n;
        i += n;
        chars++;
    }
    if (i < stmt->len && o + 3 < size) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

/* First line of libpq's connection-level error message. */
static const char *conn_error(PGconn *conn, char *buf, size_t size)
{
    const char *m = PQerrorMessage(conn);
    size_t n = strcspn(m, "\n");
    util_fmt(buf, size, "%.*s", (int)n, m);
    return buf[0] ? buf : "unknown error";
}

/*
 * Runs one parameterized command.  Returns the result when its status is
 * want (caller clears it), else NULL with "what: message" in err.
 */
static PGresult *exec_want(PGconn *conn, const char *sql, int nparams, const char *const *params,
                           ExecStatusType want, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    if (res && PQresultStatus(res) == want)
        return res;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char buf[512];
    if (msg)
        util_fmt(err, errlen, "%s: %s (SQLSTATE %s)", what, msg, state ? state : "?");
    else
        util_fmt(err, errlen, "%s: %s", what, conn_error(conn, buf, sizeof buf));
    PQclear(res);
    return NULL;
}

/* Rolls back whatever transaction is open (a failure is only logged: the
 * caller is already on its error path, and the server ends the transaction
 * when the session ends). */
static void rollback_if_open(PGconn *conn)
{
    PGTransactionStatusType ts = PQtransactionStatus(conn);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        PGresult *res = PQexec(conn, "ROLLBACK");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            log_warn("migrate: ROLLBACK failed: %s", PQerrorMessage(conn));
        PQclear(res);
    }
}

/* True when the statement starts with a transaction-control keyword. */
static int is_transaction_control(const struct store_sql_stmt *stmt)
{
    static const char *const words[] = {"begin", "commit",    "rollback", "start",   "end",
                                        "abort", "savepoint", "release",  "prepare", NULL};
    size_t n = 0;
    while (n < stmt->len && isalpha((unsigned char)stmt->text[n]))
        n++;
    for (size_t w = 0; words[w]; w++) {
        if (strlen(words[w]) != n)
            continue;
        size_t i = 0;
        while (i < n && tolower((unsigned char)stmt->text[i]) == words[w][i])
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

/* ---- migrate ------------------------------------------------------------ */

/* schema_migrations lives in the schema the migrations create objects in. */
static const char have_table_sql[] =
    "SELECT to_regclass(quote_ident(current_schema()) || '.schema_migrations') IS NOT NULL";

static const char create_table_sql[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                       " version integer PRIMARY KEY,"
                                       " name text NOT NULL,"
                                       " checksum text NOT NULL,"
                                       " applied_at timestamptz NOT NULL DEFAULT now())";

static const char comment_table_sql[] =
    "COMMENT ON TABLE schema_migrations IS 'Schema migrations applied by understudy migrate: "
    "version, file name, FNV-1a 64 checksum of the file text, time.'";

/* Runs one statement of migration m; on failure err names file and line. */
static int run_statement(PGconn *conn, const struct store_migration *m,
                         const struct store_sql_stmt *stmt, char *err, size_t errlen)
{
    int rc = -1;
    char ex[EXCERPT_CHARS * 4 + 8];
    char *text = NULL;
    PGresult *res = NULL;

    excerpt(stmt, ex, sizeof ex);
    if (is_transaction_control(stmt)) {
        util_fmt(err, errlen,
                 "%s:%d: transaction control is not allowed in a migration (each migration "
                 "runs in a transaction of its own) (statement: %s)",
                 m->name, stmt->line, ex);
        goto out;
    }
    text = util_strndup(stmt->text, stmt->len);
    if (!text) {
        util_fmt(err, errlen, "%s:%d: out of memory", m->name, stmt->line);
        goto out;
    }
    res = PQexecParams(conn, text, 0, NULL, NULL, NULL, NULL, 0);
    ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        const char *sev = res ? PQresultErrorField(res, PG_DIAG_SEVERITY) : NULL;
        const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
        char buf[512];
        if (!msg) {
            msg = conn_error(conn, buf, sizeof buf);
            sev = NULL;
        }
        util_fmt(err, errlen, "%s:%d: %s:  %s (SQLSTATE %s) (statement: %s)%s%s", m->name,
                 stmt->line, sev ? sev : "ERROR", msg, state ? state : "?", ex,
                 hint ? " HINT:  " : "", hint ? hint : "");
        goto out;
    }
    if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
        util_fmt(err, errlen, "%s:%d: statement ended the migration's transaction (statement: %s)",
                 m->name, stmt->line, ex);
        goto out;
    }
    rc = 0;
out:
    PQclear(res);
    free(text);
    return rc;
}

/* Applies one migration in its own transaction.  *nstmt gets the count. */
static int apply_one(PGconn *conn, const struct store_migration *m, const char *checksum,
                     size_t *nstmt, char *err, size_t errlen)
{
    int rc = -1;
    PGresult *res = NULL;
    struct store_sql_iter it;
    struct store_sql_stmt stmt;
    char version[16], what[256];
    char serr[256];
    int r;

    *nstmt = 0;
    res = exec_want(conn, "BEGIN", 0, NULL, PGRES_COMMAND_OK, "BEGIN", err, errlen);
    if (!res)
        goto out;
    PQclear(res);
    res = NULL;

    store_sql_iter_init(&it, m->sql);
    while ((r = store_sql_iter_next(&it, &stmt, serr, sizeof serr)) == 1) {
        if (run_statement(conn, m, &stmt, err, errlen) != 0)
            goto out;
        (*nstmt)++;
    }
    if (r < 0) {
        util_fmt(err, errlen, "%s:%s", m->name, serr + strlen("line "));
        goto out;
    }

    util_fmt(version, sizeof version, "%d", m->version);
    const char *params[3] = {version, m->name, checksum};
    util_fmt(what, sizeof what, "%s: recording in schema_migrations", m->name);
    res = exec_want(conn,
                    "INSERT INTO schema_migrations (version, name, checksum) "
                    "VALUES ($1::integer, $2, $3)",
                    3, params, PGRES_COMMAND_OK, what, err, errlen);
    if (!res)
        goto out;
    PQclear(res);
    res = NULL;

    util_fmt(what, sizeof what, "%s: COMMIT", m->name);
    res = exec_want(conn, "COMMIT", 0, NULL, PGRES_COMMAND_OK, what, err, errlen);
    if (!res)
        goto out;
    /* COMMIT of a failed transaction "succeeds" with the tag ROLLBACK. */
    if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        util_fmt(err, errlen, "%s: transaction was rolled back at COMMIT", m->name);
        goto out;
    }
    rc = 0;
out:
    PQclear(res);
    if (rc != 0)
        rollback_if_open(conn);
    return rc;
}

/* Index of version in list[0..n), or -1. */
static long find_version(const struct store_migration *list, size_t n, long version)
{
    for (size_t i = 0; i < n; i++)
        if (list[i].version == version)
            return (long)i;
    return -1;
}

static int check_list(const struct store_migration *list, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (!list[i].name || !list[i].sql || list[i].version <= 0) {
            util_fmt(err, errlen, "migration #%zu: needs a positive version, a name and text", i);
            return -1;
        }
        if (i > 0 && list[i].version <= list[i - 1].version) {
            util_fmt(err, errlen, "%s: version %d does not follow %s's %d", list[i].name,
                     list[i].version, list[i - 1].name, list[i - 1].version);
            return -1;
        }
    }
    return 0;
}

/* Reads schema_migrations (version, name, checksum, applied_at) in order. */
static PGresult *load_applied(PGconn *conn, char *err, size_t errlen)
{
    return exec_want(conn,
                     "SELECT version, name, checksum,"
                     " to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                     " FROM schema_migrations ORDER BY version",
                     0, NULL, PGRES_TUPLES_OK, "reading schema_migrations", err, errlen);
}

int store_migrate_list(struct store *st, const struct store_migration *list, size_t n, FILE *report,
                       int *applied, char *err, size_t errlen)
{
    int rc = -1, locked = 0, n_applied = 0;
    PGconn *conn = store_conn(st);
    PGresult *res = NULL, *rows = NULL;
    char key[32];
    const char *key_param[1] = {key};
    long newest_applied = 0;

    if (applied)
        *applied = 0;
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        util_fmt(err, errlen, "migrate: not connected");
        goto out;
    }
    if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
        util_fmt(err, errlen, "migrate: the connection is inside a transaction");
        goto out;
    }
    if (check_list(list, n, err, errlen) != 0)
        goto out;

    util_fmt(key, sizeof key, "%lld", STORE_MIGRATE_LOCK_KEY);
    res = exec_want(conn, "SELECT pg_advisory_lock($1::bigint)", 1, key_param, PGRES_TUPLES_OK,
                    "migrate: taking the migration lock", err, errlen);
    if (!res)
        goto out;
    locked = 1;
    PQclear(res);

    /* Created (and commented) only when missing, so that a later run by a
     * role that does not own it still works. */
    res = exec_want(conn, have_table_sql, 0, NULL, PGRES_TUPLES_OK,
                    "migrate: looking for schema_migrations", err, errlen);
    if (!res)
        goto out;
    int have_table = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    res = NULL;
    if (!have_table) {
        res = exec_want(conn, create_table_sql, 0, NULL, PGRES_COMMAND_OK,
                        "migrate: creating schema_migrations", err, errlen);
        if (!res)
            goto out;
        PQclear(res);
        res = exec_want(conn, comment_table_sql, 0, NULL, PGRES_COMMAND_OK,
                        "migrate: commenting schema_migrations", err, errlen);
        if (!res)
            goto out;
        PQclear(res);
        res = NULL;
    }

    rows = load_applied(conn, err, errlen);
    if (!rows)
        goto out;

    int ours = n ? list[n - 1].version : 0;
    for (int r = 0; r < PQntuples(rows); r++) {
        long v = strtol(PQgetvalue(rows, r, 0), NULL, 10);
        if (v > newest_applied)
            newest_applied = v;
    }
    if (newest_applied > ours) {
        util_fmt(err, errlen, "database is at schema version %ld, newer than this binary's %d",
                 newest_applied, ours);
        goto out;
    }
    for (int r = 0; r < PQntuples(rows); r++) {
        long v = strtol(PQgetvalue(rows, r, 0), NULL, 10);
        const char *name = PQgetvalue(rows, r, 1);
        long at = find_version(list, n, v);
        if (at < 0) {
            util_fmt(err, errlen,
                     "schema_migrations records version %ld (%s), which this binary does not "
                     "have",
                     v, name);
            goto out;
        }
        char sum[17];
        store_migration_checksum(list[at].sql, sum);
        if (strcmp(sum, PQgetvalue(rows, r, 2)) != 0) {
            util_fmt(err, errlen,
                     "%s: changed since it was applied (checksum %s in the database, %s in "
                     "this binary); add a new migration instead of editing an applied one",
                     list[at].name, PQgetvalue(rows, r, 2), sum);
            goto out;
        }
        if (strcmp(name, list[at].name) != 0)
            log_warn("migrate: version %ld was applied as %s and is now named %s", v, name,
                     list[at].name);
    }

    for (size_t i = 0; i < n; i++) {
        const struct store_migration *m = &list[i];
        int done = 0;
        for (int r = 0; r < PQntuples(rows) && !done; r++)
            done = strtol(PQgetvalue(rows, r, 0), NULL, 10) == m->version;
        if (done)
            continue;
        if (m->version < newest_applied) {
            util_fmt(err, errlen,
                     "%s: pending, but the database is already at version %ld; a new "
                     "migration needs a version above the newest applied one",
                     m->name, newest_applied);
            goto out;
        }
        char sum[17];
        size_t nstmt = 0;
        int64_t t0 = util_now_mono_us();
        store_migration_checksum(m->sql, sum);
        if (apply_one(conn, m, sum, &nstmt, err, errlen) != 0)
            goto out;
        n_applied++;
        double ms = (double)(util_now_mono_us() - t0) / 1000.0;
        /* Progress only: a failed write must not fail a committed migration. */
        if (report)
            (void)fprintf(report, "migrate: applied %s (%zu statements, %.0f ms)\n", m->name, nstmt,
                          ms);
        else
            log_info("migrate: applied %s (%zu statements, %.0f ms)", m->name, nstmt, ms);
    }
    rc = 0;
out:
    PQclear(res);
    PQclear(rows);
    /* apply_one rolled back its own transaction; nothing else is open. */
    if (conn && PQstatus(conn) == CONNECTION_OK) {
        if (locked) {
            char uerr[256];
            res = exec_want(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, key_param,
                            PGRES_TUPLES_OK, "migrate: releasing the migration lock", uerr,
                            sizeof uerr);
            if (!res)
                log_warn("%s", uerr);
            PQclear(res);
        }
    }
    if (applied)
        *applied = n_applied;
    return rc;
}

int store_migrate(struct store *st, FILE *report, int *applied, char *err, size_t errlen)
{
    return store_migrate_list(st, store_migrations, store_n_migrations, report, applied, err,
                              errlen);
}

/* ---- status ------------------------------------------------------------- */

int store_migrate_status_list(struct store *st, const struct store_migration *list, size_t n,
                              FILE *out, char *err, size_t errlen)
{
    int rc = -1;
    PGconn *conn = store_conn(st);
    PGresult *res = NULL, *rows = NULL;

    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        util_fmt(err, errlen, "migrate: not connected");
        goto out;
    }
    res = exec_want(conn, have_table_sql, 0, NULL, PGRES_TUPLES_OK,
                    "migrate: looking for schema_migrations", err, errlen);
    if (!res)
        goto out;
    int have_table = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    if (have_table) {
        rows = load_applied(conn, err, errlen);
        if (!rows)
            goto out;
    }

    /* Merge the binary's list and the database's rows by version. */
    size_t i = 0;
    int r = 0, nrows = rows ? PQntuples(rows) : 0;
    while (i < n || r < nrows) {
        long dbv = r < nrows ? strtol(PQgetvalue(rows, r, 0), NULL, 10) : -1;
        int w;
        if (r < nrows && (i >= n || dbv < list[i].version)) {
            w = fprintf(out, "%04ld  %-40s  applied %s (not in this binary)\n", dbv,
                        PQgetvalue(rows, r, 1), PQgetvalue(rows, r, 3));
            r++;
        } else if (r < nrows && dbv == list[i].version) {
            char sum[17];
            store_migration_checksum(list[i].sql, sum);
            w = fprintf(out, "%04d  %-40s  applied %s%s\n", list[i].version, list[i].name,
                        PQgetvalue(rows, r, 3),
                        strcmp(sum, PQgetvalue(rows, r, 2)) != 0
                            ? " (changed since: checksum differs)"
                            : "");
            r++;
            i++;
        } else {
            w = fprintf(out, "%04d  %-40s  pending\n", list[i].version, list[i].name);
            i++;
        }
        if (w < 0) {
            util_fmt(err, errlen, "migrate: writing the status failed");
            goto out;
        }
    }
    rc = 0;
out:
    PQclear(res);
    PQclear(rows);
    return rc;
}

int store_migrate_status(struct store *st, FILE *out, char *err, size_t errlen)
{
    return store_migrate_status_list(st, store_migrations, store_n_migrations, out, err, errlen);
}

int store_check_schema(struct store *st, char *err, size_t errlen)
{
    PGconn *conn = store_conn(st);
    int want = store_n_migrations ? store_migrations[store_n_migrations - 1].version : 0;
    PGresult *r = exec_want(conn, have_table_sql, 0, NULL, PGRES_TUPLES_OK,
                            "looking for schema_migrations", err, errlen);
    if (!r)
        return -1;
    int have_table = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!have_table) {
        util_fmt(err, errlen, "the database has no understudy schema: run `understudy migrate`");
        return -1;
    }
    r = exec_want(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
                  PGRES_TUPLES_OK, "reading schema_migrations", err, errlen);
    if (!r)
        return -1;
    long have = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (have < want) {
        util_fmt(err, errlen,
                 "the database schema is at version %ld, this binary needs %d: run "
                 "`understudy migrate`",
                 have, want);
        return -1;
    }
    if (have > want) {
        util_fmt(err, errlen,
                 "the database schema is at version %ld, newer than this binary's %d: upgrade "
                 "understudy",
                 have, want);
        return -1;
    }
    return 0;
}
