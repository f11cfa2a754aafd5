/*
 * understudy train, predict and model: argument parsing for the trainer's
 * commands.  The work is in internal/policy (training runs, registry),
 * internal/dataset (CSV) and internal/gbm (the model).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "dataset/dataset.h"
#include "event/event.h"
#include "gbm/gbm.h"
#include "log/log.h"
#include "policy/policy.h"
#include "store/store.h"
#include "util/util.h"

static int parse_double_arg(const char *s, double lo, double hi, bool lo_open, double *out)
{
    char *end = NULL;
    if (!s || !*s)
        return -1;
    double v = strtod(s, &end);
    if (*end != '\0' || !isfinite(v) || v < lo || v > hi || (lo_open && !(v > lo)))
        return -1;
    *out = v;
    return 0;
}

/* Whether the CSV's header row has a column named name (a plain check:
 * quoted header names are compared without their quotes). */

/* ---- train ------------------------------------------------------------- */

struct progress {
    bool tty;
    unsigned every;
    unsigned rounds;
    int64_t start_us;
};

static int print_progress(void *arg, unsigned round, double train_loss, double valid_loss)
{
    struct progress *p = arg;
    if (!p->tty || (round % p->every != 0 && round != p->rounds))
        return 0;
    double s = (double)(util_now_mono_us() - p->start_us) / 1e6;
    if (isnan(valid_loss))
        fprintf(stderr, "\rtrain: round %u/%u, train log loss %.5f, %.1f s   ", round, p->rounds,
                train_loss, s);
    else
        fprintf(stderr, "\rtrain: round %u/%u, train log loss %.5f, valid %.5f, %.1f s   ", round,
                p->rounds, train_loss, valid_loss, s);
    return 0;
}

enum {
    OPT_FROM_DB = 256,
    OPT_CSV,
    OPT_LABEL,
    OPT_CATEGORICAL,
    OPT_DROP,
    OPT_TARGET,
    OPT_SINCE,
    OPT_UNTIL,
    OPT_OPERATORS,
    OPT_EXCLUDE,
    OPT_HALF_LIFE,
    OPT_CLASS_WEIGHT,
    OPT_ROUNDS,
    OPT_LR,
    OPT_MAX_BINS,
    OPT_LAMBDA,
    OPT_MCW,
    OPT_THREADS,
    OPT_VALID,
    OPT_EARLY,
    OPT_SEED,
    OPT_OUT,
    OPT_PROMOTE,
    OPT_MODEL,
    OPT_VERSION,
    OPT_TIMING,
};

/* Options given on the command line; NULL / -1 = take the configuration's. */
struct train_args {
    const char *config;
    bool from_db, promote;
    const char *csv, *label, *target, *out;
    struct cli_list categorical, drop, operators, exclude;
    const char *since, *until, *half_life, *class_weight;
    const char *rounds, *lr, *max_bins, *lambda, *mcw, *threads, *valid, *early, *seed;
};

static void train_args_free(struct train_args *a)
{
    cli_list_free(&a->categorical);
    cli_list_free(&a->drop);
    cli_list_free(&a->operators);
    cli_list_free(&a->exclude);
}

/* Applies the numeric overrides to o; returns 0 or the usage exit status. */
static int apply_overrides(const struct train_args *a, struct policy_train_options *o)
{
    long v;
    double d;
    if (a->rounds) {
        if (parse_int_arg(a->rounds, 1, GBM_MAX_ROUNDS, &v) != 0)
            return usage_error("train", "--rounds takes 1..%d, not '%s'", GBM_MAX_ROUNDS,
                               a->rounds);
        o->gbm.rounds = (unsigned)v;
    }
    if (a->lr) {
        if (parse_double_arg(a->lr, 0, 1, true, &d) != 0)
            return usage_error("train", "--learning-rate takes a number in (0, 1], not '%s'",
                               a->lr);
        o->gbm.learning_rate = d;
    }
    if (a->max_bins) {
        if (parse_int_arg(a->max_bins, 2, GBM_MAX_BINS, &v) != 0)
            return usage_error("train", "--max-bins takes 2..%d, not '%s'", GBM_MAX_BINS,
                               a->max_bins);
        o->max_bins = (unsigned)v;
    }
    if (a->lambda) {
        if (parse_double_arg(a->lambda, 0, 1e6, false, &d) != 0)
            return usage_error("train", "--lambda takes a number in [0, 1e6], not '%s'", a->lambda);
        o->gbm.lambda = d;
    }
    if (a->mcw) {
        if (parse_double_arg(a->mcw, 0, 1e6, false, &d) != 0)
            return usage_error("train", "--min-child-weight takes a number in [0, 1e6], not '%s'",
                               a->mcw);
        o->gbm.min_child_weight = d;
    }
    if (a->threads) {
        if (parse_int_arg(a->threads, 1, GBM_MAX_THREADS, &v) != 0)
            return usage_error("train", "--threads takes 1..%d, not '%s'", GBM_MAX_THREADS,
                               a->threads);
        o->gbm.threads = (unsigned)v;
    }
    if (a->valid) {
        if (parse_double_arg(a->valid, 0, 0.9, false, &d) != 0)
            return usage_error("train", "--valid-fraction takes a number in [0, 0.9], not '%s'",
                               a->valid);
        o->valid_fraction = d;
    }
    if (a->early) {
        if (parse_int_arg(a->early, 0, GBM_MAX_ROUNDS, &v) != 0)
            return usage_error("train", "--early-stop takes 0..%d rounds, not '%s'", GBM_MAX_ROUNDS,
                               a->early);
        o->gbm.early_stop = (unsigned)v;
    }
    if (a->seed) {
        if (parse_int_arg(a->seed, 0, 0x7fffffffL, &v) != 0)
            return usage_error("train", "--seed takes 0..2147483647, not '%s'", a->seed);
        o->gbm.seed = (uint64_t)v;
    }
    if (a->half_life) {
        int64_t ms;
        char why[128];
        if (util_parse_duration(a->half_life, &ms, why, sizeof why) != 0)
            return usage_error("train", "--half-life: %s", why);
        o->half_life_ms = ms;
    }
    if (a->class_weight) {
        char why[256];
        if (cfg_parse_class_weight(a->class_weight, &o->class_weight, o->class_weights, why,
                                   sizeof why) != 0)
            return usage_error("train", "--class-weight: %s", why);
    }
    if (a->since && event_parse_rfc3339(a->since, &o->query.since_us) != 0)
        return usage_error("train", "--since takes an RFC 3339 time, not '%s'", a->since);
    if (a->until && event_parse_rfc3339(a->until, &o->query.until_us) != 0)
        return usage_error("train", "--until takes an RFC 3339 time, not '%s'", a->until);
    if (a->operators.n) {
        o->query.include_operators = a->operators.items;
        o->query.n_include = a->operators.n;
    }
    if (a->exclude.n) {
        o->query.exclude_operators = a->exclude.items;
        o->query.n_exclude = a->exclude.n;
    }
    return 0;
}

static int parse_train_args(int argc, char **argv, struct train_args *a)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"from-db", no_argument, NULL, OPT_FROM_DB},
        {"csv", required_argument, NULL, OPT_CSV},
        {"label", required_argument, NULL, OPT_LABEL},
        {"categorical", required_argument, NULL, OPT_CATEGORICAL},
        {"drop", required_argument, NULL, OPT_DROP},
        {"target", required_argument, NULL, OPT_TARGET},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"operators", required_argument, NULL, OPT_OPERATORS},
        {"exclude-operators", required_argument, NULL, OPT_EXCLUDE},
        {"half-life", required_argument, NULL, OPT_HALF_LIFE},
        {"class-weight", required_argument, NULL, OPT_CLASS_WEIGHT},
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"learning-rate", required_argument, NULL, OPT_LR},
        {"max-bins", required_argument, NULL, OPT_MAX_BINS},
        {"lambda", required_argument, NULL, OPT_LAMBDA},
        {"min-child-weight", required_argument, NULL, OPT_MCW},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"valid-fraction", required_argument, NULL, OPT_VALID},
        {"early-stop", required_argument, NULL, OPT_EARLY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"out", required_argument, NULL, OPT_OUT},
        {"promote", no_argument, NULL, OPT_PROMOTE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        struct cli_list *l = NULL;
        switch (c) {
        case 'c':
            a->config = optarg;
            break;
        case OPT_FROM_DB:
            a->from_db = true;
            break;
        case OPT_CSV:
            a->csv = optarg;
            break;
        case OPT_LABEL:
            a->label = optarg;
            break;
        case OPT_TARGET:
            a->target = optarg;
            break;
        case OPT_CATEGORICAL:
            l = &a->categorical;
            break;
        case OPT_DROP:
            l = &a->drop;
            break;
        case OPT_OPERATORS:
            l = &a->operators;
            break;
        case OPT_EXCLUDE:
            l = &a->exclude;
            break;
        case OPT_SINCE:
            a->since = optarg;
            break;
        case OPT_UNTIL:
            a->until = optarg;
            break;
        case OPT_HALF_LIFE:
            a->half_life = optarg;
            break;
        case OPT_CLASS_WEIGHT:
            a->class_weight = optarg;
            break;
        case OPT_ROUNDS:
            a->rounds = optarg;
            break;
        case OPT_LR:
            a->lr = optarg;
            break;
        case OPT_MAX_BINS:
            a->max_bins = optarg;
            break;
        case OPT_LAMBDA:
            a->lambda = optarg;
            break;
        case OPT_MCW:
            a->mcw = optarg;
            break;
        case OPT_THREADS:
            a->threads = optarg;
            break;
        case OPT_VALID:
            a->valid = optarg;
            break;
        case OPT_EARLY:
            a->early = optarg;
            break;
        case OPT_SEED:
            a->seed = optarg;
            break;
        case OPT_OUT:
            a->out = optarg;
            break;
        case OPT_PROMOTE:
            a->promote = true;
            break;
        case 'h':
            print_command_usage(stdout, find_command("train"));
            return 0;
        default:
            return option_error("train", c, argv);
        }
        if (l && cli_list_parse(optarg, l) != 0)
            return usage_error("train", "%s takes a comma-separated list of names, not '%s'",
                               argv[optind - 2], optarg);
    }
    if (optind < argc)
        return usage_error("train", "unexpected argument %s", argv[optind]);
    if (a->from_db == (a->csv != NULL))
        return usage_error("train", "give exactly one of --from-db and --csv FILE");
    if (a->csv && !a->label)
        return usage_error("train", "--csv needs --label COLUMN");
    if (!a->csv && (a->label || a->categorical.n || a->drop.n || a->target))
        return usage_error("train", "--label, --categorical, --drop and --target go with --csv");
    if (a->csv && (a->since || a->until || a->operators.n || a->exclude.n))
        return usage_error("train", "--since, --until, --operators and --exclude-operators go "
                                    "with --from-db");
    if (a->csv && a->promote)
        return usage_error("train", "--promote needs --from-db (the registry holds policies "
                                    "trained on the event tables)");
    if (a->operators.n && a->exclude.n)
        return usage_error("train", "give --operators or --exclude-operators, not both");
    return -1;
}

/* Prints the metrics line, with the registry's answer when there is one. */
static void print_train_result(const struct policy_run *run, const struct policy_registration *reg,
                               const char *out)
{
    char *line = policy_run_metrics_json(run);
    json_t *j = line ? json_loads(line, 0, NULL) : NULL;
    if (j && reg) {
        json_object_set_new(j, "version", json_integer(reg->version));
        json_object_set_new(j, "promoted", json_boolean(reg->promoted));
        json_object_set_new(j, "champion_before",
                            reg->champion_before ? json_integer(reg->champion_before)
                                                 : json_null());
        json_object_set_new(j, "champion_valid_logloss",
                            isnan(reg->champion_logloss) ? json_null()
                                                         : json_real(reg->champion_logloss));
    }
    if (j && out)
        json_object_set_new(j, "model", json_string(out));
    char *s =
        j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
    printf("%s\n", s ? s : "{}");
    free(s);
    json_decref(j);
    free(line);
}

int cmd_train(int argc, char **argv)
{
    struct train_args a;
    struct policy_train_options o;
    struct policy_run *run = NULL;
    struct store *st = NULL;
    struct cfg *cfg = NULL;
    char err[2048];
    int rc;

    memset(&a, 0, sizeof a);
    if ((rc = parse_train_args(argc, argv, &a)) >= 0)
        goto done;
    rc = EXIT_USAGE;
    if (!(cfg = load_config(config_path_from(a.config))))
        goto done;
    policy_train_options_from_cfg(&o, cfg);
    if ((rc = apply_overrides(&a, &o)) != 0)
        goto done;
    rc = 1;
    if (a.csv) {
        o.csv_path = a.csv;
        o.csv.label = a.label;
        o.csv.categorical = a.categorical.items;
        o.csv.n_categorical = a.categorical.n;
        o.csv.drop = a.drop.items;
        o.csv.n_drop = a.drop.n;
        /* delta_pct is the magnitude target, never a feature. */
        o.csv.target = a.target;
        if (!a.target && !cli_list_has(&a.drop, "delta_pct") &&
            ds_csv_has_column(a.csv, "delta_pct"))
            o.csv.target = "delta_pct";
        o.magnitude = o.csv.target != NULL;
    } else {
        if (store_connect(cfg->postgres.dsn, cfg->postgres.password_file, &st, err, sizeof err) !=
                0 ||
            store_check_schema(st, err, sizeof err) != 0) {
            log_error("train: %s", err);
            goto done;
        }
        o.store = st;
    }
    struct progress prog = {
        .tty = isatty(STDERR_FILENO) != 0,
        .every = o.gbm.rounds >= 100 ? 10 : 1,
        .rounds = o.gbm.rounds,
        .start_us = util_now_mono_us(),
    };
    o.progress = print_progress;
    o.progress_arg = &prog;
    int t = policy_train(&o, &run, err, sizeof err);
    if (prog.tty)
        fputc('\n', stderr);
    if (t != 0) {
        log_error("train: %s", err);
        goto done;
    }
    if (a.out && policy_run_write_model(run, a.out, err, sizeof err) != 0) {
        log_error("train: %s", err);
        goto done;
    }
    struct policy_registration reg;
    if (st) {
        if (policy_register(st, run, a.promote, &reg, err, sizeof err) != 0) {
            log_error("train: %s", err);
            goto done;
        }
        log_info("train: policy version %d: %s", reg.version, reg.why);
    }
    print_train_result(run, st ? &reg : NULL, a.out);
    rc = 0;
done:
    policy_run_free(run);
    store_free(st);
    cfg_free(cfg);
    train_args_free(&a);
    return rc;
}

/* ---- model show ---------------------------------------------------------- */

int load_model_file(const char *path, struct gbm_model **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct util_buf b;
    char chunk[65536];
    size_t n;
    int rc = -1;
    util_buf_init(&b);
    if (!f) {
        util_fmt(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (util_buf_append(&b, chunk, n) != 0) {
            util_fmt(err, errlen, "%s: out of memory", path);
            goto out;
        }
    }
    if (ferror(f)) {
        util_fmt(err, errlen, "%s: read error", path);
        goto out;
    }
    char why[1024];
    if (gbm_model_from_json(b.data ? b.data : "", b.len, out, why, sizeof why) != 0) {
        util_fmt(err, errlen, "%s: %s", path, why);
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    util_buf_deinit(&b);
    return rc;
}

static int show_model(const struct gbm_model *m, FILE *f)
{
    size_t nf = gbm_model_n_features(m);
    double *gain = util_calloc(nf ? nf : 1, sizeof *gain);
    size_t *order = util_calloc(nf ? nf : 1, sizeof *order);
    if (!gain || !order) {
        free(gain);
        free(order);
        return -1;
    }
    fprintf(f, "classes:");
    for (size_t c = 0; c < gbm_model_n_classes(m); c++)
        fprintf(f, " %s", gbm_model_class_name(m, c));
    fprintf(f, "\nrounds: %u (of %u trained)\n", gbm_model_rounds(m), gbm_model_rounds_trained(m));
    const json_t *meta = gbm_model_metadata(m);
    json_t *metrics = meta ? json_object_get(meta, "metrics") : NULL;
    if (metrics) {
        char *s = json_dumps(metrics, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        fprintf(f, "metrics: %s\n", s ? s : "{}");
        free(s);
    }
    gbm_model_importance(m, gain);
    double total = 0;
    for (size_t i = 0; i < nf; i++) {
        order[i] = i;
        total += gain[i];
    }
    /* Insertion sort by gain, descending: feature counts are small. */
    for (size_t i = 1; i < nf; i++) {
        size_t k = order[i], j = i;
        while (j > 0 && gain[order[j - 1]] < gain[k]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
    fprintf(f, "features by total split gain:\n");
    for (size_t i = 0; i < nf; i++) {
        size_t k = order[i];
        fprintf(f, "  %2zu. %-24s %-11s %12.4f  %5.1f%%\n", i + 1, gbm_model_feature_name(m, k),
                gbm_model_feature_kind(m, k) == GBM_NUMERIC ? "numeric" : "categorical", gain[k],
                total > 0 ? 100.0 * gain[k] / total : 0.0);
    }
    free(gain);
    free(order);
    fputc('\n', f);
    return gbm_model_dump(m, f);
}

/*
 * model promote --version N: makes a registered version the champion
 * whatever its metrics (a rollback, or a challenger an analyst chose), with
 * the same transaction and NOTIFY as an automatic promotion.
 */
static int promote_version(const char *config, int version)
{
    struct cfg *cfg = load_config(config_path_from(config));
    struct store *st = NULL;
    char err[1024], status[16] = "";
    int rc = 1, champion = 0;
    if (!cfg)
        return EXIT_USAGE;
    if (store_connect(cfg->postgres.dsn, cfg->postgres.password_file, &st, err, sizeof err) != 0)
        goto fail;
    for (int attempt = 0; attempt < 3; attempt++) {
        char *text = NULL;
        int got = store_policy_get(st, version, &text, status, err, sizeof err);
        free(text);
        if (got == 1)
            util_fmt(err, sizeof err, "policy version %d does not exist", version);
        if (got != 0 || store_policy_champion(st, &champion, NULL, err, sizeof err) != 0)
            goto fail;
        if (champion == version) {
            log_info("model: policy version %d is already the champion", version);
            rc = 0;
            goto out;
        }
        int p = store_policy_promote(st, version, champion, err, sizeof err);
        if (p < 0)
            goto fail;
        if (p == 0) {
            log_info("model: policy version %d is the champion (was %d)", version, champion);
            rc = 0;
            goto out;
        }
        /* Another promotion came in between: look again. */
    }
    util_fmt(err, sizeof err, "the champion kept changing; try again");
fail:
    log_error("model: %s", err);
out:
    store_free(st);
    cfg_free(cfg);
    return rc;
}

int cmd_model(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"version", required_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *version = NULL;
    int c;
    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_VERSION:
            version = optarg;
            break;
        case 'h':
            print_command_usage(stdout, find_command("model"));
            return 0;
        default:
            return option_error("model", c, argv);
        }
    }
    bool promote = optind < argc && strcmp(argv[optind], "promote") == 0;
    if (optind >= argc || (!promote && strcmp(argv[optind], "show") != 0))
        return usage_error("model", optind < argc ? "unknown subcommand %s" : "%s",
                           optind < argc ? argv[optind]
                                         : "a subcommand is required (show, promote)");
    optind++;
    if (promote && (!version || optind != argc))
        return usage_error("model", "model promote takes --version N only");
    if (version ? optind != argc : optind != argc - 1)
        return usage_error("model", "model show takes one MODEL.json, or --version N");
    long v = 0;
    if (version && (parse_int_arg(version, 1, 0x7fffffffL, &v) != 0 || strcmp(version, "0") == 0))
        return usage_error("model", "--version takes a policy version (1, 2, ...), not '%s'",
                           version);
    if (promote)
        return promote_version(config, (int)v);

    struct gbm_model *m = NULL;
    char err[2048];
    int rc = 1;
    if (version) {
        struct cfg *cfg = load_config(config_path_from(config));
        struct store *st = NULL;
        char *text = NULL, status[16] = "";
        if (!cfg)
            return EXIT_USAGE;
        int got = -1;
        if (store_connect(cfg->postgres.dsn, cfg->postgres.password_file, &st, err, sizeof err) ==
            0)
            got = store_policy_get(st, (int)v, &text, status, err, sizeof err);
        if (got == 1)
            util_fmt(err, sizeof err, "policy version %ld does not exist", v);
        if (got == 0 && gbm_model_from_json(text, strlen(text), &m, err, sizeof err) != 0)
            got = -1;
        if (got == 0)
            printf("policy version %ld (%s)\n", v, status);
        free(text);
        store_free(st);
        cfg_free(cfg);
        if (got != 0) {
            log_error("model: %s", err);
            return 1;
        }
    } else if (load_model_file(argv[optind], &m, err, sizeof err) != 0) {
        log_error("model: %s", err);
        return 1;
    }
    if (show_model(m, stdout) == 0 && fflush(stdout) == 0)
        rc = 0;
    gbm_model_free(m);
    return rc;
}

/* ---- predict ------------------------------------------------------------- */

/* The model's inputs for CSV row r: columns matched by name (col[f] < 0:
 * no such column, missing), read the way the model's feature kind says. */
/*
 * --timing: the inputs of every row are built first, then one thread
 * scores them all (margins and probabilities of every class); only that
 * loop is timed, and the rate goes to stderr.  bench/score uses it.
 */
static int time_scoring(const struct gbm_model *m, const struct ds *ds, const long *col, char *err,
                        size_t errlen)
{
    size_t nf = gbm_model_n_features(m), nc = gbm_model_n_classes(m), n = ds_n_rows(ds);
    struct gbm_input *all = util_calloc(n * (nf ? nf : 1), sizeof *all);
    double *prob = util_calloc(nc, sizeof *prob);
    if (!all || !prob) {
        free(all);
        free(prob);
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    for (size_t r = 0; r < n; r++)
        ds_model_input(ds, m, col, r, all + r * nf);
    double check = 0;
    int64_t t0 = util_now_mono_us();
    for (size_t r = 0; r < n; r++) {
        gbm_predict(m, all + r * nf, NULL, prob);
        check += prob[0];
    }
    double secs = (double)(util_now_mono_us() - t0) / 1e6;
    fprintf(stderr,
            "predict: scored %zu rows in %.6f s: %.0f rows/s on one thread "
            "(%u rounds x %zu classes, %zu features; checksum %.6f)\n",
            n, secs, secs > 0 ? (double)n / secs : 0.0, gbm_model_rounds(m), nc, nf, check);
    free(all);
    free(prob);
    return 0;
}

int cmd_predict(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, OPT_MODEL},
        {"csv", required_argument, NULL, OPT_CSV},
        {"timing", no_argument, NULL, OPT_TIMING},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model_path = NULL, *csv = NULL;
    bool timing = false;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL:
            model_path = optarg;
            break;
        case OPT_CSV:
            csv = optarg;
            break;
        case OPT_TIMING:
            timing = true;
            break;
        case 'h':
            print_command_usage(stdout, find_command("predict"));
            return 0;
        default:
            return option_error("predict", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("predict", "unexpected argument %s", argv[optind]);
    if (!model_path || !csv)
        return usage_error("predict", "--model and --csv are required");
    log_setup(LOG_LEVEL_INFO, LOG_FORMAT_TEXT);

    struct gbm_model *m = NULL;
    struct ds *ds = NULL;
    char err[2048];
    int rc = 1;
    long *col = NULL;
    struct gbm_input *x = NULL;
    double *prob = NULL;
    if (load_model_file(model_path, &m, err, sizeof err) != 0)
        goto fail;
    struct ds_csv_options o = {0};
    if (ds_read_csv(csv, &o, &ds, err, sizeof err) != 0)
        goto fail;
    size_t nf = gbm_model_n_features(m), nc = gbm_model_n_classes(m);
    col = util_calloc(nf ? nf : 1, sizeof *col);
    x = util_calloc(nf ? nf : 1, sizeof *x);
    prob = util_calloc(nc, sizeof *prob);
    if (!col || !x || !prob) {
        util_fmt(err, sizeof err, "out of memory");
        goto fail;
    }
    ds_model_columns(ds, m, col);
    for (size_t f = 0; f < nf; f++) {
        if (col[f] < 0)
            log_warn("predict: %s: no column %s; it is missing in every row", csv,
                     gbm_model_feature_name(m, f));
        else if (ds_feature_kind(ds, (size_t)col[f]) != gbm_model_feature_kind(m, f))
            log_warn("predict: %s: column %s is %s in the file but %s in the model; reading it "
                     "as the model does",
                     csv, gbm_model_feature_name(m, f),
                     ds_feature_kind(ds, (size_t)col[f]) == GBM_NUMERIC ? "numeric" : "categorical",
                     gbm_model_feature_kind(m, f) == GBM_NUMERIC ? "numeric" : "categorical");
    }
    if (timing && time_scoring(m, ds, col, err, sizeof err) != 0)
        goto fail;
    for (size_t k = 0; k < nc; k++)
        printf("%s%s", k ? "," : "", gbm_model_class_name(m, k));
    putchar('\n');
    for (size_t r = 0; r < ds_n_rows(ds); r++) {
        ds_model_input(ds, m, col, r, x);
        gbm_predict(m, x, NULL, prob);
        for (size_t k = 0; k < nc; k++)
            printf("%s%.9g", k ? "," : "", prob[k]);
        putchar('\n');
    }
    if (fflush(stdout) != 0) {
        util_fmt(err, sizeof err, "write error on stdout");
        goto fail;
    }
    rc = 0;
    goto out;
fail:
    log_error("predict: %s", err);
out:
    free(col);
    free(x);
    free(prob);
    ds_free(ds);
    gbm_model_free(m);
    return rc;
}
