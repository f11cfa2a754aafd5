/*
 * policy: storing a trained run in the registry and promoting it.
 *
 * The comparison is on the new run's validation rows: the champion's model
 * is loaded from the registry and scored on exactly those rows by
 * policy_run_evaluate, and the challenger wins ties ("not worse").  A run
 * without validation rows cannot be compared and is promoted only when
 * there is no champion.  Between reading the champion and promoting,
 * another instance may promote; store_policy_promote notices and the run
 * stays a challenger.
 */
#include "policy/policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "log/log.h"
#include "util/util.h"

static char *object_text(const struct gbm_model *m, const char *key)
{
    const json_t *meta = gbm_model_metadata(m);
    json_t *v = meta ? json_object_get(meta, key) : NULL;
    return v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
}

int policy_register(struct store *st, const struct policy_run *run, bool promote,
                    struct policy_registration *reg, char *err, size_t errlen)
{
    const struct policy_train_result *res = policy_run_result(run);
    const struct gbm_model *model = policy_run_model(run);
    char *text = gbm_model_to_json(model);
    char *params = object_text(model, "parameters");
    char *metrics = object_text(model, "metrics");
    char *champ_json = NULL;
    struct gbm_model *champ = NULL;
    int rc = -1;

    memset(reg, 0, sizeof *reg);
    reg->champion_logloss = NAN;
    if (!text || !params || !metrics) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    struct store_policy_row row = {
        .model_json = text,
        .parameters_json = params,
        .metrics_json = metrics,
        .train_from_us = res->train_from_us,
        .train_to_us = res->train_to_us,
        .n_examples = (int64_t)res->rows,
    };
    if (store_policy_insert(st, &row, &reg->version, err, errlen) != 0)
        goto out;
    if (!promote) {
        util_fmt(reg->why, sizeof reg->why, "stored as a challenger (promotion not asked for)");
        rc = 0;
        goto out;
    }
    if (store_policy_champion(st, &reg->champion_before, &champ_json, err, errlen) != 0)
        goto out;
    if (reg->champion_before) {
        char why[256];
        if (gbm_model_from_json(champ_json, strlen(champ_json), &champ, why, sizeof why) != 0) {
            log_warn("policy: champion version %d cannot be loaded (%s); replacing it",
                     reg->champion_before, why);
        } else if (policy_run_evaluate(run, champ, &reg->champion_logloss, &(double){0}, err,
                                       errlen) != 0) {
            goto out;
        } else if (isnan(res->valid_logloss) || isnan(reg->champion_logloss)) {
            util_fmt(reg->why, sizeof reg->why,
                     "not promoted: no validation rows to compare with champion version %d",
                     reg->champion_before);
            rc = 0;
            goto out;
        } else if (res->valid_logloss > reg->champion_logloss) {
            util_fmt(reg->why, sizeof reg->why,
                     "not promoted: validation log loss %.6f is worse than champion version "
                     "%d's %.6f on the same rows",
                     res->valid_logloss, reg->champion_before, reg->champion_logloss);
            rc = 0;
            goto out;
        }
    }
    int p = store_policy_promote(st, reg->version, reg->champion_before, err, errlen);
    if (p < 0)
        goto out;
    if (p == 1) {
        util_fmt(reg->why, sizeof reg->why,
                 "not promoted: the champion changed while this run was compared");
    } else {
        reg->promoted = true;
        if (!reg->champion_before)
            util_fmt(reg->why, sizeof reg->why, "promoted: there was no champion");
        else if (isnan(reg->champion_logloss))
            util_fmt(reg->why, sizeof reg->why, "promoted: champion version %d could not be loaded",
                     reg->champion_before);
        else
            util_fmt(reg->why, sizeof reg->why,
                     "promoted: validation log loss %.6f vs champion version %d's %.6f",
                     res->valid_logloss, reg->champion_before, reg->champion_logloss);
    }
    rc = 0;
out:
    gbm_model_free(champ);
    free(champ_json);
    free(text);
    free(params);
    free(metrics);
    return rc;
}
