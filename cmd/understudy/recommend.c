/*
 * understudy recommend: score state snapshots with a policy and print what
 * the recommender would write, one JSON object per line (internal/recommend
 * does the work).  This version reads snapshots from a JSONL file and only
 * prints (--dry-run); writing recommendations to PostgreSQL is the
 * daemon's job and comes with it.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "event/event.h"
#include "gbm/gbm.h"
#include "log/log.h"
#include "recommend/recommend.h"
#include "store/store.h"
#include "util/util.h"

enum {
    OPT_JSONL = 256,
    OPT_MODEL,
    OPT_DRY_RUN,
};

/* Loads the model from a file, or the champion from the registry. */
static int load_policy(const struct cfg *cfg, const char *path, struct gbm_model **m, int *version,
                       char *err, size_t errlen)
{
    int rc = -1;
    *version = 0;
    if (path)
        return load_model_file(path, m, err, errlen);
    struct store *st = NULL;
    char *text = NULL;
    if (store_connect(cfg->postgres.dsn, cfg->postgres.password_file, &st, err, errlen) == 0 &&
        store_policy_champion(st, version, &text, err, errlen) == 0) {
        if (!*version)
            util_fmt(err, errlen,
                     "there is no champion policy yet (understudy train --from-db "
                     "--promote), and no --model was given");
        else if (gbm_model_from_json(text, strlen(text), m, err, errlen) == 0)
            rc = 0;
    }
    free(text);
    store_free(st);
    return rc;
}

/* One result as a JSON line on stdout. */
static int print_result(const struct recommend_scorer *sc, const struct event *ev, int version,
                        const struct recommend_result *r)
{
    json_t *j = json_object();
    if (!j)
        return -1;
    json_object_set_new(j, "state_event_id", json_string(ev->event_id));
    json_object_set_new(j, "entity_type", json_string(event_entity_name(ev->entity_type)));
    json_object_set_new(j, "entity_id", json_string(ev->entity_id));
    json_object_set_new(j, "campaign_id", json_string(ev->campaign_id));
    json_object_set_new(j, "operator_id",
                        ev->operator_id ? json_string(ev->operator_id) : json_null());
    json_object_set_new(j, "policy_version", version ? json_integer(version) : json_null());
    json_object_set_new(j, "status", json_string(recommend_status_name(r->status)));
    json_object_set_new(
        j, "reason",
        r->status == RECOMMEND_OPEN ? json_null() : json_string(recommend_reason_name(r->reason)));
    json_object_set_new(j, "action", json_string(event_class_name(r->cls)));
    json_object_set_new(j, "confidence", json_real(r->confidence));
    json_object_set_new(j, "delta_pct",
                        isfinite(r->delta_pct) ? json_real(r->delta_pct) : json_null());
    json_object_set_new(j, "explanation",
                        r->explanation ? json_string(r->explanation) : json_null());
    json_object_set_new(j, "probabilities", recommend_probabilities_json(sc, r));
    json_object_set_new(j, "contributions", recommend_contributions_json(sc, r));
    json_object_set_new(j, "ood_score", json_real(r->ood_score));
    json_object_set_new(j, "ood_reasons", recommend_ood_json(sc, r));
    json_object_set_new(j, "guardrails", recommend_guardrails_json(r));
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(j);
    if (!s)
        return -1;
    int rc = printf("%s\n", s) < 0 ? -1 : 0;
    free(s);
    return rc;
}

int cmd_recommend(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"jsonl", required_argument, NULL, OPT_JSONL},
        {"model", required_argument, NULL, OPT_MODEL},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *jsonl = NULL, *model = NULL;
    bool dry_run = false;
    int c;
    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_JSONL:
            jsonl = optarg;
            break;
        case OPT_MODEL:
            model = optarg;
            break;
        case OPT_DRY_RUN:
            dry_run = true;
            break;
        case 'h':
            print_command_usage(stdout, find_command("recommend"));
            return 0;
        default:
            return option_error("recommend", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("recommend", "unexpected argument %s", argv[optind]);
    if (!jsonl)
        return usage_error("recommend", "--jsonl FILE is required");
    if (!dry_run)
        return usage_error("recommend", "only --dry-run is available: the daemon writes "
                                        "recommendations");

    struct cfg *cfg = load_config(config_path_from(config));
    if (!cfg)
        return EXIT_USAGE;
    struct gbm_model *m = NULL;
    struct recommend_scorer *sc = NULL;
    struct recommend_result r;
    struct recommend_guardrails g;
    FILE *in = NULL;
    char *line = NULL;
    size_t cap = 0, lineno = 0, scored = 0, opened = 0, bad = 0;
    char err[1024];
    int version = 0, rc = 1;

    recommend_result_init(&r);
    recommend_guardrails_default(&g);
    g.min_confidence = cfg->recommend.min_confidence;
    g.ood_threshold = cfg->recommend.ood_threshold;
    if (load_policy(cfg, model, &m, &version, err, sizeof err) != 0 ||
        recommend_scorer_new(m, &sc, err, sizeof err) != 0)
        goto fail;
    if (strcmp(jsonl, "-") == 0) {
        in = stdin;
    } else if (!(in = fopen(jsonl, "r"))) {
        util_fmt(err, sizeof err, "%s: cannot open: %s", jsonl, strerror(errno));
        goto fail;
    }
    struct event_limits lim = {.max_bytes = (size_t)cfg->ingest.max_message_bytes};
    ssize_t n;
    while ((n = getline(&line, &cap, in)) != -1) {
        struct event ev;
        char why[512];
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        memset(&ev, 0, sizeof ev);
        if (event_decode(EVENT_KIND_STATE, line, (size_t)n, &lim, &ev, why, sizeof why) != 0) {
            log_warn("recommend: %s:%zu: not a state snapshot: %s", jsonl, lineno, why);
            bad++;
            continue;
        }
        struct recommend_input ri = {
            .snapshot = &ev,
            .now_us = ev.ts_us,
            .last_action_us = INT64_MIN,
            .last_recommendation_us = INT64_MIN,
        };
        int s = recommend_score(sc, &g, &ri, &r, err, sizeof err);
        if (s == 0 && print_result(sc, &ev, version, &r) != 0) {
            util_fmt(err, sizeof err, "write error on stdout");
            s = -1;
        }
        event_deinit(&ev);
        if (s != 0)
            goto fail;
        scored++;
        opened += r.status == RECOMMEND_OPEN;
    }
    if (ferror(in)) {
        util_fmt(err, sizeof err, "%s: read error", jsonl);
        goto fail;
    }
    if (fflush(stdout) != 0) {
        util_fmt(err, sizeof err, "write error on stdout");
        goto fail;
    }
    log_info("recommend: %zu snapshot(s) scored, %zu would be open recommendations, %zu "
             "abstentions, %zu line(s) not snapshots",
             scored, opened, scored - opened, bad);
    rc = bad ? 1 : 0;
    goto out;
fail:
    log_error("recommend: %s", err);
out:
    if (in && in != stdin)
        fclose(in);
    free(line);
    recommend_result_deinit(&r);
    recommend_scorer_free(sc);
    gbm_model_free(m);
    cfg_free(cfg);
    return rc;
}
