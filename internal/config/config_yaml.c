/*
 * config_yaml: walks libyaml's event stream (yaml_parser_parse) and applies
 * each value to a struct cfg through the validation table.
 *
 * No document tree is built: the walk is a recursive descent over events
 * that knows at every step which key path it is in, so an error can name
 * the path and the 1-based line and column of the node at fault (libyaml
 * marks are 0-based).  Keys are checked at their key node (unknown,
 * duplicate), values at their value node.  The first error ends the walk.
 * Anchors, aliases, tags and second documents are refused: the file is a
 * plain tree of scalars, mappings and one sequence (features).
 */
#include "config/config_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "util/util.h"

#define CFG_PATH_MAX_LEN 256

struct walker {
    yaml_parser_t parser;
    yaml_event_t ev; /* the current event, valid when have_ev */
    bool have_ev;
    const char *name; /* file name for messages */
    const char *text; /* the input, for positions of reader errors */
    size_t len;
    struct cfg *cfg;
    char path[CFG_PATH_MAX_LEN]; /* dotted path of the node being read */
    size_t path_len;
    bool path_cut; /* a segment did not fit: the path matches no key */
    char *err;
    size_t errlen;
};

/* ---- errors ------------------------------------------------------------------- */

static int fail_at(struct walker *w, const yaml_mark_t *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "name:line:col: path: message" into w->err; returns -1. */
static int fail_at(struct walker *w, const yaml_mark_t *m, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    /* clang-analyzer 14 misreads ap as uninitialised here (log.c too). */
    (void)vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    util_fmt(w->err, w->errlen, "%s:%zu:%zu: %s%s%s", w->name, m->line + 1, m->column + 1, w->path,
             w->path_len ? ": " : "", msg);
    cfg_one_line(w->err);
    return -1;
}

/* libyaml's reader reports a byte offset, not a mark: count lines here. */
static void offset_to_mark(const struct walker *w, size_t off, yaml_mark_t *m)
{
    m->line = 0;
    m->column = 0;
    m->index = off;
    for (size_t i = 0; i < off && i < w->len; i++) {
        if (w->text[i] == '\n') {
            m->line++;
            m->column = 0;
        } else {
            m->column++;
        }
    }
}

static int syntax_error(struct walker *w)
{
    const yaml_parser_t *p = &w->parser;
    yaml_mark_t m;

    /* Syntax errors belong to no key. */
    w->path[0] = '\0';
    w->path_len = 0;
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        util_fmt(w->err, w->errlen, "%s: out of memory", w->name);
        return -1;
    case YAML_READER_ERROR:
        offset_to_mark(w, p->problem_offset, &m);
        return fail_at(w, &m, "syntax error: %s", p->problem ? p->problem : "unreadable input");
    default:
        if (p->context)
            return fail_at(w, &p->problem_mark, "syntax error: %s (%s at %zu:%zu)",
                           p->problem ? p->problem : "?", p->context, p->context_mark.line + 1,
                           p->context_mark.column + 1);
        return fail_at(w, &p->problem_mark, "syntax error: %s", p->problem ? p->problem : "?");
    }
}

static const char *node_name(yaml_event_type_t t)
{
    switch (t) {
    case YAML_SCALAR_EVENT:
        return "a scalar";
    case YAML_SEQUENCE_START_EVENT:
        return "a sequence";
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    default:
        return "something else";
    }
}

/* ---- events and paths ---------------------------------------------------------- */

/* Advances to the next event, refusing what this format does not use. */
static int next(struct walker *w)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;

    if (w->have_ev) {
        yaml_event_delete(&w->ev);
        w->have_ev = false;
    }
    if (!yaml_parser_parse(&w->parser, &w->ev))
        return syntax_error(w);
    w->have_ev = true;
    switch (w->ev.type) {
    case YAML_ALIAS_EVENT:
        return fail_at(w, &w->ev.start_mark, "aliases not allowed");
    case YAML_SCALAR_EVENT:
        anchor = w->ev.data.scalar.anchor;
        tag = w->ev.data.scalar.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = w->ev.data.sequence_start.anchor;
        tag = w->ev.data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = w->ev.data.mapping_start.anchor;
        tag = w->ev.data.mapping_start.tag;
        break;
    default:
        break;
    }
    if (anchor)
        return fail_at(w, &w->ev.start_mark, "anchors not allowed (aliases are not supported)");
    if (tag)
        return fail_at(w, &w->ev.start_mark, "tags not allowed");
    return 0;
}

static const char *scalar_text(const struct walker *w)
{
    return (const char *)w->ev.data.scalar.value;
}

/* A scalar that carries a NUL byte ("\0" escape) cannot become a C string. */
static bool scalar_has_nul(const struct walker *w)
{
    return strlen(scalar_text(w)) != w->ev.data.scalar.length;
}

/* YAML's null: an empty or ~/null plain scalar.  Quoted "" is a string. */
static bool scalar_is_null(const struct walker *w)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    if (w->ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
        if (strcmp(scalar_text(w), nulls[i]) == 0)
            return true;
    }
    return false;
}

/* Appends ".seg" (or "seg" at the root, or "[i]" as given) to the path;
 * returns the length to restore with path_pop. */
static size_t path_push(struct walker *w, const char *seg, bool dot)
{
    size_t old = w->path_len;
    const char *sep = dot && old ? "." : "";
    int n = snprintf(w->path + old, sizeof w->path - old, "%s%s", sep, seg);
    if (n < 0 || (size_t)n >= sizeof w->path - old) {
        w->path_cut = true;
        w->path_len = strlen(w->path);
    } else {
        w->path_len = old + (size_t)n;
    }
    return old;
}

static void path_pop(struct walker *w, size_t old)
{
    w->path_len = old;
    w->path[old] = '\0';
    /* Once back at a length that fit, the path is whole again. */
    if (old < sizeof w->path - 1)
        w->path_cut = false;
}

/* ---- values ---------------------------------------------------------------------- */

static int walk_scalar(struct walker *w, const struct cfg_key *k)
{
    char why[256];
    if (w->ev.type != YAML_SCALAR_EVENT)
        return fail_at(w, &w->ev.start_mark, "expected a scalar, found %s", node_name(w->ev.type));
    if (scalar_has_nul(w))
        return fail_at(w, &w->ev.start_mark, "must not contain NUL bytes");
    if (cfg_value_set(w->cfg, k, scalar_text(w), scalar_is_null(w), why, sizeof why) != 0)
        return fail_at(w, &w->ev.start_mark, "%s", why);
    return 0;
}

/* kafka.properties: a flat mapping of string to string. */
static int walk_map(struct walker *w, const struct cfg_key *k)
{
    struct cfg_kv *kv = NULL;
    size_t n = 0, old = w->path_len;
    char *key = NULL;
    char why[256];
    int rc = -1;

    if (w->ev.type == YAML_SCALAR_EVENT && scalar_is_null(w)) {
        /* "properties:" with every entry commented out */
        cfg_list_install(w->cfg, k, NULL, 0);
        return 0;
    }
    if (w->ev.type != YAML_MAPPING_START_EVENT)
        return fail_at(w, &w->ev.start_mark, "expected a mapping, found %s", node_name(w->ev.type));
    for (;;) {
        if (next(w) != 0)
            goto out;
        if (w->ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (w->ev.type != YAML_SCALAR_EVENT || scalar_has_nul(w)) {
            fail_at(w, &w->ev.start_mark, "property names must be strings");
            goto out;
        }
        yaml_mark_t key_mark = w->ev.start_mark;
        if (*scalar_text(w) != '\0')
            path_push(w, scalar_text(w), true);
        if (cfg_property_name_check(scalar_text(w), why, sizeof why) != 0) {
            fail_at(w, &key_mark, "%s", why);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            if (strcmp(kv[i].key, scalar_text(w)) == 0) {
                fail_at(w, &key_mark, "duplicate key");
                goto out;
            }
        }
        key = util_strdup(scalar_text(w));
        if (!key) {
            fail_at(w, &key_mark, "out of memory");
            goto out;
        }
        if (next(w) != 0)
            goto out;
        if (w->ev.type != YAML_SCALAR_EVENT) {
            fail_at(w, &w->ev.start_mark, "expected a string, found %s", node_name(w->ev.type));
            goto out;
        }
        if (scalar_has_nul(w)) {
            fail_at(w, &w->ev.start_mark, "must not contain NUL bytes");
            goto out;
        }
        if (scalar_is_null(w)) {
            fail_at(w, &w->ev.start_mark, "needs a value (write \"\" for an empty string)");
            goto out;
        }
        if (cfg_kv_append(&kv, &n, key, scalar_text(w)) != 0) {
            fail_at(w, &w->ev.start_mark, "out of memory");
            goto out;
        }
        free(key);
        key = NULL;
        path_pop(w, old);
    }
    cfg_list_install(w->cfg, k, kv, n);
    kv = NULL;
    n = 0;
    rc = 0;
out:
    free(key);
    cfg_kv_free(kv, n);
    return rc;
}

enum { CFG_FEAT_NAME = 0, CFG_FEAT_TYPE, CFG_FEAT_NKEYS };

/* One {name, type} item; the current event is its first node.  On success
 * *name (caller frees), *kind and *name_mark are filled. */
static int walk_feature(struct walker *w, char **name, enum event_feature_kind *kind,
                        yaml_mark_t *name_mark)
{
    static const char *const keys[CFG_FEAT_NKEYS] = {"name", "type"};
    bool seen[CFG_FEAT_NKEYS] = {false, false};
    yaml_mark_t item_mark = w->ev.start_mark;
    size_t old = w->path_len;
    char why[256];
    int rc = -1, kv = 0;

    *name = NULL;
    if (w->ev.type != YAML_MAPPING_START_EVENT)
        return fail_at(w, &w->ev.start_mark, "expected a mapping with name and type, found %s",
                       node_name(w->ev.type));
    for (;;) {
        if (next(w) != 0)
            goto out;
        if (w->ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (w->ev.type != YAML_SCALAR_EVENT) {
            fail_at(w, &w->ev.start_mark, "keys must be scalars");
            goto out;
        }
        yaml_mark_t key_mark = w->ev.start_mark;
        int which = -1;
        for (int i = 0; i < CFG_FEAT_NKEYS; i++) {
            if (!scalar_has_nul(w) && strcmp(scalar_text(w), keys[i]) == 0)
                which = i;
        }
        path_push(w, scalar_text(w), true);
        if (which < 0) {
            fail_at(w, &key_mark, "unknown key");
            goto out;
        }
        if (seen[which]) {
            fail_at(w, &key_mark, "duplicate key");
            goto out;
        }
        seen[which] = true;
        if (next(w) != 0)
            goto out;
        if (w->ev.type != YAML_SCALAR_EVENT) {
            fail_at(w, &w->ev.start_mark, "expected a scalar, found %s", node_name(w->ev.type));
            goto out;
        }
        if (scalar_has_nul(w)) {
            fail_at(w, &w->ev.start_mark, "must not contain NUL bytes");
            goto out;
        }
        const char *text = scalar_is_null(w) ? "" : scalar_text(w);
        if (which == CFG_FEAT_NAME) {
            if (cfg_feature_name_check(text, why, sizeof why) != 0) {
                fail_at(w, &w->ev.start_mark, "%s", why);
                goto out;
            }
            *name = util_strdup(text);
            if (!*name) {
                fail_at(w, &w->ev.start_mark, "out of memory");
                goto out;
            }
            *name_mark = w->ev.start_mark;
        } else {
            if (cfg_enum_parse(cfg_feature_kind_names, text, &kv, why, sizeof why) != 0) {
                fail_at(w, &w->ev.start_mark, "%s", why);
                goto out;
            }
            *kind = (enum event_feature_kind)kv;
        }
        path_pop(w, old);
    }
    for (int i = 0; i < CFG_FEAT_NKEYS; i++) {
        if (!seen[i]) {
            fail_at(w, &item_mark, "missing key '%s'", keys[i]);
            goto out;
        }
    }
    rc = 0;
out:
    if (rc != 0) {
        free(*name);
        *name = NULL;
    }
    return rc;
}

/* features: a non-empty sequence of {name, type} with distinct names. */
static int walk_features(struct walker *w, const struct cfg_key *k)
{
    struct event_feature_spec *fs = NULL;
    size_t n = 0, old = w->path_len;
    yaml_mark_t seq_mark = w->ev.start_mark;
    char *name = NULL;
    char seg[32];
    int rc = -1;

    if (w->ev.type == YAML_SCALAR_EVENT && scalar_is_null(w))
        return fail_at(w, &w->ev.start_mark, "must list at least one feature");
    if (w->ev.type != YAML_SEQUENCE_START_EVENT)
        return fail_at(w, &w->ev.start_mark, "expected a sequence, found %s",
                       node_name(w->ev.type));
    for (;;) {
        enum event_feature_kind kind = EVENT_FEATURE_NUMERIC;
        yaml_mark_t name_mark;
        if (next(w) != 0)
            goto out;
        if (w->ev.type == YAML_SEQUENCE_END_EVENT)
            break;
        if (n == CFG_FEATURES_MAX) {
            fail_at(w, &w->ev.start_mark, "more than %d features", CFG_FEATURES_MAX);
            goto out;
        }
        util_fmt(seg, sizeof seg, "[%zu]", n);
        path_push(w, seg, false);
        if (walk_feature(w, &name, &kind, &name_mark) != 0)
            goto out;
        path_pop(w, old);
        for (size_t i = 0; i < n; i++) {
            if (strcmp(fs[i].name, name) == 0) {
                fail_at(w, &name_mark, "duplicate feature '%s'", name);
                goto out;
            }
        }
        if (cfg_feature_append(&fs, &n, name, kind) != 0) {
            fail_at(w, &name_mark, "out of memory");
            goto out;
        }
        free(name);
        name = NULL;
    }
    if (n == 0) {
        fail_at(w, &seq_mark, "must list at least one feature");
        goto out;
    }
    cfg_list_install(w->cfg, k, fs, n);
    fs = NULL;
    n = 0;
    rc = 0;
out:
    free(name);
    cfg_features_free(fs, n);
    return rc;
}

/* ---- sections -------------------------------------------------------------------- */

/*
 * Where child path w->path sits in the table: *leaf is the row when the
 * path is a key, else NULL; returns the index of the first row at or under
 * the path (the slot for duplicate detection), or -1 when nothing is.
 */
static int lookup(const struct walker *w, const struct cfg_key **leaf)
{
    size_t n;
    const struct cfg_key *keys = cfg_keys(&n);

    *leaf = NULL;
    if (w->path_cut)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(keys[i].path, w->path, w->path_len) != 0)
            continue;
        if (keys[i].path[w->path_len] == '\0') {
            *leaf = &keys[i];
            return (int)i;
        }
        if (keys[i].path[w->path_len] == '.')
            return (int)i;
    }
    return -1;
}

static int walk_value(struct walker *w, const struct cfg_key *k)
{
    switch (k->type) {
    case CFG_TYPE_MAP:
        return walk_map(w, k);
    case CFG_TYPE_FEATURES:
        return walk_features(w, k);
    default:
        return walk_scalar(w, k);
    }
}

/* A mapping of keys from the table (the root or a section such as kafka);
 * the current event is its MAPPING_START. */
static int walk_section(struct walker *w)
{
    bool seen[CFG_KEYS_MAX] = {false};
    size_t old = w->path_len;

    for (;;) {
        const struct cfg_key *leaf = NULL;
        if (next(w) != 0)
            return -1;
        if (w->ev.type == YAML_MAPPING_END_EVENT)
            return 0;
        if (w->ev.type != YAML_SCALAR_EVENT)
            return fail_at(w, &w->ev.start_mark, "keys must be scalars");
        yaml_mark_t key_mark = w->ev.start_mark;
        const char *key = scalar_text(w);
        /* "kafka.brokers: x" at the root is not a shortcut for the nested
         * form: it would let one key be set twice without a duplicate. */
        bool odd = *key == '\0' || strchr(key, '.') || scalar_has_nul(w);
        path_push(w, key, true);
        int slot = odd ? -1 : lookup(w, &leaf);
        if (slot < 0)
            return fail_at(w, &key_mark, "unknown key");
        if (seen[slot])
            return fail_at(w, &key_mark, "duplicate key");
        seen[slot] = true;
        if (next(w) != 0)
            return -1;
        if (leaf) {
            if (walk_value(w, leaf) != 0)
                return -1;
        } else if (w->ev.type == YAML_MAPPING_START_EVENT) {
            if (walk_section(w) != 0)
                return -1;
        } else if (!(w->ev.type == YAML_SCALAR_EVENT && scalar_is_null(w))) {
            /* A null section ("labels:" with everything commented out) is empty. */
            return fail_at(w, &w->ev.start_mark, "expected a mapping, found %s",
                           node_name(w->ev.type));
        }
        path_pop(w, old);
    }
}

static int walk_stream(struct walker *w)
{
    if (next(w) != 0)
        return -1;
    if (w->ev.type != YAML_STREAM_START_EVENT)
        return fail_at(w, &w->ev.start_mark, "expected the start of the stream");
    if (next(w) != 0)
        return -1;
    if (w->ev.type == YAML_STREAM_END_EVENT)
        return 0; /* empty, or only comments: all defaults */
    if (w->ev.type != YAML_DOCUMENT_START_EVENT)
        return fail_at(w, &w->ev.start_mark, "expected a document");
    if (next(w) != 0)
        return -1;
    if (w->ev.type == YAML_MAPPING_START_EVENT) {
        if (walk_section(w) != 0)
            return -1;
    } else if (!(w->ev.type == YAML_SCALAR_EVENT && scalar_is_null(w))) {
        return fail_at(w, &w->ev.start_mark, "the top level must be a mapping, found %s",
                       node_name(w->ev.type));
    }
    if (next(w) != 0)
        return -1;
    if (w->ev.type != YAML_DOCUMENT_END_EVENT)
        return fail_at(w, &w->ev.start_mark, "expected the end of the document");
    if (next(w) != 0)
        return -1;
    if (w->ev.type == YAML_DOCUMENT_START_EVENT)
        return fail_at(w, &w->ev.start_mark, "only one document allowed");
    if (w->ev.type != YAML_STREAM_END_EVENT)
        return fail_at(w, &w->ev.start_mark, "expected the end of the stream");
    return 0;
}

int cfg_yaml_apply(struct cfg *cfg, const char *name, const char *text, size_t len, char *err,
                   size_t errlen)
{
    struct walker w;
    int rc = -1;

    memset(&w, 0, sizeof w);
    w.name = name;
    w.text = text;
    w.len = len;
    w.cfg = cfg;
    w.err = err;
    w.errlen = errlen;
    if (!yaml_parser_initialize(&w.parser)) {
        util_fmt(err, errlen, "%s: out of memory", name);
        return -1;
    }
    yaml_parser_set_input_string(&w.parser, (const unsigned char *)text, len);
    rc = walk_stream(&w);
    if (w.have_ev)
        yaml_event_delete(&w.ev);
    yaml_parser_delete(&w.parser);
    return rc;
}
