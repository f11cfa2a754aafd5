/*
 * auditor: one audit from PostgreSQL or a CSV file, and the daemon's audit
 * thread (auditor.h has the flow).
 */
#include "audit/auditor.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "policy/policy.h"
#include "report/report.h"
#include "store/store.h"
#include "util/util.h"

/* How often the thread looks at the lock and the clock without a wake. */
#define CHECK_INTERVAL_MS 5000
/* After a failed run, wait this long (or audit.every if shorter). */
#define RETRY_AFTER_MS INT64_C(300000)

void audit_job_from_cfg(struct audit_job *j, const struct cfg *cfg)
{
    memset(j, 0, sizeof *j);
    audit_params_default(&j->params);
    j->params.fdr_q = cfg->audit.fdr_q;
    j->params.min_support = cfg->audit.min_support;
    j->params.tolerance = cfg->audit.tolerance;
    j->params.reference_rows = (size_t)cfg->audit.reference_rows;
    j->params.threads = (unsigned)cfg->train.threads;
    j->params.seed = (uint64_t)cfg->train.seed;
    j->features = cfg->features;
    j->n_features = cfg->n_features;
    j->settle_ms = cfg->labels.settle_window_ms;
    j->hold_ms = cfg->labels.hold_window_ms;
    j->since_us = INT64_MIN;
    j->until_us = INT64_MAX;
}

static int add_verdicts(void *arg, const char *operator_id, int64_t accepted, int64_t total)
{
    struct audit_result *r = arg;
    for (size_t o = 0; o < r->n_operators; o++) {
        struct audit_operator *op = &r->operators[o];
        if (strcmp(op->operator_id, operator_id) == 0 && total > 0) {
            op->verdicts = (size_t)total;
            op->acceptance_rate = (double)accepted / (double)total;
        }
    }
    return 0;
}

static char *params_json(const struct audit_job *j)
{
    const struct audit_params *p = &j->params;
    json_t *o = json_pack("{s:f, s:I, s:f, s:f, s:f, s:I, s:f, s:I, s:I, s:I, s:I}", "fdr_q",
                          p->fdr_q, "min_support", (json_int_t)p->min_support, "tolerance",
                          p->tolerance, "blind_spot_ratio", p->blind_spot_ratio,
                          "blind_spot_min_expected", p->blind_spot_min_expected, "rounds",
                          (json_int_t)p->rounds, "learning_rate", p->learning_rate, "max_bins",
                          (json_int_t)p->max_bins, "reference_rows", (json_int_t)p->reference_rows,
                          "threads", (json_int_t)p->threads, "seed", (json_int_t)p->seed);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}

/* The champion, or none.  0 or -1. */
static int load_champion(struct store *st, int *version, struct gbm_model **out, char *err,
                         size_t errlen)
{
    char *text = NULL;
    *out = NULL;
    if (store_policy_champion(st, version, &text, err, errlen) != 0)
        return -1;
    if (!text)
        return 0;
    char why[512];
    int rc = gbm_model_from_json(text, strlen(text), out, why, sizeof why);
    free(text);
    if (rc != 0) {
        /* A champion that no longer loads is no reference; say so and go on. */
        log_warn("audit: the champion (version %d) does not load: %s; auditing without it",
                 *version, why);
        *version = 0;
    }
    return 0;
}

static int write_reports(const struct audit_job *j, struct audit_job_outcome *out,
                         const struct ds *ds, char *err, size_t errlen)
{
    size_t nf = ds_n_features(ds);
    const char **names = util_calloc(nf ? nf : 1, sizeof *names);
    if (!names) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    for (size_t f = 0; f < nf; f++)
        names[f] = ds_feature_name(ds, f);
    struct report_meta m = {
        .source = j->store ? "database" : "csv",
        .csv_path = j->store ? NULL : j->csv_path,
        .run_id = out->run_id,
        .policy_version = out->policy_version,
        .window_from_us = j->since_us,
        .window_to_us = j->until_us == INT64_MAX ? INT64_MIN : j->until_us,
        .generated_us = util_now_wall_us(),
        .features = names,
        .n_features = nf,
    };
    int rc = 0;
    if (j->store) {
        char *doc = report_json(out->result, &m);
        int64_t n = 0;
        if (!doc) {
            util_fmt(err, errlen, "out of memory");
            rc = -1;
        } else {
            rc = store_audit_finish(j->store, out->run_id, doc, &n, err, errlen);
            free(doc);
        }
    }
    /* The run is recorded: reports that cannot be written do not unmake it. */
    if (rc == 0 && j->report_dir && j->formats &&
        report_write(out->result, &m, j->report_dir, j->formats, out->report_error,
                     sizeof out->report_error) != 0 &&
        !out->report_error[0])
        util_fmt(out->report_error, sizeof out->report_error, "unknown error");
    free(names);
    return rc;
}

static int load_csv(const struct audit_job *j, struct ds **ds, char *err, size_t errlen)
{
    /* Without a size column named, delta_pct is the size when there is one. */
    struct ds_csv_options o = j->csv;
    bool dropped = false;
    for (size_t i = 0; i < o.n_drop; i++)
        dropped |= strcmp(o.drop[i], "delta_pct") == 0;
    if (!o.target && !dropped && ds_csv_has_column(j->csv_path, "delta_pct"))
        o.target = "delta_pct";
    if (ds_read_csv(j->csv_path, &o, ds, err, errlen) != 0)
        return -1;
    if (j->since_us == INT64_MIN && j->until_us == INT64_MAX)
        return 0;
    /* Keep the rows of the window only. */
    size_t nf = ds_n_features(*ds);
    const char **names = util_calloc(nf ? nf : 1, sizeof *names);
    enum gbm_kind *kinds = util_calloc(nf ? nf : 1, sizeof *kinds);
    const char **classes = util_calloc(ds_n_classes(*ds), sizeof *classes);
    struct event_feature_value *v = util_calloc(nf ? nf : 1, sizeof *v);
    struct ds *w = NULL;
    int rc = -1;
    if (!names || !kinds || !classes || !v)
        goto oom;
    for (size_t f = 0; f < nf; f++) {
        names[f] = ds_feature_name(*ds, f);
        kinds[f] = ds_feature_kind(*ds, f);
    }
    for (size_t k = 0; k < ds_n_classes(*ds); k++)
        classes[k] = ds_class_name(*ds, k);
    if (ds_new(names, kinds, nf, classes, ds_n_classes(*ds), &w, err, errlen) != 0)
        goto out;
    for (size_t r = 0; r < ds_n_rows(*ds); r++) {
        int64_t ts = ds_row_ts(*ds, r);
        if (ts < j->since_us || ts >= j->until_us)
            continue;
        for (size_t f = 0; f < nf; f++) {
            v[f].num = ds_cell_num(*ds, f, r);
            v[f].cat = ds_cell_level(*ds, f, r);
            v[f].missing = kinds[f] == GBM_NUMERIC ? isnan(v[f].num) : v[f].cat == NULL;
        }
        if (ds_add_row(w, ds_class_name(*ds, (size_t)ds_row_label(*ds, r)), ts,
                       ds_row_group(*ds, r), ds_row_target(*ds, r), v) != 0)
            goto oom;
    }
    ds_free(*ds);
    *ds = w;
    w = NULL;
    rc = 0;
    goto out;
oom:
    util_fmt(err, errlen, "out of memory");
out:
    ds_free(w);
    free(names);
    free(kinds);
    free(classes);
    free(v);
    return rc;
}

int audit_job_run(const struct audit_job *j, struct audit_job_outcome *out, char *err,
                  size_t errlen)
{
    struct ds *ds = NULL;
    struct gbm_model *champion = NULL;
    char *params = NULL;
    bool locked = false;
    int rc = -1;
    char e2[512];

    memset(out, 0, sizeof *out);
    int64_t t0 = util_now_mono_us();
    if (!j->store) {
        if (load_csv(j, &ds, err, errlen) != 0)
            goto out;
        out->load_seconds = (double)(util_now_mono_us() - t0) / 1e6;
        if (audit_run(ds, NULL, &j->params, &out->result, err, errlen) != 0)
            goto out;
        /* Without a ts column the rows' times are their numbers: no window. */
        if (!j->csv.ts)
            out->result->from_us = out->result->to_us = INT64_MIN;
        if (write_reports(j, out, ds, err, errlen) != 0)
            goto out;
        rc = 0;
        goto out;
    }

    int got = 0;
    if (store_try_advisory_lock(j->store, STORE_AUDIT_RUN_LOCK_KEY, &got, err, errlen) != 0)
        goto out;
    if (!got) {
        util_fmt(err, errlen,
                 "another audit is running (it holds the audit run lock); try again "
                 "when it has finished");
        rc = AUDIT_JOB_NOTHING;
        goto out;
    }
    locked = true;
    int64_t stale = 0;
    if (store_audit_fail_stale(j->store, &stale, err, errlen) != 0)
        goto out;
    if (stale)
        log_warn("audit: marked %lld audit run(s) left running by a stopped process as failed",
                 (long long)stale);
    if (load_champion(j->store, &out->policy_version, &champion, err, errlen) != 0)
        goto out;
    struct store_example_query q = {
        .features = j->features,
        .n_features = j->n_features,
        .settle_ms = j->settle_ms,
        .hold_ms = j->hold_ms,
        .since_us = j->since_us,
        .until_us = j->until_us,
    };
    if (policy_load_dataset(j->store, &q, &ds, err, errlen) != 0)
        goto out;
    out->load_seconds = (double)(util_now_mono_us() - t0) / 1e6;
    if (ds_n_rows(ds) == 0) {
        char from[40] = "the beginning", to[40] = "now";
        if (j->since_us != INT64_MIN)
            util_format_rfc3339(j->since_us, from, sizeof from);
        if (j->until_us != INT64_MAX)
            util_format_rfc3339(j->until_us, to, sizeof to);
        util_fmt(err, errlen, "no decisions between %s and %s; nothing audited", from, to);
        rc = AUDIT_JOB_NOTHING;
        goto out;
    }
    /* What cannot be audited is refused before a run is recorded. */
    if (audit_check(ds, &j->params, err, errlen) != 0) {
        rc = AUDIT_JOB_NOTHING;
        goto out;
    }
    if (!(params = params_json(j))) {
        util_fmt(err, errlen, "out of memory");
        goto out;
    }
    if (store_audit_begin(j->store, out->policy_version, j->since_us,
                          j->until_us == INT64_MAX ? INT64_MIN : j->until_us, params, &out->run_id,
                          err, errlen) != 0)
        goto out;
    if (audit_run(ds, champion, &j->params, &out->result, err, errlen) != 0 ||
        store_audit_verdicts(j->store, j->since_us, j->until_us, add_verdicts, out->result, err,
                             errlen) != 0 ||
        write_reports(j, out, ds, err, errlen) != 0) {
        if (store_audit_fail(j->store, out->run_id, err, e2, sizeof e2) < 0)
            log_warn("audit: could not mark run %lld failed: %s", (long long)out->run_id, e2);
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) {
        audit_result_free(out->result);
        out->result = NULL;
    }
    if (locked && store_advisory_unlock(j->store, STORE_AUDIT_RUN_LOCK_KEY, e2, sizeof e2) != 0)
        log_warn("audit: releasing the audit run lock: %s", e2);
    free(params);
    gbm_model_free(champion);
    ds_free(ds);
    return rc;
}

/* ---- the daemon's thread ------------------------------------------------ */

struct auditor {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    int wake[2]; /* self-pipe: stop and reload wake the thread */
    atomic_bool stop;
    struct {
        bool enabled;
        int64_t every_ms, lookback_ms;
        struct audit_job job; /* without store; features point into feats */
        char *report_dir;
    } conf;                           /* under mu */
    struct event_feature_spec *feats; /* deep copy (features are not reloadable) */
    size_t n_feats;
    char *dsn, *password_file;

    atomic_int leader;
    atomic_uint_fast64_t runs_finished, runs_failed;
    _Atomic double last_seconds;
    _Atomic double last_findings;
    _Atomic double last_finished_unix;
};

static bool stop_requested_fn(void *arg)
{
    struct auditor *a = arg;
    return atomic_load(&a->stop);
}

static void copy_conf(struct auditor *a, const struct cfg *cfg)
{
    a->conf.enabled = cfg->audit.enabled;
    a->conf.every_ms = cfg->audit.every_ms;
    a->conf.lookback_ms = cfg->audit.lookback_ms;
    audit_job_from_cfg(&a->conf.job, cfg);
    a->conf.job.features = a->feats;
    a->conf.job.n_features = a->n_feats;
    free(a->conf.report_dir);
    a->conf.report_dir = cfg->audit.report_dir ? util_strdup(cfg->audit.report_dir) : NULL;
    if (cfg->audit.report_dir && !a->conf.report_dir)
        log_warn("audit: out of memory copying audit.report_dir; no report files");
    a->conf.job.report_dir = a->conf.report_dir;
    a->conf.job.formats = REPORT_HTML | REPORT_MD | REPORT_JSON;
}

static void drain(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

static void sleep_ms(struct auditor *a, int ms)
{
    int64_t until = util_now_mono_us() + (int64_t)ms * 1000;
    while (!atomic_load(&a->stop)) {
        int64_t left = until - util_now_mono_us();
        if (left <= 0)
            break;
        struct pollfd p = {.fd = a->wake[0], .events = POLLIN};
        if (poll(&p, 1, (int)((left + 999) / 1000)) > 0)
            drain(a->wake[0]);
    }
}

/* One scheduled audit; 0 when it finished or there was nothing to audit. */
static int audit_once(struct auditor *a, struct store *st, const char *why)
{
    pthread_mutex_lock(&a->mu);
    struct audit_job j = a->conf.job;
    char *dir = a->conf.report_dir ? util_strdup(a->conf.report_dir) : NULL;
    int64_t lookback = a->conf.lookback_ms;
    pthread_mutex_unlock(&a->mu);
    j.report_dir = dir;
    j.store = st;
    if (lookback > 0)
        j.since_us = util_now_wall_us() - lookback * 1000;
    j.params.should_stop = stop_requested_fn;
    j.params.stop_arg = a;
    struct audit_job_outcome out;
    char err[1024];
    log_info("audit: auditing the operators (%s)", why);
    int64_t t0 = util_now_mono_us();
    int rc = audit_job_run(&j, &out, err, sizeof err);
    double secs = (double)(util_now_mono_us() - t0) / 1e6;
    free(dir);
    if (rc == AUDIT_JOB_NOTHING) {
        log_info("audit: nothing to audit: %s", err);
        return 0;
    }
    if (rc != 0) {
        atomic_fetch_add(&a->runs_failed, 1);
        if (out.run_id)
            log_error("audit: run %lld failed: %s", (long long)out.run_id, err);
        else
            log_error("audit: failed: %s", err);
        return -1;
    }
    const struct audit_result *r = out.result;
    size_t high = 0, medium = 0, low = 0;
    for (size_t i = 0; i < r->n_findings; i++) {
        high += r->findings[i].severity == AUDIT_SEVERITY_HIGH;
        medium += r->findings[i].severity == AUDIT_SEVERITY_MEDIUM;
        low += r->findings[i].severity == AUDIT_SEVERITY_LOW;
    }
    if (out.report_error[0])
        log_warn("audit: run %lld: the reports could not be written: %s", (long long)out.run_id,
                 out.report_error);
    log_info("audit: run %lld finished in %.1f s: %zu decisions of %zu operators, %zu "
             "finding(s) (%zu high, %zu medium, %zu low), policy version %d",
             (long long)out.run_id, secs, r->rows, r->n_operators, r->n_findings, high, medium, low,
             out.policy_version);
    atomic_fetch_add(&a->runs_finished, 1);
    atomic_store(&a->last_seconds, secs);
    atomic_store(&a->last_findings, (double)r->n_findings);
    atomic_store(&a->last_finished_unix, (double)util_now_wall_us() / 1e6);
    audit_result_free(out.result);
    return 0;
}

static void *auditor_main(void *arg)
{
    struct auditor *a = arg;
    struct store *st = NULL;
    char err[1024];
    bool leader = false, promoted = false;
    /* Wall clock of the newest finished run (INT64_MIN: look it up, 0: none)
     * and of a retry after a failure (0: none).  The due time is computed
     * from them on every turn, so a reloaded audit.every applies at once. */
    int64_t last_us = INT64_MIN, retry_us = 0;

    while (!atomic_load(&a->stop)) {
        pthread_mutex_lock(&a->mu);
        bool enabled = a->conf.enabled;
        int64_t every_ms = a->conf.every_ms;
        pthread_mutex_unlock(&a->mu);
        if (!st) {
            if (store_connect(a->dsn, a->password_file, &st, err, sizeof err) != 0 ||
                store_listen(st, STORE_POLICY_CHANNEL, err, sizeof err) != 0) {
                log_warn("audit: %s; retrying", err);
                store_free(st);
                st = NULL;
                sleep_ms(a, CHECK_INTERVAL_MS);
                continue;
            }
        }
        if (!enabled && leader) {
            if (store_advisory_unlock(st, STORE_AUDIT_LOCK_KEY, err, sizeof err) != 0)
                goto db_error;
            leader = false;
            atomic_store(&a->leader, 0);
            log_info("audit: audit.enabled is false; released the audit lock");
        }
        if (enabled && !leader) {
            int got = 0;
            if (store_try_advisory_lock(st, STORE_AUDIT_LOCK_KEY, &got, err, sizeof err) != 0)
                goto db_error;
            if (got) {
                leader = true;
                last_us = INT64_MIN;
                retry_us = 0;
                atomic_store(&a->leader, 1);
                log_info("audit: this instance audits (it holds the audit lock)");
            }
        }
        if (leader) {
            if (last_us == INT64_MIN) {
                int64_t last = INT64_MIN;
                if (store_audit_last_finished(st, &last, err, sizeof err) != 0)
                    goto db_error;
                last_us = last == INT64_MIN ? 0 : last;
            }
            int64_t now = util_now_wall_us();
            const char *why = NULL;
            if (promoted)
                why = "a policy was promoted";
            else if (retry_us ? now >= retry_us : now >= last_us + every_ms * 1000)
                why = retry_us       ? "retrying after a failed audit"
                      : last_us == 0 ? "no audit has finished yet"
                                     : "audit.every has passed";
            if (why) {
                promoted = false;
                if (audit_once(a, st, why) == 0) {
                    last_us = now;
                    retry_us = 0;
                } else {
                    int64_t wait = every_ms < RETRY_AFTER_MS ? every_ms : RETRY_AFTER_MS;
                    retry_us = now + wait * 1000;
                    if (store_ping(st, err, sizeof err) != 0)
                        goto db_error;
                }
            }
        }
        unsigned got = 0;
        if (store_wait_notify(st, a->wake[0], CHECK_INTERVAL_MS, &got, err, sizeof err) != 0)
            goto db_error;
        if (got & STORE_NOTIFY_POLICY)
            promoted = true;
        if (got & STORE_NOTIFY_WAKE)
            drain(a->wake[0]);
        continue;
    db_error:
        log_warn("audit: database: %s; reconnecting", err);
        store_free(st);
        st = NULL;
        leader = false;
        atomic_store(&a->leader, 0);
        sleep_ms(a, 1000);
    }
    store_free(st);
    return NULL;
}

int auditor_start(const struct cfg *cfg, struct auditor **out, char *err, size_t errlen)
{
    struct auditor *a = util_calloc(1, sizeof *a);
    *out = NULL;
    if (!a) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    a->wake[0] = a->wake[1] = -1;
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        util_fmt(err, errlen, "cannot create the auditor's mutex");
        free(a);
        return -1;
    }
    atomic_store(&a->last_seconds, NAN);
    atomic_store(&a->last_findings, NAN);
    atomic_store(&a->last_finished_unix, NAN);
    a->n_feats = cfg->n_features;
    a->feats = util_calloc(a->n_feats ? a->n_feats : 1, sizeof *a->feats);
    a->dsn = util_strdup(cfg->postgres.dsn);
    a->password_file =
        cfg->postgres.password_file ? util_strdup(cfg->postgres.password_file) : NULL;
    if (!a->feats || !a->dsn || (cfg->postgres.password_file && !a->password_file))
        goto oom;
    for (size_t f = 0; f < a->n_feats; f++) {
        a->feats[f].kind = cfg->features[f].kind;
        if (!(a->feats[f].name = util_strdup(cfg->features[f].name)))
            goto oom;
    }
    copy_conf(a, cfg);
    if (pipe(a->wake) != 0 || fcntl(a->wake[0], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(a->wake[1], F_SETFL, O_NONBLOCK) != 0) {
        util_fmt(err, errlen, "pipe: %s", strerror(errno));
        auditor_stop(a);
        return -1;
    }
    if (pthread_create(&a->thread, NULL, auditor_main, a) != 0) {
        util_fmt(err, errlen, "cannot start the auditor thread");
        auditor_stop(a);
        return -1;
    }
    a->started = true;
    *out = a;
    return 0;
oom:
    util_fmt(err, errlen, "out of memory");
    auditor_stop(a);
    return -1;
}

void auditor_apply_config(struct auditor *a, const struct cfg *cfg)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    copy_conf(a, cfg);
    pthread_mutex_unlock(&a->mu);
    if (write(a->wake[1], "c", 1) < 0) {
        /* Full: a wake-up is pending anyway. */
    }
}

void auditor_stop(struct auditor *a)
{
    if (!a)
        return;
    atomic_store(&a->stop, true);
    if (a->started) {
        if (write(a->wake[1], "s", 1) < 0) {
            /* Full: a wake-up is pending anyway. */
        }
        pthread_join(a->thread, NULL);
    }
    for (int i = 0; i < 2; i++) {
        if (a->wake[i] >= 0)
            close(a->wake[i]);
    }
    for (size_t f = 0; a->feats && f < a->n_feats; f++)
        free(a->feats[f].name);
    free(a->feats);
    free(a->dsn);
    free(a->password_file);
    free(a->conf.report_dir);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

int auditor_render_metrics(struct util_buf *b, void *ud)
{
    struct auditor *a = ud;
    int rc = 0;
    rc |= metrics_write_scalar(b, "understudy_audit_leader", "gauge",
                               "1 when this instance holds the audit lock and schedules audits.",
                               (double)atomic_load(&a->leader));
    rc |= metrics_write_family(b, "understudy_audit_runs_total", "counter",
                               "Audit runs of this instance by outcome: finished, failed.");
    rc |= metrics_write_sample(b, "understudy_audit_runs_total",
                               (double)atomic_load(&a->runs_finished), "result", "finished",
                               METRICS_END);
    rc |=
        metrics_write_sample(b, "understudy_audit_runs_total", (double)atomic_load(&a->runs_failed),
                             "result", "failed", METRICS_END);
    rc |= metrics_write_scalar(b, "understudy_audit_last_seconds", "gauge",
                               "Duration of this instance's last finished audit.",
                               atomic_load(&a->last_seconds));
    rc |= metrics_write_scalar(b, "understudy_audit_last_findings", "gauge",
                               "Findings of this instance's last finished audit.",
                               atomic_load(&a->last_findings));
    rc |= metrics_write_scalar(b, "understudy_audit_last_finished_timestamp_seconds", "gauge",
                               "Unix time when this instance's last audit finished.",
                               atomic_load(&a->last_finished_unix));
    return rc ? -1 : 0;
}
