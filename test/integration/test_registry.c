/*
 * Integration tests of the training side of internal/store against a real
 * PostgreSQL: the examples query (the contract's hold labelling rule and
 * feature extraction) and the policy registry (promotion, conflicts,
 * NOTIFY).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event/event.h"
#include "store/store.h"
#include "tdaemon.h"
#include "testenv.h"
#include "util/util.h"

static void exec_ok(PGconn *c, const char *sql)
{
    char state[6];
    int st = testenv_exec_status(c, sql, state);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: SQLSTATE %s", sql, state);
}

/* Collected examples: a fixed-size log is enough for these small tables. */
struct seen {
    size_t n;
    char id[32][32];
    char label[32][24];
    char op[32][16];
    double delta[32];
    int64_t ts[32];
    struct event_feature_value v[32][4];
    char cat[32][2][16];
};

static int collect(void *arg, const struct store_example *ex, char *err, size_t errlen)
{
    struct seen *s = arg;
    if (s->n == 32) {
        util_fmt(err, errlen, "too many rows");
        return -1;
    }
    size_t i = s->n++;
    util_fmt(s->id[i], sizeof s->id[i], "%s", ex->event_id);
    util_fmt(s->label[i], sizeof s->label[i], "%s", ex->label);
    util_fmt(s->op[i], sizeof s->op[i], "%s", ex->operator_id ? ex->operator_id : "(null)");
    s->delta[i] = ex->delta_pct;
    s->ts[i] = ex->ts_us;
    for (int f = 0; f < 4; f++) {
        s->v[i][f] = ex->values[f];
        if (f >= 2 && !ex->values[f].missing) {
            util_fmt(s->cat[i][f - 2], sizeof s->cat[i][f - 2], "%s", ex->values[f].cat);
            s->v[i][f].cat = s->cat[i][f - 2];
        }
    }
    return 0;
}

static int find(const struct seen *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->id[i], id) == 0)
            return (int)i;
    }
    return -1;
}

static struct store *open_store(const char *dsn)
{
    struct store *st = NULL;
    char err[256];
    if (store_connect(dsn, NULL, &st, err, sizeof err) != 0)
        fail_msg("connect: %s", err);
    return st;
}

static void seed_events(PGconn *c)
{
    /* Entity cr-1 has one action at 12:00.  Snapshots around it test the
     * window [t - 30m, t + 60m] at both edges (inclusive) and just past. */
    exec_ok(c,
            "INSERT INTO action_events (event_id, ts, operator_id, campaign_id, entity_type,"
            " entity_id, action, delta_pct, decision, state, src_topic, src_partition, src_offset)"
            " VALUES"
            " ('a1', '2026-11-02T12:00:00Z', 'op-1', 'c1', 'creative', 'cr-1', 'creative_pause',"
            "  NULL, 'creative_pause', '{\"cpa\": 30.5, \"pacing\": \"fast\", \"channel\": "
            "\"search\", \"is_new\": true}', 't', 0, 0),"
            " ('a2', '2026-11-02T13:00:00Z', 'op-2', 'c1', 'ad_group', 'ag-1', 'bid_change',"
            "  -12.5, 'bid_down', '{\"cpa\": 41, \"pacing\": 0.9, \"channel\": 7}', 't', 0, 1),"
            " ('a3', '2026-11-03T00:00:00Z', 'op-3', 'c1', 'ad_group', 'ag-1', 'budget_change',"
            "  20, 'budget_up', '{}', 't', 0, 2)");
    exec_ok(c, "INSERT INTO state_events (event_id, ts, operator_id, campaign_id, entity_type,"
               " entity_id, state, src_topic, src_partition, src_offset) VALUES"
               /* t + 60m after... i.e. action at t - 60m: inside (inclusive edge) */
               " ('s-edge-before', '2026-11-02T11:00:00Z', 'op-1', 'c1', 'creative', 'cr-1',"
               "  '{\"cpa\": 1}', 't', 1, 0),"
               /* action at t + 30m: inside (inclusive edge) */
               " ('s-edge-after', '2026-11-02T12:30:00Z', 'op-1', 'c1', 'creative', 'cr-1',"
               "  '{\"cpa\": 2}', 't', 1, 1),"
               /* action at t - 60m - 1us: outside */
               " ('s-past-before', '2026-11-02T10:59:59.999999Z', 'op-1', 'c1', 'creative',"
               "  'cr-1', '{\"cpa\": 3}', 't', 1, 2),"
               /* action at t + 30m + 1us: outside */
               " ('s-past-after', '2026-11-02T12:30:00.000001Z', NULL, 'c1', 'creative', 'cr-1',"
               "  '{\"cpa\": null, \"channel\": false}', 't', 1, 3),"
               /* same entity id, other entity type: not the same entity */
               " ('s-other-type', '2026-11-02T12:00:00Z', 'op-1', 'c1', 'keyword', 'cr-1',"
               "  '{\"cpa\": 5}', 't', 1, 4),"
               " ('s-ag', '2026-11-02T13:10:00Z', 'op-2', 'c1', 'ad_group', 'ag-1',"
               "  '{\"cpa\": 6}', 't', 1, 5)");
}

static const struct event_feature_spec features[4] = {
    {"cpa", EVENT_FEATURE_NUMERIC},
    {"pacing", EVENT_FEATURE_NUMERIC},
    {"channel", EVENT_FEATURE_CATEGORICAL},
    {"is_new", EVENT_FEATURE_CATEGORICAL},
};

static struct store_example_query base_query(void)
{
    struct store_example_query q = {
        .features = features,
        .n_features = 4,
        .settle_ms = 30 * 60 * 1000,
        .hold_ms = 60 * 60 * 1000,
        .since_us = INT64_MIN,
        .until_us = INT64_MAX,
    };
    return q;
}

static void test_store_load_examples_hold_rule_and_features(void **state)
{
    (void)state;
    char dsn[512], err[256];
    testenv_create_db("registry_examples", dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);
    seed_events(c);
    struct store *st = open_store(dsn);
    struct seen *s = calloc(1, sizeof *s);
    assert_non_null(s);
    struct store_example_query q = base_query();
    size_t n = 0;
    assert_int_equal(store_load_examples(st, &q, collect, s, &n, err, sizeof err), 0);

    /* 3 actions + the snapshots outside every window of their entity. */
    assert_int_equal(n, 6);
    assert_int_equal(s->n, 6);
    assert_int_equal(find(s, "s-edge-before"), -1);
    assert_int_equal(find(s, "s-edge-after"), -1);
    assert_int_equal(find(s, "s-ag"), -1);
    int pb = find(s, "s-past-before"), pa = find(s, "s-past-after");
    int ot = find(s, "s-other-type"), a1 = find(s, "a1"), a2 = find(s, "a2");
    assert_true(pb >= 0 && pa >= 0 && ot >= 0 && a1 >= 0 && a2 >= 0 && find(s, "a3") >= 0);
    assert_string_equal(s->label[pb], "hold");
    assert_string_equal(s->label[a1], "creative_pause");
    assert_string_equal(s->label[a2], "bid_down");
    assert_true(fabs(s->delta[a2] + 12.5) < 1e-12);
    assert_true(isnan(s->delta[a1]) && isnan(s->delta[pb]));
    assert_string_equal(s->op[pa], "(null)");
    /* ts order: 10:59:59.999999, 12:00 (action first, then the snapshot), ... */
    assert_int_equal(pb, 0);
    assert_int_equal(a1, 1);
    assert_int_equal(ot, 2);
    assert_true(s->ts[pa] - s->ts[a1] == 30LL * 60 * 1000000 + 1);

    /* Features: number, wrong kind, string, boolean, null, absent. */
    assert_false(s->v[a1][0].missing);
    assert_true(fabs(s->v[a1][0].num - 30.5) < 1e-12);
    assert_true(s->v[a1][1].missing); /* "fast" for a numeric feature */
    assert_string_equal(s->v[a1][2].cat, "search");
    assert_string_equal(s->v[a1][3].cat, "true");
    assert_true(fabs(s->v[a2][1].num - 0.9) < 1e-12);
    assert_true(s->v[a2][2].missing); /* 7 for a categorical feature */
    assert_true(s->v[a2][3].missing); /* absent */
    assert_true(s->v[pa][0].missing); /* null */
    assert_string_equal(s->v[pa][2].cat, "false");

    /* Time range [since, until) and operator filters. */
    memset(s, 0, sizeof *s);
    q.since_us = 1793620800LL * 1000000; /* 2026-11-02T12:00:00Z */
    q.until_us = 1793624400LL * 1000000; /* 13:00, exclusive */
    assert_int_equal(store_load_examples(st, &q, collect, s, &n, err, sizeof err), 0);
    assert_int_equal(s->n, 3); /* a1, s-other-type, s-past-after */
    assert_true(find(s, "a2") < 0 && find(s, "s-past-before") < 0);

    memset(s, 0, sizeof *s);
    q = base_query();
    const char *inc[] = {"op-1"};
    q.include_operators = inc;
    q.n_include = 1;
    assert_int_equal(store_load_examples(st, &q, collect, s, &n, err, sizeof err), 0);
    assert_int_equal(s->n, 3); /* a1, s-past-before, s-other-type; NULL op excluded */
    memset(s, 0, sizeof *s);
    q = base_query();
    const char *exc[] = {"op-1", "op-\"2\\"};
    q.exclude_operators = exc;
    q.n_exclude = 2;
    assert_int_equal(store_load_examples(st, &q, collect, s, &n, err, sizeof err), 0);
    assert_int_equal(s->n, 3); /* a2, a3, s-past-after (no operator) */
    assert_true(find(s, "a2") >= 0 && find(s, "s-past-after") >= 0);

    /* A callback error stops the load and is reported. */
    memset(s, 0, sizeof *s);
    s->n = 31;
    q = base_query();
    assert_int_equal(store_load_examples(st, &q, collect, s, &n, err, sizeof err), -1);
    assert_string_equal(err, "too many rows");
    /* The connection is usable afterwards. */
    assert_int_equal(store_ping(st, err, sizeof err), 0);

    free(s);
    store_free(st);
    PQfinish(c);
}

static void test_store_policy_promote_notify_and_conflict(void **state)
{
    (void)state;
    char dsn[512], err[256];
    testenv_create_db("registry_policies", dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *listener = testenv_connect(dsn);
    exec_ok(listener, "LISTEN " STORE_POLICY_CHANNEL);
    struct store *st = open_store(dsn);

    int champ = -1, v1 = 0, v2 = 0;
    char *model = NULL;
    assert_int_equal(store_policy_champion(st, &champ, &model, err, sizeof err), 0);
    assert_int_equal(champ, 0);
    assert_null(model);

    struct store_policy_row row = {
        .model_json = "{\"format\": \"x\"}",
        .parameters_json = "{\"rounds\": 3}",
        .metrics_json = NULL,
        .train_from_us = 0,
        .train_to_us = 1000000,
        .n_examples = 42,
    };
    assert_int_equal(store_policy_insert(st, &row, &v1, err, sizeof err), 0);
    assert_int_equal(store_policy_insert(st, &row, &v2, err, sizeof err), 0);
    assert_true(v2 > v1 && v1 > 0);

    /* A stale expectation changes nothing. */
    assert_int_equal(store_policy_promote(st, v1, 99, err, sizeof err), 1);
    assert_int_equal(store_policy_champion(st, &champ, NULL, err, sizeof err), 0);
    assert_int_equal(champ, 0);

    assert_int_equal(store_policy_promote(st, v1, 0, err, sizeof err), 0);
    assert_int_equal(store_policy_promote(st, v2, 0, err, sizeof err), 1);
    assert_int_equal(store_policy_promote(st, v2, v1, err, sizeof err), 0);
    assert_int_equal(store_policy_champion(st, &champ, &model, err, sizeof err), 0);
    assert_int_equal(champ, v2);
    assert_non_null(strstr(model, "\"format\""));
    free(model);

    char status[16];
    assert_int_equal(store_policy_get(st, v1, &model, status, err, sizeof err), 0);
    assert_string_equal(status, "retired");
    free(model);
    assert_int_equal(store_policy_get(st, 12345, &model, status, err, sizeof err), 1);
    assert_int_equal(store_policy_promote(st, 12345, v2, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not exist"));
    char *n = testenv_query_value(listener, "SELECT n_examples || ' ' || "
                                            "to_char(train_to AT TIME ZONE 'UTC', 'SS') FROM "
                                            "policies ORDER BY version LIMIT 1");
    assert_string_equal(n, "42 01");
    free(n);

    /* Two promotions, two notifications, payload = version, in order. */
    int got[4], ngot = 0;
    for (int tries = 0; tries < 50 && ngot < 2; tries++) {
        assert_int_equal(PQconsumeInput(listener), 1);
        PGnotify *nt;
        while ((nt = PQnotifies(listener)) != NULL) {
            assert_string_equal(nt->relname, STORE_POLICY_CHANNEL);
            if (ngot < 4)
                got[ngot++] = atoi(nt->extra);
            PQfreemem(nt);
        }
        if (ngot < 2)
            tsleep_ms(100);
    }
    assert_int_equal(ngot, 2);
    assert_int_equal(got[0], v1);
    assert_int_equal(got[1], v2);

    /* The training lock is exclusive between sessions. */
    struct store *other = open_store(dsn);
    int have = 0;
    assert_int_equal(store_try_advisory_lock(st, STORE_TRAIN_LOCK_KEY, &have, err, sizeof err), 0);
    assert_int_equal(have, 1);
    assert_int_equal(store_try_advisory_lock(other, STORE_TRAIN_LOCK_KEY, &have, err, sizeof err),
                     0);
    assert_int_equal(have, 0);
    assert_int_equal(store_advisory_unlock(st, STORE_TRAIN_LOCK_KEY, err, sizeof err), 0);
    assert_int_equal(store_try_advisory_lock(other, STORE_TRAIN_LOCK_KEY, &have, err, sizeof err),
                     0);
    assert_int_equal(have, 1);

    int64_t maxid = -1;
    assert_int_equal(store_max_action_id(st, &maxid, err, sizeof err), 0);
    assert_true(maxid == 0);

    store_free(other);
    store_free(st);
    PQfinish(listener);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_load_examples_hold_rule_and_features),
        cmocka_unit_test(test_store_policy_promote_notify_and_conflict),
    };
    return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
