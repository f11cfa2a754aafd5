/*
 * event: the wire contract decoder (see event.h and docs/contract.md).
 *
 * Bytes are checked in layers, cheapest and most basic first, so that the
 * reason names the first thing wrong: size, emptiness, BOM, UTF-8, raw NUL,
 * then jansson parses (duplicate keys and \u0000 refused), then the fields
 * of the kind are checked in the order of the contract's tables.  Nothing
 * here does I/O or keeps state between calls; every allocation goes through
 * util_* or jansson, and each failure of either comes back as -2.
 *
 * jansson's hash tables iterate in an order seeded per process, so whenever
 * several keys could be reported (state values, say) the smallest key in
 * byte order is chosen, and the same message always gets the same reason.
 *
 * Callers that need no state tree (limits->no_state_tree) get a fast path
 * first: a message of the usual shape is decoded from one scan of its bytes
 * (event_json_scan_flat) and the field checks below repeated without
 * jansson; anything unusual, and every refusal, is left to the path above,
 * so both give the same event or the same reason (test_event checks it).
 */
#include "event/event.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#define DELTA_MIN_EXCL (-100.0)
#define DELTA_MAX_INCL 1000.0
/* How much of a key a reason quotes before cutting it with "...". */
#define REASON_KEY_MAX 64

static const char *const kind_names[EVENT_KIND_COUNT] = {"action", "state", "feedback"};
static const char *const entity_names[EVENT_ENTITY_COUNT] = {"campaign", "ad_group", "creative",
                                                             "keyword"};
static const char *const action_names[EVENT_ACTION_COUNT] = {
    "bid_change", "budget_change", "creative_pause", "creative_resume", "hold"};
static const char *const verdict_names[EVENT_VERDICT_COUNT] = {"accepted", "rejected", "modified"};
static const char *const class_names[EVENT_CLASS_COUNT] = {
    "hold", "bid_up", "bid_down", "budget_up", "budget_down", "creative_pause", "creative_resume"};

/* Top-level keys each kind knows; anything else goes to extra_json. */
static const char *const action_keys[] = {"event_id",    "ts",        "operator_id", "campaign_id",
                                          "entity_type", "entity_id", "action",      "delta_pct",
                                          "state",       NULL};
/* action and delta_pct are known to a snapshot so that it can refuse them. */
static const char *const state_keys[] = {"event_id",    "ts",        "operator_id", "campaign_id",
                                         "entity_type", "entity_id", "state",       "action",
                                         "delta_pct",   NULL};
static const char *const feedback_keys[] = {
    "event_id", "ts", "operator_id", "recommendation_id", "verdict", "action", "delta_pct", NULL};

struct dec {
    char *reason;
    size_t reasonlen;
};

static int refuse(struct dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes the reason and returns -1, so that callers can `return refuse(...)`. */
static int refuse(struct dec *d, const char *fmt, ...)
{
    if (d->reason && d->reasonlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(d->reason, d->reasonlen, fmt, ap);
        va_end(ap);
        if (n < 0)
            d->reason[0] = '\0';
    }
    return -1;
}

/*
 * Makes the reason one line of valid UTF-8: control bytes become '?', and a
 * multi-byte character cut by the buffer's end is dropped.
 */
static void reason_tidy(char *reason, size_t reasonlen)
{
    if (!reason || reasonlen == 0)
        return;
    size_t n = strlen(reason);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)reason[i];
        if (c < 0x20 || c == 0x7f)
            reason[i] = '?';
    }
    size_t bad = 0;
    while (n > 0 && !util_utf8_valid((const unsigned char *)reason, n, &bad))
        n = bad; /* valid up to bad; what follows is the cut character */
    reason[n] = '\0';
}

/*
 * Copies key into dst for quoting in a reason: at most REASON_KEY_MAX bytes,
 * cut on a character boundary and marked with "...".  Returns dst.
 */
static const char *key_show(const char *key, char *dst, size_t dstlen)
{
    size_t n = strlen(key);
    if (n <= REASON_KEY_MAX) {
        util_fmt(dst, dstlen, "%s", key);
        return dst;
    }
    n = REASON_KEY_MAX;
    while (n > 0 && ((unsigned char)key[n] & 0xC0) == 0x80)
        n--;
    util_fmt(dst, dstlen, "%.*s...", (int)n, key);
    return dst;
}

/* ---- bytes and JSON ------------------------------------------------------ */

static int check_bytes(struct dec *d, const unsigned char *p, size_t len, size_t limit)
{
    size_t bad = 0;

    if (len > limit)
        return refuse(d, "message: %zu bytes exceeds the %zu-byte limit", len, limit);
    if (len == 0)
        return refuse(d, "message: empty");
    if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        return refuse(d, "json: byte order mark not allowed");
    if (!util_utf8_valid(p, len, &bad))
        return refuse(d, "json: invalid UTF-8 at byte %zu", bad);
    /* Never valid JSON, and jansson's reason for it would be misleading. */
    const unsigned char *nul = memchr(p, '\0', len);
    if (nul)
        return refuse(d, "json: NUL byte not allowed at byte %zu", (size_t)(nul - p));
    return 0;
}

/*
 * jansson's duplicate-key error points just past the key's closing quote;
 * quote the key as it is written in the message.  A quote is the key's
 * opening one when an even number of backslashes precedes it.
 */
static int refuse_duplicate(struct dec *d, const char *p, size_t len, const json_error_t *err)
{
    if (err->position > 1 && (size_t)err->position <= len && p[err->position - 1] == '"') {
        size_t close = (size_t)err->position - 1;
        for (size_t i = close; i-- > 0;) {
            if (p[i] != '"')
                continue;
            size_t backslashes = 0;
            while (backslashes < i && p[i - 1 - backslashes] == '\\')
                backslashes++;
            if (backslashes % 2 != 0)
                continue;
            size_t klen = close - i - 1;
            if (klen <= REASON_KEY_MAX)
                return refuse(d, "json: duplicate key \"%.*s\"", (int)klen, p + i + 1);
            size_t cut = REASON_KEY_MAX;
            while (cut > 0 && ((unsigned char)p[i + 1 + cut] & 0xC0) == 0x80)
                cut--;
            return refuse(d, "json: duplicate key \"%.*s...\"", (int)cut, p + i + 1);
        }
    }
    return refuse(d, "json: duplicate key at line %d column %d", err->line, err->column);
}

/* Maps a json_loadb failure to -1 and a reason, or to -2. */
static int json_failure(struct dec *d, const char *p, size_t len, const json_error_t *err)
{
    switch (json_error_code(err)) {
    case json_error_out_of_memory:
        return -2;
    case json_error_duplicate_key:
        return refuse_duplicate(d, p, len, err);
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return refuse(d, "json: \\u0000 not allowed");
    case json_error_numeric_overflow:
        if (strncmp(err->text, "too big", 7) == 0)
            return refuse(d, "json: integer overflow at line %d column %d", err->line, err->column);
        break;
    case json_error_stack_overflow:
        break;
    default:
        /*
         * jansson reports running out of memory mostly as a syntax error.
         * If the text is well-formed, that is what happened.
         */
        if (event_json_wellformed(p, len))
            return -2;
        break;
    }
    if (err->text[0] == '\0')
        return refuse(d, "json: syntax error at line %d column %d", err->line, err->column);
    return refuse(d, "json: %s at line %d column %d", err->text, err->line, err->column);
}

/* ---- fields -------------------------------------------------------------- */

/* The value of key, or NULL when it is absent or JSON null. */
static json_t *field(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/*
 * An id-like string of 1..EVENT_ID_MAX bytes.  Absent or null is "required"
 * when required, else *out stays NULL.
 */
static int get_id(struct dec *d, const json_t *root, const char *key, bool required, char **out)
{
    const json_t *v = field(root, key);
    if (!v)
        return required ? refuse(d, "%s: required", key) : 0;
    if (!json_is_string(v))
        return refuse(d, "%s: must be a string", key);
    size_t n = json_string_length(v);
    if (n < 1 || n > EVENT_ID_MAX)
        return refuse(d, "%s: must be 1..%d bytes", key, EVENT_ID_MAX);
    *out = util_strndup(json_string_value(v), n);
    return *out ? 0 : -2;
}

/* A required string that must be one of names[0..n); allowed is the list. */
static int get_enum(struct dec *d, const json_t *root, const char *key, const char *const *names,
                    size_t n, const char *allowed, int *out)
{
    const json_t *v = field(root, key);
    if (!v)
        return refuse(d, "%s: required", key);
    if (!json_is_string(v))
        return refuse(d, "%s: must be a string", key);
    const char *s = json_string_value(v);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    return refuse(d, "%s: must be one of %s", key, allowed);
}

static int get_ts(struct dec *d, const json_t *root, struct event *ev)
{
    const json_t *v = field(root, "ts");
    if (!v)
        return refuse(d, "ts: required");
    if (!json_is_string(v))
        return refuse(d, "ts: must be a string");
    if (event_parse_rfc3339(json_string_value(v), &ev->ts_us) != 0)
        return refuse(d, "ts: not RFC 3339");
    ev->ts_text = util_strdup(json_string_value(v));
    return ev->ts_text ? 0 : -2;
}

/*
 * delta_pct for an action already decoded into ev->action: required, non-zero
 * and within (-100, 1000] for bid/budget changes; absent or null otherwise.
 */
static int get_delta(struct dec *d, const json_t *root, struct event *ev)
{
    const json_t *v = field(root, "delta_pct");
    const char *action = action_names[ev->action];

    if (ev->action != EVENT_ACTION_BID_CHANGE && ev->action != EVENT_ACTION_BUDGET_CHANGE) {
        /* A pause/resume/hold with a percentage contradicts itself. */
        return v ? refuse(d, "delta_pct: not allowed for %s", action) : 0;
    }
    if (!v)
        return refuse(d, "delta_pct: required for %s", action);
    if (!json_is_number(v))
        return refuse(d, "delta_pct: must be a number");
    double x = json_number_value(v);
    if (fpclassify(x) == FP_ZERO)
        return refuse(d, "delta_pct: must not be zero");
    if (!(x > DELTA_MIN_EXCL && x <= DELTA_MAX_INCL))
        return refuse(d, "delta_pct: must be within (-100, 1000]");
    ev->has_delta = true;
    ev->delta_pct = x;
    return 0;
}

/*
 * The state object: flat, values number/string/boolean/null.  Keeps a
 * reference in ev->state (decode_json drops it again for no_state_tree).
 */
static int get_state(struct dec *d, const json_t *root, struct event *ev)
{
    json_t *v = field(root, "state");
    const char *key;
    json_t *val;
    const char *nested = NULL;

    if (!v)
        return refuse(d, "state: required");
    if (!json_is_object(v))
        return refuse(d, "state: must be an object");
    json_object_foreach(v, key, val)
    {
        if ((json_is_object(val) || json_is_array(val)) && (!nested || strcmp(key, nested) < 0))
            nested = key;
    }
    if (nested) {
        char shown[REASON_KEY_MAX + 8];
        return refuse(d, "state.%s: nesting not allowed", key_show(nested, shown, sizeof shown));
    }
    ev->state = json_incref(v);
    return 0;
}

/*
 * Serialising extras.  jansson's own dump prints reals with 17
 * significant digits, so 31.2 would be stored as 31.199999999999999 and
 * PostgreSQL's jsonb (exact numerics) would keep it that way.  This writer
 * prints each real in the fewest digits that read back as the same double,
 * and otherwise matches jansson's compact output with JSON_SORT_KEYS: no
 * spaces, keys in strcmp order, non-ASCII text as raw UTF-8.  It assumes the
 * C numeric locale (the daemon never calls setlocale for LC_NUMERIC).
 */
static int put_string(struct util_buf *b, const char *s, size_t n)
{
    if (util_buf_append(b, "\"", 1))
        return -1;
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        const char *rep = NULL;
        switch (c) {
        case '"':
            rep = "\\\"";
            break;
        case '\\':
            rep = "\\\\";
            break;
        case '\b':
            rep = "\\b";
            break;
        case '\f':
            rep = "\\f";
            break;
        case '\n':
            rep = "\\n";
            break;
        case '\r':
            rep = "\\r";
            break;
        case '\t':
            rep = "\\t";
            break;
        default:
            if (c < 0x20) {
                util_fmt(esc, sizeof esc, "\\u%04X", c);
                rep = esc;
            }
            break;
        }
        if (!rep)
            continue;
        if (util_buf_append(b, s + run, i - run) || util_buf_puts(b, rep))
            return -1;
        run = i + 1;
    }
    if (util_buf_append(b, s + run, n - run) || util_buf_append(b, "\"", 1))
        return -1;
    return 0;
}

static int put_real(struct util_buf *b, double x)
{
    char text[40];
    /* %g drops trailing zeros, so 15 digits print 31.2 as "31.2". */
    for (int prec = 15; prec <= 17; prec++) {
        util_fmt(text, sizeof text, "%.*g", prec, x);
        double back = strtod(text, NULL);
        if (!(back < x) && !(back > x)) /* equal, without -Wfloat-equal's == */
            break;
    }
    /* Keep it a real on the way back in: 25 would read as an integer. */
    if (!strpbrk(text, ".eE"))
        return util_buf_printf(b, "%s.0", text);
    return util_buf_puts(b, text);
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Appends v; -1 on allocation failure.  Depth is bounded by jansson's parser. */
static int put_value(struct util_buf *b, json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        const char *key;
        json_t *val;
        int rc = 0;
        if (n == 0)
            return util_buf_puts(b, "{}");
        const char **keys = util_malloc(n * sizeof *keys);
        if (!keys)
            return -1;
        json_object_foreach(v, key, val)
        {
            keys[i++] = key;
        }
        qsort(keys, n, sizeof *keys, cmp_keys);
        for (i = 0; i < n && rc == 0; i++) {
            rc = util_buf_append(b, i == 0 ? "{" : ",", 1);
            if (rc == 0)
                rc = put_string(b, keys[i], strlen(keys[i]));
            if (rc == 0)
                rc = util_buf_append(b, ":", 1);
            if (rc == 0)
                rc = put_value(b, json_object_get(v, keys[i]));
        }
        free(keys);
        return rc ? rc : util_buf_append(b, "}", 1);
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (util_buf_append(b, "[", 1))
            return -1;
        for (size_t i = 0; i < n; i++) {
            if ((i > 0 && util_buf_append(b, ",", 1)) || put_value(b, json_array_get(v, i)))
                return -1;
        }
        return util_buf_append(b, "]", 1);
    }
    case JSON_STRING:
        return put_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return util_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        return put_real(b, json_real_value(v));
    case JSON_TRUE:
        return util_buf_puts(b, "true");
    case JSON_FALSE:
        return util_buf_puts(b, "false");
    default:
        return util_buf_puts(b, "null");
    }
}

/* The compact, key-sorted text of j in a util_malloc'ed string. */
static int dump_sorted(json_t *j, char **out)
{
    struct util_buf b;
    util_buf_init(&b);
    if (put_value(&b, j) != 0) {
        util_buf_deinit(&b);
        return -2;
    }
    *out = util_buf_steal(&b);
    return 0;
}

static bool key_known(const char *key, const char *const *known)
{
    for (; *known; known++)
        if (strcmp(key, *known) == 0)
            return true;
    return false;
}

/* Collects the keys of root not in known into ev->extra_json (NULL if none). */
static int get_extra(json_t *root, const char *const *known, struct event *ev)
{
    const char *key;
    json_t *val;
    json_t *extra = NULL;
    int rc = 0;

    json_object_foreach(root, key, val)
    {
        if (key_known(key, known))
            continue;
        if (!extra && !(extra = json_object())) {
            rc = -2;
            goto out;
        }
        if (json_object_set(extra, key, val) != 0) {
            rc = -2;
            goto out;
        }
    }
    if (extra)
        rc = dump_sorted(extra, &ev->extra_json);
out:
    json_decref(extra);
    return rc;
}

/* Each step returns 0, -1 (reason written) or -2; the first non-zero wins. */
#define STEP(call)                                                                                 \
    do {                                                                                           \
        int step_rc_ = (call);                                                                     \
        if (step_rc_ != 0)                                                                         \
            return step_rc_;                                                                       \
    } while (0)

#define ENTITY_LIST "campaign, ad_group, creative, keyword"
#define ACTION_LIST "bid_change, budget_change, creative_pause, creative_resume"

/* Fields shared by action events and state snapshots, after operator_id. */
static int get_entity(struct dec *d, const json_t *root, struct event *ev)
{
    int e = 0;
    STEP(get_id(d, root, "campaign_id", true, &ev->campaign_id));
    STEP(get_enum(d, root, "entity_type", entity_names, EVENT_ENTITY_COUNT, ENTITY_LIST, &e));
    ev->entity_type = (enum event_entity)e;
    STEP(get_id(d, root, "entity_id", true, &ev->entity_id));
    return 0;
}

static int decode_action(struct dec *d, const json_t *root, struct event *ev)
{
    int a = 0;
    STEP(get_id(d, root, "event_id", true, &ev->event_id));
    STEP(get_ts(d, root, ev));
    STEP(get_id(d, root, "operator_id", true, &ev->operator_id));
    STEP(get_entity(d, root, ev));
    /* hold is a feedback-only action: the list stops before it. */
    STEP(get_enum(d, root, "action", action_names, EVENT_ACTION_HOLD, ACTION_LIST, &a));
    ev->has_action = true;
    ev->action = (enum event_action)a;
    STEP(get_delta(d, root, ev));
    STEP(get_state(d, root, ev));
    return 0;
}

static int decode_state(struct dec *d, const json_t *root, struct event *ev)
{
    STEP(get_id(d, root, "event_id", true, &ev->event_id));
    STEP(get_ts(d, root, ev));
    STEP(get_id(d, root, "operator_id", false, &ev->operator_id));
    STEP(get_entity(d, root, ev));
    if (field(root, "action"))
        return refuse(d, "action: not allowed in a state snapshot");
    if (field(root, "delta_pct"))
        return refuse(d, "delta_pct: not allowed in a state snapshot");
    STEP(get_state(d, root, ev));
    return 0;
}

static int decode_feedback(struct dec *d, const json_t *root, struct event *ev)
{
    int verdict = 0;
    STEP(get_id(d, root, "event_id", true, &ev->event_id));
    STEP(get_ts(d, root, ev));
    STEP(get_id(d, root, "operator_id", true, &ev->operator_id));

    const json_t *rid = field(root, "recommendation_id");
    if (!rid)
        return refuse(d, "recommendation_id: required");
    if (!json_is_integer(rid) || json_integer_value(rid) <= 0)
        return refuse(d, "recommendation_id: must be a positive integer");
    ev->recommendation_id = (int64_t)json_integer_value(rid);

    STEP(get_enum(d, root, "verdict", verdict_names, EVENT_VERDICT_COUNT,
                  "accepted, rejected, modified", &verdict));
    ev->verdict = (enum event_verdict)verdict;

    if (ev->verdict != EVENT_VERDICT_MODIFIED) {
        if (field(root, "action"))
            return refuse(d, "action: only allowed when verdict is modified");
        if (field(root, "delta_pct"))
            return refuse(d, "delta_pct: only allowed when verdict is modified");
        return 0;
    }
    int a = 0;
    if (!field(root, "action"))
        return refuse(d, "action: required when verdict is modified");
    STEP(get_enum(d, root, "action", action_names, EVENT_ACTION_COUNT, ACTION_LIST ", hold", &a));
    ev->has_action = true;
    ev->action = (enum event_action)a;
    STEP(get_delta(d, root, ev));
    return 0;
}

/*
 * state_json: the state object's text exactly as sent.  jansson accepted the
 * message, so the member is there; were it not found, the sorted text is
 * the next best thing.
 */
static int keep_state_text(const char *p, size_t len, struct event *ev)
{
    size_t off = 0, n = 0;
    if (event_json_member_raw(p, len, "state", &off, &n) != 0)
        return dump_sorted(ev->state, &ev->state_json);
    ev->state_json = util_strndup(p + off, n);
    return ev->state_json ? 0 : -2;
}

static int decode_json(struct dec *d, enum event_kind kind, const char *p, size_t len,
                       bool keep_tree, struct event *ev)
{
    json_error_t err;
    const char *const *known = NULL;
    int rc;

    /*
     * When jansson fails before it starts (out of memory), it sets neither
     * the text nor the code byte; zeroed, the code reads "unknown".
     */
    memset(&err, 0, sizeof err);
    json_t *root = json_loadb(p, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    if (!root)
        return json_failure(d, p, len, &err);
    if (!json_is_object(root)) {
        rc = refuse(d, "json: top level must be an object");
        goto out;
    }
    switch (kind) {
    case EVENT_KIND_ACTION:
        rc = decode_action(d, root, ev);
        known = action_keys;
        break;
    case EVENT_KIND_STATE:
        rc = decode_state(d, root, ev);
        known = state_keys;
        break;
    default:
        rc = decode_feedback(d, root, ev);
        known = feedback_keys;
        break;
    }
    if (rc == 0 && ev->state)
        rc = keep_state_text(p, len, ev);
    if (rc == 0)
        rc = get_extra(root, known, ev);
    if (!keep_tree) {
        json_decref(ev->state);
        ev->state = NULL;
    }
out:
    json_decref(root);
    return rc;
}

/* ---- the fast path ----------------------------------------------------------- */

/*
 * Messages of the usual shape are decoded from event_json_scan_flat's view
 * of the top level, without jansson.  Each check below is the one of the
 * slow path's get_* for the same field, written as "give up" rather than
 * "refuse": any doubt returns FAST_NO and the message is decoded again from
 * scratch by jansson, which then accepts it or gives the reason.  So this
 * path decides nothing the slow one would decide differently; it only
 * accepts faster.  It never fills extra_json: an unknown key means FAST_NO.
 */
#define FAST_NO          1
#define FAST_MEMBERS_MAX 16

enum fast_key {
    FK_EVENT_ID = 0,
    FK_TS,
    FK_OPERATOR_ID,
    FK_CAMPAIGN_ID,
    FK_ENTITY_TYPE,
    FK_ENTITY_ID,
    FK_ACTION,
    FK_DELTA_PCT,
    FK_STATE,
    FK_RECOMMENDATION_ID,
    FK_VERDICT,
    FK_COUNT,
};

static const char *const fast_key_names[FK_COUNT] = {
    "event_id", "ts",        "operator_id", "campaign_id",       "entity_type", "entity_id",
    "action",   "delta_pct", "state",       "recommendation_id", "verdict"};

#define FK_BIT(k) (1u << (k))
/* The keys of each kind, as in action_keys, state_keys and feedback_keys. */
static const unsigned fast_known[EVENT_KIND_COUNT] = {
    [EVENT_KIND_ACTION] = FK_BIT(FK_EVENT_ID) | FK_BIT(FK_TS) | FK_BIT(FK_OPERATOR_ID) |
                          FK_BIT(FK_CAMPAIGN_ID) | FK_BIT(FK_ENTITY_TYPE) | FK_BIT(FK_ENTITY_ID) |
                          FK_BIT(FK_ACTION) | FK_BIT(FK_DELTA_PCT) | FK_BIT(FK_STATE),
    [EVENT_KIND_STATE] = FK_BIT(FK_EVENT_ID) | FK_BIT(FK_TS) | FK_BIT(FK_OPERATOR_ID) |
                         FK_BIT(FK_CAMPAIGN_ID) | FK_BIT(FK_ENTITY_TYPE) | FK_BIT(FK_ENTITY_ID) |
                         FK_BIT(FK_ACTION) | FK_BIT(FK_DELTA_PCT) | FK_BIT(FK_STATE),
    [EVENT_KIND_FEEDBACK] = FK_BIT(FK_EVENT_ID) | FK_BIT(FK_TS) | FK_BIT(FK_OPERATOR_ID) |
                            FK_BIT(FK_RECOMMENDATION_ID) | FK_BIT(FK_VERDICT) | FK_BIT(FK_ACTION) |
                            FK_BIT(FK_DELTA_PCT),
};

typedef const struct event_json_member *fast_fields[FK_COUNT];

static bool fast_is(const struct event_json_member *m, const char *s)
{
    size_t n = strlen(s);
    return m->vallen == n && memcmp(m->val, s, n) == 0;
}

/* A plain string: the only kind whose bytes are its value. */
static bool fast_plain(const struct event_json_member *m)
{
    return m && m->type == EVENT_JSON_STRING && !m->escaped;
}

/*
 * The strings of a fast decode: validated first, then copied into one
 * allocation (ev->strings) once the whole event is known to be good.
 */
enum fast_str {
    FS_EVENT_ID = 0,
    FS_TS,
    FS_OPERATOR_ID,
    FS_CAMPAIGN_ID,
    FS_ENTITY_ID,
    FS_STATE,
    FS_COUNT
};
typedef const struct event_json_member *fast_strs[FS_COUNT];

/* get_id; m is NULL when the field is absent or null. */
static int fast_id(const struct event_json_member *m, bool required, fast_strs out,
                   enum fast_str slot)
{
    if (!m)
        return required ? FAST_NO : 0;
    if (!fast_plain(m) || m->vallen < 1 || m->vallen > EVENT_ID_MAX)
        return FAST_NO;
    out[slot] = m;
    return 0;
}

/* get_enum */
static int fast_enum(const struct event_json_member *m, const char *const *names, size_t n,
                     int *out)
{
    if (!fast_plain(m))
        return FAST_NO;
    for (size_t i = 0; i < n; i++) {
        if (fast_is(m, names[i])) {
            *out = (int)i;
            return 0;
        }
    }
    return FAST_NO;
}

/* get_ts.  Anything longer than text[] is not RFC 3339 anyway. */
static int fast_ts(const struct event_json_member *m, struct event *ev, fast_strs out)
{
    char text[64];
    if (!fast_plain(m) || m->vallen >= sizeof text)
        return FAST_NO;
    memcpy(text, m->val, m->vallen);
    text[m->vallen] = '\0';
    if (event_parse_rfc3339(text, &ev->ts_us) != 0)
        return FAST_NO;
    out[FS_TS] = m;
    return 0;
}

/*
 * get_delta.  jansson reads an integer with strtoll and a real with strtod;
 * for the integers let through here (18 digits at most) both give the
 * nearest double, so one strtod serves.
 */
static int fast_delta(const struct event_json_member *m, struct event *ev)
{
    char text[64];
    if (ev->action != EVENT_ACTION_BID_CHANGE && ev->action != EVENT_ACTION_BUDGET_CHANGE)
        return m ? FAST_NO : 0;
    if (!m || m->type != EVENT_JSON_NUMBER || m->vallen >= sizeof text)
        return FAST_NO;
    memcpy(text, m->val, m->vallen);
    text[m->vallen] = '\0';
    double x = strtod(text, NULL);
    if (fpclassify(x) == FP_ZERO || !(x > DELTA_MIN_EXCL && x <= DELTA_MAX_INCL))
        return FAST_NO;
    ev->has_delta = true;
    ev->delta_pct = x;
    return 0;
}

/* get_entity */
static int fast_entity(const fast_fields f, struct event *ev, fast_strs out)
{
    int e = 0;
    STEP(fast_id(f[FK_CAMPAIGN_ID], true, out, FS_CAMPAIGN_ID));
    STEP(fast_enum(f[FK_ENTITY_TYPE], entity_names, EVENT_ENTITY_COUNT, &e));
    ev->entity_type = (enum event_entity)e;
    STEP(fast_id(f[FK_ENTITY_ID], true, out, FS_ENTITY_ID));
    return 0;
}

/* get_state: event_json_scan_flat already checked that it is flat. */
static int fast_state(const struct event_json_member *m, fast_strs out)
{
    if (!m || m->type != EVENT_JSON_OBJECT)
        return FAST_NO;
    out[FS_STATE] = m;
    return 0;
}

/* Checks the fields of the kind; fills ev's non-string fields and out. */
static int fast_kind(enum event_kind kind, const fast_fields f, struct event *ev, fast_strs out)
{
    int a = 0;
    STEP(fast_id(f[FK_EVENT_ID], true, out, FS_EVENT_ID));
    STEP(fast_ts(f[FK_TS], ev, out));
    STEP(fast_id(f[FK_OPERATOR_ID], kind != EVENT_KIND_STATE, out, FS_OPERATOR_ID));
    switch (kind) {
    case EVENT_KIND_ACTION:
        STEP(fast_entity(f, ev, out));
        STEP(fast_enum(f[FK_ACTION], action_names, EVENT_ACTION_HOLD, &a));
        ev->has_action = true;
        ev->action = (enum event_action)a;
        STEP(fast_delta(f[FK_DELTA_PCT], ev));
        return fast_state(f[FK_STATE], out);
    case EVENT_KIND_STATE:
        STEP(fast_entity(f, ev, out));
        if (f[FK_ACTION] || f[FK_DELTA_PCT])
            return FAST_NO;
        return fast_state(f[FK_STATE], out);
    default:
        break;
    }
    const struct event_json_member *rid = f[FK_RECOMMENDATION_ID];
    if (!rid || rid->type != EVENT_JSON_NUMBER || !rid->integer)
        return FAST_NO;
    char text[32];
    memcpy(text, rid->val, rid->vallen); /* at most 19 bytes: 18 digits and a sign */
    text[rid->vallen] = '\0';
    ev->recommendation_id = strtoll(text, NULL, 10);
    if (ev->recommendation_id <= 0)
        return FAST_NO;
    STEP(fast_enum(f[FK_VERDICT], verdict_names, EVENT_VERDICT_COUNT, &a));
    ev->verdict = (enum event_verdict)a;
    if (ev->verdict != EVENT_VERDICT_MODIFIED)
        return f[FK_ACTION] || f[FK_DELTA_PCT] ? FAST_NO : 0;
    STEP(fast_enum(f[FK_ACTION], action_names, EVENT_ACTION_COUNT, &a));
    ev->has_action = true;
    ev->action = (enum event_action)a;
    return fast_delta(f[FK_DELTA_PCT], ev);
}

/* Copies the strings of a good event into one allocation.  0 or -2. */
static int fast_take_strings(const fast_strs in, struct event *ev)
{
    char **dst[FS_COUNT] = {&ev->event_id,    &ev->ts_text,   &ev->operator_id,
                            &ev->campaign_id, &ev->entity_id, &ev->state_json};
    size_t total = 0;
    for (int i = 0; i < FS_COUNT; i++)
        total += in[i] ? in[i]->vallen + 1 : 0;
    char *block = util_malloc(total ? total : 1);
    if (!block)
        return -2;
    ev->strings = block;
    for (int i = 0; i < FS_COUNT; i++) {
        if (!in[i])
            continue;
        memcpy(block, in[i]->val, in[i]->vallen);
        block[in[i]->vallen] = '\0';
        *dst[i] = block;
        block += in[i]->vallen + 1;
    }
    return 0;
}

/* Returns 0 (decoded), FAST_NO (take the slow path) or -2. */
static int decode_fast(enum event_kind kind, const char *p, size_t len, struct event *ev)
{
    struct event_json_member m[FAST_MEMBERS_MAX];
    fast_fields f = {NULL};
    int n = event_json_scan_flat(p, len, m, FAST_MEMBERS_MAX);

    if (n < 0)
        return FAST_NO;
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (k < FK_COUNT && !(m[i].keylen == strlen(fast_key_names[k]) &&
                                 memcmp(m[i].key, fast_key_names[k], m[i].keylen) == 0))
            k++;
        if (k == FK_COUNT || !(fast_known[kind] & FK_BIT(k)))
            return FAST_NO; /* an extra key: the slow path collects extra_json */
        if (m[i].type != EVENT_JSON_NULL)
            f[k] = &m[i]; /* null counts as absent, as in field() */
    }
    fast_strs strs = {NULL};
    int rc = fast_kind(kind, f, ev, strs);
    return rc == 0 ? fast_take_strings(strs, ev) : rc;
}

int event_decode(enum event_kind kind, const void *buf, size_t len,
                 const struct event_limits *limits, struct event *out, char *reason,
                 size_t reasonlen)
{
    struct dec d = {.reason = reason, .reasonlen = reasonlen};
    struct event ev;
    size_t limit = limits && limits->max_bytes ? limits->max_bytes : EVENT_DEFAULT_LIMIT;
    int rc;

    memset(&ev, 0, sizeof ev);
    if (reason && reasonlen > 0)
        reason[0] = '\0';
    if (!out)
        return refuse(&d, "event: no output given");
    memset(out, 0, sizeof *out);
    if (!buf)
        len = 0;

    if ((unsigned)kind >= EVENT_KIND_COUNT) {
        rc = refuse(&d, "kind: unknown event kind");
        goto out;
    }
    ev.kind = kind;
    bool keep_tree = !(limits && limits->no_state_tree);
    if (!keep_tree && !limits->no_fast_path && buf && len <= limit) {
        rc = decode_fast(kind, buf, len, &ev);
        if (rc != FAST_NO)
            goto out;
        event_deinit(&ev);
        ev.kind = kind;
    }
    rc = check_bytes(&d, buf, len, limit);
    if (rc == 0)
        rc = decode_json(&d, kind, buf, len, keep_tree, &ev);
out:
    if (rc == 0) {
        *out = ev;
        return 0;
    }
    event_deinit(&ev);
    if (rc == -2)
        util_fmt(reason, reasonlen, "out of memory");
    reason_tidy(reason, reasonlen);
    return rc;
}

void event_deinit(struct event *ev)
{
    if (!ev)
        return;
    if (ev->strings) {
        free(ev->strings);
    } else {
        free(ev->event_id);
        free(ev->ts_text);
        free(ev->operator_id);
        free(ev->campaign_id);
        free(ev->entity_id);
        free(ev->state_json);
    }
    json_decref(ev->state);
    free(ev->extra_json);
    memset(ev, 0, sizeof *ev);
}

/* ---- classes and names --------------------------------------------------- */

int event_class_of(const struct event *ev, enum event_class *out)
{
    if (!ev || !out || !ev->has_action)
        return -1;
    if (ev->kind == EVENT_KIND_FEEDBACK && ev->verdict != EVENT_VERDICT_MODIFIED)
        return -1;
    if (ev->kind == EVENT_KIND_STATE)
        return -1;
    switch (ev->action) {
    case EVENT_ACTION_BID_CHANGE:
    case EVENT_ACTION_BUDGET_CHANGE: {
        bool bid = ev->action == EVENT_ACTION_BID_CHANGE;
        if (!ev->has_delta || fpclassify(ev->delta_pct) == FP_ZERO || isnan(ev->delta_pct))
            return -1;
        if (ev->delta_pct > 0)
            *out = bid ? EVENT_CLASS_BID_UP : EVENT_CLASS_BUDGET_UP;
        else
            *out = bid ? EVENT_CLASS_BID_DOWN : EVENT_CLASS_BUDGET_DOWN;
        return 0;
    }
    case EVENT_ACTION_CREATIVE_PAUSE:
        *out = EVENT_CLASS_CREATIVE_PAUSE;
        return 0;
    case EVENT_ACTION_CREATIVE_RESUME:
        *out = EVENT_CLASS_CREATIVE_RESUME;
        return 0;
    case EVENT_ACTION_HOLD:
        if (ev->kind != EVENT_KIND_FEEDBACK)
            return -1;
        *out = EVENT_CLASS_HOLD;
        return 0;
    default:
        return -1;
    }
}

#define NAME_OF(table, v) ((unsigned)(v) < sizeof(table) / sizeof((table)[0]) ? (table)[v] : NULL)

const char *event_kind_name(enum event_kind k)
{
    return NAME_OF(kind_names, k);
}

const char *event_entity_name(enum event_entity e)
{
    return NAME_OF(entity_names, e);
}

const char *event_action_name(enum event_action a)
{
    return NAME_OF(action_names, a);
}

const char *event_verdict_name(enum event_verdict v)
{
    return NAME_OF(verdict_names, v);
}

const char *event_class_name(enum event_class c)
{
    return NAME_OF(class_names, c);
}

int event_class_parse(const char *s, enum event_class *out)
{
    if (!s || !out)
        return -1;
    for (size_t i = 0; i < EVENT_CLASS_COUNT; i++) {
        if (strcmp(s, class_names[i]) == 0) {
            *out = (enum event_class)i;
            return 0;
        }
    }
    return -1;
}

/* ---- features ------------------------------------------------------------ */

void event_features(const struct event *ev, const struct event_feature_spec *spec, size_t n,
                    struct event_feature_value *out)
{
    for (size_t i = 0; i < n; i++) {
        struct event_feature_value *f = &out[i];
        const json_t *v = NULL;

        f->missing = true;
        f->num = 0.0;
        f->cat = NULL;
        if (ev && ev->state && spec && spec[i].name)
            v = json_object_get(ev->state, spec[i].name);
        if (!v)
            continue;
        if (spec[i].kind == EVENT_FEATURE_NUMERIC) {
            if (json_is_number(v) && isfinite(json_number_value(v))) {
                f->num = json_number_value(v);
                f->missing = false;
            }
        } else if (json_is_string(v)) {
            f->cat = json_string_value(v);
            f->missing = false;
        } else if (json_is_boolean(v)) {
            f->cat = json_is_true(v) ? "true" : "false";
            f->missing = false;
        }
    }
}
