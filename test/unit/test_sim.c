/*
 * Unit tests for internal/sim: `understudy simulate`.
 *
 * One 20000-row run with planted biases is made once for the group (in a
 * mkdtemp directory under /tmp, removed at the end) and loaded: every line
 * is decoded with the contract decoder, the hold labelling rule is recomputed
 * from the two JSONL files and compared with examples.csv, and each bias is
 * measured on its operator against the others.  Other tests make small runs
 * of their own (determinism, class shares, errors, out of memory).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "event/event.h"
#include "sim/sim.h"
#include "util/util.h"

#define SETTLE_US (INT64_C(30) * 60 * 1000000)
#define HOLD_US   (INT64_C(60) * 60 * 1000000)

/* ---- helpers ------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static char *join(const char *dir, const char *name)
{
    static char path[4][1024];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    return p;
}

static void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static char *make_tmpdir(void)
{
    char *dir = strdup("/tmp/understudy-test-sim.XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

/* Splits buf into lines in place; returns the count (a last empty line is not one). */
static size_t split_lines(char *buf, char ***out)
{
    size_t n = 0, cap = 1024;
    char **lines = malloc(cap * sizeof *lines);
    assert_non_null(lines);
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        *nl = '\0';
        if (n == cap) {
            cap *= 2;
            lines = realloc(lines, cap * sizeof *lines);
            assert_non_null(lines);
        }
        lines[n++] = p;
        p = nl + 1;
    }
    *out = lines;
    return n;
}

static size_t split_cells(char *line, char **cells, size_t max)
{
    size_t n = 0;
    for (char *p = line;;) {
        assert_true(n < max);
        cells[n++] = p;
        char *c = strchr(p, ',');
        if (!c)
            break;
        *c = '\0';
        p = c + 1;
    }
    return n;
}

static void parse_bias_ok(const char *spec, struct sim_bias *b)
{
    char err[256] = "";
    if (sim_parse_bias(spec, b, err, sizeof err) != 0)
        fail_msg("%s: %s", spec, err);
}

static size_t feature_index(const char *name)
{
    for (size_t i = 0; i < sim_feature_count(); i++)
        if (strcmp(sim_feature_name(i), name) == 0)
            return i;
    fail_msg("no feature %s", name);
    return 0;
}

/* ---- the shared run ------------------------------------------------------ */

#define NF_MAX 64

struct run {
    char *dir;
    struct sim_summary sum;
    size_t n_features;
    struct event_feature_spec spec[NF_MAX];
    /* states.jsonl, decoded, one per row */
    size_t n_states;
    struct event *states;
    /* actions.jsonl, decoded */
    size_t n_actions;
    struct event *actions;
    /* examples.csv: cells[row][column], columns = features, label, delta_pct */
    char *csv_buf;
    char **csv_lines;
    size_t n_rows;
    char *(*cells)[NF_MAX + 2];
};

static void decode_file(const char *path, enum event_kind kind, struct event **out, size_t *n)
{
    char *buf = read_file(path, NULL);
    char **lines;
    size_t count = split_lines(buf, &lines);
    struct event *evs = calloc(count ? count : 1, sizeof *evs);
    assert_non_null(evs);
    for (size_t i = 0; i < count; i++) {
        char reason[EVENT_REASON_MAX];
        int rc =
            event_decode(kind, lines[i], strlen(lines[i]), NULL, &evs[i], reason, sizeof reason);
        if (rc != 0)
            fail_msg("%s line %zu refused: %s", path, i + 1, reason);
    }
    free(lines);
    free(buf);
    *out = evs;
    *n = count;
}

static void load_csv(struct run *r)
{
    r->csv_buf = read_file(join(r->dir, "examples.csv"), NULL);
    size_t n = split_lines(r->csv_buf, &r->csv_lines);
    assert_true(n >= 1);
    r->n_rows = n - 1;
    r->cells = calloc(n + 1, sizeof *r->cells);
    assert_non_null(r->cells);
    char *header[NF_MAX + 2] = {0};
    assert_int_equal(split_cells(r->csv_lines[0], header, NF_MAX + 2), r->n_features + 2);
    for (size_t f = 0; f < r->n_features; f++)
        assert_string_equal(header[f], r->spec[f].name);
    assert_string_equal(header[r->n_features], "label");
    assert_string_equal(header[r->n_features + 1], "delta_pct");
    for (size_t i = 0; i < r->n_rows; i++)
        assert_int_equal(split_cells(r->csv_lines[i + 1], r->cells[i], NF_MAX + 2),
                         r->n_features + 2);
}

static struct sim_bias shared_biases[5];
static const char *const shared_specs[5] = {
    "op-03:never=bid_down",
    "op-06:never=bid_up@channel=search",
    "op-02:shift=bid_down:cpa_ratio:-0.3",
    "op-05:scale=budget_up:1.8",
    "op-04:favor=creative_pause:3",
};

static int group_setup(void **state)
{
    struct run *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->dir = make_tmpdir();
    r->n_features = sim_feature_count();
    assert_true(r->n_features >= 25 && r->n_features <= NF_MAX);
    for (size_t f = 0; f < r->n_features; f++) {
        r->spec[f].name = (char *)sim_feature_name(f);
        r->spec[f].kind =
            sim_feature_is_categorical(f) ? EVENT_FEATURE_CATEGORICAL : EVENT_FEATURE_NUMERIC;
    }
    for (size_t i = 0; i < 5; i++)
        parse_bias_ok(shared_specs[i], &shared_biases[i]);

    struct sim_options o;
    sim_options_default(&o);
    o.rows = 20000;
    o.operators = 8;
    o.campaigns = 48;
    o.seed = 20261005;
    o.biases = shared_biases;
    o.n_biases = 5;
    char err[256] = "";
    if (sim_run(&o, r->dir, &r->sum, err, sizeof err) != 0)
        fail_msg("sim_run: %s", err);

    decode_file(join(r->dir, "states.jsonl"), EVENT_KIND_STATE, &r->states, &r->n_states);
    decode_file(join(r->dir, "actions.jsonl"), EVENT_KIND_ACTION, &r->actions, &r->n_actions);
    load_csv(r);
    *state = r;
    return 0;
}

static int group_teardown(void **state)
{
    struct run *r = *state;
    for (size_t i = 0; i < r->n_states; i++)
        event_deinit(&r->states[i]);
    for (size_t i = 0; i < r->n_actions; i++)
        event_deinit(&r->actions[i]);
    free(r->states);
    free(r->actions);
    free(r->cells);
    free(r->csv_lines);
    free(r->csv_buf);
    rm_rf(r->dir);
    free(r->dir);
    free(r);
    return 0;
}

static const char *cell(const struct run *r, size_t row, const char *feature)
{
    return r->cells[row][feature_index(feature)];
}

static const char *label(const struct run *r, size_t row)
{
    return r->cells[row][r->n_features];
}

static unsigned row_op(const struct run *r, size_t row)
{
    const char *id = r->states[row].operator_id;
    assert_non_null(id);
    assert_true(strncmp(id, "op-", 3) == 0);
    return (unsigned)strtoul(id + 3, NULL, 10);
}

/* ---- tests on the shared run --------------------------------------------- */

static void test_sim_run_counts_agree(void **state)
{
    const struct run *r = *state;
    assert_int_equal(r->n_states, 20000);
    assert_int_equal(r->n_rows, 20000);
    assert_int_equal(r->sum.rows, 20000);
    assert_int_equal(r->sum.operators, 8);
    assert_int_equal(r->sum.campaigns, 48);
    assert_int_equal(r->n_actions, r->sum.actions);

    uint64_t by_class[EVENT_CLASS_COUNT] = {0}, non_hold = 0;
    uint64_t by_op[SIM_MAX_OPERATORS][EVENT_CLASS_COUNT];
    memset(by_op, 0, sizeof by_op);
    for (size_t i = 0; i < r->n_rows; i++) {
        enum event_class c;
        assert_int_equal(event_class_parse(label(r, i), &c), 0);
        by_class[c]++;
        by_op[row_op(r, i) - 1][c]++;
        non_hold += c != EVENT_CLASS_HOLD;
    }
    assert_int_equal(non_hold, r->n_actions);
    for (int c = 0; c < EVENT_CLASS_COUNT; c++) {
        assert_int_equal(by_class[c], r->sum.by_class[c]);
        for (unsigned op = 0; op < 8; op++)
            assert_int_equal(by_op[op][c], r->sum.by_operator[op][c]);
    }
    uint64_t class_total = 0;
    for (int c = 0; c < EVENT_CLASS_COUNT; c++)
        class_total += r->sum.by_class[c];
    assert_int_equal(class_total, r->sum.rows);
}

static void test_sim_run_events_ordered_and_unique(void **state)
{
    const struct run *r = *state;
    for (size_t i = 1; i < r->n_states; i++) {
        assert_true(r->states[i].ts_us >= r->states[i - 1].ts_us);
        assert_true(strcmp(r->states[i].event_id, r->states[i - 1].event_id) > 0);
    }
    for (size_t i = 1; i < r->n_actions; i++) {
        assert_true(r->actions[i].ts_us >= r->actions[i - 1].ts_us);
        assert_true(strcmp(r->actions[i].event_id, r->actions[i - 1].event_id) > 0);
    }
    assert_int_equal(r->states[0].ts_us, r->sum.first_ts_us);
    assert_int_equal(r->states[r->n_states - 1].ts_us, r->sum.last_ts_us);
    for (size_t i = 0; i < r->n_states; i++) {
        unsigned op = row_op(r, i);
        assert_true(op >= 1 && op <= 8);
    }
}

struct act_ref {
    const struct event *ev;
    size_t matched; /* snapshots whose window holds it */
};

static int cmp_act(const void *a, const void *b)
{
    const struct act_ref *x = a, *y = b;
    int c = strcmp(x->ev->entity_id, y->ev->entity_id);
    if (c)
        return c;
    return x->ev->ts_us < y->ev->ts_us ? -1 : x->ev->ts_us > y->ev->ts_us;
}

/*
 * The contract's rule, recomputed: a snapshot at t is a hold example when no
 * action on its entity has ts in [t - 30 min, t + 60 min]; otherwise the
 * example is the action, with its own state and class.  Each action must be
 * in exactly one snapshot's window, carry that snapshot's state, and match
 * the CSV row of that snapshot.
 */
static void test_sim_run_csv_labels_follow_the_hold_rule(void **state)
{
    const struct run *r = *state;
    struct act_ref *acts = calloc(r->n_actions ? r->n_actions : 1, sizeof *acts);
    assert_non_null(acts);
    for (size_t i = 0; i < r->n_actions; i++)
        acts[i].ev = &r->actions[i];
    qsort(acts, r->n_actions, sizeof *acts, cmp_act);

    size_t holds = 0;
    for (size_t row = 0; row < r->n_states; row++) {
        const struct event *s = &r->states[row];
        /* lower bound of (entity, t - settle) */
        size_t lo = 0, hi = r->n_actions;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            int c = strcmp(acts[mid].ev->entity_id, s->entity_id);
            if (c < 0 || (c == 0 && acts[mid].ev->ts_us < s->ts_us - SETTLE_US))
                lo = mid + 1;
            else
                hi = mid;
        }
        size_t found = 0, which = 0;
        for (size_t k = lo; k < r->n_actions && strcmp(acts[k].ev->entity_id, s->entity_id) == 0 &&
                            acts[k].ev->ts_us <= s->ts_us + HOLD_US;
             k++) {
            found++;
            which = k;
            acts[k].matched++;
        }
        if (found == 0) {
            assert_string_equal(label(r, row), "hold");
            assert_string_equal(r->cells[row][r->n_features + 1], "");
            holds++;
            continue;
        }
        assert_int_equal(found, 1);
        const struct event *a = acts[which].ev;
        enum event_class c;
        assert_int_equal(event_class_of(a, &c), 0);
        assert_string_equal(label(r, row), event_class_name(c));
        assert_string_equal(a->state_json, s->state_json);
        assert_string_equal(a->operator_id, s->operator_id);
        assert_string_equal(a->campaign_id, s->campaign_id);
        assert_int_equal(a->entity_type, s->entity_type);
        assert_true(a->ts_us > s->ts_us); /* decided on the snapshot, acted after it */
        const char *d = r->cells[row][r->n_features + 1];
        if (a->has_delta) {
            char *end;
            double v = strtod(d, &end);
            assert_true(*d && *end == '\0');
            assert_memory_equal(&v, &a->delta_pct, sizeof v);
        } else {
            assert_string_equal(d, "");
        }
    }
    for (size_t k = 0; k < r->n_actions; k++)
        assert_int_equal(acts[k].matched, 1);
    assert_int_equal(holds, r->sum.by_class[EVENT_CLASS_HOLD]);
    free(acts);
}

/* Every CSV cell reads the same as the decoder's feature from the event. */
static void test_sim_run_csv_features_equal_event_features(void **state)
{
    const struct run *r = *state;
    struct event_feature_value v[NF_MAX];
    size_t missing = 0, absent_keys = 0;
    for (size_t row = 0; row < r->n_rows; row++) {
        event_features(&r->states[row], r->spec, r->n_features, v);
        for (size_t f = 0; f < r->n_features; f++) {
            const char *c = r->cells[row][f];
            if (v[f].missing) {
                assert_string_equal(c, "");
                missing++;
                continue;
            }
            assert_true(*c);
            if (r->spec[f].kind == EVENT_FEATURE_CATEGORICAL) {
                assert_string_equal(c, v[f].cat);
            } else {
                char *end;
                double x = strtod(c, &end);
                assert_true(*end == '\0');
                assert_memory_equal(&x, &v[f].num, sizeof x);
            }
        }
    }
    /* Missing values exist, both as null and as absent keys. */
    for (size_t row = 0; row < r->n_rows; row++)
        absent_keys += strstr(r->states[row].state_json, "\"quality_score\"") == NULL;
    assert_true(missing > r->n_rows);
    assert_true(absent_keys > 0 && absent_keys < r->n_rows);
    size_t null_cpa = 0;
    for (size_t row = 0; row < r->n_rows; row++)
        null_cpa += strstr(r->states[row].state_json, "\"cpa\":null") != NULL;
    assert_true(null_cpa > 0);
}

/* cpa is null exactly when there was no conversion. */
static void test_sim_run_cpa_null_iff_no_conversion(void **state)
{
    const struct run *r = *state;
    for (size_t row = 0; row < r->n_rows; row++) {
        const char *conv = cell(r, row, "conversions");
        assert_true(*conv);
        bool none = strcmp(conv, "0") == 0;
        assert_int_equal(*cell(r, row, "cpa") == '\0', none);
        assert_int_equal(*cell(r, row, "cpa_ratio") == '\0', none);
    }
}

static void test_sim_run_actions_respect_entity_types(void **state)
{
    const struct run *r = *state;
    for (size_t row = 0; row < r->n_rows; row++) {
        const char *t = cell(r, row, "entity_type"), *l = label(r, row);
        const char *status = cell(r, row, "status");
        if (strncmp(l, "budget_", 7) == 0)
            assert_string_equal(t, "campaign");
        else if (strncmp(l, "bid_", 4) == 0)
            assert_true(strcmp(t, "ad_group") == 0 || strcmp(t, "keyword") == 0);
        else if (strcmp(l, "creative_pause") == 0)
            assert_true(strcmp(t, "creative") == 0 && strcmp(status, "active") == 0);
        else if (strcmp(l, "creative_resume") == 0)
            assert_true(strcmp(t, "creative") == 0 && strcmp(status, "paused") == 0);
        else
            assert_string_equal(l, "hold");
        assert_string_equal(t, event_entity_name(r->states[row].entity_type));
    }
    for (size_t i = 0; i < r->n_actions; i++) {
        const struct event *a = &r->actions[i];
        if (a->action == EVENT_ACTION_BUDGET_CHANGE)
            assert_int_equal(a->entity_type, EVENT_ENTITY_CAMPAIGN);
        if (a->action == EVENT_ACTION_BID_CHANGE)
            assert_true(a->entity_type == EVENT_ENTITY_AD_GROUP ||
                        a->entity_type == EVENT_ENTITY_KEYWORD);
        if (a->action == EVENT_ACTION_CREATIVE_PAUSE || a->action == EVENT_ACTION_CREATIVE_RESUME)
            assert_int_equal(a->entity_type, EVENT_ENTITY_CREATIVE);
        if (a->has_delta)
            assert_true(a->delta_pct > -100.0 && a->delta_pct <= 1000.0 &&
                        fabs(a->delta_pct) >= 0.1);
    }
}

/* A creative's status follows its pause and resume actions. */
static void test_sim_run_creative_status_follows_actions(void **state)
{
    const struct run *r = *state;
    size_t checked = 0;
    for (size_t row = 0; row < r->n_rows; row++) {
        if (strcmp(cell(r, row, "entity_type"), "creative") != 0)
            continue;
        /* The next snapshot of the same entity: N entities later (round robin). */
        size_t next = row + r->sum.entities;
        if (next >= r->n_rows)
            continue;
        assert_string_equal(r->states[next].entity_id, r->states[row].entity_id);
        const char *want = cell(r, row, "status");
        if (strcmp(label(r, row), "creative_pause") == 0)
            want = "paused";
        else if (strcmp(label(r, row), "creative_resume") == 0)
            want = "active";
        assert_string_equal(cell(r, next, "status"), want);
        checked++;
    }
    assert_true(checked > 1000);
}

/* Counts of one class among the rows a filter keeps, for one operator and the others. */
struct split {
    double op_hits, op_rows, peer_hits, peer_rows;
};

static void test_sim_bias_never_blind_spot(void **state)
{
    const struct run *r = *state;
    /* op-03 never bids down; every other operator does. */
    assert_int_equal(r->sum.by_operator[2][EVENT_CLASS_BID_DOWN], 0);
    for (unsigned op = 0; op < 8; op++)
        if (op != 2)
            assert_true(r->sum.by_operator[op][EVENT_CLASS_BID_DOWN] > 20);

    /* op-06 never bids up on search, but does elsewhere. */
    size_t search_rows = 0, search_up = 0, other_rows = 0, other_up = 0;
    for (size_t row = 0; row < r->n_rows; row++) {
        if (row_op(r, row) != 6 || strcmp(cell(r, row, "entity_type"), "campaign") == 0 ||
            strcmp(cell(r, row, "entity_type"), "creative") == 0)
            continue;
        bool search = strcmp(cell(r, row, "channel"), "search") == 0;
        bool up = strcmp(label(r, row), "bid_up") == 0;
        if (search) {
            search_rows++;
            search_up += up;
        } else {
            other_rows++;
            other_up += up;
        }
    }
    assert_true(search_rows > 100 && other_rows > 100);
    assert_int_equal(search_up, 0);
    assert_true(other_up > 20);
}

static void test_sim_bias_shift_reacts_later(void **state)
{
    const struct run *r = *state;
    /* Bid entities with cpa_ratio in [1.25, 1.8]: op-02 bids down less often. */
    struct split s = {0};
    for (size_t row = 0; row < r->n_rows; row++) {
        const char *t = cell(r, row, "entity_type"), *cr = cell(r, row, "cpa_ratio");
        if ((strcmp(t, "ad_group") != 0 && strcmp(t, "keyword") != 0) || !*cr)
            continue;
        double x = strtod(cr, NULL);
        if (x < 1.25 || x > 1.8)
            continue;
        unsigned op = row_op(r, row);
        if (op == 3)
            continue; /* never bids down: not a peer */
        bool down = strcmp(label(r, row), "bid_down") == 0;
        if (op == 2) {
            s.op_rows++;
            s.op_hits += down;
        } else {
            s.peer_rows++;
            s.peer_hits += down;
        }
    }
    assert_true(s.op_rows > 50 && s.peer_rows > 300);
    double op_rate = s.op_hits / s.op_rows, peer_rate = s.peer_hits / s.peer_rows;
    /* Measured: 0.28 against 0.56; without the bias the two are alike. */
    assert_true(op_rate < 0.7 * peer_rate);
}

static void test_sim_bias_scale_magnitudes(void **state)
{
    const struct run *r = *state;
    struct split s = {0};
    for (size_t row = 0; row < r->n_rows; row++) {
        if (strcmp(label(r, row), "budget_up") != 0)
            continue;
        double d = strtod(r->cells[row][r->n_features + 1], NULL);
        assert_true(d > 0.0);
        if (row_op(r, row) == 5) {
            s.op_rows++;
            s.op_hits += d;
        } else {
            s.peer_rows++;
            s.peer_hits += d;
        }
    }
    assert_true(s.op_rows > 20 && s.peer_rows > 100);
    double ratio = (s.op_hits / s.op_rows) / (s.peer_hits / s.peer_rows);
    /*
     * Measured 1.58, not 1.8: op-05's larger raises leave its campaigns
     * pacing higher, so its later raises start from smaller team sizes.
     */
    assert_true(ratio > 1.35 && ratio < 2.2);
}

static void test_sim_bias_favor_propensity(void **state)
{
    const struct run *r = *state;
    struct split s = {0};
    for (size_t row = 0; row < r->n_rows; row++) {
        if (strcmp(cell(r, row, "entity_type"), "creative") != 0 ||
            strcmp(cell(r, row, "status"), "active") != 0)
            continue;
        bool pause = strcmp(label(r, row), "creative_pause") == 0;
        if (row_op(r, row) == 4) {
            s.op_rows++;
            s.op_hits += pause;
        } else {
            s.peer_rows++;
            s.peer_hits += pause;
        }
    }
    assert_true(s.op_rows > 200 && s.peer_rows > 1000);
    /*
     * Measured 0.36 against 0.23: tripled odds raise the rate less where it
     * is already high, and op-04's creatives are paused fresher.
     */
    assert_true(s.op_hits / s.op_rows > 1.3 * (s.peer_hits / s.peer_rows));
}

static void test_sim_run_truth_names_the_biases(void **state)
{
    const struct run *r = *state;
    char *truth = read_file(join(r->dir, "truth.json"), NULL);
    assert_non_null(strstr(truth, "\"seed\": 20261005"));
    assert_non_null(strstr(truth, "\"spec\": \"op-03:never=bid_down\", \"operator_id\": "
                                  "\"op-03\", \"kind\": \"never\", \"action\": \"bid_down\""));
    assert_non_null(strstr(truth, "\"region\": \"channel=search\""));
    assert_non_null(strstr(truth, "\"feature\": \"cpa_ratio\", \"amount\": -0.3"));
    assert_non_null(strstr(truth, "\"factor\": 1.8"));
    assert_non_null(strstr(truth, "\"temperature\""));
    /* truth.json is one JSON object (the decoder's syntax check). */
    assert_int_equal(event_json_wellformed(truth, strlen(truth)), 1);
    free(truth);
    /* No temporary files are left. */
    struct stat st;
    assert_int_not_equal(stat(join(r->dir, "states.jsonl.tmp"), &st), 0);
}

/* ---- tests with runs of their own ---------------------------------------- */

static void run_ok(const struct sim_options *o, const char *dir, struct sim_summary *sum)
{
    char err[256] = "";
    if (sim_run(o, dir, sum, err, sizeof err) != 0)
        fail_msg("sim_run: %s", err);
}

static void files_equal(const char *a, const char *b, bool want_equal)
{
    size_t na, nb;
    char *x = read_file(a, &na), *y = read_file(b, &nb);
    bool equal = na == nb && memcmp(x, y, na) == 0;
    if (equal != want_equal)
        fail_msg("%s and %s %s", a, b, want_equal ? "differ" : "are identical");
    free(x);
    free(y);
}

static void test_sim_run_deterministic(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char a[1024], b[1024], c[1024];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c, sizeof c, "%s/c/nested/dir", dir); /* parents are created */
    struct sim_bias biases[2];
    parse_bias_ok("op-01:favor=bid_up:2@cpa_ratio<0.8", &biases[0]);
    parse_bias_ok("op-02:scale=budget_down:0.5", &biases[1]);
    struct sim_options o;
    sim_options_default(&o);
    o.rows = 3000;
    o.operators = 3;
    o.seed = 99;
    o.biases = biases;
    o.n_biases = 2;
    struct sim_summary s1, s2, s3;
    run_ok(&o, a, &s1);
    run_ok(&o, b, &s2);
    static const char *const names[] = {"states.jsonl", "actions.jsonl", "examples.csv",
                                        "truth.json"};
    for (size_t i = 0; i < 4; i++) {
        char pa[1100], pb[1100];
        snprintf(pa, sizeof pa, "%s/%s", a, names[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, names[i]);
        files_equal(pa, pb, true);
    }
    assert_memory_equal(&s1, &s2, sizeof s1);

    o.seed = 100;
    run_ok(&o, c, &s3);
    for (size_t i = 0; i < 3; i++) {
        char pa[1100], pc[1100];
        snprintf(pa, sizeof pa, "%s/%s", a, names[i]);
        snprintf(pc, sizeof pc, "%s/%s", c, names[i]);
        files_equal(pa, pc, false);
    }
    /* A second run into the same directory replaces the files. */
    o.seed = 99;
    run_ok(&o, c, &s3);
    char pa[1100], pc[1100];
    snprintf(pa, sizeof pa, "%s/states.jsonl", a);
    snprintf(pc, sizeof pc, "%s/states.jsonl", c);
    files_equal(pa, pc, true);
    rm_rf(dir);
    free(dir);
}

/* Unbiased team: the class mix and the decision entropy the design aims at. */
static void test_sim_run_class_shares_and_entropy(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    struct sim_options o;
    sim_options_default(&o);
    o.rows = 20000;
    for (uint64_t seed = 1; seed <= 2; seed++) {
        struct sim_summary s;
        o.seed = seed;
        run_ok(&o, dir, &s);
        double hold = (double)s.by_class[EVENT_CLASS_HOLD] / (double)s.rows;
        assert_true(hold >= 0.50 && hold <= 0.65);
        for (int c = 1; c < EVENT_CLASS_COUNT; c++)
            assert_true((double)s.by_class[c] / (double)s.rows >= 0.03);
        assert_true(s.mean_entropy >= 0.4 && s.mean_entropy <= 0.9);
        assert_int_equal(s.rows - s.by_class[EVENT_CLASS_HOLD], s.actions);
    }
    rm_rf(dir);
    free(dir);
}

static void test_sim_run_small_and_single_operator(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    struct sim_options o;
    sim_options_default(&o);
    o.rows = 1;
    o.operators = 1;
    struct sim_summary s;
    run_ok(&o, dir, &s);
    assert_int_equal(s.rows, 1);
    assert_int_equal(s.campaigns, 1);
    assert_int_equal(s.entities, 6);
    char *csv = read_file(join(dir, "examples.csv"), NULL);
    char **lines;
    assert_int_equal(split_lines(csv, &lines), 2);
    free(lines);
    free(csv);
    rm_rf(dir);
    free(dir);
}

static void test_sim_parse_bias_accepts(void **state)
{
    (void)state;
    struct sim_bias b;
    parse_bias_ok("op-03:never=bid_down", &b);
    assert_int_equal(b.op, 3);
    assert_int_equal(b.kind, SIM_BIAS_NEVER);
    assert_int_equal(b.cls, EVENT_CLASS_BID_DOWN);
    assert_int_equal(b.region_op, SIM_REGION_ALL);
    assert_string_equal(b.spec, "op-03:never=bid_down");

    parse_bias_ok("op-03:never=bid_down@channel=social", &b);
    assert_int_equal(b.region_op, SIM_REGION_EQ);
    assert_int_equal(b.region_feature, feature_index("channel"));
    assert_string_equal(b.region_level, "social");

    parse_bias_ok("op-02:shift=bid_down:cpa_ratio:-0.2", &b);
    assert_int_equal(b.kind, SIM_BIAS_SHIFT);
    assert_int_equal(b.feature, feature_index("cpa_ratio"));
    assert_true(fabs(b.amount + 0.2) < 1e-12);

    parse_bias_ok("op-5:scale=budget_up:1.8", &b);
    assert_int_equal(b.op, 5);
    assert_int_equal(b.kind, SIM_BIAS_SCALE);
    assert_true(fabs(b.amount - 1.8) < 1e-12);

    parse_bias_ok("op-04:favor=creative_pause:3@frequency>4", &b);
    assert_int_equal(b.kind, SIM_BIAS_FAVOR);
    assert_int_equal(b.cls, EVENT_CLASS_CREATIVE_PAUSE);
    assert_int_equal(b.region_op, SIM_REGION_GT);
    assert_true(fabs(b.region_value - 4.0) < 1e-12);

    parse_bias_ok("op-99:shift=creative_pause:ctr:0.002@vertical=retail", &b);
    assert_int_equal(b.op, 99);
    assert_int_equal(b.feature, feature_index("ctr"));
}

static void test_sim_parse_bias_refusals_name_the_part(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        const char *want; /* a substring of the reason */
    } bad[] = {
        {"", "empty spec"},
        {"op-03", "expected OPERATOR:KIND=ARGS"},
        {"op-03:never", "expected OPERATOR:KIND=ARGS"},
        {"op-x:never=bid_down", "operator 'op-x'"},
        {"op-0:never=bid_down", "operator 'op-0'"},
        {"op-100:never=bid_down", "operator 'op-100'"},
        {"oper-1:never=bid_down", "operator 'oper-1'"},
        {"op-03:sometimes=bid_down", "unknown kind 'sometimes'"},
        {"op-03:never=bid_sideways", "unknown class 'bid_sideways'"},
        {"op-03:never=hold", "class 'hold' cannot be biased"},
        {"op-03:never=bid_down:2", "never takes never=CLASS"},
        {"op-02:shift=bid_down:cpa_ratio", "shift takes shift=CLASS:FEATURE:AMOUNT"},
        {"op-02:shift=bid_down:cpaa:-0.2", "unknown feature 'cpaa'"},
        {"op-02:shift=bid_down:ctr:-0.2", "feature 'ctr' does not enter the bid_down score"},
        {"op-02:shift=bid_down:channel:1", "feature 'channel' does not enter"},
        {"op-02:shift=bid_down:cpa_ratio:abc", "bad number 'abc' for the amount"},
        {"op-02:shift=bid_down:cpa_ratio:1e999", "bad number '1e999'"},
        {"op-05:scale=budget_up:x1", "bad number 'x1' for the factor"},
        {"op-05:scale=budget_up:0", "factor must be > 0"},
        {"op-05:scale=budget_up:-2", "factor must be > 0"},
        {"op-05:scale=creative_pause:2", "creative_pause has no magnitude"},
        {"op-04:favor=creative_pause", "favor takes favor=CLASS:FACTOR"},
        {"op-04:favor=creative_pause:nan", "bad number 'nan'"},
        {"op-03:never=bid_down@channel", "region 'channel' is not FEATURE=LEVEL"},
        {"op-03:never=bid_down@=social", "is not FEATURE=LEVEL"},
        {"op-03:never=bid_down@chanel=social", "unknown region feature 'chanel'"},
        {"op-03:never=bid_down@channel=socal", "unknown level 'socal' of channel"},
        {"op-03:never=bid_down@channel<3", "region feature 'channel' is categorical"},
        {"op-03:never=bid_down@cpa_ratio=1", "region feature 'cpa_ratio' is numeric"},
        {"op-03:never=bid_down@cpa_ratio>high", "bad number 'high' in the region"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct sim_bias b;
        memset(&b, 0x5a, sizeof b);
        unsigned char before[sizeof b];
        memcpy(before, &b, sizeof b);
        char err[256] = "";
        if (sim_parse_bias(bad[i].spec, &b, err, sizeof err) != -1)
            fail_msg("accepted '%s'", bad[i].spec);
        if (!strstr(err, bad[i].want))
            fail_msg("'%s': reason '%s' lacks '%s'", bad[i].spec, err, bad[i].want);
        assert_memory_equal(before, &b, sizeof b); /* untouched */
        assert_null(strchr(err, '\n'));
    }
    /* A long spec is refused, and the reason stays short. */
    char longspec[400];
    memset(longspec, 'a', sizeof longspec - 1);
    longspec[sizeof longspec - 1] = '\0';
    struct sim_bias b;
    char err[256] = "";
    assert_int_equal(sim_parse_bias(longspec, &b, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than"));
    assert_int_equal(sim_parse_bias(NULL, &b, err, sizeof err), -1);
}

static void test_sim_check_options_refusals(void **state)
{
    (void)state;
    struct sim_options o;
    char err[256];
    struct sim_bias b;
    parse_bias_ok("op-09:never=bid_up", &b);

    sim_options_default(&o);
    assert_int_equal(sim_check_options(&o, err, sizeof err), 0);
    o.biases = &b;
    o.n_biases = 1;
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "operator op-09 is not in op-01..op-08"));
    o.operators = 9;
    assert_int_equal(sim_check_options(&o, err, sizeof err), 0);

    sim_options_default(&o);
    o.rows = 0;
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "rows"));
    sim_options_default(&o);
    o.operators = 0;
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    o.operators = SIM_MAX_OPERATORS + 1;
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "operators"));
    sim_options_default(&o);
    o.campaigns = 3; /* fewer than the 8 operators */
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "campaigns"));
    sim_options_default(&o);
    o.temperature = 0.0;
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "temperature"));
    o.temperature = NAN;
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    sim_options_default(&o);
    o.start_us = -1;
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "start"));
    sim_options_default(&o);
    o.rows = UINT64_C(10000000000);
    o.operators = 1;
    o.campaigns = 1; /* 6 entities: far past year 9999 */
    assert_int_equal(sim_check_options(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "9999"));

    /* sim_run refuses the same and writes nothing. */
    char *dir = make_tmpdir();
    sim_options_default(&o);
    o.biases = &b;
    o.n_biases = 1;
    assert_int_equal(sim_run(&o, dir, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "op-09"));
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t entries = 0;
    while (readdir(d))
        entries++;
    closedir(d);
    assert_int_equal(entries, 2); /* . and .. */
    rm_rf(dir);
    free(dir);
}

static void test_sim_run_bad_directory(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char file[1100];
    snprintf(file, sizeof file, "%s/plain", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    struct sim_options o;
    sim_options_default(&o);
    o.rows = 10;
    char err[256] = "";
    assert_int_equal(sim_run(&o, file, NULL, err, sizeof err), -1);
    assert_true(strlen(err) > 0);
    char below[1200];
    snprintf(below, sizeof below, "%s/sub", file);
    assert_int_equal(sim_run(&o, below, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
    rm_rf(dir);
    free(dir);
}

/* Every allocation failure is reported, leaks nothing and leaves no file. */
static void test_sim_run_alloc_failures(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    struct sim_options o;
    sim_options_default(&o);
    o.rows = 200;
    o.operators = 2;
    bool succeeded = false;
    for (long n = 0; n < 10000 && !succeeded; n++) {
        char err[256] = "";
        util_alloc_fail_after(n);
        int rc = sim_run(&o, dir, NULL, err, sizeof err);
        util_alloc_fail_after(-1);
        if (rc == 0) {
            succeeded = true;
            break;
        }
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err, "out of memory"));
        DIR *d = opendir(dir);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            assert_true(e->d_name[0] == '.');
        closedir(d);
    }
    assert_true(succeeded);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(test_sim_run_counts_agree),
        cmocka_unit_test(test_sim_run_events_ordered_and_unique),
        cmocka_unit_test(test_sim_run_csv_labels_follow_the_hold_rule),
        cmocka_unit_test(test_sim_run_csv_features_equal_event_features),
        cmocka_unit_test(test_sim_run_cpa_null_iff_no_conversion),
        cmocka_unit_test(test_sim_run_actions_respect_entity_types),
        cmocka_unit_test(test_sim_run_creative_status_follows_actions),
        cmocka_unit_test(test_sim_bias_never_blind_spot),
        cmocka_unit_test(test_sim_bias_shift_reacts_later),
        cmocka_unit_test(test_sim_bias_scale_magnitudes),
        cmocka_unit_test(test_sim_bias_favor_propensity),
        cmocka_unit_test(test_sim_run_truth_names_the_biases),
    };
    const struct CMUnitTest own[] = {
        cmocka_unit_test(test_sim_run_deterministic),
        cmocka_unit_test(test_sim_run_class_shares_and_entropy),
        cmocka_unit_test(test_sim_run_small_and_single_operator),
        cmocka_unit_test(test_sim_parse_bias_accepts),
        cmocka_unit_test(test_sim_parse_bias_refusals_name_the_part),
        cmocka_unit_test(test_sim_check_options_refusals),
        cmocka_unit_test(test_sim_run_bad_directory),
        cmocka_unit_test(test_sim_run_alloc_failures),
    };
    int failed = cmocka_run_group_tests_name("sim_shared_run", shared, group_setup, group_teardown);
    failed += cmocka_run_group_tests_name("sim", own, NULL, NULL);
    return failed;
}
