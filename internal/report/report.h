/*
 * report: renders an audit result (internal/audit) as the three documents
 * analysts and the database read: JSON (the machine-readable record whose
 * "parameters", "findings" and "operators" the store keeps), Markdown (the
 * same content as plain text) and one self-contained HTML page with inline
 * SVG charts.  No database, no clock: what the result does not say (where
 * the data came from, the requested window, when the report was made) comes
 * in struct report_meta.  docs/audit.md describes every JSON field and what
 * the HTML shows.
 *
 * Decisions the renderers take:
 *  - non-finite numbers are JSON null and "n/a" in text; JSON reals carry
 *    10 significant digits, as the other JSON the project writes;
 *  - times are RFC 3339 in UTC: with microseconds in JSON, to the second
 *    in text; an INT64_MIN time is an open end (null, "open");
 *  - the HTML fetches nothing: no script, no external font, image, style
 *    sheet or link, so it can be mailed and archived as one file;
 *  - findings are rendered in the result's order (most severe first).
 *
 * Nothing here keeps state between calls; every function is thread-safe
 * as long as the result it reads is not being modified.
 */
#ifndef UNDERSTUDY_REPORT_H
#define UNDERSTUDY_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/audit.h"
#include "util/util.h"

#define REPORT_WUR __attribute__((warn_unused_result))

/* What the audit result does not know about itself.  Every pointer is
 * borrowed for the duration of the call. */
struct report_meta {
    const char *source;                   /* "database" or "csv" */
    const char *csv_path;                 /* the CSV file, or NULL */
    int64_t run_id;                       /* audit_runs.id; 0 = none (CSV) */
    int policy_version;                   /* champion compared with; 0 = none */
    int64_t window_from_us, window_to_us; /* requested window; INT64_MIN = open */
    int64_t generated_us;                 /* wall clock of the report */
    const char *const *features;          /* feature names audited */
    size_t n_features;
};

/* Output formats, as a mask. */
enum {
    REPORT_HTML = 1u,
    REPORT_MD = 2u,
    REPORT_JSON = 4u,
};

/*
 * Parses a comma-separated list of format names ("html", "md", "json"; any
 * subset in any order, spaces around a name ignored) into a mask in *out.
 * Returns 0, or -1 with a reason naming the offending word in err: an
 * unknown name, an empty name, a name given twice, an empty list.
 */
int report_parse_formats(const char *list, unsigned *out, char *err, size_t errlen) REPORT_WUR;

/*
 * The JSON document (shape in docs/audit.md), indented, keys in a fixed
 * order.  Returns a NUL-terminated string the caller frees, or NULL when
 * out of memory.  r and m are borrowed.
 */
char *report_json(const struct audit_result *r, const struct report_meta *m) REPORT_WUR;

/*
 * Appends the Markdown report to out.  Returns 0, or -1 when out of memory,
 * in which case out is left as it was before the call.
 */
int report_markdown(const struct audit_result *r, const struct report_meta *m,
                    struct util_buf *out) REPORT_WUR;

/*
 * Appends the HTML report (one self-contained page, inline CSS and SVG) to
 * out.  Returns 0, or -1 when out of memory, in which case out is left as it
 * was before the call.
 */
int report_html(const struct audit_result *r, const struct report_meta *m,
                struct util_buf *out) REPORT_WUR;

/*
 * Writes audit.html, audit.md and audit.json (those in the formats mask)
 * into dir, creating dir and its parents (mode 0755) when missing.  Each
 * file is written to a temporary name in dir, flushed to disk and renamed
 * over the final name, and dir is synced, so a reader sees the old file or
 * the new one, never a part.  Returns 0, or -1 with "path: reason" in err
 * (files already renamed stay; no temporary file is left behind).  An empty
 * mask writes nothing and succeeds.
 */
int report_write(const struct audit_result *r, const struct report_meta *m, const char *dir,
                 unsigned formats, char *err, size_t errlen) REPORT_WUR;

/* ---- shared by the renderers (report.c), exposed for tests ------------- */

/*
 * An output buffer that remembers its first failure, so a renderer appends
 * without checking every call and checks once, in report_sink_finish.
 */
struct report_sink {
    struct util_buf *buf; /* borrowed */
    size_t start;         /* buf->len at init, restored on failure */
    bool failed;
};

void report_sink_init(struct report_sink *s, struct util_buf *buf);
void report_sink_puts(struct report_sink *s, const char *text);
void report_sink_printf(struct report_sink *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* 0, or -1 after any failure with the buffer cut back to its length at init. */
int report_sink_finish(struct report_sink *s) REPORT_WUR;

#define REPORT_NUM_MAX 48 /* room for any report_fmt_* result */

/* Each writes into dst (size >= REPORT_NUM_MAX is always enough) and returns
 * dst.  None can fail; a non-finite number gives "n/a". */
/* RFC 3339 UTC to the second ("2026-11-02T14:05:11Z"); "open" for INT64_MIN. */
char *report_fmt_time(int64_t us, char *dst, size_t size);
/* A duration for people: "45 minutes", "36 hours", "14 days", "2.5 days". */
char *report_fmt_duration(int64_t us, char *dst, size_t size);
/* A count: an integer when whole ("42"), else one decimal ("17.3"). */
char *report_fmt_count(double v, char *dst, size_t size);
/* A ratio with two decimals ("1.25"). */
char *report_fmt_ratio(double v, char *dst, size_t size);
/* A p- or q-value: "< 0.001" below 0.001, else 3 significant digits. */
char *report_fmt_p(double p, char *dst, size_t size);
/* A share in [0, 1] as a percentage with one decimal ("87.5%"). */
char *report_fmt_share(double v, char *dst, size_t size);

/* The class name of index k, or "(none)" when k is out of range. */
const char *report_class_name(const struct audit_result *r, int k);
/* A title for people: "Acts more often", "Blind spot", ...; "Finding" out of range. */
const char *report_kind_title(enum audit_kind k);
/* over_acting, under_acting and blind_spot: the kinds about how often. */
bool report_is_rate_kind(enum audit_kind k);

/* One plain sentence on what a finding means, for a reader who knows no
 * statistics, into dst.  Returns dst. */
char *report_finding_meaning(const struct audit_result *r, const struct audit_finding *f, char *dst,
                             size_t size);

/* A labelled number of a finding's table (text, not escaped). */
struct report_row {
    const char *label;
    char value[2 * REPORT_NUM_MAX];
};
#define REPORT_ROWS_MAX 12

/* The numbers of a finding as rows (labels depend on the kind) into
 * rows[0..max).  Returns the number of rows filled. */
size_t report_finding_rows(const struct audit_result *r, const struct audit_finding *f,
                           struct report_row *rows, size_t max);

/* One audit parameter: its JSON name, value as text and meaning. */
struct report_param {
    const char *name;
    char value[REPORT_NUM_MAX];
    const char *meaning;
};
#define REPORT_PARAMS_MAX 16

/* The parameters of the run (not the feature list) into rows[0..max).
 * Returns the number filled. */
size_t report_param_rows(const struct audit_result *r, struct report_param *rows, size_t max);

#define REPORT_METHOD_PARAS 8
#define REPORT_PARA_MAX     1024
/*
 * Paragraph i (< REPORT_METHOD_PARAS) of the method section in plain words,
 * with this run's numbers, as unescaped text into dst (size REPORT_PARA_MAX
 * is enough).  Returns dst ("" for i out of range).
 */
char *report_method_text(const struct audit_result *r, const struct report_meta *m, size_t i,
                         char *dst, size_t size);

/*
 * Control limits of a funnel plot: for a count that is Poisson with mean
 * expected, the count below which (*lo) and above which (*hi) it falls with
 * probability P(Z >= z) each, Z standard normal (z 1.96: 95 % limits, 3.09:
 * 99.8 %).  Exact Poisson quantiles interpolated between whole counts
 * (so the limits move smoothly with expected) up to expected 700, the
 * Cornish-Fisher approximation E + z sqrt(E) + (z^2 - 1) / 6 above.  *lo is
 * at least 0.  expected <= 0 or not finite gives 0 and 0.
 */
void report_funnel_limits(double expected, double z, double *lo, double *hi);

#endif
