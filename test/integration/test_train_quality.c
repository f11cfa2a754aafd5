/*
 * The trainer's quality test: on `understudy simulate` data, the validation
 * log loss of `understudy train --csv` must be no worse than XGBoost's
 * (Debian python3-xgboost through scripts/xgb-reference.py) + 0.002, with
 * the same rounds, learning rate, depth-1 trees, 256 bins, lambda and
 * min_child_weight and the same time-ordered validation rows.  Timing is
 * not checked here (bench/train does that).
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

static json_t *last_json_line(const char *out)
{
    const char *p = out, *line = out;
    while ((p = strchr(p, '\n')) != NULL && p[1])
        line = ++p;
    json_error_t je;
    json_t *j = json_loads(line, JSON_DISABLE_EOF_CHECK, &je);
    if (!j)
        fail_msg("no JSON line (%s) in: %s", je.text, out);
    return j;
}

static void compare_on(const char *name, const char *seed, const char *rows, const char *extra_bias)
{
    char dir[512], csv[600];
    const char *bin = testenv_get("UNDERSTUDY_BIN");
    snprintf(dir, sizeof dir, "%s/quality-%s", testenv_get("UNDERSTUDY_TEST_TMP"), name);
    snprintf(csv, sizeof csv, "%s/examples.csv", dir);
    const char *sim[] = {bin,        "simulate", "--out",
                         dir,        "--rows",   rows,
                         "--seed",   seed,       extra_bias ? "--bias" : NULL,
                         extra_bias, NULL};
    char *out = NULL, *err = NULL;
    if (testenv_run(sim, NULL, &out, &err) != 0)
        fail_msg("simulate failed: %s", err);
    free(out);
    free(err);

    const char *common[] = {"--rounds",  "200",      "--learning-rate",    "0.3",
                            "--lambda",  "1",        "--min-child-weight", "1",
                            "--threads", "2",        "--valid-fraction",   "0.2",
                            "--drop",    "delta_pct"};
    const size_t nc = sizeof common / sizeof common[0];
    const char *x[32] = {"/usr/bin/python3",
                         "scripts/xgb-reference.py",
                         "--csv",
                         csv,
                         "--label",
                         "label",
                         "--max-bins",
                         "256"};
    const char *u[32] = {bin,          "train", "--csv",        csv, "--label", "label",
                         "--max-bins", "255",   "--early-stop", "0"};
    memcpy(x + 8, common, nc * sizeof *common);
    memcpy(u + 10, common, nc * sizeof *common);

    if (testenv_run(x, NULL, &out, &err) != 0)
        fail_msg("xgb-reference.py failed: %s", err);
    json_t *jx = last_json_line(out);
    free(out);
    free(err);
    if (testenv_run(u, NULL, &out, &err) != 0)
        fail_msg("understudy train failed: %s", err);
    json_t *ju = last_json_line(out);
    free(out);
    free(err);

    double lx = json_real_value(json_object_get(jx, "valid_logloss"));
    double lu = json_real_value(json_object_get(ju, "valid_logloss"));
    long rx = (long)json_integer_value(json_object_get(jx, "valid_rows"));
    long ru = (long)json_integer_value(json_object_get(ju, "valid_rows"));
    print_message("%s: %s rows, validation log loss: understudy %.5f, XGBoost %.5f (%+.5f); "
                  "accuracy %.4f vs %.4f\n",
                  name, rows, lu, lx, lu - lx,
                  json_real_value(json_object_get(ju, "valid_accuracy")),
                  json_real_value(json_object_get(jx, "valid_accuracy")));
    assert_int_equal(ru, rx); /* the same validation rows */
    assert_int_equal(json_integer_value(json_object_get(ju, "rows")),
                     json_integer_value(json_object_get(jx, "rows")));
    assert_true(isfinite(lx) && isfinite(lu));
    assert_true(lu <= lx + 0.002);
    json_decref(jx);
    json_decref(ju);
}

static void test_train_quality_matches_xgboost(void **state)
{
    (void)state;
    compare_on("seed1", "1", "20000", NULL);
}

static void test_train_quality_matches_xgboost_with_biased_operators(void **state)
{
    (void)state;
    compare_on("seed7", "7", "30000", "op-02:never=bid_down");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_quality_matches_xgboost),
        cmocka_unit_test(test_train_quality_matches_xgboost_with_biased_operators),
    };
    return cmocka_run_group_tests_name("train_quality", tests, NULL, NULL);
}
