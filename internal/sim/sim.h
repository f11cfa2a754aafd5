/*
 * sim: synthetic operator logs with planted biases (`understudy simulate`).
 *
 * Writes a team of operators' decisions on synthetic ad entities as wire
 * contract events (states.jsonl, actions.jsonl), the labelled examples the
 * contract's labelling rule gives from them with the default windows
 * (examples.csv), and the ground truth (truth.json: the team policy and the
 * biases planted in named operators), for demos, tests and benchmarks.
 * docs/simulate.md describes the state model, the policy and the bias kinds
 * with their formulas.
 *
 * Every draw comes from one seed (util/rng.h): the same options give
 * byte-identical files.  Output is streamed; memory grows with the number of
 * entities, not with the number of rows.
 */
#ifndef UNDERSTUDY_SIM_H
#define UNDERSTUDY_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "event/event.h"

#define SIM_MAX_OPERATORS 99
#define SIM_SPEC_MAX      160 /* bytes of a bias spec, terminator included */
#define SIM_LEVEL_MAX     32  /* bytes of a region's level, terminator included */

enum sim_bias_kind {
    SIM_BIAS_NEVER = 0, /* never takes the action; holds instead */
    SIM_BIAS_SHIFT,     /* scores the action as if a feature were shifted */
    SIM_BIAS_SCALE,     /* multiplies the action's magnitude */
    SIM_BIAS_FAVOR,     /* multiplies the action's propensity */
    SIM_BIAS_KIND_COUNT,
};

enum sim_region_op {
    SIM_REGION_ALL = 0, /* no region: everywhere */
    SIM_REGION_EQ,      /* categorical feature == level */
    SIM_REGION_LT,      /* numeric feature < value (missing is outside) */
    SIM_REGION_GT,      /* numeric feature > value (missing is outside) */
};

/*
 * One planted bias, as sim_parse_bias reads it from
 * "OPERATOR:KIND=ARGS[@REGION]" (docs/simulate.md has the grammar).  Plain
 * data: nothing to free.
 */
struct sim_bias {
    unsigned op; /* operator number: 3 for op-03 */
    enum sim_bias_kind kind;
    enum event_class cls; /* the action class biased (never hold) */
    enum sim_region_op region_op;
    double amount;         /* shift: added to the feature; scale, favor: the factor */
    double region_value;   /* SIM_REGION_LT / GT */
    size_t feature;        /* shift: index of the shifted feature (sim_feature_name) */
    size_t region_feature; /* index of the region's feature */
    char region_level[SIM_LEVEL_MAX];
    char spec[SIM_SPEC_MAX]; /* the spec as given */
};

struct sim_options {
    uint64_t rows;                 /* state snapshots to write = examples; >= 1 */
    unsigned operators;            /* op-01..op-NN, 1..SIM_MAX_OPERATORS */
    unsigned campaigns;            /* 0 = chosen from rows (about two weeks of snapshots) */
    uint64_t seed;                 /* any value */
    int64_t start_us;              /* time of the first snapshot; cut to whole seconds */
    double temperature;            /* the team policy's softmax temperature, > 0 */
    const struct sim_bias *biases; /* [n_biases], borrowed */
    size_t n_biases;
};

struct sim_summary {
    uint64_t rows;    /* snapshots written (= examples.csv rows) */
    uint64_t actions; /* action events written (= non-hold examples) */
    uint64_t by_class[EVENT_CLASS_COUNT];
    /* by_operator[n - 1][class] for op-n, n = 1..operators */
    uint64_t by_operator[SIM_MAX_OPERATORS][EVENT_CLASS_COUNT];
    unsigned operators;
    unsigned campaigns;
    unsigned entities;
    int64_t first_ts_us; /* first and last snapshot */
    int64_t last_ts_us;
    /*
     * Mean entropy (nats) of the distributions the decisions were drawn from:
     * the log loss of a model that knew each operator's exact policy, a floor
     * for any model of the examples.
     */
    double mean_entropy;
};

/*
 * Defaults: 20000 rows, 8 operators, campaigns chosen from rows, seed 1,
 * start 2026-10-05T00:00:00Z, the documented temperature, no biases.
 */
void sim_options_default(struct sim_options *o);

/*
 * Parses one bias spec into *out.  Returns 0, or -1 with a one-line reason
 * in err naming the part that is wrong (operator, kind, class, feature,
 * number, region).  Whether the operator exists depends on the number of
 * operators: sim_check_options checks that.  spec is borrowed; *out is
 * untouched on failure.
 */
int sim_parse_bias(const char *spec, struct sim_bias *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Checks options before a run: bounds, and every bias naming an operator in
 * op-01..op-NN.  Returns 0 or -1 with a reason (sim_run calls it too).
 */
int sim_check_options(const struct sim_options *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Runs the simulation and writes states.jsonl, actions.jsonl, examples.csv
 * and truth.json into out_dir (created with its parents when missing; files
 * of those names are replaced).  Files are written under a .tmp suffix and
 * renamed when complete.  Fills *summary (may be NULL).  Returns 0, or -1
 * with a reason in err (bad options, I/O, out of memory); on failure the
 * partial .tmp files are removed.
 */
int sim_run(const struct sim_options *o, const char *out_dir, struct sim_summary *summary,
            char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * The state features the simulation writes, in the column order of
 * examples.csv: names, and whether each is categorical (1) or numeric (0).
 * Out-of-range i gives NULL / -1.
 */
size_t sim_feature_count(void);
const char *sim_feature_name(size_t i);
int sim_feature_is_categorical(size_t i);

/* "never", "shift", "scale", "favor"; NULL when out of range. */
const char *sim_bias_kind_name(enum sim_bias_kind k);

#endif
