/*
 * fuzz_event: libFuzzer target for internal/event (not part of make test).
 *
 * Each input is decoded as all three kinds.  Beyond "no crash, no leak, no
 * undefined behaviour" it checks what the decoder promises:
 *  - a result is 0, -1 or -2; on failure the event is zeroed, and a -1 reason
 *    is non-empty, one line, valid UTF-8;
 *  - on success state_json and extra_json read back (jansson) as the same
 *    values, and ts_text parses to ts_us;
 *  - event_json_wellformed agrees with jansson on every input that jansson
 *    refuses with a syntax error or accepts (else a bad message could be
 *    retried forever as "out of memory");
 *  - with one allocation failing (jansson included), the decode returns -2,
 *    or exactly what it returns with memory to spare; only a message that is
 *    not well-formed JSON may then get a different json: reason.
 *
 * Build and run (clang, from the repository root):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinternal \
 *       test/fuzz/fuzz_event.c internal/event/event.c internal/event/event_json.c \
 *       internal/event/event_time.c internal/util/util.c \
 *       $(pkg-config --cflags --libs jansson) -lm -o /tmp/fuzz_event
 *   mkdir -p /tmp/fuzz-corpus
 *   /tmp/fuzz_event -max_total_time=60 -dict=test/fuzz/event.dict \
 *       /tmp/fuzz-corpus fixtures/events fixtures/bad-events
 *
 * Without libFuzzer (any C compiler), -DFUZZ_EVENT_MAIN adds a main() that
 * runs the target once over each file named on the command line, e.g. to
 * replay a crash or the fixtures.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event/event.h"
#include "util/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_event: check failed at line %d: %s\n", __LINE__, #cond);         \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

/*
 * jansson's allocations go through util_malloc, so that failures can be
 * injected into them, with one exception.  jansson 2.14 keeps the text of
 * the token being scanned in a buffer that doubles from 16 bytes, ignores a
 * failure to grow it, and then trips an assert() (lex_unget_unsave) when it
 * puts back the character after a number or a literal.  Those growths are
 * the allocations of 32, 64, 128... bytes, and only they are never failed:
 * the abort is jansson's, not something the decoder can handle.
 */
static void *json_alloc_via_util(size_t n)
{
    if (n >= 32 && (n & (n - 1)) == 0)
        return malloc(n);
    return util_malloc(n);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Through util_malloc, so util_alloc_fail_after reaches jansson too. */
    json_set_alloc_funcs(json_alloc_via_util, free);
    return 0;
}

static bool event_is_zero(const struct event *ev)
{
    static const struct event zero;
    return memcmp(ev, &zero, sizeof zero) == 0;
}

static void check_reason(const char *reason)
{
    size_t n = strlen(reason);
    CHECK(n > 0);
    CHECK(util_utf8_valid((const unsigned char *)reason, n, NULL));
    for (size_t i = 0; i < n; i++)
        CHECK((unsigned char)reason[i] >= 0x20 && reason[i] != 0x7f);
}

/* The stored text reads back as exactly the decoded values. */
static void check_text_matches(const char *text, const json_t *want)
{
    json_error_t err;
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    CHECK(back != NULL);
    CHECK(json_equal(back, (json_t *)want));
    json_decref(back);
}

static void check_event(const struct event *ev, const json_t *root)
{
    int64_t us = 0;
    enum event_class cls;
    CHECK(ev->event_id && ev->ts_text);
    CHECK(event_parse_rfc3339(ev->ts_text, &us) == 0 && us == ev->ts_us);
    if (ev->state) {
        CHECK(ev->state_json != NULL);
        check_text_matches(ev->state_json, (const json_t *)ev->state);
    }
    if (ev->extra_json) {
        json_error_t err;
        json_t *extra = json_loads(ev->extra_json, JSON_REJECT_DUPLICATES, &err);
        CHECK(extra != NULL && json_object_size(extra) > 0);
        const char *key;
        json_t *val;
        json_object_foreach(extra, key, val)
        {
            CHECK(json_equal(val, json_object_get(root, key)));
        }
        json_decref(extra);
    }
    if (ev->kind == EVENT_KIND_ACTION)
        CHECK(event_class_of(ev, &cls) == 0);
    if (ev->kind == EVENT_KIND_STATE)
        CHECK(event_class_of(ev, &cls) == -1);
}

/* Jansson's verdict against event_json_wellformed, on valid UTF-8 without NUL. */
static void check_wellformed(const uint8_t *data, size_t size)
{
    if (!util_utf8_valid(data, size, NULL) || memchr(data, 0, size))
        return;
    json_error_t err;
    memset(&err, 0, sizeof err);
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, &err);
    int ours = event_json_wellformed(data, size);
    if (j) {
        CHECK(ours == 1);
        json_decref(j);
        return;
    }
    switch (json_error_code(&err)) {
    case json_error_stack_overflow:
    case json_error_null_character:
    case json_error_null_byte_in_key:
    case json_error_numeric_overflow:
    case json_error_out_of_memory:
        break; /* jansson's own codes: not a syntax matter */
    default:
        CHECK(ours == 0);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_wellformed(data, size);

    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        struct event ev;
        char reason[EVENT_REASON_MAX];
        int rc = event_decode((enum event_kind)k, data, size, NULL, &ev, reason, sizeof reason);
        CHECK(rc == 0 || rc == -1);
        if (rc == 0) {
            json_error_t err;
            json_t *root = json_loadb((const char *)data, size, 0, &err);
            CHECK(root != NULL);
            check_event(&ev, root);
            json_decref(root);
        } else {
            CHECK(event_is_zero(&ev));
            check_reason(reason);
        }
        event_deinit(&ev);

        /* The same decode with one allocation failing. */
        struct event ev2;
        char reason2[EVENT_REASON_MAX];
        util_alloc_fail_after((long)(size % 61));
        int rc2 = event_decode((enum event_kind)k, data, size, NULL, &ev2, reason2, sizeof reason2);
        util_alloc_fail_after(-1);
        if (rc2 == -2) {
            CHECK(event_is_zero(&ev2));
            CHECK(strcmp(reason2, "out of memory") == 0);
        } else {
            CHECK(rc2 == rc);
            if (rc2 == -1 && strcmp(reason2, reason) != 0)
                CHECK(strncmp(reason, "json: ", 6) == 0 && !event_json_wellformed(data, size));
        }
        event_deinit(&ev2);
    }
    return 0;
}

#ifdef FUZZ_EVENT_MAIN
int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        size_t cap = 1 << 16, n = 0, got;
        uint8_t *buf = malloc(cap);
        while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
            n += got;
            if (n == cap)
                buf = realloc(buf, cap *= 2);
        }
        fclose(f);
        if (!buf)
            return 1;
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
    }
    return 0;
}
#endif
