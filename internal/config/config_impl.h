/*
 * config_impl: what the files of internal/config share and nobody else
 * uses: the value setters behind the table, list helpers, number
 * formatting and the YAML walker's entry point.
 */
#ifndef UNDERSTUDY_CONFIG_IMPL_H
#define UNDERSTUDY_CONFIG_IMPL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define CFG_KEYS_MAX         128  /* upper bound on the table length */
#define CFG_FEATURES_MAX     1024 /* features one config may declare */
#define CFG_FEATURE_NAME_MAX 128  /* bytes of a feature name */
#define CFG_FILE_MAX         ((size_t)1024 * 1024)

/* Allowed spellings of a feature's type, indexed by enum event_feature_kind. */
extern const char *const cfg_feature_kind_names[];

/*
 * Sets the scalar key k of cfg from text (is_null: the YAML value was a
 * plain null such as "" or "~").  Returns 0, or -1 with a reason (no
 * position, no key) in why; cfg keeps its old value on failure.
 */
int cfg_value_set(struct cfg *cfg, const struct cfg_key *k, const char *text, bool is_null,
                  char *why, size_t whylen);

/* Finds names[i] equal to s.  Returns 0 and i in *out, or -1 with
 * "must be one of a, b, c" (or "must be a or b") in why. */
int cfg_enum_parse(const char *const *names, const char *s, int *out, char *why, size_t whylen);

/* Reasons a property name or feature name is refused; 0 when it is fine. */
int cfg_property_name_check(const char *name, char *why, size_t whylen);
int cfg_feature_name_check(const char *name, char *why, size_t whylen);

/* Append a copy of one entry to a growing array.  0, or -1 when out of memory
 * (the array is unchanged). */
int cfg_kv_append(struct cfg_kv **arr, size_t *n, const char *key, const char *value);
int cfg_feature_append(struct event_feature_spec **arr, size_t *n, const char *name,
                       enum event_feature_kind kind);

/* Free an array and what its entries own; NULL is a no-op. */
void cfg_kv_free(struct cfg_kv *arr, size_t n);
void cfg_features_free(struct event_feature_spec *arr, size_t n);

/* Replace the map or feature list of key k with arr[0..n) (ownership moves
 * to cfg; the old list is freed). */
void cfg_list_install(struct cfg *cfg, const struct cfg_key *k, void *arr, size_t n);

/* Formats a size the way util_parse_size reads it back ("16MiB", "1000"). */
char *cfg_format_size(int64_t bytes, char *dst, size_t size);
/* Formats a double so that strtod reads back the same value ("0.3", "1.0"). */
char *cfg_format_double(double v, char *dst, size_t size);

/* Replaces control bytes in s by '?' so that an error stays one line. */
void cfg_one_line(char *s);

/*
 * Applies the YAML text (name is used in messages) to cfg, which already
 * holds the defaults.  Returns 0, or -1 with "name:line:col: key: reason" in
 * err; cfg may then be partly modified and must be thrown away.
 */
int cfg_yaml_apply(struct cfg *cfg, const char *name, const char *text, size_t len, char *err,
                   size_t errlen);

#endif
