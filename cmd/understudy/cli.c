/*
 * cli: helpers the command files share (comma-separated option lists).
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "util/util.h"

void cli_list_free(struct cli_list *l)
{
    free(l->buf);
    free(l->items);
    memset(l, 0, sizeof *l);
}

int cli_list_parse(const char *s, struct cli_list *l)
{
    cli_list_free(l);
    if (!*s)
        return -1;
    if (!(l->buf = util_strdup(s)))
        return -1;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    if (!(l->items = util_calloc(cap, sizeof *l->items)))
        return -1;
    char *save = NULL;
    for (char *p = l->buf;; p = NULL) {
        char *tok = strtok_r(p, ",", &save);
        if (!tok)
            break;
        l->items[l->n++] = tok;
    }
    return l->n == cap ? 0 : -1;
}

bool cli_list_has(const struct cli_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->items[i], s) == 0)
            return true;
    }
    return false;
}
