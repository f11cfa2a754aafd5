/*
 * dataset internals shared by dataset.c (storage, weights, split),
 * dataset_csv.c and dataset_bin.c.  Not for use outside internal/dataset.
 *
 * Strings live in a chunked arena (chunks never move, so pointers handed out
 * stay valid as the dataset grows).  Interning is an open-addressing hash
 * table of indices into a growable name array; a name costs one arena copy
 * and no malloc of its own.
 */
#ifndef UNDERSTUDY_DATASET_IMPL_H
#define UNDERSTUDY_DATASET_IMPL_H

#include "dataset/dataset.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DS_NO_LEVEL UINT32_MAX
#define DS_MAX_ROWS ((size_t)UINT32_MAX - 1)

struct ds_arena_chunk {
    struct ds_arena_chunk *next;
    size_t used;
    size_t cap;
    char data[];
};

struct ds_arena {
    struct ds_arena_chunk *head;
};

struct ds_intern {
    uint32_t *slots; /* index + 1, 0 = empty; cap a power of two */
    size_t cap;
    const char **names; /* in the arena */
    uint32_t *lens;
    uint32_t *hashes;
    size_t n;
    size_t names_cap;
};

struct ds_col {
    const char *name; /* in the arena */
    enum gbm_kind kind;
    double *num;   /* numeric: [cap], NaN = missing */
    uint32_t *lvl; /* categorical: [cap], DS_NO_LEVEL = missing */
    struct ds_intern levels;
};

struct ds {
    size_t n_features;
    struct ds_col *cols;

    size_t n_rows;
    size_t cap;
    int32_t *label;
    int64_t *ts;
    int32_t *group; /* -1 = none */
    double *target;

    float *weight;  /* NULL: all 1 */
    uint8_t *valid; /* NULL: no split, every row trains */
    struct ds_split_info split;

    bool fixed_classes;
    struct ds_intern classes;
    size_t *class_count; /* [classes.names_cap] */

    struct ds_intern groups;
    struct ds_arena arena;
};

/* Copies s[0..len) and a NUL into the arena; NULL when out of memory. */
const char *ds_arena_put(struct ds_arena *a, const char *s, size_t len);

uint32_t ds_hash(const char *s, size_t len);
/* Index of s[0..len) in the table, or -1. */
long ds_intern_find(const struct ds_intern *t, const char *s, size_t len, uint32_t hash);
/*
 * Finds or adds s[0..len); *idx gets its index and *added whether it is new.
 * Returns 0, or -1 when out of memory (the table is unchanged).
 */
int ds_intern_add(struct ds_intern *t, struct ds_arena *a, const char *s, size_t len, uint32_t *idx,
                  bool *added) DS_WUR;
void ds_intern_deinit(struct ds_intern *t);

/* Makes room for at least n rows in every column.  0 or -1 (out of memory). */
int ds_reserve(struct ds *d, size_t n) DS_WUR;

/*
 * Adds a class name (for a dataset whose classes are discovered); *idx gets
 * its index.  0 or -1 (out of memory).
 */
int ds_class_add(struct ds *d, const char *s, size_t len, int32_t *idx) DS_WUR;

/* Forgets the weights and the split (the rows changed). */
void ds_forget_derived(struct ds *d);

#endif
