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
 */
#include "event/event.h"

#include <stdint.h>

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
