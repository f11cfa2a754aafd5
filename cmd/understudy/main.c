/*
 * understudy: command-line entry point.  Parses arguments and calls one
 * entry point per subcommand; no business logic lives here.
 *
 * Exit status: 0 success, 1 the command failed at run time, 2 bad usage or
 * a bad configuration.
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "audit/auditor.h"
#include "cli.h"
#include "config/config.h"
#include "ingest/ingest.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "mockkafka/mockkafka.h"
#include "policy/policy.h"
#include "recommend/recommender.h"
#include "replay/replay.h"
#include "store/store.h"

static int cmd_check_config(int argc, char **argv);
static int cmd_migrate(int argc, char **argv);
static int cmd_mock_kafka(int argc, char **argv);
static int cmd_run(int argc, char **argv);
static int cmd_replay(int argc, char **argv);
static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const struct command commands[] = {
    {"run", cmd_run, "[-c FILE]",
     "the daemon: ingest Kafka into PostgreSQL, retrain, recommend and audit in the background, "
     "serve /metrics; SIGHUP reloads, SIGTERM drains"},
    {"check-config", cmd_check_config, "[-c FILE]",
     "validate the configuration and print it, secrets masked"},
    {"migrate", cmd_migrate, "[-c FILE] [--status]",
     "apply pending schema migrations to PostgreSQL (or list them)"},
    {"train", cmd_train,
     "[-c FILE] (--from-db [--since T] [--until T] [--operators a,b | --exclude-operators a,b]"
     " [--promote] | --csv FILE --label COL [--categorical a,b] [--drop a,b] [--target COL])"
     " [--rounds N] [--learning-rate X] [--max-bins N] [--lambda X] [--min-child-weight X]"
     " [--threads N] [--valid-fraction F] [--early-stop N] [--class-weight W] [--half-life D]"
     " [--seed N] [--out MODEL.json]",
     "train the policy on the event tables or a CSV; prints one JSON line of metrics"},
    {"predict", cmd_predict, "--model MODEL.json --csv FILE [--timing]",
     "class probabilities for each CSV row, as CSV on stdout"},
    {"model", cmd_model, "show MODEL.json | show --version N | promote --version N [-c FILE]",
     "print a model (classes, features by gain, step functions), or make a registered version "
     "the champion"},
    {"recommend", cmd_recommend,
     "--from-db [--since TIME] [--dry-run] | --jsonl FILE|- --dry-run [--model MODEL.json] "
     "[-c FILE]",
     "score stored (--from-db) or given snapshots with the champion (or --model) and write the "
     "recommendations, or print them as JSON lines (--dry-run)"},
    {"audit", cmd_audit,
     "[-c FILE] [--since T] [--until T] [--operators a,b] [--report DIR] [--format html,md,json]"
     " [--threads N] | --csv FILE --label COL --operator COL [--delta COL] [--ts COL]"
     " [--categorical a,b] [--drop a,b] [--report DIR] [--format ...]",
     "audit each operator against the team in the same states (from PostgreSQL, writing a run "
     "audit_findings_latest shows, or from a CSV); prints the findings, writes the reports"},
    {"simulate", cmd_simulate,
     "--out DIR [--rows N] [--operators N] [--campaigns N] [--seed N] [--start T]"
     " [--temperature X] [--bias SPEC ...]",
     "write synthetic operator logs with planted biases (docs/simulate.md)"},
    {"replay", cmd_replay, "--topic T [--rate N] [--key FIELD] [-c FILE] FILE.jsonl|-",
     "produce a JSONL file to Kafka, one message per line (demos, backfills)"},
    {"mock-kafka", cmd_mock_kafka,
     "[--partitions N] [--topics a,b,c] [--brokers N] [--bootstrap-file F]",
     "run librdkafka's mock Kafka cluster until SIGTERM (development, tests)"},
    {"version", cmd_version, "", "print the version"},
    {"help", cmd_help, "[COMMAND]", "show this help, or one command's"},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

static void print_usage(FILE *f)
{
    fprintf(f, "usage: understudy COMMAND [OPTIONS]\n\n"
               "Learns an ad-ops team's decisions from its change log and suggests the next\n"
               "move for every campaign.\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nThe configuration is read from -c FILE, else $UNDERSTUDY_CONFIG, else the\n"
               "embedded defaults.  `understudy help COMMAND` shows a command's options.\n");
}

void print_command_usage(FILE *f, const struct command *c)
{
    fprintf(f, "usage: understudy %s %s\n  %s\n", c->name, c->args, c->summary);
}

int usage_error(const char *name, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "understudy %s: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    print_command_usage(stderr, find_command(name));
    return EXIT_USAGE;
}

int option_error(const char *name, int c, char **argv)
{
    if (c == ':')
        return usage_error(name, "option %s needs a value", argv[optind - 1]);
    return usage_error(name, "unknown option %s", argv[optind - 1]);
}

/*
 * Parses the options of commands that take only [-c FILE]: returns -1 with
 * *path set to go on, or the exit status to return (help, bad usage).
 */
static int parse_config_only(const char *name, int argc, char **argv, const char **path)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    *path = NULL;
    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        if (c == 'c') {
            *path = optarg;
        } else if (c == 'h') {
            print_command_usage(stdout, find_command(name));
            return 0;
        } else {
            return option_error(name, c, argv);
        }
    }
    if (optind < argc)
        return usage_error(name, "unexpected argument %s", argv[optind]);
    return -1;
}

const char *config_path_from(const char *opt)
{
    if (opt)
        return opt;
    const char *env = getenv("UNDERSTUDY_CONFIG");
    return env && *env ? env : NULL;
}

struct cfg *load_config(const char *path)
{
    char err[1024];
    struct cfg *cfg = NULL;
    if (cfg_load(path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    log_setup(cfg->log.level, cfg->log.format);
    return cfg;
}

int parse_int_arg(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    long v;
    if (!s || !*s)
        return -1;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int cmd_check_config(int argc, char **argv)
{
    const char *path;
    int st = parse_config_only("check-config", argc, argv, &path);
    if (st >= 0)
        return st;

    struct cfg *cfg = load_config(config_path_from(path));
    if (!cfg)
        return EXIT_USAGE;
    int rc = cfg_dump(cfg, stdout) == 0 ? 0 : 1;
    cfg_free(cfg);
    return rc;
}

static int cmd_migrate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"status", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int status_only = 0, c, rc = 1;
    char err[2048];
    struct store *st = NULL;

    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 's':
            status_only = 1;
            break;
        case 'h':
            print_command_usage(stdout, find_command("migrate"));
            return 0;
        default:
            return option_error("migrate", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("migrate", "unexpected argument %s", argv[optind]);

    struct cfg *cfg = load_config(config_path_from(path));
    if (!cfg)
        return EXIT_USAGE;
    if (store_connect(cfg->postgres.dsn, cfg->postgres.password_file, &st, err, sizeof err) != 0) {
        log_error("migrate: %s", err);
        goto out;
    }
    if (status_only) {
        if (store_migrate_status(st, stdout, err, sizeof err) != 0) {
            log_error("migrate: %s", err);
            goto out;
        }
    } else {
        int applied = 0;
        if (store_migrate(st, stdout, &applied, err, sizeof err) != 0) {
            log_error("migrate: %s", err);
            goto out;
        }
        printf("migrate: %d migration(s) applied, schema at version %d\n", applied,
               store_n_migrations ? store_migrations[store_n_migrations - 1].version : 0);
    }
    rc = 0;
out:
    store_free(st);
    cfg_free(cfg);
    return rc;
}

volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reload_requested;

/* Handlers only set flags; the loops do the work.  A second SIGTERM/SIGINT
 * while draining means "now": exit at once (nothing is lost, offsets of
 * unwritten batches were never stored). */
static void on_stop_signal(int sig)
{
    if (stop_requested)
        _exit(128 + sig);
    stop_requested = 1;
}

static void on_hup_signal(int sig)
{
    (void)sig;
    reload_requested = 1;
}

void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup_signal;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int cmd_mock_kafka(int argc, char **argv)
{
    static const struct option opts[] = {
        {"partitions", required_argument, NULL, 'p'},
        {"topics", required_argument, NULL, 't'},
        {"brokers", required_argument, NULL, 'b'},
        {"bootstrap-file", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct mockkafka_opts mo = {
        .brokers = 1,
        .partitions = 3,
        .topics = "ops.actions,ops.states,ops.feedback",
        .bootstrap_file = NULL,
    };
    char err[512];
    long v;
    int c;

    while ((c = getopt_long(argc, argv, ":p:t:b:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (parse_int_arg(optarg, 1, 1024, &v) != 0)
                return usage_error("mock-kafka", "--partitions takes 1..1024, not '%s'", optarg);
            mo.partitions = (int)v;
            break;
        case 'b':
            if (parse_int_arg(optarg, 1, 16, &v) != 0)
                return usage_error("mock-kafka", "--brokers takes 1..16, not '%s'", optarg);
            mo.brokers = (int)v;
            break;
        case 't':
            if (mockkafka_check_topics(optarg, err, sizeof err) != 0)
                return usage_error("mock-kafka", "--%s", err);
            mo.topics = optarg;
            break;
        case 'f':
            mo.bootstrap_file = optarg;
            break;
        case 'h':
            print_command_usage(stdout, find_command("mock-kafka"));
            return 0;
        default:
            return option_error("mock-kafka", c, argv);
        }
    }
    if (optind < argc)
        return usage_error("mock-kafka", "unexpected argument %s", argv[optind]);

    enum log_level lv = LOG_LEVEL_INFO;
    const char *env = getenv("UNDERSTUDY_LOG_LEVEL");
    if (env && log_level_parse(env, &lv) != 0)
        return usage_error("mock-kafka", "UNDERSTUDY_LOG_LEVEL: unknown level '%s'", env);
    log_setup(lv, LOG_FORMAT_TEXT);

    install_stop_handlers();
    if (mockkafka_run(&mo, &stop_requested, stdout, err, sizeof err) != 0) {
        log_error("mock-kafka: %s", err);
        return 1;
    }
    return 0;
}

struct daemon {
    const char *path; /* config file, NULL = embedded defaults */
    struct cfg *cfg;  /* the configuration in force */
    struct ingest *ig;
    struct policy_trainer *trainer;
    struct recommender *recommender;
    struct auditor *auditor;
};

static int daemon_render_metrics(struct util_buf *b, void *ud)
{
    struct daemon *d = ud;
    if (ingest_render_metrics(b, d->ig) != 0)
        return -1;
    if (d->trainer && policy_trainer_render_metrics(b, d->trainer) != 0)
        return -1;
    if (d->recommender && recommender_render_metrics(b, d->recommender) != 0)
        return -1;
    return d->auditor ? auditor_render_metrics(b, d->auditor) : 0;
}

static int daemon_ready(void *ud, char *why, size_t whylen)
{
    return ingest_ready(((struct daemon *)ud)->ig, why, whylen);
}

static int daemon_healthy(void *ud, char *why, size_t whylen)
{
    return ingest_healthy(((struct daemon *)ud)->ig, why, whylen);
}

/* SIGHUP: load the file again; apply it when it is valid and changes only
 * reloadable keys, otherwise keep the old one and say why. */
static void daemon_tick(struct ingest *ig, void *ud)
{
    struct daemon *d = ud;
    char err[1024];
    struct cfg *next = NULL;

    if (!reload_requested)
        return;
    reload_requested = 0;
    if (cfg_load(d->path, &next, err, sizeof err) != 0) {
        log_error("config: reload refused, keeping the running configuration: %s", err);
        return;
    }
    if (cfg_diff_nonreloadable(d->cfg, next, err, sizeof err) != 0) {
        log_error("config: reload refused, keeping the running configuration: %s", err);
        cfg_free(next);
        return;
    }
    log_setup(next->log.level, next->log.format);
    ingest_apply_config(ig, next);
    policy_trainer_apply_config(d->trainer, next);
    recommender_apply_config(d->recommender, next);
    auditor_apply_config(d->auditor, next);
    cfg_free(d->cfg);
    d->cfg = next;
    log_info("config: reloaded %s", d->path ? d->path : "(embedded defaults)");
}

static int cmd_run(int argc, char **argv)
{
    const char *path;
    int rc = 1;
    char err[1024];
    struct ingest *ig = NULL;
    struct metrics_server *ms = NULL;

    int st = parse_config_only("run", argc, argv, &path);
    if (st >= 0)
        return st;

    struct daemon d = {config_path_from(path), NULL, NULL, NULL, NULL, NULL};
    d.cfg = load_config(d.path);
    if (!d.cfg)
        return EXIT_USAGE;
    install_stop_handlers();
    log_info("understudy %s starting (config %s)", UNDERSTUDY_VERSION,
             d.path ? d.path : "embedded defaults");

    if (ingest_new(d.cfg, &ig, err, sizeof err) != 0) {
        log_error("run: %s", err);
        goto out;
    }
    d.ig = ig;
    if (policy_trainer_start(d.cfg, &d.trainer, err, sizeof err) != 0 ||
        recommender_start(d.cfg, &d.recommender, err, sizeof err) != 0 ||
        auditor_start(d.cfg, &d.auditor, err, sizeof err) != 0) {
        log_error("run: %s", err);
        goto out;
    }
    if (d.cfg->metrics.enabled) {
        struct metrics_handlers h = {
            .render = daemon_render_metrics,
            .healthy = daemon_healthy,
            .ready = daemon_ready,
            .ud = &d,
        };
        if (metrics_server_start(d.cfg->metrics.listen, &h, &ms, err, sizeof err) != 0) {
            log_error("run: %s", err);
            goto out;
        }
        log_info("metrics: listening on port %d (%s): /metrics /healthz /readyz",
                 metrics_server_port(ms), d.cfg->metrics.listen);
    }
    int r = ingest_run(ig, &stop_requested, daemon_tick, &d, err, sizeof err);
    if (r < 0)
        log_error("run: %s", err);
    for (int k = 0; k < 3; k++) {
        struct ingest_totals t;
        ingest_get_totals(ig, k, &t);
        log_info("run: %s: %llu consumed, %llu stored, %llu duplicates, %llu dead letters",
                 k == 0   ? d.cfg->kafka.topic_actions
                 : k == 1 ? d.cfg->kafka.topic_states
                          : d.cfg->kafka.topic_feedback,
                 (unsigned long long)t.consumed, (unsigned long long)t.stored,
                 (unsigned long long)t.duplicates, (unsigned long long)t.dead);
    }
    rc = r == 0 ? 0 : 1;
out:
    metrics_server_stop(ms);
    auditor_stop(d.auditor);
    recommender_stop(d.recommender);
    policy_trainer_stop(d.trainer);
    ingest_free(ig);
    cfg_free(d.cfg);
    log_info("understudy stopped");
    return rc;
}

static int cmd_replay(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"topic", required_argument, NULL, 't'},
        {"rate", required_argument, NULL, 'r'},   {"key", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    struct replay_opts ro = {0};
    char err[1024];
    int c;

    while ((c = getopt_long(argc, argv, ":c:t:r:k:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 't':
            if (mockkafka_check_topics(optarg, err, sizeof err) != 0 || strchr(optarg, ','))
                return usage_error("replay", "--topic takes one topic name, not '%s'", optarg);
            ro.topic = optarg;
            break;
        case 'r': {
            char *end = NULL;
            ro.rate = strtod(optarg, &end);
            if (!*optarg || *end || !(ro.rate > 0) || ro.rate > 1e7)
                return usage_error("replay",
                                   "--rate takes messages per second (0 < N <= 1e7), "
                                   "not '%s'",
                                   optarg);
            break;
        }
        case 'k':
            if (!*optarg)
                return usage_error("replay", "--key takes a field name");
            ro.key_field = optarg;
            break;
        case 'h':
            print_command_usage(stdout, find_command("replay"));
            return 0;
        default:
            return option_error("replay", c, argv);
        }
    }
    if (!ro.topic)
        return usage_error("replay", "--topic is required");
    if (optind != argc - 1)
        return usage_error("replay", "exactly one input file (or -) is required");
    ro.path = argv[optind];
    ro.progress = isatty(STDERR_FILENO);

    struct cfg *cfg = load_config(config_path_from(path));
    if (!cfg)
        return EXIT_USAGE;
    install_stop_handlers();
    struct replay_stats st;
    int r = replay_run(cfg, &ro, &stop_requested, &st, err, sizeof err);
    cfg_free(cfg);
    if (r < 0) {
        log_error("replay: %s", err);
        return 1;
    }
    printf("replay: %s: %llu line(s), %llu delivered, %llu failed in %.2f s (%.0f/s)\n", ro.topic,
           (unsigned long long)st.lines, (unsigned long long)st.delivered,
           (unsigned long long)st.failed, st.seconds,
           st.seconds > 0 ? (double)st.delivered / st.seconds : 0.0);
    return r == 0 ? 0 : 1;
}

static int cmd_version(int argc, char **argv)
{
    (void)argv;
    if (argc > 1)
        return usage_error("version", "unexpected argument %s", argv[1]);
    printf("understudy %s\n", UNDERSTUDY_VERSION);
    return 0;
}

static int cmd_help(int argc, char **argv)
{
    if (argc > 2)
        return usage_error("help", "unexpected argument %s", argv[2]);
    if (argc == 2) {
        const struct command *c = find_command(argv[1]);
        if (!c)
            return usage_error("help", "unknown command %s", argv[1]);
        print_command_usage(stdout, c);
        return 0;
    }
    print_usage(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0)
        return cmd_help(1, argv);
    if (strcmp(name, "--version") == 0)
        return cmd_version(1, argv);

    const struct command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "understudy: unknown command '%s'\n\n", name);
        print_usage(stderr);
        return EXIT_USAGE;
    }
    /* Each command sees argv[0] = its own name. */
    optind = 1;
    return c->run(argc - 1, argv + 1);
}
