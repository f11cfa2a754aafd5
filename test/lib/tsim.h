/*
 * tsim: test helpers around `understudy simulate` (docs/simulate.md): run
 * it, and turn its output into the CSV an audit or a trainer reads.
 * examples.csv has no operator column on purpose (it would leak into a
 * model that reads every column); tests that need one paste it from
 * states.jsonl, whose line i is the snapshot behind row i.  Everything
 * fails the current cmocka test on error.
 */
#ifndef UNDERSTUDY_TSIM_H
#define UNDERSTUDY_TSIM_H

#include <stddef.h>

/*
 * Runs `$UNDERSTUDY_BIN simulate --out dir` followed by args
 * (NULL-terminated, at most 26); fails the test unless it exits 0.
 */
void tsim_run(const char *dir, const char *const *args);

/*
 * Writes to out the simulation's dir/examples.csv with an `operator_id`
 * column appended: the operator_id of the matching line of
 * dir/states.jsonl, or `fixed` on every row when fixed is not NULL.  Stops
 * after max_rows data rows (0 = all).  Returns the data rows written.
 */
size_t tsim_csv_with_operators(const char *dir, const char *out, const char *fixed,
                               size_t max_rows);

/* Lines (newline characters) in a file. */
size_t tsim_count_lines(const char *path);

#endif
