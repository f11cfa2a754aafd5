/*
 * `understudy recommend --jsonl --dry-run`: scores simulated snapshots with
 * a model trained on the same simulation and prints one JSON line each;
 * the explanations add up to the margin, and a snapshot far outside the
 * training data is abstained with reasons that name its features.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "testenv.h"

static void run_ok(const char *const *argv, char **out)
{
    char *err = NULL;
    int st = testenv_run(argv, NULL, out, &err);
    if (st != 0)
        fail_msg("%s %s exited %d: %s", argv[0], argv[1], st, err);
    free(err);
}

static void test_recommend_dry_run_scores_and_abstains(void **state)
{
    (void)state;
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    char dir[512], csv[600], model[600], states[600], odd[600];
    snprintf(dir, sizeof dir, "%s/recommend-cli", testenv_get("UNDERSTUDY_TEST_TMP"));
    snprintf(csv, sizeof csv, "%s/examples.csv", dir);
    snprintf(model, sizeof model, "%s/model.json", dir);
    snprintf(states, sizeof states, "%s/states.jsonl", dir);
    snprintf(odd, sizeof odd, "%s/odd.jsonl", dir);
    char *out = NULL;
    const char *sim[] = {bin, "simulate", "--out", dir, "--rows", "4000", "--seed", "11", NULL};
    run_ok(sim, &out);
    free(out);
    /* simulate's features.yaml is a configuration declaring every state key. */
    char feats[600];
    snprintf(feats, sizeof feats, "%s/features.yaml", dir);
    const char *check[] = {bin, "check-config", "-c", feats, NULL};
    run_ok(check, &out);
    assert_non_null(strstr(out, "{name: \"entity_type\", type: categorical}"));
    assert_non_null(strstr(out, "{name: \"status\", type: categorical}"));
    assert_non_null(strstr(out, "{name: \"quality_score\", type: numeric}"));
    free(out);
    const char *train[] = {bin,        "train", "--csv", csv,   "--label", "label",
                           "--rounds", "40",    "--out", model, NULL};
    run_ok(train, &out);
    free(out);

    /* The first 300 snapshots, then one far outside the training data. */
    FILE *in = fopen(states, "r"), *f = fopen(odd, "w");
    assert_non_null(in);
    assert_non_null(f);
    char line[8192];
    for (int i = 0; i < 300 && fgets(line, sizeof line, in); i++)
        fputs(line, f);
    fclose(in);
    fputs("{\"event_id\": \"odd-1\", \"ts\": \"2026-11-01T00:00:00Z\", \"operator_id\": \"op-01\","
          " \"campaign_id\": \"cmp-0001\", \"entity_type\": \"ad_group\", \"entity_id\": "
          "\"ag-0001-1\", \"state\": {\"cpa_ratio\": 1000000, \"channel\": \"metaverse\"}}\n",
          f);
    fclose(f);

    const char *rec[] = {bin, "recommend", "--jsonl", odd, "--dry-run", "--model", model, NULL};
    run_ok(rec, &out);
    int n = 0, open = 0;
    json_t *last = NULL;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *j = json_loads(l, 0, &je);
        if (!j)
            fail_msg("line %d is not JSON (%s): %s", n + 1, je.text, l);
        n++;
        const char *status = json_string_value(json_object_get(j, "status"));
        const char *action = json_string_value(json_object_get(j, "action"));
        assert_non_null(status);
        assert_non_null(action);
        if (strcmp(status, "open") == 0) {
            open++;
            assert_string_not_equal(action, "hold");
            assert_true(json_real_value(json_object_get(j, "confidence")) >= 0.5);
            assert_true(strlen(json_string_value(json_object_get(j, "explanation"))) > 10);
            assert_non_null(strstr(json_string_value(json_object_get(j, "explanation")), "toward"));
        } else {
            assert_string_equal(status, "abstain");
            assert_non_null(json_string_value(json_object_get(j, "reason")));
        }
        /* Exactness: base + contributions = margin of the chosen class. */
        json_t *c = json_object_get(j, "contributions");
        double sum = json_real_value(json_object_get(c, "base"));
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(c, "features"), k, v)
        {
            sum += json_real_value(json_object_get(v, "contribution"));
        }
        assert_true(fabs(sum - json_real_value(json_object_get(c, "margin"))) < 1e-9);
        json_decref(last);
        last = j;
    }
    free(out);
    assert_int_equal(n, 301);
    assert_true(open > 0 && open < 300);

    /* The odd snapshot: far above the cpa_ratio range and an unseen channel. */
    assert_string_equal(json_string_value(json_object_get(last, "state_event_id")), "odd-1");
    assert_string_equal(json_string_value(json_object_get(last, "status")), "abstain");
    assert_string_equal(json_string_value(json_object_get(last, "reason")), "out_of_distribution");
    assert_true(json_real_value(json_object_get(last, "ood_score")) > 10);
    char *reasons = json_dumps(json_object_get(last, "ood_reasons"), 0);
    assert_non_null(strstr(reasons, "\"cpa_ratio\""));
    assert_non_null(strstr(reasons, "above the training range"));
    assert_non_null(strstr(reasons, "\"channel\""));
    free(reasons);
    json_decref(last);

    /* Usage: --dry-run is required for now; no input is an error. */
    const char *u1[] = {bin, "recommend", "--jsonl", odd, "--model", model, NULL};
    const char *u2[] = {bin, "recommend", "--dry-run", NULL};
    char *err = NULL;
    assert_int_equal(testenv_run(u1, NULL, NULL, &err), 2);
    free(err);
    assert_int_equal(testenv_run(u2, NULL, NULL, &err), 2);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recommend_dry_run_scores_and_abstains),
    };
    return cmocka_run_group_tests_name("recommend_cli", tests, NULL, NULL);
}
