/*
 * event_json: an allocation-free check that bytes are one well-formed JSON
 * text (RFC 8259 grammar, plus the strictness of jansson's lexer).
 *
 * Why it exists: jansson reports most out-of-memory failures inside
 * json_loadb() as syntax errors ("invalid token", "string or '}' expected",
 * or no text at all), and a decoder that believed them would dead-letter a
 * perfectly good message whenever memory ran short.  event_decode() runs this
 * check only after json_loadb() failed with such a syntax-looking error: if
 * the bytes are well-formed, the failure was jansson running out of memory.
 *
 * It must refuse everything jansson refuses with a syntax error, or a bad
 * message would be retried forever as "out of memory"; the fuzzer in
 * test/fuzz/fuzz_event.c checks exactly that.  It deliberately does not look
 * for what jansson reports with its own error codes (duplicate keys, \u0000,
 * number overflow, nesting depth), since those are never mistaken for
 * out-of-memory.  Input is assumed to be valid UTF-8 (checked before).
 *
 * The second half serves event_decode's fast path.  event_json_scan_flat
 * reads an event of the usual shape (a top-level object of scalars and flat
 * objects) in one pass without allocating, and gives up (-1) on anything
 * else, leaving it to jansson.  Its rule is the opposite of the check
 * above: it may refuse what jansson accepts, but must never accept what
 * jansson refuses, so it does jansson's byte checks itself (it runs before
 * event_decode's own UTF-8 and NUL checks).  event_json_member_raw finds the
 * text of one member in a message jansson has accepted, so that the slow
 * path too can store the state object as it was sent.
 */
#include "event/event.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

/* Containers nest at most this deep here; jansson stops at 2048. */
#define WF_MAX_DEPTH 4096

struct wf {
    const unsigned char *p;
    const unsigned char *end;
    /* One bit per open container: 1 = object, 0 = array. */
    uint8_t stack[WF_MAX_DEPTH / 8];
    size_t depth;
};

static void wf_skip_ws(struct wf *w)
{
    while (w->p < w->end && (*w->p == ' ' || *w->p == '\t' || *w->p == '\n' || *w->p == '\r'))
        w->p++;
}

static int wf_hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* A string starting at the opening quote. */
static int wf_string(struct wf *w)
{
    w->p++;
    while (w->p < w->end) {
        unsigned char c = *w->p;
        if (c == '"') {
            w->p++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            w->p++;
            continue;
        }
        if (w->end - w->p < 2)
            return -1;
        c = w->p[1];
        if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
            c == 't') {
            w->p += 2;
            continue;
        }
        if (c != 'u')
            return -1;
        unsigned u;
        if (wf_hex4(w->p + 2, w->end, &u))
            return -1;
        w->p += 6;
        if (u >= 0xDC00 && u <= 0xDFFF)
            return -1; /* a low surrogate with no high one before it */
        if (u >= 0xD800 && u <= 0xDBFF) {
            unsigned lo;
            if (w->end - w->p < 6 || w->p[0] != '\\' || w->p[1] != 'u' ||
                wf_hex4(w->p + 2, w->end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            w->p += 6;
        }
    }
    return -1;
}

static int wf_digits(struct wf *w)
{
    const unsigned char *start = w->p;
    while (w->p < w->end && *w->p >= '0' && *w->p <= '9')
        w->p++;
    return w->p > start ? 0 : -1;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int wf_number(struct wf *w)
{
    if (*w->p == '-')
        w->p++;
    if (w->p >= w->end)
        return -1;
    if (*w->p == '0') {
        w->p++;
        /* jansson refuses a leading zero followed by a digit. */
        if (w->p < w->end && *w->p >= '0' && *w->p <= '9')
            return -1;
    } else if (wf_digits(w)) {
        return -1;
    }
    if (w->p < w->end && *w->p == '.') {
        w->p++;
        if (wf_digits(w))
            return -1;
    }
    if (w->p < w->end && (*w->p == 'e' || *w->p == 'E')) {
        w->p++;
        if (w->p < w->end && (*w->p == '+' || *w->p == '-'))
            w->p++;
        if (wf_digits(w))
            return -1;
    }
    return 0;
}

static int wf_literal(struct wf *w, const char *lit)
{
    for (; *lit; lit++, w->p++)
        if (w->p >= w->end || *w->p != (unsigned char)*lit)
            return -1;
    return 0;
}

/* A scalar value at w->p (not a container). */
static int wf_scalar(struct wf *w)
{
    switch (*w->p) {
    case '"':
        return wf_string(w);
    case 't':
        return wf_literal(w, "true");
    case 'f':
        return wf_literal(w, "false");
    case 'n':
        return wf_literal(w, "null");
    default:
        if (*w->p == '-' || (*w->p >= '0' && *w->p <= '9'))
            return wf_number(w);
        return -1;
    }
}

static int wf_top_is_object(const struct wf *w)
{
    size_t i = w->depth - 1;
    return (w->stack[i / 8] >> (i % 8)) & 1;
}

static int wf_push(struct wf *w, int is_object)
{
    if (w->depth >= WF_MAX_DEPTH)
        return -1;
    size_t i = w->depth++;
    if (is_object)
        w->stack[i / 8] |= (uint8_t)(1u << (i % 8));
    else
        w->stack[i / 8] &= (uint8_t) ~(1u << (i % 8));
    return 0;
}

/*
 * An iterative walk, so that nesting costs a bit of w->stack and not a C
 * stack frame.  After each value, the innermost open container decides what
 * may come next.
 */
int event_json_wellformed(const void *buf, size_t len)
{
    if (!buf)
        return 0;
    struct wf w = {.p = buf, .end = (const unsigned char *)buf + len, .depth = 0};

    wf_skip_ws(&w);
    for (;;) {
        /* A value is expected at w.p. */
        if (w.p >= w.end)
            return 0;
        if (*w.p == '{' || *w.p == '[') {
            int is_object = *w.p == '{';
            if (wf_push(&w, is_object))
                return 0;
            w.p++;
            wf_skip_ws(&w);
            if (w.p < w.end && *w.p == (is_object ? '}' : ']')) {
                w.p++;
                w.depth--;
                goto after_value;
            }
            if (is_object)
                goto expect_key;
            continue;
        }
        if (wf_scalar(&w))
            return 0;

    after_value:
        wf_skip_ws(&w);
        if (w.depth == 0)
            return w.p == w.end;
        if (w.p >= w.end)
            return 0;
        if (*w.p == ',') {
            w.p++;
            wf_skip_ws(&w);
            if (wf_top_is_object(&w))
                goto expect_key;
            continue;
        }
        if (*w.p != (wf_top_is_object(&w) ? '}' : ']'))
            return 0;
        w.p++;
        w.depth--;
        goto after_value;

    expect_key:
        if (w.p >= w.end || *w.p != '"' || wf_string(&w))
            return 0;
        wf_skip_ws(&w);
        if (w.p >= w.end || *w.p != ':')
            return 0;
        w.p++;
        wf_skip_ws(&w);
    }
}

/* ---- the fast path's scanner --------------------------------------------- */

/* Keys an inner object may have on the fast path, and its hash table size. */
#define FLAT_KEYS_MAX   192
#define FLAT_SLOTS      256
#define NUMBER_TEXT_MAX 64

struct fs {
    const unsigned char *p;
    const unsigned char *end;
};

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static void fs_skip_ws(struct fs *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/*
 * The length of the run at p of bytes that need no attention inside a
 * string: ASCII, not a control character, not '"' or '\\'.  Eight bytes at a
 * time; a false alarm (the tests below can flag a byte after a real match)
 * only ends the run early.
 */
static size_t plain_run(const unsigned char *p, const unsigned char *end)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    const unsigned char *start = p;
    while (end - p >= 8) {
        uint64_t x, q, b;
        memcpy(&x, p, 8);
        q = x ^ (ones * '"');
        b = x ^ (ones * '\\');
        uint64_t hit = ((q - ones) & ~q) | ((b - ones) & ~b) | (x - ones * 0x20) | x;
        if (hit & highs)
            break;
        p += 8;
    }
    return (size_t)(p - start);
}

/*
 * A string at s->p (its opening quote): *start and *n get the bytes between
 * the quotes, *escaped whether a backslash occurs.  -1 for anything jansson
 * refuses: a raw control byte, a bad escape or surrogate, \u0000, invalid
 * UTF-8, no closing quote.
 */
static int fs_string(struct fs *s, const unsigned char **start, size_t *n, bool *escaped)
{
    const unsigned char *p = s->p + 1, *end = s->end;
    bool esc = false, high = false;

    *start = p;
    for (;;) {
        p += plain_run(p, end);
        if (p >= end)
            return -1;
        unsigned char c = *p;
        if (c == '"')
            break;
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            high |= c >= 0x80;
            p++;
            continue;
        }
        esc = true;
        if (end - p < 2)
            return -1;
        c = p[1];
        if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
            c == 't') {
            p += 2;
            continue;
        }
        unsigned u, lo;
        if (c != 'u' || wf_hex4(p + 2, end, &u) || u == 0 || (u >= 0xDC00 && u <= 0xDFFF))
            return -1;
        p += 6;
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || wf_hex4(p + 2, end, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            p += 6;
        }
    }
    *n = (size_t)(p - *start);
    if (high && !util_utf8_valid(*start, *n, NULL))
        return -1;
    *escaped = esc;
    s->p = p + 1;
    return 0;
}

/*
 * A number at s->p, in jansson's grammar.  Integers of more than 18 digits
 * might overflow jansson's json_int_t and reals might overflow a double:
 * the first are left to jansson, the second checked with strtod when they
 * could (an exponent, or a long text).
 */
static int fs_number(struct fs *s, bool *integer)
{
    const unsigned char *start = s->p, *p = s->p, *end = s->end;
    bool is_int = true, has_exp = false;

    if (*p == '-')
        p++;
    const unsigned char *digits = p;
    if (p >= end)
        return -1;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p))
            return -1;
    } else if (is_digit(*p)) {
        while (p < end && is_digit(*p))
            p++;
    } else {
        return -1;
    }
    size_t int_digits = (size_t)(p - digits);
    if (p < end && *p == '.') {
        is_int = false;
        const unsigned char *q = ++p;
        while (p < end && is_digit(*p))
            p++;
        if (p == q)
            return -1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = false;
        has_exp = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const unsigned char *q = p;
        while (p < end && is_digit(*p))
            p++;
        if (p == q)
            return -1;
    }
    size_t len = (size_t)(p - start);
    if (is_int && int_digits > 18)
        return -1;
    if (!is_int && (has_exp || len > 300)) {
        char text[NUMBER_TEXT_MAX];
        if (len >= sizeof text)
            return -1;
        memcpy(text, start, len);
        text[len] = '\0';
        if (isinf(strtod(text, NULL)))
            return -1;
    }
    *integer = is_int;
    s->p = p;
    return 0;
}

static int fs_literal(struct fs *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

/* A scalar value at s->p; its type into *type. */
static int fs_scalar(struct fs *s, struct event_json_member *m)
{
    const unsigned char *start = s->p;
    int rc;

    m->escaped = false;
    m->integer = false;
    switch (*s->p) {
    case '"': {
        const unsigned char *v;
        m->type = EVENT_JSON_STRING;
        rc = fs_string(s, &v, &m->vallen, &m->escaped);
        m->val = (const char *)v;
        return rc;
    }
    case 't':
        m->type = EVENT_JSON_TRUE;
        rc = fs_literal(s, "true", 4);
        break;
    case 'f':
        m->type = EVENT_JSON_FALSE;
        rc = fs_literal(s, "false", 5);
        break;
    case 'n':
        m->type = EVENT_JSON_NULL;
        rc = fs_literal(s, "null", 4);
        break;
    default:
        m->type = EVENT_JSON_NUMBER;
        rc = *s->p == '-' || is_digit(*s->p) ? fs_number(s, &m->integer) : -1;
        break;
    }
    m->val = (const char *)start;
    m->vallen = (size_t)(s->p - start);
    return rc;
}

/*
 * For the duplicate-key table: the length and three bytes, mixed.  Keys of
 * one object usually differ there; when they do not, a collision costs one
 * memcmp more, and an object has at most FLAT_KEYS_MAX keys.
 */
static uint32_t key_hash(const unsigned char *p, size_t n)
{
    uint32_t h = (uint32_t)n * 0x9E3779B1u;
    if (n > 0)
        h ^= p[0] * 0x85EBCA77u ^ p[n / 2] * 0x27D4EB2Fu ^ p[n - 1] * 0xC2B2AE3Du;
    return h ^ (h >> 15) ^ (h >> 24);
}

/* After a value: ',' (then *more = 1) or the object's '}'. */
static int fs_after_value(struct fs *s, int *more)
{
    fs_skip_ws(s);
    if (s->p >= s->end)
        return -1;
    if (*s->p == ',') {
        s->p++;
        fs_skip_ws(s);
        *more = 1;
        return 0;
    }
    if (*s->p != '}')
        return -1;
    s->p++;
    *more = 0;
    return 0;
}

/* A key at s->p, then the colon: unescaped, or -1. */
static int fs_key(struct fs *s, const unsigned char **k, size_t *kn)
{
    bool esc = false;
    if (s->p >= s->end || *s->p != '"' || fs_string(s, k, kn, &esc) != 0 || esc)
        return -1;
    fs_skip_ws(s);
    if (s->p >= s->end || *s->p != ':')
        return -1;
    s->p++;
    fs_skip_ws(s);
    return s->p < s->end ? 0 : -1;
}

/* An object of scalars at s->p (its '{'), keys distinct. */
static int fs_flat_object(struct fs *s)
{
    struct {
        const unsigned char *p;
        size_t n;
    } keys[FLAT_KEYS_MAX];
    uint8_t slot[FLAT_SLOTS]; /* index + 1 into keys, 0 = free */
    size_t nkeys = 0;
    int more = 1;

    s->p++;
    fs_skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    memset(slot, 0, sizeof slot);
    while (more) {
        const unsigned char *k;
        size_t kn;
        struct event_json_member v;
        if (fs_key(s, &k, &kn) != 0 || nkeys == FLAT_KEYS_MAX)
            return -1;
        size_t i = key_hash(k, kn) & (FLAT_SLOTS - 1);
        for (; slot[i]; i = (i + 1) & (FLAT_SLOTS - 1)) {
            size_t o = slot[i] - 1u;
            if (keys[o].n == kn && memcmp(keys[o].p, k, kn) == 0)
                return -1;
        }
        keys[nkeys].p = k;
        keys[nkeys].n = kn;
        slot[i] = (uint8_t)++nkeys;
        if (*s->p == '{' || *s->p == '[' || fs_scalar(s, &v) != 0 || fs_after_value(s, &more))
            return -1;
    }
    return 0;
}

int event_json_scan_flat(const void *buf, size_t len, struct event_json_member *out, size_t max)
{
    if (!buf)
        return -1;
    struct fs s = {.p = buf, .end = (const unsigned char *)buf + len};
    size_t n = 0;
    int more = 1;

    fs_skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return -1;
    s.p++;
    fs_skip_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
        more = 0;
    }
    while (more) {
        const unsigned char *k;
        size_t kn;
        if (n == max || fs_key(&s, &k, &kn) != 0)
            return -1;
        for (size_t i = 0; i < n; i++) {
            if (out[i].keylen == kn && memcmp(out[i].key, k, kn) == 0)
                return -1;
        }
        struct event_json_member *m = &out[n];
        m->key = (const char *)k;
        m->keylen = kn;
        if (*s.p == '{') {
            const unsigned char *start = s.p;
            if (fs_flat_object(&s) != 0)
                return -1;
            m->type = EVENT_JSON_OBJECT;
            m->val = (const char *)start;
            m->vallen = (size_t)(s.p - start);
            m->escaped = false;
            m->integer = false;
        } else if (*s.p == '[' || fs_scalar(&s, m) != 0) {
            return -1;
        }
        n++;
        if (fs_after_value(&s, &more) != 0)
            return -1;
    }
    fs_skip_ws(&s);
    return s.p == s.end ? (int)n : -1;
}

/* ---- a member's text in an accepted message ------------------------------- */

/* Skips a string at s->p (its opening quote); the text is well-formed. */
static int raw_skip_string(struct fs *s)
{
    const unsigned char *p = s->p + 1;
    while (p < s->end && *p != '"')
        p += *p == '\\' ? 2 : 1;
    if (p >= s->end)
        return -1;
    s->p = p + 1;
    return 0;
}

/* Skips one well-formed value at s->p, containers included. */
static int raw_skip_value(struct fs *s)
{
    size_t depth = 0;
    do {
        if (s->p >= s->end)
            return -1;
        unsigned char c = *s->p;
        if (c == '"') {
            if (raw_skip_string(s) != 0)
                return -1;
        } else if (c == '{' || c == '[') {
            depth++;
            s->p++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return -1;
            depth--;
            s->p++;
        } else if (depth == 0) {
            while (s->p < s->end && !strchr(",}] \t\n\r", *s->p))
                s->p++;
        } else {
            s->p++;
        }
    } while (depth > 0);
    return 0;
}

/* Does the raw key text k[0..kn) (escapes allowed) spell want? */
static bool raw_key_is(const unsigned char *k, size_t kn, const char *want)
{
    size_t wn = strlen(want), j = 0;
    for (size_t i = 0; i < kn;) {
        unsigned char ch[4];
        size_t cn = 1;
        if (k[i] != '\\') {
            ch[0] = k[i++];
        } else if (i + 1 < kn && k[i + 1] != 'u') {
            static const char from[] = "bfnrt", to[] = "\b\f\n\r\t";
            const char *e = strchr(from, k[i + 1]);
            ch[0] = e ? (unsigned char)to[e - from] : k[i + 1];
            i += 2;
        } else {
            unsigned u = 0, lo = 0;
            if (wf_hex4(k + i + 2, k + kn, &u) != 0)
                return false;
            i += 6;
            if (u >= 0xD800 && u <= 0xDBFF && i + 6 <= kn && wf_hex4(k + i + 2, k + kn, &lo) == 0) {
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
            if (u < 0x80) {
                ch[0] = (unsigned char)u;
            } else if (u < 0x800) {
                ch[0] = (unsigned char)(0xC0 | (u >> 6));
                ch[1] = (unsigned char)(0x80 | (u & 0x3F));
                cn = 2;
            } else if (u < 0x10000) {
                ch[0] = (unsigned char)(0xE0 | (u >> 12));
                ch[1] = (unsigned char)(0x80 | ((u >> 6) & 0x3F));
                ch[2] = (unsigned char)(0x80 | (u & 0x3F));
                cn = 3;
            } else {
                ch[0] = (unsigned char)(0xF0 | (u >> 18));
                ch[1] = (unsigned char)(0x80 | ((u >> 12) & 0x3F));
                ch[2] = (unsigned char)(0x80 | ((u >> 6) & 0x3F));
                ch[3] = (unsigned char)(0x80 | (u & 0x3F));
                cn = 4;
            }
        }
        if (j + cn > wn || memcmp(want + j, ch, cn) != 0)
            return false;
        j += cn;
    }
    return j == wn;
}

int event_json_member_raw(const void *buf, size_t len, const char *key, size_t *off, size_t *n)
{
    if (!buf)
        return -1;
    struct fs s = {.p = buf, .end = (const unsigned char *)buf + len};
    fs_skip_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return -1;
    s.p++;
    fs_skip_ws(&s);
    while (s.p < s.end && *s.p == '"') {
        const unsigned char *k = s.p + 1;
        if (raw_skip_string(&s) != 0)
            return -1;
        size_t kn = (size_t)(s.p - 1 - k);
        fs_skip_ws(&s);
        if (s.p >= s.end || *s.p != ':')
            return -1;
        s.p++;
        fs_skip_ws(&s);
        const unsigned char *v = s.p;
        if (raw_skip_value(&s) != 0)
            return -1;
        if (raw_key_is(k, kn, key)) {
            *off = (size_t)(v - (const unsigned char *)buf);
            *n = (size_t)(s.p - v);
            return 0;
        }
        fs_skip_ws(&s);
        if (s.p >= s.end || *s.p != ',')
            return -1;
        s.p++;
        fs_skip_ws(&s);
    }
    return -1;
}
