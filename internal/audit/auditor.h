/*
 * auditor: the audit as `understudy audit` and `understudy run` perform it,
 * on top of the pure audit (audit.h), the store and the reports.
 *
 * A database audit (audit_job_run with a store):
 *   1. takes the audit run lock (STORE_AUDIT_RUN_LOCK_KEY), so two audits
 *      never run at once; runs still marked 'running' then belong to a
 *      process that stopped, and are marked failed;
 *   2. reads the champion (the second reference; none is fine);
 *   3. loads the decisions of the window (the contract's labelling rule);
 *      when they cannot be audited (none, one operator, too few) nothing
 *      is recorded and AUDIT_JOB_NOTHING is returned with the reason;
 *   4. records a 'running' run with its parameters, audits, adds each
 *      operator's verdicts on recommendations (feedback events in the
 *      window), and writes the findings and operators and marks the run
 *      finished in one transaction; any failure after the run was recorded
 *      marks it failed with the error, and the previous findings stay what
 *      audit_findings_latest shows;
 *   5. writes the reports when a directory is given.
 * A CSV audit does steps 3 to 5 on the file and writes only the reports.
 *
 * The daemon's thread (auditor_start) keeps its own PostgreSQL session.
 * Only the instance whose session holds STORE_AUDIT_LOCK_KEY schedules
 * audits: after each promotion (NOTIFY understudy_policy) and when
 * audit.every has passed since the newest finished run.  Ingest, training
 * and recommending never wait for it.
 */
#ifndef UNDERSTUDY_AUDITOR_H
#define UNDERSTUDY_AUDITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/audit.h"
#include "dataset/dataset.h"
#include "event/event.h"

struct cfg;
struct store;
struct util_buf;

struct audit_job {
    struct store *store;  /* database audit; NULL for a CSV audit */
    const char *csv_path; /* CSV audit */
    struct ds_csv_options csv;
    /* Database audit: the features and the labelling windows (borrowed). */
    const struct event_feature_spec *features;
    size_t n_features;
    int64_t settle_ms, hold_ms;
    int64_t since_us, until_us; /* [since, until); INT64_MIN / INT64_MAX = open */
    struct audit_params params; /* params.only: audit only these operators */
    const char *report_dir;     /* NULL = no report files */
    unsigned formats;           /* REPORT_* mask */
};

/* Fills j from cfg (features, labels, audit.*, train.threads; no source,
 * the whole time range, no reports).  Pointers borrow from cfg. */
void audit_job_from_cfg(struct audit_job *j, const struct cfg *cfg);

struct audit_job_outcome {
    int64_t run_id;              /* audit_runs.id; 0 when none was recorded */
    int policy_version;          /* 0 = no champion */
    struct audit_result *result; /* caller frees with audit_result_free */
    double load_seconds;         /* reading the decisions */
    /* Set when the run was recorded (or, for a CSV, done) but the report
     * files could not be written: the reason; "" otherwise. */
    char report_error[512];
};

/* Nothing to audit (no decisions in the window, one operator, none with
 * min_support decisions, an operator asked for without decisions): err
 * says which; no run was recorded. */
#define AUDIT_JOB_NOTHING 1

/*
 * Runs one audit (see above).  Returns 0 with *out filled,
 * AUDIT_JOB_NOTHING with the reason (nothing written), or -1 with a
 * one-line reason (then out->run_id names the run marked failed, if one
 * was recorded).
 */
int audit_job_run(const struct audit_job *j, struct audit_job_outcome *out, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* ---- the daemon's thread ------------------------------------------------ */

struct auditor;

/* Starts the thread; 0 and the handle, or -1 with a reason. */
int auditor_start(const struct cfg *cfg, struct auditor **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Applies the reloadable audit.* keys of cfg (borrowed). */
void auditor_apply_config(struct auditor *a, const struct cfg *cfg);
/* Stops the thread (an audit in progress stops at its next reference fit and
 * is marked failed) and frees a.  NULL is a no-op. */
void auditor_stop(struct auditor *a);
/* Appends the auditor's metrics (Prometheus text).  0 or -1 (OOM). */
int auditor_render_metrics(struct util_buf *b, void *ud);

#endif
