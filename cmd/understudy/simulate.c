/*
 * understudy simulate: argument parsing for internal/sim (synthetic
 * operator logs with planted biases; docs/simulate.md).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "event/event.h"
#include "log/log.h"
#include "sim/sim.h"
#include "util/util.h"

#define MAX_BIASES 64

enum {
    OPT_OUT = 256,
    OPT_ROWS,
    OPT_OPERATORS,
    OPT_CAMPAIGNS,
    OPT_SEED,
    OPT_START,
    OPT_TEMPERATURE,
    OPT_BIAS,
};

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end = NULL;
    if (!s || *s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/*
 * DIR/features.yaml: a configuration fragment declaring every state key the
 * simulator writes, so `train --from-db` and the daemon see what
 * examples.csv has (the default feature list is only 7 of them).
 */
static int write_features_yaml(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    util_fmt(path, sizeof path, "%s/features.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        util_fmt(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int bad = fprintf(f, "# Every state key `understudy simulate` writes, as a features: section.\n"
                         "features:\n") < 0;
    for (size_t i = 0; i < sim_feature_count(); i++)
        bad |= fprintf(f, "  - {name: %s, type: %s}\n", sim_feature_name(i),
                       sim_feature_is_categorical(i) ? "categorical" : "numeric") < 0;
    bad |= fclose(f) != 0;
    if (bad) {
        util_fmt(err, errlen, "%s: write error", path);
        return -1;
    }
    return 0;
}

int cmd_simulate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, OPT_OUT},
        {"rows", required_argument, NULL, OPT_ROWS},
        {"operators", required_argument, NULL, OPT_OPERATORS},
        {"campaigns", required_argument, NULL, OPT_CAMPAIGNS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"start", required_argument, NULL, OPT_START},
        {"temperature", required_argument, NULL, OPT_TEMPERATURE},
        {"bias", required_argument, NULL, OPT_BIAS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct sim_bias biases[MAX_BIASES];
    struct sim_options o;
    const char *out = NULL;
    char err[512];
    uint64_t v;
    int c;

    sim_options_default(&o);
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_OUT:
            out = optarg;
            break;
        case OPT_ROWS:
            if (parse_u64(optarg, 1, UINT64_C(10000000000), &v) != 0)
                return usage_error("simulate", "--rows takes 1..10000000000, not '%s'", optarg);
            o.rows = v;
            break;
        case OPT_OPERATORS:
            if (parse_u64(optarg, 1, SIM_MAX_OPERATORS, &v) != 0)
                return usage_error("simulate", "--operators takes 1..%d, not '%s'",
                                   SIM_MAX_OPERATORS, optarg);
            o.operators = (unsigned)v;
            break;
        case OPT_CAMPAIGNS:
            if (parse_u64(optarg, 0, 1000000, &v) != 0)
                return usage_error("simulate", "--campaigns takes 0 (automatic)..1000000, not '%s'",
                                   optarg);
            o.campaigns = (unsigned)v;
            break;
        case OPT_SEED:
            if (parse_u64(optarg, 0, UINT64_MAX, &v) != 0)
                return usage_error("simulate", "--seed takes a non-negative integer, not '%s'",
                                   optarg);
            o.seed = v;
            break;
        case OPT_START:
            if (event_parse_rfc3339(optarg, &o.start_us) != 0)
                return usage_error("simulate", "--start takes an RFC 3339 time, not '%s'", optarg);
            break;
        case OPT_TEMPERATURE: {
            char *end = NULL;
            o.temperature = strtod(optarg, &end);
            if (!*optarg || *end || !isfinite(o.temperature) || !(o.temperature > 0) ||
                o.temperature > 100)
                return usage_error("simulate", "--temperature takes a number in (0, 100], not '%s'",
                                   optarg);
            break;
        }
        case OPT_BIAS:
            if (o.n_biases == MAX_BIASES)
                return usage_error("simulate", "at most %d --bias options", MAX_BIASES);
            if (sim_parse_bias(optarg, &biases[o.n_biases], err, sizeof err) != 0)
                return usage_error("simulate", "--bias %s: %s", optarg, err);
            o.n_biases++;
            break;
        case 'h':
            print_command_usage(stdout, find_command("simulate"));
            return 0;
        default:
            return option_error("simulate", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("simulate", "unexpected argument %s", argv[optind]);
    if (!out)
        return usage_error("simulate", "--out DIR is required");
    o.biases = biases;
    if (sim_check_options(&o, err, sizeof err) != 0)
        return usage_error("simulate", "%s", err);
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);

    struct sim_summary s;
    if (sim_run(&o, out, &s, err, sizeof err) != 0) {
        log_error("simulate: %s", err);
        return 1;
    }
    if (write_features_yaml(out, err, sizeof err) != 0) {
        log_error("simulate: %s", err);
        return 1;
    }
    char from[40], to[40];
    printf("simulate: %s: %llu snapshots, %llu actions, %u operators, %u campaigns, %u entities,"
           " %s .. %s; examples.csv, states.jsonl, actions.jsonl, truth.json, features.yaml\n",
           out, (unsigned long long)s.rows, (unsigned long long)s.actions, s.operators, s.campaigns,
           s.entities, util_format_rfc3339(s.first_ts_us, from, sizeof from),
           util_format_rfc3339(s.last_ts_us, to, sizeof to));
    printf("simulate: classes:");
    for (int k = 0; k < EVENT_CLASS_COUNT; k++)
        printf(" %s %llu", event_class_name((enum event_class)k),
               (unsigned long long)s.by_class[k]);
    printf("; mean entropy of the drawn decisions %.4f (a floor for the log loss)\n",
           s.mean_entropy);
    return 0;
}
