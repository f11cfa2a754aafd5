/*
 * cli: what the command files of cmd/understudy share (main.c holds the
 * command table, usage printing and configuration loading; train.c the
 * trainer's commands, simulate.c the simulator's).
 */
#ifndef UNDERSTUDY_CLI_H
#define UNDERSTUDY_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config.h"

#define UNDERSTUDY_VERSION "0.1.0"
#define EXIT_USAGE         2

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *args;
    const char *summary;
};

const struct command *find_command(const char *name);
void print_command_usage(FILE *f, const struct command *c);

/* Prints "understudy NAME: reason" and the command's usage to stderr;
 * returns EXIT_USAGE. */
int usage_error(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The usage error for getopt_long's ':' (missing value) and '?' results. */
int option_error(const char *name, int c, char **argv);

/* The configuration file to read: -c, else $UNDERSTUDY_CONFIG, else none. */
const char *config_path_from(const char *opt);

/* Loads the configuration and applies its log settings.  NULL on failure
 * (the reason is printed). */
struct cfg *load_config(const char *path);

/* Parses a decimal integer in [lo, hi]; 0 or -1. */
int parse_int_arg(const char *s, long lo, long hi, long *out);

struct gbm_model;
/* Reads and validates a model file (train.c); 0, or -1 with "PATH: reason". */
int load_model_file(const char *path, struct gbm_model **out, char *err, size_t errlen);

/* Set by SIGTERM/SIGINT once install_stop_handlers() ran. */
extern volatile sig_atomic_t stop_requested;
void install_stop_handlers(void);

/* A comma-separated list split in place: items point into buf (cli.c). */
struct cli_list {
    char *buf;
    const char **items;
    size_t n;
};
void cli_list_free(struct cli_list *l);
/* Splits s at commas; empty items are refused.  0, or -1 (bad or OOM). */
int cli_list_parse(const char *s, struct cli_list *l);
bool cli_list_has(const struct cli_list *l, const char *s);

/* Commands in train.c and simulate.c. */
int cmd_train(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_model(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_recommend(int argc, char **argv); /* recommend.c */
int cmd_audit(int argc, char **argv);     /* audit.c */

#endif
