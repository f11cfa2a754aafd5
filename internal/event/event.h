/*
 * event: decodes and validates the wire contract (../shared/spec/CONTRACT.md,
 * summarised in docs/contract.md) from raw message bytes.  Pure functions:
 * no I/O, no global state, so the decoder can be fuzzed on its own.
 *
 * A message either decodes into a struct event or is refused with a
 * one-line reason that names the field ("delta_pct: required for
 * bid_change", "ts: not RFC 3339", "state.cpa: nesting not allowed").
 *
 * Checks run in a fixed order and the first failure is reported: size limit,
 * empty message, byte order mark, UTF-8, raw NUL byte, JSON syntax (jansson,
 * duplicate keys and \u0000 refused), top level an object, then the fields
 * of the kind in the order of the contract's tables.  docs/contract.md lists
 * every reason.  Decisions the contract leaves open:
 *
 *  - A required field that is JSON null counts as absent ("event_id:
 *    required").
 *  - delta_pct is optional for creative_pause/creative_resume (and a
 *    feedback's hold) but only as absent or null: a number there contradicts
 *    the action and is refused ("delta_pct: not allowed for creative_pause").
 *  - A state snapshot carrying a non-null action or delta_pct is refused
 *    ("action: not allowed in a state snapshot"): it is most likely an action
 *    event on the wrong topic, and keeping it would teach the policy a hold.
 *  - Feedback: action and delta_pct belong to verdict "modified" only; with
 *    accepted/rejected a non-null one is refused ("action: only allowed when
 *    verdict is modified") instead of being silently dropped.
 *  - recommendation_id must be a JSON integer > 0; 3.0 is refused.
 *  - Unknown top-level keys are kept in extra_json; fields of another kind
 *    (campaign_id in a feedback, say) are unknown keys there.
 *  - state_json is the state object's text as it came, not re-serialised:
 *    PostgreSQL's jsonb normalises it anyway (key order, white space,
 *    escapes) and keeps numbers exactly as written.
 *  - Timestamps: see event_parse_rfc3339.
 */
#ifndef UNDERSTUDY_EVENT_H
#define UNDERSTUDY_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_t; /* jansson */

#define EVENT_ID_MAX        128     /* bytes, for every id field */
#define EVENT_DEFAULT_LIMIT 1048576 /* default message size limit */
#define EVENT_REASON_MAX    256     /* a reason buffer this large is never cut */

enum event_kind {
    EVENT_KIND_ACTION = 0, /* ops.actions */
    EVENT_KIND_STATE,      /* ops.states */
    EVENT_KIND_FEEDBACK,   /* ops.feedback */
    EVENT_KIND_COUNT,
};

enum event_entity {
    EVENT_ENTITY_CAMPAIGN = 0,
    EVENT_ENTITY_AD_GROUP,
    EVENT_ENTITY_CREATIVE,
    EVENT_ENTITY_KEYWORD,
    EVENT_ENTITY_COUNT,
};

enum event_action {
    EVENT_ACTION_BID_CHANGE = 0,
    EVENT_ACTION_BUDGET_CHANGE,
    EVENT_ACTION_CREATIVE_PAUSE,
    EVENT_ACTION_CREATIVE_RESUME,
    EVENT_ACTION_HOLD, /* only in a feedback event's "modified" action */
    EVENT_ACTION_COUNT,
};

enum event_verdict {
    EVENT_VERDICT_ACCEPTED = 0,
    EVENT_VERDICT_REJECTED,
    EVENT_VERDICT_MODIFIED,
    EVENT_VERDICT_COUNT,
};

/* The seven decision classes of the policy, in this fixed order. */
enum event_class {
    EVENT_CLASS_HOLD = 0,
    EVENT_CLASS_BID_UP,
    EVENT_CLASS_BID_DOWN,
    EVENT_CLASS_BUDGET_UP,
    EVENT_CLASS_BUDGET_DOWN,
    EVENT_CLASS_CREATIVE_PAUSE,
    EVENT_CLASS_CREATIVE_RESUME,
    EVENT_CLASS_COUNT,
};

/*
 * Options of event_decode.  A zeroed struct (or NULL) gives the default
 * limit and the full decode: ev->state holds the state object as a jansson
 * tree, for event_features.
 */
struct event_limits {
    size_t max_bytes; /* messages larger than this are refused; 0 = default */
    /*
     * The caller needs state_json but not the tree (the ingest path stores
     * the text and never looks inside): ev->state stays NULL, so
     * event_features sees every feature missing.  This enables the fast
     * path: a message of the usual shape (known top-level keys, unescaped
     * keys and field strings, a flat state object, numbers jansson reads
     * without overflow) is decoded in one scan without building any tree.
     * Anything else, refusals included, goes through jansson as before, so
     * the verdict and the reason are the same either way.
     */
    bool no_state_tree;
    /* Never take the fast path (tests compare the two paths with it). */
    bool no_fast_path;
};

/*
 * A decoded event.  Strings are owned by the event and NUL-terminated; fields
 * that do not apply to the kind are NULL / false / 0.
 */
struct event {
    enum event_kind kind;
    char *event_id;
    int64_t ts_us;                 /* microseconds since the Unix epoch, UTC */
    char *ts_text;                 /* the ts exactly as sent (for storage/audit) */
    char *operator_id;             /* NULL only for a state snapshot without one */
    char *campaign_id;             /* action, state */
    enum event_entity entity_type; /* action, state */
    char *entity_id;               /* action, state */
    bool has_action;               /* action; feedback when verdict is modified */
    enum event_action action;
    bool has_delta; /* delta_pct present and not null */
    double delta_pct;
    struct json_t *state;       /* action, state: the state object (owned ref), or
                                   NULL when decoded with no_state_tree */
    char *state_json;           /* action, state: the text of the state object
                                   exactly as sent (a flat JSON object) */
    char *extra_json;           /* compact object of unknown top-level keys, or NULL */
    int64_t recommendation_id;  /* feedback */
    enum event_verdict verdict; /* feedback */
    /* When not NULL, one allocation holding the string fields above (the
     * fast path's); event_deinit frees it instead of each of them. */
    char *strings;
};

/*
 * Decodes buf[0..len) as an event of the given kind.  On success fills *out
 * (caller calls event_deinit) and returns 0.  On a contract violation returns
 * -1, leaves *out zeroed and writes a one-line reason naming the field into
 * reason (always terminated).  Returns -2 on allocation failure (the message
 * is fine; the caller should retry, not dead-letter it).
 *
 * buf is borrowed and need not be NUL-terminated; limits may be NULL (the
 * default limit); reason may be NULL or short (the text is cut on a UTF-8
 * character boundary; EVENT_REASON_MAX bytes always suffice).  A reason is
 * valid UTF-8 without control characters.  An unknown kind is refused with
 * -1.  On -2 the reason reads "out of memory".
 */
int event_decode(enum event_kind kind, const void *buf, size_t len,
                 const struct event_limits *limits, struct event *out, char *reason,
                 size_t reasonlen) __attribute__((warn_unused_result));

/* Frees what the event owns and zeroes it.  Safe on a zeroed event. */
void event_deinit(struct event *ev);

/*
 * The decision class of an action event (or a modified feedback): bid_change
 * with delta > 0 is bid_up, etc.; a modified feedback's hold is hold.  Returns
 * 0, or -1 when the event carries no classifiable action: a state snapshot
 * (whether it is a hold example depends on the labelling window, not on the
 * event), an accepted/rejected feedback, or an event not from event_decode.
 */
int event_class_of(const struct event *ev, enum event_class *out);

/*
 * Names as they appear on the wire and in the database ("bid_up", "ad_group").
 * A value out of range gives NULL.
 */
const char *event_kind_name(enum event_kind k);
const char *event_entity_name(enum event_entity e);
const char *event_action_name(enum event_action a);
const char *event_verdict_name(enum event_verdict v);
const char *event_class_name(enum event_class c);
/* Reverse of event_class_name; -1 when unknown. */
int event_class_parse(const char *s, enum event_class *out);

/*
 * Parses an RFC 3339 timestamp ("2026-11-02T14:05:11Z", fractions and
 * +hh:mm/-hh:mm offsets accepted) into microseconds since the epoch, UTC.
 * Returns 0 or -1.
 *
 * Strict form: YYYY-MM-DD, 'T' or 't' (a space is refused), hh:mm:ss, an
 * optional fraction of 1..9 digits (truncated to microseconds), then 'Z',
 * 'z' or +hh:mm/-hh:mm.  Years 0001..9999, days checked against the month
 * (leap years included), hour < 24, minute < 60, offset hour < 24.  A leap
 * second (ss = 60) is accepted and clamped to ss = 59.999999.
 */
int event_parse_rfc3339(const char *s, int64_t *out_us);

/*
 * Returns 1 when buf[0..len) is one well-formed JSON text (any value), else
 * 0.  Allocates nothing.  event_decode uses it to tell jansson's
 * out-of-memory failures, which jansson reports as syntax errors, from real
 * syntax errors; it ignores what jansson reports with codes of its own
 * (duplicate keys, \u0000, number overflow, nesting depth).  Expects valid
 * UTF-8.
 */
int event_json_wellformed(const void *buf, size_t len);

/* ---- scanning without a tree (event_json.c, for event_decode) ----------- */

enum event_json_type {
    EVENT_JSON_STRING = 0,
    EVENT_JSON_NUMBER,
    EVENT_JSON_TRUE,
    EVENT_JSON_FALSE,
    EVENT_JSON_NULL,
    EVENT_JSON_OBJECT, /* a flat object: see event_json_scan_flat */
};

/* One member of a top-level object; pointers into the scanned buffer. */
struct event_json_member {
    const char *key; /* the key's bytes (never escaped), not terminated */
    const char *val; /* string: the bytes between the quotes; number: the
                        token; object: its whole text from '{' to '}' */
    size_t keylen;
    size_t vallen;
    enum event_json_type type;
    bool escaped; /* a string holding backslash escapes (val is raw) */
    bool integer; /* a number without fraction or exponent, at most 18 digits */
};

/*
 * Scans buf[0..len) as one JSON object of a simple shape and writes its
 * members, in order, to out[0..max).  Returns the number of members, or -1
 * when the text is not of that shape.  The shape: no key holds an escape or
 * repeats; values are strings, numbers, true, false, null or objects whose
 * values are all of the first five kinds; more than max members, or more
 * than 192 in an inner object, also give -1.  Whatever it accepts, jansson
 * (JSON_REJECT_DUPLICATES, no JSON_ALLOW_NUL) accepts too: bytes are
 * checked as jansson checks them (UTF-8 inside strings and nothing but
 * ASCII outside, no control characters, valid escapes and surrogate pairs,
 * no \u0000, no integer beyond 18 digits, no real that overflows).  It never
 * reports why: -1 only means "take the slow path".  Allocates nothing.
 */
int event_json_scan_flat(const void *buf, size_t len, struct event_json_member *out, size_t max);

/*
 * In buf[0..len), one JSON object jansson accepted, finds the top-level
 * member whose key (unescaped) is key, and returns 0 with the offset and
 * length of its value's text, or -1 when there is none.
 */
int event_json_member_raw(const void *buf, size_t len, const char *key, size_t *off, size_t *n);

/* ---- features ---------------------------------------------------------- */

enum event_feature_kind {
    EVENT_FEATURE_NUMERIC = 0,
    EVENT_FEATURE_CATEGORICAL,
};

struct event_feature_spec {
    char *name; /* a key of state */
    enum event_feature_kind kind;
};

struct event_feature_value {
    bool missing;    /* absent, null, or of the wrong kind */
    double num;      /* numeric features */
    const char *cat; /* categorical: borrowed from the event's state */
};

/*
 * Extracts the declared features from ev->state into out[0..n).  A feature
 * that is absent, null or of the wrong kind is missing (not an error).
 * Numbers are numeric; strings and booleans ("true"/"false") are categorical
 * levels.  Borrowed pointers live as long as the event.
 *
 * Wrong kind, precisely: a string or boolean for a numeric feature, and a
 * number for a categorical one (the contract says wrong kind is missing; a
 * number is not turned into a level, so 3 and 3.0 cannot become two levels).
 * An event without state (feedback) gives all missing.  This cannot fail.
 */
void event_features(const struct event *ev, const struct event_feature_spec *spec, size_t n,
                    struct event_feature_value *out);

#endif
