/*
 * understudy recommend: score state snapshots with the champion (or a
 * model file) outside the daemon.  Snapshots come from a JSONL file
 * (--jsonl, always --dry-run: they are not stored events) or from
 * state_events (--from-db: those with no recommendation or abstention yet,
 * or with --since every one from that time on).  --dry-run prints one JSON
 * object per snapshot (recommend_result_json); otherwise the rows are
 * written exactly as the daemon writes them (internal/recommend), so
 * running it twice, or while the daemon runs, writes nothing twice.
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
#include "recommend/recommender.h"
#include "store/store.h"
#include "util/util.h"

enum {
    OPT_JSONL = 256,
    OPT_MODEL,
    OPT_DRY_RUN,
    OPT_FROM_DB,
    OPT_SINCE,
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

/* --from-db: pages of stored snapshots, printed or written. */
static int from_db(const struct cfg *cfg, const struct recommend_scorer *sc, int version,
                   const struct recommend_guardrails *g, bool since, int64_t since_us, bool dry_run,
                   char *err, size_t errlen)
{
    struct store *st = NULL;
    struct recommend_batch_stats stats;
    int64_t scored_through = 0, max_id = 0;
    int rc = -1;

    memset(&stats, 0, sizeof stats);
    if (store_connect(cfg->postgres.dsn, cfg->postgres.password_file, &st, err, errlen) != 0 ||
        store_recs_progress(st, &scored_through, &max_id, err, errlen) != 0)
        goto out;
    struct recommend_batch_args a = {
        .store = st,
        .scorer = sc,
        .version = version,
        .guardrails = g,
        .query =
            {
                .by = since ? STORE_SNAP_SINCE_TS : STORE_SNAP_UNSCORED,
                .until_id = max_id,
                .since_us = since_us,
                .limit = cfg->recommend.batch,
            },
        .ttl_ms = cfg->recommend.ttl_ms,
        .progress = -1,
        .print = dry_run ? stdout : NULL,
    };
    for (;;) {
        size_t before = stats.read;
        if (recommend_batch(&a, &stats, err, errlen) != 0)
            goto out;
        if (stats.read - before < (size_t)a.query.limit || stop_requested)
            break;
        a.query.after_id = stats.max_id;
    }
    if (dry_run && fflush(stdout) != 0) {
        util_fmt(err, errlen, "write error on stdout");
        goto out;
    }
    /* A writing run also retires what is due, as the daemon does. */
    int64_t expired = 0;
    if (!dry_run && store_recs_expire(st, &expired, err, errlen) != 0)
        goto out;
    if (expired > 0)
        log_info("recommend: %lld open recommendation(s) expired", (long long)expired);
    log_info("recommend: %zu stored snapshot(s) scored with policy version %d: %zu %s open, "
             "%zu %s abstentions, %zu superseded, %zu unreadable",
             stats.read, version, stats.opened, dry_run ? "would be" : "new", stats.abstained,
             dry_run ? "would be" : "new", stats.superseded, stats.bad);
    rc = stats.bad ? 1 : 0;
out:
    store_free(st);
    return rc;
}

int cmd_recommend(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"jsonl", required_argument, NULL, OPT_JSONL},
        {"model", required_argument, NULL, OPT_MODEL},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"from-db", no_argument, NULL, OPT_FROM_DB},
        {"since", required_argument, NULL, OPT_SINCE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *jsonl = NULL, *model = NULL, *since = NULL;
    bool dry_run = false, db = false;
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
        case OPT_FROM_DB:
            db = true;
            break;
        case OPT_SINCE:
            since = optarg;
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
    if (!jsonl == !db)
        return usage_error("recommend", "give one of --from-db or --jsonl FILE");
    if (since && !db)
        return usage_error("recommend", "--since goes with --from-db");
    int64_t since_us = 0;
    if (since && event_parse_rfc3339(since, &since_us) != 0)
        return usage_error("recommend", "--since takes an RFC 3339 time, not '%s'", since);
    if (jsonl && !dry_run)
        return usage_error("recommend", "--jsonl needs --dry-run: snapshots from a file are not "
                                        "stored events, so nothing is written for them");
    if (model && !dry_run)
        return usage_error("recommend", "--model needs --dry-run: written recommendations name "
                                        "a registered policy version");

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
    if (recommend_guardrails_from_cfg(cfg, &g, err, sizeof err) != 0 ||
        load_policy(cfg, model, &m, &version, err, sizeof err) != 0 ||
        recommend_scorer_new(m, &sc, err, sizeof err) != 0)
        goto fail;
    if (db) {
        rc = from_db(cfg, sc, version, &g, since != NULL, since_us, dry_run, err, sizeof err);
        if (rc < 0) {
            rc = 1;
            goto fail;
        }
        goto out;
    }
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
        if (s == 0 && recommend_result_print(stdout, sc, &ev, version, &r) != 0) {
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
