/*
 * tsim: see tsim.h.  Lines are read with getline, so the long state lines
 * of a simulation (about 700 bytes, more with many keys) need no buffer
 * size of their own.
 */
#include "tsim.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <cmocka.h>
#include <jansson.h>

#include "testenv.h"

void tsim_run(const char *dir, const char *const *args)
{
    const char *argv[30] = {"simulate", "--out", dir};
    size_t n = 3;
    for (; args && *args; args++) {
        assert_true(n < 29);
        argv[n++] = *args;
    }
    argv[n] = NULL;
    free(testenv_run_bin(NULL, argv, 0));
}

/* The line without its line end; 0 at the end of the file. */
static int read_line(FILE *f, char **line, size_t *cap)
{
    ssize_t len = getline(line, cap, f);
    if (len < 0)
        return 0;
    while (len > 0 && ((*line)[len - 1] == '\n' || (*line)[len - 1] == '\r'))
        (*line)[--len] = '\0';
    return 1;
}

size_t tsim_csv_with_operators(const char *dir, const char *out, const char *fixed, size_t max_rows)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/examples.csv", dir);
    FILE *csv = fopen(path, "r");
    if (!csv)
        fail_msg("cannot open %s", path);
    snprintf(path, sizeof path, "%s/states.jsonl", dir);
    FILE *states = fopen(path, "r");
    if (!states)
        fail_msg("cannot open %s", path);
    FILE *o = fopen(out, "w");
    if (!o)
        fail_msg("cannot create %s", out);
    char *row = NULL, *state = NULL;
    size_t row_cap = 0, state_cap = 0, rows = 0;
    if (!read_line(csv, &row, &row_cap))
        fail_msg("%s/examples.csv is empty", dir);
    assert_true(fprintf(o, "%s,operator_id\n", row) > 0);
    while ((max_rows == 0 || rows < max_rows) && read_line(csv, &row, &row_cap)) {
        if (!read_line(states, &state, &state_cap))
            fail_msg("%s/states.jsonl has fewer lines than examples.csv has rows", dir);
        const char *op = fixed;
        json_t *j = NULL;
        if (!op) {
            json_error_t je;
            j = json_loads(state, 0, &je);
            if (!j)
                fail_msg("states.jsonl line %zu is not JSON: %s", rows + 1, je.text);
            op = json_string_value(json_object_get(j, "operator_id"));
            if (!op)
                fail_msg("states.jsonl line %zu has no operator_id", rows + 1);
        }
        assert_true(fprintf(o, "%s,%s\n", row, op) > 0);
        json_decref(j);
        rows++;
    }
    free(row);
    free(state);
    fclose(csv);
    fclose(states);
    assert_int_equal(fclose(o), 0);
    return rows;
}

size_t tsim_count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    char buf[65536];
    size_t n = 0, got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + got - p))) != NULL; p++)
            n++;
    }
    fclose(f);
    return n;
}
