/*
 * config_dump: writes the effective configuration back as YAML, and masks
 * the secrets it may hold.
 *
 * The dump walks the validation table, so it has the same keys in the same
 * layout as config/understudy.yaml and loads back to an equal config (bar
 * masked secrets).  Strings are always double-quoted, so no value can turn
 * into YAML syntax.
 *
 * Masking is deliberately greedy: when a conninfo string cannot be parsed
 * the way libpq would, the rest of it is masked rather than risk printing
 * a password.  It does not use libpq, so config stays free of it.
 */
#include "config/config_impl.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/util.h"

#define CFG_MASK "********"

/* ---- secrets -------------------------------------------------------------------- */

bool cfg_is_secret_property(const char *name)
{
    /* Substrings covering sasl.password, ssl.key.password,
     * ssl.keystore.password, sasl.oauthbearer.client.secret, PEM private
     * keys given inline and private key passphrases. */
    static const char *const parts[] = {"password", "passphrase", "secret", "key.pem"};
    char low[256];
    size_t i = 0;

    if (!name)
        return false;
    for (; i < sizeof low - 1 && name[i]; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    low[i] = '\0';
    if (name[i] != '\0')
        return true; /* longer than any real property: be safe */
    for (size_t j = 0; j < sizeof parts / sizeof parts[0]; j++) {
        if (strstr(low, parts[j]))
            return true;
    }
    /* Holds "clientSecret=..." style settings for the OIDC helper. */
    return strcmp(low, "sasl.oauthbearer.config") == 0;
}

/* Byte ranges of a DSN to replace by CFG_MASK, in any order, possibly
 * overlapping.  When they do not fit, the last slot masks to the end. */
struct ranges {
    size_t start[16], end[16];
    size_t n;
    size_t len; /* of the whole string */
};

static void range_add(struct ranges *r, size_t start, size_t end)
{
    size_t cap = sizeof r->start / sizeof r->start[0];
    if (end <= start)
        return;
    if (r->n == cap) {
        if (start < r->start[cap - 1])
            r->start[cap - 1] = start;
        r->end[cap - 1] = r->len;
        return;
    }
    r->start[r->n] = start;
    r->end[r->n] = end;
    r->n++;
}

/* True when s[0..n), percent-decoded, is "password" in any case. */
static bool is_password_key(const char *s, size_t n)
{
    char dec[16];
    size_t d = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            c = (unsigned char)strtol(hex, NULL, 16);
            i += 2;
        }
        if (d == sizeof dec - 1)
            return false;
        dec[d++] = (char)c;
    }
    dec[d] = '\0';
    return strcasecmp(dec, "password") == 0;
}

/* postgresql://user:secret@host:5432/db?password=x&sslmode=require */
static void uri_ranges(const char *s, size_t scheme_len, struct ranges *r)
{
    const char *auth = s + scheme_len;
    size_t auth_len = strcspn(auth, "/");
    const char *at = NULL;

    /* libpq takes the first '@'; the last one masks at least as much when
     * a password holds a raw '@'. */
    for (size_t i = 0; i < auth_len; i++) {
        if (auth[i] == '@')
            at = auth + i;
    }
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon)
            range_add(r, (size_t)(colon + 1 - s), (size_t)(at - s));
    }
    const char *q = strchr(auth, '?');
    while (q) {
        const char *param = q + 1;
        size_t plen = strcspn(param, "&");
        const char *eq = memchr(param, '=', plen);
        if (eq && is_password_key(param, (size_t)(eq - param)))
            range_add(r, (size_t)(eq + 1 - s), (size_t)(param + plen - s));
        q = param[plen] ? param + plen : NULL;
    }
}

/* host=db password='it''s' dbname=app: keyword = value pairs, values
 * optionally single-quoted, backslash escapes anywhere. */
static void conninfo_ranges(const char *s, struct ranges *r)
{
    size_t i = 0;

    while (s[i]) {
        while (isspace((unsigned char)s[i]))
            i++;
        if (!s[i])
            break;
        size_t key = i;
        while (s[i] && s[i] != '=' && !isspace((unsigned char)s[i]))
            i++;
        size_t key_end = i;
        while (isspace((unsigned char)s[i]))
            i++;
        if (s[i] != '=') {
            range_add(r, key, r->len); /* not a conninfo libpq accepts */
            return;
        }
        i++;
        while (isspace((unsigned char)s[i]))
            i++;
        size_t val = i;
        bool closed = true;
        if (s[i] == '\'') {
            closed = false;
            for (i++; s[i]; i++) {
                if (s[i] == '\\' && s[i + 1]) {
                    i++;
                } else if (s[i] == '\'') {
                    i++;
                    closed = true;
                    break;
                }
            }
        } else {
            for (; s[i] && !isspace((unsigned char)s[i]); i++) {
                if (s[i] == '\\' && s[i + 1])
                    i++;
            }
        }
        if (!closed) {
            range_add(r, val, r->len);
            return;
        }
        size_t klen = key_end - key;
        if (klen == 8 && strncasecmp(s + key, "password", 8) == 0) {
            range_add(r, val, i);
        } else if (klen == 6 && strncasecmp(s + key, "dbname", 6) == 0) {
            /* dbname may itself be a conninfo or URI; hide it whole when it
             * could carry a password. */
            for (size_t j = val; j < i; j++) {
                if (s[j] == '@' || (j + 8 <= i && strncasecmp(s + j, "password", 8) == 0)) {
                    range_add(r, val, i);
                    break;
                }
            }
        }
    }
}

void cfg_mask_dsn(const char *dsn, char *dst, size_t size)
{
    struct ranges r;
    size_t pos = 0, out = 0;

    if (!dst || size == 0)
        return;
    dst[0] = '\0';
    if (!dsn)
        return;
    memset(&r, 0, sizeof r);
    r.len = strlen(dsn);
    if (strncasecmp(dsn, "postgresql://", 13) == 0)
        uri_ranges(dsn, 13, &r);
    else if (strncasecmp(dsn, "postgres://", 11) == 0)
        uri_ranges(dsn, 11, &r);
    else if (strchr(dsn, '='))
        conninfo_ranges(dsn, &r);

    /* Emit in order of start, merging overlaps. */
    for (;;) {
        size_t best = r.n;
        for (size_t i = 0; i < r.n; i++) {
            if (r.end[i] > pos && (best == r.n || r.start[i] < r.start[best]))
                best = i;
        }
        size_t upto = best == r.n ? r.len : (r.start[best] > pos ? r.start[best] : pos);
        for (; pos < upto && out + 1 < size; pos++)
            dst[out++] = dsn[pos];
        if (best == r.n || out + 1 >= size)
            break;
        for (const char *m = CFG_MASK; *m && out + 1 < size; m++)
            dst[out++] = *m;
        pos = r.end[best];
        /* Swallow ranges that the one just written covers. */
        for (size_t i = 0; i < r.n; i++) {
            if (r.start[i] < pos && r.end[i] > pos)
                pos = r.end[i];
        }
    }
    dst[out] = '\0';
}

/* ---- the dump ----------------------------------------------------------------------- */

struct writer {
    FILE *f;
    bool failed;
};

static void emit(struct writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct writer *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* clang-analyzer 14 misreads ap as uninitialised here (log.c too). */
    if (vfprintf(w->f, fmt, ap) < 0) /* NOLINT(clang-analyzer-valist.Uninitialized) */
        w->failed = true;
    va_end(ap);
}

/* A YAML double-quoted scalar. */
static void emit_quoted(struct writer *w, const char *s)
{
    emit(w, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            emit(w, "\\%c", *p);
        else if (*p == '\n')
            emit(w, "\\n");
        else if (*p == '\t')
            emit(w, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            emit(w, "\\x%02x", *p);
        else
            emit(w, "%c", *p);
    }
    emit(w, "\"");
}

static void emit_indent(struct writer *w, size_t depth)
{
    emit(w, "%*s", (int)(depth * 2), "");
}

static void emit_scalar(struct writer *w, const struct cfg *cfg, const struct cfg_key *k)
{
    const void *field = (const char *)cfg + k->offset;
    char buf[1024];
    int64_t iv;
    double dv;
    bool bv;
    int ev;

    switch (k->type) {
    case CFG_TYPE_STRING: {
        const char *s = *(char *const *)field;
        if (s && (k->flags & CFG_KEY_CONNINFO)) {
            /* A DSN longer than buf loses its tail, never its mask. */
            cfg_mask_dsn(s, buf, sizeof buf);
            s = buf;
        }
        emit_quoted(w, s);
        break;
    }
    case CFG_TYPE_BOOL:
        memcpy(&bv, field, sizeof bv);
        emit(w, "%s", bv ? "true" : "false");
        break;
    case CFG_TYPE_INT:
        memcpy(&iv, field, sizeof iv);
        emit(w, "%lld", (long long)iv);
        break;
    case CFG_TYPE_DURATION:
        memcpy(&iv, field, sizeof iv);
        emit(w, "%s", util_format_duration(iv, buf, sizeof buf));
        break;
    case CFG_TYPE_SIZE:
        memcpy(&iv, field, sizeof iv);
        emit(w, "%s", cfg_format_size(iv, buf, sizeof buf));
        break;
    case CFG_TYPE_DOUBLE:
        memcpy(&dv, field, sizeof dv);
        emit(w, "%s", cfg_format_double(dv, buf, sizeof buf));
        break;
    case CFG_TYPE_ENUM:
        memcpy(&ev, field, sizeof ev);
        emit(w, "%s", ev >= 0 && k->names ? k->names[ev] : "?");
        break;
    default:
        break;
    }
}

static void emit_list(struct writer *w, const struct cfg *cfg, const struct cfg_key *k,
                      size_t depth)
{
    const void *field = (const char *)cfg + k->offset;
    size_t n;
    memcpy(&n, (const char *)cfg + k->count_offset, sizeof n);

    if (k->type == CFG_TYPE_MAP) {
        const struct cfg_kv *kv = *(struct cfg_kv *const *)field;
        if (n == 0) {
            emit(w, " {}\n");
            return;
        }
        emit(w, "\n");
        for (size_t i = 0; i < n; i++) {
            emit_indent(w, depth + 1);
            emit_quoted(w, kv[i].key);
            emit(w, ": ");
            emit_quoted(w, cfg_is_secret_property(kv[i].key) ? CFG_MASK : kv[i].value);
            emit(w, "\n");
        }
        return;
    }
    const struct event_feature_spec *fs = *(struct event_feature_spec *const *)field;
    emit(w, "\n");
    for (size_t i = 0; i < n; i++) {
        emit_indent(w, depth + 1);
        emit(w, "- {name: ");
        emit_quoted(w, fs[i].name);
        emit(w, ", type: %s}\n", cfg_feature_kind_names[fs[i].kind]);
    }
}

/* Splits a dotted path: returns the number of components (at most max) and
 * their starts and lengths. */
static size_t split_path(const char *path, const char **part, size_t *len, size_t max)
{
    size_t n = 0;
    const char *p = path;
    while (n < max) {
        size_t l = strcspn(p, ".");
        part[n] = p;
        len[n] = l;
        n++;
        if (p[l] == '\0')
            break;
        p += l + 1;
    }
    return n;
}

int cfg_dump(const struct cfg *cfg, FILE *f)
{
    struct writer w = {f, false};
    const char *prev[8] = {NULL}, *cur[8] = {NULL};
    size_t prev_len[8] = {0}, cur_len[8] = {0}, n_prev = 0, n_keys;
    char origin[512];
    const struct cfg_key *keys = cfg_keys(&n_keys);

    util_fmt(origin, sizeof origin, "%s", cfg->path ? cfg->path : "embedded defaults");
    cfg_one_line(origin);
    emit(&w, "# understudy effective configuration (%s); secrets are masked\n", origin);
    for (size_t i = 0; i < n_keys; i++) {
        const struct cfg_key *k = &keys[i];
        size_t n = split_path(k->path, cur, cur_len, 8);
        size_t common = 0;
        /* Sections shared with the previous key are already open. */
        while (common + 1 < n && common + 1 < n_prev && cur_len[common] == prev_len[common] &&
               memcmp(cur[common], prev[common], cur_len[common]) == 0)
            common++;
        if (common == 0 && i > 0)
            emit(&w, "\n");
        for (size_t d = common; d + 1 < n; d++) {
            emit_indent(&w, d);
            emit(&w, "%.*s:\n", (int)cur_len[d], cur[d]);
        }
        emit_indent(&w, n - 1);
        emit(&w, "%.*s:", (int)cur_len[n - 1], cur[n - 1]);
        if (k->type == CFG_TYPE_MAP || k->type == CFG_TYPE_FEATURES) {
            emit_list(&w, cfg, k, n - 1);
        } else {
            emit(&w, " ");
            emit_scalar(&w, cfg, k);
            emit(&w, "\n");
        }
        memcpy(prev, cur, sizeof prev);
        memcpy(prev_len, cur_len, sizeof prev_len);
        n_prev = n;
    }
    if (fflush(f) != 0 || ferror(f))
        w.failed = true;
    return w.failed ? -1 : 0;
}
