/*
 * dataset_csv: reads a CSV file into a dataset (format and rules in
 * dataset.h).
 *
 * The file is mapped (or, when it is not a regular file, read) whole and
 * scanned twice by one hand-written field scanner.  The first pass checks
 * the structure (quotes, field counts, labels) and decides for each feature
 * column whether it is numeric; it stores nothing, so the second pass knows
 * the row count and the column kinds and fills exactly sized columns.  Only
 * field bytes are parsed: a plain decimal of at most 15 significant digits
 * and 22 fraction digits is converted as m / 10^k, which is exact in double
 * arithmetic and therefore equal to strtod's correctly rounded result;
 * anything else goes through strtod on a NUL-terminated copy.
 *
 * Fields are spans of the mapped bytes; a quoted field with "" escapes is
 * unescaped into a scratch buffer only when its text is needed.
 */
#include "dataset/dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset/dataset_impl.h"
#include "util/util.h"

#define NUMBER_MAX_LEN 100

enum role {
    ROLE_FEATURE = 0,
    ROLE_LABEL,
    ROLE_TS,
    ROLE_GROUP,
    ROLE_TARGET,
    ROLE_DROP,
};

static const char *const role_names[] = {"a feature",         "the label column",
                                         "the ts column",     "the operator column",
                                         "the target column", "dropped"};

struct field {
    const char *p;
    size_t len;
    bool escaped; /* quoted and contains "" */
};

struct scanner {
    const char *p;
    const char *end;
    size_t line;
};

enum { SCAN_MORE = 0, SCAN_LAST = 1, SCAN_ERR = -1 };

struct reader {
    const char *path;
    char *err;
    size_t errlen;

    const char *data;
    size_t size;
    bool mapped;

    char *scratch;
    size_t scratch_cap;

    size_t n_cols;
    char **names; /* unescaped header names */
    enum role *role;
    bool *force_cat;
    bool *numeric;
    size_t *feature; /* column -> feature index */
    size_t label_col;

    struct scanner body; /* just after the header */
    size_t n_rows;
};

/* Bytes that end an unquoted field or are not allowed in one. */
static const bool special[256] = {
    [','] = true, ['\n'] = true, ['\r'] = true, ['"'] = true, [0] = true,
};

static void fail_line(struct reader *rd, size_t line, const char *msg)
{
    util_fmt(rd->err, rd->errlen, "%s:%zu: %s", rd->path, line, msg);
}

/* ---- scanner ------------------------------------------------------------- */

/* Skips empty lines; returns false at the end of the data. */
static bool skip_blank(struct scanner *s)
{
    for (;;) {
        if (s->p == s->end)
            return false;
        if (*s->p == '\n') {
            s->p++;
            s->line++;
        } else if (*s->p == '\r' && s->end - s->p >= 2 && s->p[1] == '\n') {
            s->p += 2;
            s->line++;
        } else {
            return true;
        }
    }
}

/* After a field: consumes the separator or the record end. */
static int scan_after(struct reader *rd, struct scanner *s, bool quoted)
{
    if (s->p == s->end)
        return SCAN_LAST;
    switch (*s->p) {
    case ',':
        s->p++;
        return SCAN_MORE;
    case '\n':
        s->p++;
        s->line++;
        return SCAN_LAST;
    case '\r':
        if (s->end - s->p >= 2 && s->p[1] == '\n') {
            s->p += 2;
            s->line++;
            return SCAN_LAST;
        }
        fail_line(rd, s->line, "carriage return not followed by a line feed");
        return SCAN_ERR;
    case '\0':
        fail_line(rd, s->line, "NUL byte");
        return SCAN_ERR;
    default:
        fail_line(rd, s->line,
                  quoted ? "text after a closing quote" : "quote inside an unquoted field");
        return SCAN_ERR;
    }
}

/* Scans one field at s->p: SCAN_MORE (another follows), SCAN_LAST or SCAN_ERR. */
static int scan_field(struct reader *rd, struct scanner *s, struct field *f)
{
    const char *p = s->p;
    const char *end = s->end;
    if (p == end || *p != '"') {
        const char *start = p;
        while (p < end && !special[(unsigned char)*p])
            p++;
        f->p = start;
        f->len = (size_t)(p - start);
        f->escaped = false;
        s->p = p;
        return scan_after(rd, s, false);
    }
    size_t start_line = s->line;
    bool escaped = false;
    const char *start = ++p;
    for (;;) {
        if (p == end) {
            fail_line(rd, start_line, "unterminated quoted field");
            return SCAN_ERR;
        }
        char c = *p;
        if (c == '"') {
            if (end - p >= 2 && p[1] == '"') {
                escaped = true;
                p += 2;
                continue;
            }
            break;
        }
        if (c == '\n') {
            s->line++;
        } else if (c == '\0') {
            fail_line(rd, s->line, "NUL byte");
            return SCAN_ERR;
        }
        p++;
    }
    f->p = start;
    f->len = (size_t)(p - start);
    f->escaped = escaped;
    s->p = p + 1;
    return scan_after(rd, s, true);
}

/*
 * The text of a field: the bytes themselves, or their unescaped copy in the
 * scratch buffer (valid until the next call).  NULL when out of memory.
 */
static const char *field_text(struct reader *rd, const struct field *f, size_t *len)
{
    if (!f->escaped) {
        *len = f->len;
        return f->p;
    }
    if (rd->scratch_cap < f->len + 1) {
        char *b = util_realloc(rd->scratch, f->len + 1);
        if (!b)
            return NULL;
        rd->scratch = b;
        rd->scratch_cap = f->len + 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < f->len; i++) {
        rd->scratch[n++] = f->p[i];
        if (f->p[i] == '"')
            i++; /* the second quote of "" */
    }
    rd->scratch[n] = '\0';
    *len = n;
    return rd->scratch;
}

/* ---- values -------------------------------------------------------------- */

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A number as dataset.h defines it; false when the field is not one. */
static bool parse_number(const char *s, size_t len, double *out)
{
    if (len == 0 || len > NUMBER_MAX_LEN)
        return false;
    size_t i = 0;
    bool neg = false;
    if (s[0] == '+' || s[0] == '-') {
        neg = s[0] == '-';
        i = 1;
    }
    uint64_t m = 0;
    int digits = 0, frac = 0;
    bool dot = false, any = false, plain = true;
    for (; i < len; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            any = true;
            if (m > 0 || c != '0')
                digits++;
            m = m * 10 + (uint64_t)(c - '0');
            frac += dot;
        } else if (c == '.' && !dot) {
            dot = true;
        } else {
            plain = false;
            break;
        }
    }
    if (plain) {
        if (!any)
            return false;
        if (digits <= 15 && frac <= 22) {
            double v = (double)m / pow10_exact[frac];
            *out = neg ? -v : v;
            return true;
        }
    }
    for (size_t k = 0; k < len; k++) {
        char c = s[k];
        if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E'))
            return false;
    }
    char buf[NUMBER_MAX_LEN + 1];
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *endp;
    double v = strtod(buf, &endp);
    if (endp != buf + len || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* RFC 3339 or epoch seconds [-]digits[.digits] into microseconds. */
static bool parse_ts(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 64)
        return false;
    size_t i = 0;
    bool neg = s[0] == '-';
    if (neg)
        i = 1;
    int64_t sec = 0, us = 0;
    size_t int_digits = 0, frac_digits = 0;
    bool dot = false, epoch = true;
    for (; i < len && epoch; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (!dot) {
                if (++int_digits > 12)
                    epoch = false;
                sec = sec * 10 + (c - '0');
            } else if (++frac_digits <= 6) {
                us = us * 10 + (c - '0');
            }
        } else if (c == '.' && !dot && int_digits > 0) {
            dot = true;
        } else {
            epoch = false;
        }
    }
    if (epoch && int_digits > 0 && (!dot || frac_digits > 0)) {
        for (size_t k = frac_digits; k < 6; k++)
            us *= 10;
        int64_t v = sec * 1000000 + us;
        *out = neg ? -v : v;
        return true;
    }
    char buf[65];
    memcpy(buf, s, len);
    buf[len] = '\0';
    return event_parse_rfc3339(buf, out) == 0;
}

/* ---- file ---------------------------------------------------------------- */

static int load_file(struct reader *rd)
{
    int fd = open(rd->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        util_fmt(rd->err, rd->errlen, "%s: cannot open: %s", rd->path, strerror(errno));
        return -1;
    }
    int rc = -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        util_fmt(rd->err, rd->errlen, "%s: cannot stat: %s", rd->path, strerror(errno));
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        util_fmt(rd->err, rd->errlen, "%s: is a directory", rd->path);
        goto out;
    }
    if (S_ISREG(st.st_mode)) {
        rd->size = (size_t)st.st_size;
        if (rd->size == 0) {
            rc = 0;
            goto out;
        }
        void *m = mmap(NULL, rd->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            util_fmt(rd->err, rd->errlen, "%s: cannot map: %s", rd->path, strerror(errno));
            goto out;
        }
        (void)madvise(m, rd->size, MADV_SEQUENTIAL);
        rd->data = m;
        rd->mapped = true;
        rc = 0;
        goto out;
    }
    /* A pipe or a device: read it whole. */
    size_t cap = 0, n = 0;
    char *buf = NULL;
    for (;;) {
        if (cap - n < 65536) {
            size_t ncap = cap ? cap * 2 : 1 << 20;
            char *b = util_realloc(buf, ncap);
            if (!b) {
                free(buf);
                util_fmt(rd->err, rd->errlen, "out of memory");
                goto out;
            }
            buf = b;
            cap = ncap;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            util_fmt(rd->err, rd->errlen, "%s: cannot read: %s", rd->path, strerror(errno));
            free(buf);
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    rd->data = buf;
    rd->size = n;
    rc = 0;
out:
    close(fd);
    return rc;
}

static void reader_deinit(struct reader *rd)
{
    if (rd->mapped)
        munmap((void *)rd->data, rd->size);
    else
        free((void *)rd->data);
    for (size_t j = 0; j < rd->n_cols && rd->names; j++)
        free(rd->names[j]);
    free(rd->names);
    free(rd->role);
    free(rd->force_cat);
    free(rd->numeric);
    free(rd->feature);
    free(rd->scratch);
}

/* ---- header and options -------------------------------------------------- */

static int find_col(const struct reader *rd, const char *name)
{
    for (size_t j = 0; j < rd->n_cols; j++)
        if (strcmp(rd->names[j], name) == 0)
            return (int)j;
    return -1;
}

static int read_header(struct reader *rd, struct scanner *s)
{
    size_t line = s->line;
    size_t cap = 0;
    int r;
    do {
        struct field f;
        r = scan_field(rd, s, &f);
        if (r == SCAN_ERR)
            return -1;
        if (rd->n_cols == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **names = util_realloc(rd->names, ncap * sizeof *names);
            if (!names)
                goto oom;
            rd->names = names;
            cap = ncap;
        }
        size_t len;
        const char *t = field_text(rd, &f, &len);
        if (!t)
            goto oom;
        if (len == 0) {
            util_fmt(rd->err, rd->errlen, "%s:%zu: column %zu has an empty name", rd->path, line,
                     rd->n_cols + 1);
            return -1;
        }
        char *name = util_strndup(t, len);
        if (!name)
            goto oom;
        rd->names[rd->n_cols++] = name;
        for (size_t j = 0; j + 1 < rd->n_cols; j++) {
            if (strcmp(rd->names[j], name) == 0) {
                util_fmt(rd->err, rd->errlen, "%s:%zu: duplicate column name \"%s\"", rd->path,
                         line, name);
                return -1;
            }
        }
    } while (r == SCAN_MORE);
    return 0;
oom:
    util_fmt(rd->err, rd->errlen, "out of memory");
    return -1;
}

static int assign_role(struct reader *rd, const char *what, const char *name, enum role role)
{
    int j = find_col(rd, name);
    if (j < 0) {
        util_fmt(rd->err, rd->errlen, "%s: %s column \"%s\" not in the header", rd->path, what,
                 name);
        return -1;
    }
    if (rd->role[j] != ROLE_FEATURE) {
        util_fmt(rd->err, rd->errlen, "%s: %s: \"%s\" is %s", rd->path, what, name,
                 role_names[rd->role[j]]);
        return -1;
    }
    rd->role[j] = role;
    return 0;
}

static int apply_options(struct reader *rd, const struct ds_csv_options *o)
{
    rd->role = util_calloc(rd->n_cols, sizeof *rd->role);
    rd->force_cat = util_calloc(rd->n_cols, sizeof *rd->force_cat);
    rd->numeric = util_calloc(rd->n_cols, sizeof *rd->numeric);
    rd->feature = util_calloc(rd->n_cols, sizeof *rd->feature);
    if (!rd->role || !rd->force_cat || !rd->numeric || !rd->feature) {
        util_fmt(rd->err, rd->errlen, "out of memory");
        return -1;
    }
    rd->label_col = SIZE_MAX;
    if (o->label) {
        if (assign_role(rd, "label", o->label, ROLE_LABEL) != 0)
            return -1;
        rd->label_col = (size_t)find_col(rd, o->label);
    }
    if (o->ts && assign_role(rd, "ts", o->ts, ROLE_TS) != 0)
        return -1;
    if (o->group && assign_role(rd, "operator", o->group, ROLE_GROUP) != 0)
        return -1;
    if (o->target && assign_role(rd, "target", o->target, ROLE_TARGET) != 0)
        return -1;
    for (size_t i = 0; i < o->n_drop; i++) {
        const char *name = o->drop[i] ? o->drop[i] : "";
        int j = find_col(rd, name);
        if (j < 0) {
            util_fmt(rd->err, rd->errlen, "%s: drop: no column \"%s\" in the header", rd->path,
                     name);
            return -1;
        }
        if (rd->role[j] != ROLE_FEATURE && rd->role[j] != ROLE_DROP) {
            util_fmt(rd->err, rd->errlen, "%s: drop: \"%s\" is %s", rd->path, name,
                     role_names[rd->role[j]]);
            return -1;
        }
        rd->role[j] = ROLE_DROP;
    }
    for (size_t i = 0; i < o->n_categorical; i++) {
        const char *name = o->categorical[i] ? o->categorical[i] : "";
        int j = find_col(rd, name);
        if (j < 0) {
            util_fmt(rd->err, rd->errlen, "%s: categorical: no column \"%s\" in the header",
                     rd->path, name);
            return -1;
        }
        if (rd->role[j] != ROLE_FEATURE) {
            util_fmt(rd->err, rd->errlen, "%s: categorical: \"%s\" is %s", rd->path, name,
                     role_names[rd->role[j]]);
            return -1;
        }
        rd->force_cat[j] = true;
    }
    for (size_t j = 0; j < rd->n_cols; j++)
        rd->numeric[j] = rd->role[j] == ROLE_FEATURE && !rd->force_cat[j];
    return 0;
}

/* ---- passes -------------------------------------------------------------- */

static void fail_ragged(struct reader *rd, size_t line, size_t n)
{
    util_fmt(rd->err, rd->errlen, "%s:%zu: %zu field%s, header has %zu", rd->path, line, n,
             n == 1 ? "" : "s", rd->n_cols);
}

/* Structure, labels and column kinds; counts the rows. */
static int pass_check(struct reader *rd)
{
    struct scanner s = rd->body;
    while (skip_blank(&s)) {
        size_t line = s.line;
        size_t j = 0;
        int r;
        do {
            struct field f;
            r = scan_field(rd, &s, &f);
            if (r == SCAN_ERR)
                return -1;
            if (j < rd->n_cols) {
                double v;
                if (rd->numeric[j] && f.len > 0 && (f.escaped || !parse_number(f.p, f.len, &v)))
                    rd->numeric[j] = false;
                if (j == rd->label_col && f.len == 0) {
                    util_fmt(rd->err, rd->errlen, "%s:%zu: column \"%s\": empty label", rd->path,
                             line, rd->names[j]);
                    return -1;
                }
            }
            j++;
        } while (r == SCAN_MORE);
        if (j != rd->n_cols) {
            fail_ragged(rd, line, j);
            return -1;
        }
        if (rd->n_rows >= DS_MAX_ROWS) {
            fail_line(rd, line, "too many rows");
            return -1;
        }
        rd->n_rows++;
    }
    return 0;
}

static int make_dataset(struct reader *rd, const struct ds_csv_options *o, struct ds **out)
{
    int rc = -1;
    size_t nf = 0;
    const char **names = util_calloc(rd->n_cols, sizeof *names);
    enum gbm_kind *kinds = util_calloc(rd->n_cols, sizeof *kinds);
    if (!names || !kinds) {
        util_fmt(rd->err, rd->errlen, "out of memory");
        goto out;
    }
    for (size_t j = 0; j < rd->n_cols; j++) {
        if (rd->role[j] != ROLE_FEATURE)
            continue;
        rd->feature[j] = nf;
        names[nf] = rd->names[j];
        kinds[nf] = rd->numeric[j] ? GBM_NUMERIC : GBM_CATEGORICAL;
        nf++;
    }
    if (ds_new(names, kinds, nf, o->classes, o->classes ? o->n_classes : 0, out, rd->err,
               rd->errlen) != 0)
        goto out;
    if (ds_reserve(*out, rd->n_rows) != 0) {
        util_fmt(rd->err, rd->errlen, "out of memory");
        goto out;
    }
    rc = 0;
out:
    free(names);
    free(kinds);
    return rc;
}

/* Stores every row. */
static int pass_store(struct reader *rd, struct ds *d)
{
    struct scanner s = rd->body;
    size_t len;
    const char *t;
    while (skip_blank(&s)) {
        size_t line = s.line;
        size_t r = d->n_rows;
        int32_t cls = -1;
        int64_t ts = (int64_t)r;
        int32_t group = -1;
        double target = NAN;
        int rs;
        size_t j = 0;
        do {
            struct field f;
            rs = scan_field(rd, &s, &f);
            if (rs == SCAN_ERR)
                return -1; /* pass_check saw the same bytes: cannot happen */
            switch (rd->role[j]) {
            case ROLE_FEATURE: {
                struct ds_col *c = &d->cols[rd->feature[j]];
                if (c->kind == GBM_NUMERIC) {
                    double v = NAN;
                    if (f.len > 0 && !parse_number(f.p, f.len, &v))
                        v = NAN; /* pass_check made the column categorical */
                    c->num[r] = v;
                } else if (f.len == 0) {
                    c->lvl[r] = DS_NO_LEVEL;
                } else {
                    uint32_t l;
                    if (!(t = field_text(rd, &f, &len)) ||
                        ds_intern_add(&c->levels, &d->arena, t, len, &l, NULL) != 0)
                        goto oom;
                    c->lvl[r] = l;
                }
                break;
            }
            case ROLE_LABEL:
                if (!(t = field_text(rd, &f, &len)))
                    goto oom;
                if (d->fixed_classes) {
                    long c = ds_intern_find(&d->classes, t, len, ds_hash(t, len));
                    if (c < 0) {
                        util_fmt(rd->err, rd->errlen,
                                 "%s:%zu: column \"%s\": label \"%.*s\" is not one of the classes",
                                 rd->path, line, rd->names[j], (int)(len > 64 ? 64 : len), t);
                        return -1;
                    }
                    cls = (int32_t)c;
                } else if (ds_class_add(d, t, len, &cls) != 0) {
                    goto oom;
                }
                break;
            case ROLE_TS:
                if (!(t = field_text(rd, &f, &len)))
                    goto oom;
                if (!parse_ts(t, len, &ts)) {
                    util_fmt(rd->err, rd->errlen,
                             "%s:%zu: column \"%s\": not RFC 3339 or epoch seconds: \"%.*s\"",
                             rd->path, line, rd->names[j], (int)(len > 64 ? 64 : len), t);
                    return -1;
                }
                break;
            case ROLE_GROUP:
                if (f.len > 0) {
                    uint32_t g;
                    if (!(t = field_text(rd, &f, &len)) ||
                        ds_intern_add(&d->groups, &d->arena, t, len, &g, NULL) != 0)
                        goto oom;
                    group = (int32_t)g;
                }
                break;
            case ROLE_TARGET:
                if (f.len > 0 && (f.escaped || !parse_number(f.p, f.len, &target))) {
                    util_fmt(rd->err, rd->errlen, "%s:%zu: column \"%s\": not a number: \"%.*s\"",
                             rd->path, line, rd->names[j], (int)(f.len > 64 ? 64 : f.len), f.p);
                    return -1;
                }
                break;
            case ROLE_DROP:
                break;
            }
            j++;
        } while (rs == SCAN_MORE);
        d->label[r] = cls;
        d->ts[r] = ts;
        d->group[r] = group;
        d->target[r] = target;
        if (cls >= 0)
            d->class_count[cls]++;
        d->n_rows++;
    }
    return 0;
oom:
    util_fmt(rd->err, rd->errlen, "out of memory");
    return -1;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Renumbers discovered classes in name order. */
static int sort_classes(struct ds *d)
{
    int rc = -1;
    size_t nc = d->classes.n;
    if (nc == 0)
        return 0; /* no label column */
    const char **sorted = util_calloc(nc, sizeof *sorted);
    int32_t *map = util_calloc(nc, sizeof *map);
    size_t *count = util_calloc(nc, sizeof *count);
    struct ds_intern t = {0};
    if (!sorted || !map || !count)
        goto out;
    memcpy(sorted, d->classes.names, nc * sizeof *sorted);
    qsort(sorted, nc, sizeof *sorted, cmp_name);
    for (size_t i = 0; i < nc; i++) {
        uint32_t idx;
        if (ds_intern_add(&t, &d->arena, sorted[i], strlen(sorted[i]), &idx, NULL) != 0)
            goto out;
    }
    for (size_t c = 0; c < nc; c++) {
        const char *name = d->classes.names[c];
        size_t len = strlen(name);
        map[c] = (int32_t)ds_intern_find(&t, name, len, ds_hash(name, len));
        count[map[c]] = d->class_count[c];
    }
    for (size_t r = 0; r < d->n_rows; r++)
        d->label[r] = d->label[r] < 0 ? -1 : map[d->label[r]];
    memcpy(d->class_count, count, nc * sizeof *count);
    ds_intern_deinit(&d->classes);
    d->classes = t;
    memset(&t, 0, sizeof t);
    rc = 0;
out:
    ds_intern_deinit(&t);
    free(sorted);
    free(map);
    free(count);
    return rc;
}

int ds_read_csv(const char *path, const struct ds_csv_options *o, struct ds **out, char *err,
                size_t errlen)
{
    int rc = -1;
    struct reader rd = {.path = path, .err = err, .errlen = errlen};
    struct ds *d = NULL;
    *out = NULL;
    if (!o || (o->label && !*o->label)) {
        util_fmt(err, errlen, "%s: the label column name is empty", path);
        goto out;
    }
    if (load_file(&rd) != 0)
        goto out;
    size_t bad;
    if (rd.size > 0 && !util_utf8_valid((const unsigned char *)rd.data, rd.size, &bad)) {
        size_t line = 1;
        for (size_t i = 0; i < bad; i++)
            line += rd.data[i] == '\n';
        fail_line(&rd, line, "invalid UTF-8");
        goto out;
    }
    struct scanner s = {.p = rd.data, .end = rd.data + rd.size, .line = 1};
    if (rd.size >= 3 && memcmp(rd.data, "\xEF\xBB\xBF", 3) == 0)
        s.p += 3;
    if (!skip_blank(&s)) {
        util_fmt(err, errlen, "%s: empty file", path);
        goto out;
    }
    if (read_header(&rd, &s) != 0)
        goto out;
    rd.body = s;
    if (apply_options(&rd, o) != 0 || pass_check(&rd) != 0)
        goto out;
    if (rd.n_rows == 0) {
        util_fmt(err, errlen, "%s: no data rows", path);
        goto out;
    }
    if (make_dataset(&rd, o, &d) != 0 || pass_store(&rd, d) != 0)
        goto out;
    if (!d->fixed_classes && sort_classes(d) != 0) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    *out = d;
    d = NULL;
    rc = 0;
out:
    ds_free(d);
    reader_deinit(&rd);
    return rc;
}

bool ds_csv_has_column(const char *path, const char *name)
{
    FILE *f = fopen(path, "r");
    char line[65536];
    bool found = false;
    if (!f)
        return false;
    if (fgets(line, sizeof line, f)) {
        char *save = NULL;
        line[strcspn(line, "\r\n")] = '\0';
        char *start = strncmp(line, "\xEF\xBB\xBF", 3) == 0 ? line + 3 : line;
        for (char *tok = strtok_r(start, ",", &save); tok && !found;
             tok = strtok_r(NULL, ",", &save)) {
            size_t n = strlen(tok);
            if (n >= 2 && tok[0] == '"' && tok[n - 1] == '"') {
                tok[n - 1] = '\0';
                tok++;
            }
            found = strcmp(tok, name) == 0;
        }
    }
    fclose(f);
    return found;
}
