/*
 * Integration tests of training against real PostgreSQL and the mock
 * Kafka cluster: the fixture events ingested by the daemon, `understudy
 * train --from-db --promote`, the champion in the registry and the NOTIFY;
 * retraining inside `understudy run` on the instance holding the training
 * lock only.
 */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tdaemon.h"
#include "testenv.h"

static void exec_ok(PGconn *c, const char *sql)
{
    char state[6];
    int st = testenv_exec_status(c, sql, state);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: SQLSTATE %s", sql, state);
}

static long query_long(PGconn *c, const char *sql)
{
    char *v = testenv_query_value(c, sql);
    long n = strtol(v, NULL, 10);
    free(v);
    return n;
}

struct stored_wait {
    PGconn *conn;
    long actions, states;
};

static int stored_reached(void *ud)
{
    struct stored_wait *w = ud;
    return tcount(w->conn, "action_events") == w->actions &&
           tcount(w->conn, "state_events") == w->states;
}

/* Replays the fixture actions and states and lets a daemon store them. */
static void ingest_fixtures(const char *dsn, PGconn *c, const char *group)
{
    char pa[512], ps[512];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 3);
    treplay(bin, m.brokers, "ops.actions", testenv_fixture("events/actions.jsonl", pa, sizeof pa));
    treplay(bin, m.brokers, "ops.states", testenv_fixture("events/states.jsonl", ps, sizeof ps));
    struct tdaemon d;
    tdaemon_config(&d, group, m.brokers, group, NULL);
    tdaemon_start(&d, bin, dsn, NULL);
    struct stored_wait w = {c, 30, 40};
    if (!twait_until(stored_reached, &w, 60))
        fail_msg("fixtures not stored in 60 s; see %s", d.log);
    assert_int_equal(tdaemon_stop(&d, SIGTERM, 20), 0);
    tmock_stop(&m);
}

/* Runs understudy train with UNDERSTUDY_PG_DSN=dsn; returns its JSON line. */
static json_t *run_train(const char *dsn, const char *const *extra, int want_status)
{
    const char *args[32] = {"train", "--from-db"};
    size_t n = 2;
    for (; extra && *extra; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    char *out = testenv_run_bin(dsn, args, want_status);
    json_t *j = NULL;
    if (want_status == 0) {
        json_error_t je;
        j = json_loads(out, JSON_DISABLE_EOF_CHECK, &je);
        if (!j)
            fail_msg("train printed no JSON line (%s): %s", je.text, out);
    }
    free(out);
    return j;
}

/* Collects NOTIFY understudy_policy payloads for up to ms. */
static int collect_notifies(PGconn *listener, int *got, int max, int want, long ms)
{
    int n = 0;
    for (long waited = 0; waited <= ms && n < want; waited += 50) {
        assert_int_equal(PQconsumeInput(listener), 1);
        PGnotify *nt;
        while ((nt = PQnotifies(listener)) != NULL) {
            if (strcmp(nt->relname, "understudy_policy") == 0 && n < max)
                got[n++] = atoi(nt->extra);
            PQfreemem(nt);
        }
        if (n < want)
            tsleep_ms(50);
    }
    return n;
}

static void test_train_from_db_promotes_and_notifies(void **state)
{
    (void)state;
    char dsn[512];
    testenv_create_db("understudy_t_train", dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);
    ingest_fixtures(dsn, c, "train-fixtures");

    /* The examples, counted here with the contract's rule written out
     * independently: every action, plus each snapshot with no action on
     * its entity within [ts - 30 min, ts + 60 min]. */
    long holds = query_long(c, "SELECT count(*) FROM state_events s WHERE NOT EXISTS ("
                               " SELECT 1 FROM action_events a WHERE a.entity_id = s.entity_id"
                               " AND a.entity_type = s.entity_type"
                               " AND a.ts BETWEEN s.ts - interval '30 minutes'"
                               " AND s.ts + interval '60 minutes')");
    assert_true(holds > 0 && holds < 40);

    PGconn *listener = testenv_connect(dsn);
    exec_ok(listener, "LISTEN understudy_policy");

    const char *args1[] = {"--promote", "--rounds", "30", "--valid-fraction", "0.25", NULL};
    json_t *j = run_train(dsn, args1, 0);
    assert_int_equal(json_integer_value(json_object_get(j, "rows")), 30 + holds);
    assert_int_equal(json_integer_value(json_object_get(j, "valid_rows")),
                     (long)floor((30 + holds) * 0.25 + 0.5));
    assert_true(json_is_true(json_object_get(j, "promoted")));
    assert_true(json_is_null(json_object_get(j, "champion_before")));
    double ll1 = json_real_value(json_object_get(j, "valid_logloss"));
    assert_true(isfinite(ll1) && ll1 > 0);
    long v1 = (long)json_integer_value(json_object_get(j, "version"));
    assert_true(v1 > 0);
    json_decref(j);

    char sql[256];
    snprintf(sql, sizeof sql, "SELECT version FROM policies WHERE status = 'champion'");
    assert_int_equal(query_long(c, sql), v1);
    assert_int_equal(query_long(c, "SELECT n_examples FROM policies WHERE status = 'champion'"),
                     30 + holds);
    /* The stored model is the understudy-gbm document with its metadata. */
    char *fmt = testenv_query_value(c, "SELECT model->>'format' || ' ' ||"
                                       " (metrics->>'valid_rows') FROM policies"
                                       " WHERE status = 'champion'");
    char want[64];
    snprintf(want, sizeof want, "understudy-gbm %ld", (long)floor((30 + holds) * 0.25 + 0.5));
    assert_string_equal(fmt, want);
    free(fmt);

    int got[4];
    assert_int_equal(collect_notifies(listener, got, 4, 1, 5000), 1);
    assert_int_equal(got[0], v1);

    /* Without --promote: a challenger, no notification. */
    const char *args2[] = {"--rounds", "30", "--valid-fraction", "0.25", NULL};
    j = run_train(dsn, args2, 0);
    long v2 = (long)json_integer_value(json_object_get(j, "version"));
    assert_true(v2 > v1);
    assert_true(json_is_false(json_object_get(j, "promoted")));
    json_decref(j);
    assert_int_equal(query_long(c, "SELECT version FROM policies WHERE status = 'champion'"), v1);
    assert_int_equal(collect_notifies(listener, got, 4, 1, 500), 0);

    /* A much weaker challenger (one round at learning rate 0.01) is compared on the same rows
     * and loses; the champion stays. */
    const char *args3[] = {"--promote", "--rounds",         "1",    "--learning-rate",
                           "0.01",      "--valid-fraction", "0.25", NULL};
    j = run_train(dsn, args3, 0);
    assert_true(json_is_false(json_object_get(j, "promoted")));
    assert_int_equal(json_integer_value(json_object_get(j, "champion_before")), v1);
    double champ_ll = json_real_value(json_object_get(j, "champion_valid_logloss"));
    assert_true(fabs(champ_ll - ll1) < 1e-9); /* the champion, rescored on the same rows */
    assert_true(json_real_value(json_object_get(j, "valid_logloss")) > champ_ll);
    json_decref(j);
    assert_int_equal(query_long(c, "SELECT version FROM policies WHERE status = 'champion'"), v1);

    /* The same training again is not worse (equal): promoted, v1 retired. */
    j = run_train(dsn, args1, 0);
    long v4 = (long)json_integer_value(json_object_get(j, "version"));
    assert_true(json_is_true(json_object_get(j, "promoted")));
    assert_true(fabs(json_real_value(json_object_get(j, "valid_logloss")) - ll1) < 1e-12);
    json_decref(j);
    assert_int_equal(query_long(c, "SELECT version FROM policies WHERE status = 'champion'"), v4);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM policies WHERE version = %ld"
             " AND status = 'retired'",
             v1);
    assert_int_equal(query_long(c, sql), 1);
    assert_int_equal(collect_notifies(listener, got, 4, 1, 5000), 1);
    assert_int_equal(got[0], v4);

    /* model show reads a version from the registry. */
    char vbuf[16];
    snprintf(vbuf, sizeof vbuf, "%ld", v4);
    const char *show[] = {testenv_get("UNDERSTUDY_BIN"), "model", "show", "--version", vbuf, NULL};
    char *out = NULL;
    setenv("UNDERSTUDY_PG_DSN", dsn, 1);
    assert_int_equal(testenv_run(show, NULL, &out, NULL), 0);
    unsetenv("UNDERSTUDY_PG_DSN");
    assert_non_null(strstr(out, "(champion)"));
    assert_non_null(strstr(out, "classes: hold bid_up bid_down"));
    assert_non_null(strstr(out, "cpa_ratio"));
    free(out);

    /* Bad input: an empty time range has no examples. */
    const char *args5[] = {"--since", "2030-01-01T00:00:00Z", NULL};
    run_train(dsn, args5, 1);
    const char *args6[] = {"--since", "yesterday", NULL};
    run_train(dsn, args6, 2);

    PQfinish(listener);
    PQfinish(c);
}

struct leader_wait {
    struct tdaemon *d;
};

static int champion_known(void *ud)
{
    struct leader_wait *w = ud;
    int code = 0;
    char *body = tdaemon_http(w->d, "/metrics", &code);
    double v = body ? tdaemon_metric_value(body, "understudy_policy_champion_version") : -1;
    free(body);
    return v > 0;
}

static void test_train_daemon_retrains_only_on_the_lock_holder(void **state)
{
    (void)state;
    char dsn[512];
    testenv_create_db("understudy_t_train_daemon", dsn, sizeof dsn);
    tmigrate(dsn);
    PGconn *c = testenv_connect(dsn);
    ingest_fixtures(dsn, c, "train-daemon-fixtures");

    const char *bin = testenv_get("UNDERSTUDY_BIN");
    struct tmock m;
    tmock_start(&m, "ops.actions,ops.states,ops.feedback", 3);
    const char *extra = "train:\n  enabled: true\n  rounds: 20\n  every: 1h\n"
                        "  after_new_actions: 25\n";
    struct tdaemon a, b;
    tdaemon_config(&a, "leader-a", m.brokers, "leaders", extra);
    tdaemon_config(&b, "leader-b", m.brokers, "leaders", extra);
    tdaemon_start(&a, bin, dsn, NULL);
    tdaemon_start(&b, bin, dsn, NULL);

    /* There is no policy yet, so the lock holder trains at once. */
    struct leader_wait wa = {&a}, wb = {&b};
    int code = 0;
    for (int i = 0; i < 300 && !(champion_known(&wa) || champion_known(&wb)); i++)
        tsleep_ms(100);
    char *ba = tdaemon_http(&a, "/metrics", &code);
    char *bb = tdaemon_http(&b, "/metrics", &code);
    assert_non_null(ba);
    assert_non_null(bb);
    double la = tdaemon_metric_value(ba, "understudy_train_leader");
    double lb = tdaemon_metric_value(bb, "understudy_train_leader");
    assert_true((la > 0.5) != (lb > 0.5)); /* exactly one trains */
    struct tdaemon *leader = la > 0.5 ? &a : &b, *other = la > 0.5 ? &b : &a;
    assert_true(tdaemon_metric_value(la > 0.5 ? ba : bb,
                                     "understudy_train_runs_total{result=\"promoted\"}") >= 1);
    assert_true(tdaemon_metric_value(la > 0.5 ? bb : ba,
                                     "understudy_train_runs_total{result=\"promoted\"}") < 0.5);
    free(ba);
    free(bb);
    assert_int_equal(query_long(c, "SELECT count(*) FROM policies WHERE status = 'champion'"), 1);
    assert_int_equal(query_long(c, "SELECT count(*) FROM policies"), 1);

    /* 40 new actions pass train.after_new_actions: the leader trains again. */
    char path[600];
    snprintf(path, sizeof path, "%s/late-actions.jsonl", testenv_get("UNDERSTUDY_TEST_TMP"));
    struct tgen g = {.kind = "action", .n = 40, .first_id = 1, .prefix = "late", .seed = 3};
    struct tgen_counts gc;
    tgen_write(&g, path, &gc);
    treplay(bin, m.brokers, "ops.actions", path);
    long policies = 0;
    for (int i = 0; i < 600 && policies < 2; i++) {
        policies = query_long(c, "SELECT count(*) FROM policies");
        if (policies < 2)
            tsleep_ms(100);
    }
    assert_int_equal(policies, 2);
    assert_int_equal(tcount(c, "action_events"), 70);

    /* The leader goes away; the other takes the lock over (it trains only
     * when due, and the champion is fresh, so it just leads). */
    assert_int_equal(tdaemon_stop(leader, SIGTERM, 30), 0);
    int led = 0;
    for (int i = 0; i < 200 && !led; i++) {
        char *body = tdaemon_http(other, "/metrics", &code);
        led = body && tdaemon_metric_value(body, "understudy_train_leader") > 0.5;
        free(body);
        if (!led)
            tsleep_ms(100);
    }
    assert_true(led);
    (void)wb;
    assert_int_equal(query_long(c, "SELECT count(*) FROM policies"), 2);
    assert_int_equal(tdaemon_stop(other, SIGTERM, 30), 0);
    tmock_stop(&m);
    PQfinish(c);
}

/* Runs argv; returns the exit status, stdout and stderr (caller frees). */
static int run_cmd(const char *const *argv, char **out, char **err)
{
    return testenv_run(argv, NULL, out, err);
}

static void test_train_csv_predict_and_model_show(void **state)
{
    (void)state;
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dir[512], csv[600], model[600], rows[600], bad[600];
    snprintf(dir, sizeof dir, "%s/train-csv", testenv_get("UNDERSTUDY_TEST_TMP"));
    snprintf(csv, sizeof csv, "%s/examples.csv", dir);
    snprintf(model, sizeof model, "%s/model.json", dir);
    snprintf(rows, sizeof rows, "%s/rows.csv", dir);
    snprintf(bad, sizeof bad, "%s/bad.csv", dir);
    char *out = NULL, *err = NULL;

    const char *sim[] = {bin, "simulate", "--out", dir, "--rows", "3000", "--seed", "5", NULL};
    assert_int_equal(run_cmd(sim, &out, &err), 0);
    free(out);
    free(err);

    const char *train[] = {bin,        "train", "--csv", csv,   "--label", "label",
                           "--rounds", "20",    "--out", model, NULL};
    assert_int_equal(run_cmd(train, &out, &err), 0);
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "rows")), 3000);
    assert_int_equal(json_integer_value(json_object_get(j, "valid_rows")), 600);
    assert_int_equal(json_integer_value(json_object_get(j, "classes")), 7);
    assert_null(json_object_get(j, "version")); /* not registered */
    json_decref(j);
    free(out);
    free(err);

    /* predict: the header is the class list, one probability row per input row. */
    FILE *f = fopen(rows, "w");
    assert_non_null(f);
    FILE *src = fopen(csv, "r");
    assert_non_null(src);
    char line[8192];
    for (int i = 0; i < 6 && fgets(line, sizeof line, src); i++)
        fputs(line, f);
    fclose(src);
    fclose(f);
    const char *predict[] = {bin, "predict", "--model", model, "--csv", rows, NULL};
    assert_int_equal(run_cmd(predict, &out, &err), 0);
    char *save = NULL, *l = strtok_r(out, "\n", &save);
    assert_string_equal(l, "bid_down,bid_up,budget_down,budget_up,creative_pause,creative_resume,"
                           "hold");
    int n = 0;
    while ((l = strtok_r(NULL, "\n", &save)) != NULL) {
        double sum = 0;
        int fields = 0;
        for (char *p = l, *e; *p; p = *e ? e + 1 : e, fields++) {
            double v = strtod(p, &e);
            assert_true(v >= 0 && v <= 1);
            sum += v;
        }
        assert_int_equal(fields, 7);
        assert_true(fabs(sum - 1) < 1e-6);
        n++;
    }
    assert_int_equal(n, 5);
    free(out);
    free(err);

    /* --timing reports the scoring rate on stderr and changes nothing else. */
    const char *timed[] = {bin, "predict", "--model", model, "--csv", rows, "--timing", NULL};
    char *out2 = NULL;
    assert_int_equal(run_cmd(predict, &out, &err), 0);
    free(err);
    assert_int_equal(run_cmd(timed, &out2, &err), 0);
    assert_string_equal(out, out2);
    assert_non_null(strstr(err, "predict: scored 5 rows in "));
    free(out);
    free(out2);
    free(err);

    const char *show[] = {bin, "model", "show", model, NULL};
    assert_int_equal(run_cmd(show, &out, &err), 0);
    assert_non_null(strstr(out, "features by total split gain:"));
    assert_non_null(strstr(out, "feature cpa_ratio (numeric)"));
    free(out);
    free(err);

    /* Bad input: usage errors exit 2, bad files exit 1 with the reason. */
    const char *u1[] = {bin, "train", "--csv", csv, NULL};
    const char *u2[] = {bin, "train", "--csv", csv, "--label", "label", "--promote", NULL};
    const char *u3[] = {bin, "train", "--from-db", "--rounds", "0", NULL};
    const char *u4[] = {bin, "predict", "--model", model, NULL};
    const char *u5[] = {bin, "simulate", "--out", dir, "--bias", "op-01:never=fly", NULL};
    const char *const *usage[] = {u1, u2, u3, u4, u5};
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        assert_int_equal(run_cmd(usage[i], &out, &err), 2);
        assert_non_null(strstr(err, "usage: understudy"));
        free(out);
        free(err);
    }
    f = fopen(bad, "w");
    assert_non_null(f);
    fputs("a,b,label\n1,2,hold\n3,4\n", f);
    fclose(f);
    const char *b1[] = {bin, "train", "--csv", bad, "--label", "label", NULL};
    assert_int_equal(run_cmd(b1, &out, &err), 1);
    char want[700];
    snprintf(want, sizeof want, "%s:3: 2 fields, header has 3", bad);
    assert_non_null(strstr(err, want));
    free(out);
    free(err);
    const char *b2[] = {bin, "model", "show", bad, NULL};
    assert_int_equal(run_cmd(b2, &out, &err), 1);
    assert_non_null(strstr(err, bad));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_csv_predict_and_model_show),
        cmocka_unit_test(test_train_from_db_promotes_and_notifies),
        cmocka_unit_test(test_train_daemon_retrains_only_on_the_lock_holder),
    };
    return cmocka_run_group_tests_name("train", tests, NULL, NULL);
}
