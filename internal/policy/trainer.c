/*
 * policy: retraining inside `understudy run`.
 *
 * One thread with its own PostgreSQL session.  Several daemons may share a
 * consumer group; only the one whose session holds the training advisory
 * lock (STORE_TRAIN_LOCK_KEY, taken with pg_try_advisory_lock and kept for
 * the life of the session) trains, so a group trains once.  When that
 * instance stops or loses its connection, PostgreSQL releases the lock and
 * another instance takes over at its next check.
 *
 * A run is due when train.every has passed since the newest policy was
 * created (right away when there is none), or when train.after_new_actions
 * actions have been stored since the last run.  Every run registers its
 * model and promotes it when it is not worse than the champion
 * (policy_register).  Ingest never waits for training: the thread only
 * reads the event tables.  Stopping interrupts a run in progress at the
 * next boosting round and registers nothing.
 */
#include "policy/policy.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log/log.h"
#include "metrics/metrics.h"
#include "util/util.h"

/* How often the thread looks at the clock, the lock and the action count. */
#define CHECK_INTERVAL_MS 5000
/* After a failed run, wait this long (or train.every if shorter). */
#define RETRY_AFTER_MS INT64_C(300000)

struct policy_trainer {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop; /* under mu */
    struct cfg_train_copy {
        bool enabled;
        int64_t every_ms, after_new_actions, lookback_ms;
        struct policy_train_options opts; /* without source; features point into feats */
    } conf;                               /* under mu */
    struct event_feature_spec *feats;     /* deep copy (features are not reloadable) */
    size_t n_feats;
    char *dsn, *password_file;

    /* For /metrics. */
    atomic_int leader;
    atomic_int champion;
    atomic_uint_fast64_t runs_promoted, runs_kept, runs_failed;
    _Atomic double last_seconds;
    _Atomic double last_valid_logloss;
};

static void copy_conf(struct policy_trainer *t, const struct cfg *cfg)
{
    t->conf.enabled = cfg->train.enabled;
    t->conf.every_ms = cfg->train.every_ms;
    t->conf.after_new_actions = cfg->train.after_new_actions;
    policy_train_options_from_cfg(&t->conf.opts, cfg);
    t->conf.opts.query.features = t->feats;
    t->conf.opts.query.n_features = t->n_feats;
    t->conf.lookback_ms = cfg->train.lookback_ms;
}

static int progress_stop(void *arg, unsigned round, double train_loss, double valid_loss)
{
    struct policy_trainer *t = arg;
    (void)round;
    (void)train_loss;
    (void)valid_loss;
    pthread_mutex_lock(&t->mu);
    bool stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    return stop ? 1 : 0;
}

/* Waits up to ms or until stop; returns true when stopping. */
static bool wait_ms(struct policy_trainer *t, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->mu);
    while (!t->stop && pthread_cond_timedwait(&t->cv, &t->mu, &ts) != ETIMEDOUT) {
    }
    bool stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    return stop;
}

/* One training run; returns 0 when it ran (whatever the promotion), -1 on failure. */
static int train_once(struct policy_trainer *t, struct store *st, const char *why_now)
{
    struct policy_train_options o;
    struct policy_run *run = NULL;
    struct policy_registration reg;
    char err[1024];

    pthread_mutex_lock(&t->mu);
    o = t->conf.opts;
    if (t->conf.lookback_ms > 0)
        o.query.since_us = util_now_wall_us() - t->conf.lookback_ms * 1000;
    pthread_mutex_unlock(&t->mu);
    o.store = st;
    o.progress = progress_stop;
    o.progress_arg = t;
    log_info("trainer: training (%s)", why_now);
    int64_t t0 = util_now_mono_us();
    if (policy_train(&o, &run, err, sizeof err) != 0) {
        log_error("trainer: training failed: %s", err);
        atomic_fetch_add(&t->runs_failed, 1);
        return -1;
    }
    if (progress_stop(t, 0, 0, 0)) {
        log_info("trainer: stopping; the interrupted run is not registered");
        policy_run_free(run);
        return 0;
    }
    if (policy_register(st, run, true, &reg, err, sizeof err) != 0) {
        log_error("trainer: registering the policy failed: %s", err);
        atomic_fetch_add(&t->runs_failed, 1);
        policy_run_free(run);
        return -1;
    }
    const struct policy_train_result *r = policy_run_result(run);
    double secs = (double)(util_now_mono_us() - t0) / 1e6;
    atomic_store(&t->last_seconds, secs);
    atomic_store(&t->last_valid_logloss, r->valid_logloss);
    atomic_fetch_add(reg.promoted ? &t->runs_promoted : &t->runs_kept, 1);
    if (reg.promoted)
        atomic_store(&t->champion, reg.version);
    log_info("trainer: policy version %d from %zu examples (%zu validation) in %.1f s, "
             "validation log loss %.5f, accuracy %.4f: %s",
             reg.version, r->rows, r->valid_rows, secs, r->valid_logloss, r->valid_accuracy,
             reg.why);
    policy_run_free(run);
    return 0;
}

static void *trainer_main(void *arg)
{
    struct policy_trainer *t = arg;
    struct store *st = NULL;
    char err[1024];
    int64_t last_run_us = INT64_MIN; /* wall clock of the newest policy / last attempt */
    int64_t base_action_id = -1;     /* action_events.id at the last run */
    bool was_leader = false;

    while (!wait_ms(t, st ? CHECK_INTERVAL_MS : 0)) {
        pthread_mutex_lock(&t->mu);
        struct cfg_train_copy c = t->conf;
        pthread_mutex_unlock(&t->mu);
        if (!st && store_connect(t->dsn, t->password_file, &st, err, sizeof err) != 0) {
            log_warn("trainer: %s; retrying", err);
            store_free(st);
            st = NULL;
            if (wait_ms(t, CHECK_INTERVAL_MS))
                break;
            continue;
        }
        if (!c.enabled)
            continue;
        if (!was_leader) {
            int got = 0;
            if (store_try_advisory_lock(st, STORE_TRAIN_LOCK_KEY, &got, err, sizeof err) != 0)
                goto db_error;
            if (!got)
                continue;
            was_leader = true;
            atomic_store(&t->leader, 1);
            log_info("trainer: this instance trains (it holds the training lock)");
            int champ = 0;
            int64_t newest = INT64_MIN;
            if (store_policy_champion(st, &champ, NULL, err, sizeof err) != 0 ||
                store_policy_newest(st, &newest, err, sizeof err) != 0 ||
                store_max_action_id(st, &base_action_id, err, sizeof err) != 0)
                goto db_error;
            atomic_store(&t->champion, champ);
            last_run_us = champ ? newest : INT64_MIN;
            if (!champ)
                base_action_id = 0;
        }
        int64_t max_id = 0;
        if (store_max_action_id(st, &max_id, err, sizeof err) != 0)
            goto db_error;
        const char *why = NULL;
        char whybuf[96];
        int64_t now = util_now_wall_us();
        if (last_run_us == INT64_MIN) {
            why = "no policy yet";
        } else if (now - last_run_us >= c.every_ms * 1000) {
            why = "train.every has passed";
        } else if (c.after_new_actions > 0 && max_id - base_action_id >= c.after_new_actions) {
            why = util_fmt(whybuf, sizeof whybuf, "%lld new actions",
                           (long long)(max_id - base_action_id));
        }
        if (!why)
            continue;
        if (train_once(t, st, why) != 0) {
            /* Retry sooner than train.every, but not in a tight loop. */
            int64_t wait = c.every_ms < RETRY_AFTER_MS ? c.every_ms : RETRY_AFTER_MS;
            last_run_us = now - c.every_ms * 1000 + wait * 1000;
            if (store_ping(st, err, sizeof err) != 0)
                goto db_error;
        } else {
            last_run_us = now;
        }
        base_action_id = max_id;
        continue;
    db_error:
        log_warn("trainer: database: %s; reconnecting", err);
        store_free(st);
        st = NULL;
        was_leader = false;
        atomic_store(&t->leader, 0);
    }
    store_free(st);
    return NULL;
}

int policy_trainer_start(const struct cfg *cfg, struct policy_trainer **out, char *err,
                         size_t errlen)
{
    struct policy_trainer *t = util_calloc(1, sizeof *t);
    *out = NULL;
    if (!t)
        goto oom;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    atomic_store(&t->last_seconds, NAN);
    atomic_store(&t->last_valid_logloss, NAN);
    t->n_feats = cfg->n_features;
    t->feats = util_calloc(t->n_feats ? t->n_feats : 1, sizeof *t->feats);
    t->dsn = util_strdup(cfg->postgres.dsn);
    t->password_file =
        cfg->postgres.password_file ? util_strdup(cfg->postgres.password_file) : NULL;
    if (!t->feats || !t->dsn || (cfg->postgres.password_file && !t->password_file))
        goto oom;
    for (size_t f = 0; f < t->n_feats; f++) {
        t->feats[f].kind = cfg->features[f].kind;
        if (!(t->feats[f].name = util_strdup(cfg->features[f].name)))
            goto oom;
    }
    copy_conf(t, cfg);
    if (pthread_create(&t->thread, NULL, trainer_main, t) != 0) {
        util_fmt(err, errlen, "cannot start the trainer thread");
        policy_trainer_stop(t);
        return -1;
    }
    t->started = true;
    *out = t;
    return 0;
oom:
    util_fmt(err, errlen, "out of memory");
    policy_trainer_stop(t);
    return -1;
}

void policy_trainer_apply_config(struct policy_trainer *t, const struct cfg *cfg)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    copy_conf(t, cfg);
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void policy_trainer_stop(struct policy_trainer *t)
{
    if (!t)
        return;
    if (t->started) {
        pthread_mutex_lock(&t->mu);
        t->stop = true;
        pthread_cond_signal(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
    }
    for (size_t f = 0; t->feats && f < t->n_feats; f++)
        free(t->feats[f].name);
    free(t->feats);
    free(t->dsn);
    free(t->password_file);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

int policy_trainer_render_metrics(struct util_buf *b, void *ud)
{
    struct policy_trainer *t = ud;
    int rc = 0;
    rc |= metrics_write_scalar(b, "understudy_train_leader", "gauge",
                               "1 when this instance holds the training lock and trains.",
                               (double)atomic_load(&t->leader));
    rc |= metrics_write_family(b, "understudy_train_runs_total", "counter",
                               "Training runs by outcome: promoted (new champion), kept "
                               "(stored as a challenger), failed.");
    rc |= metrics_write_sample(b, "understudy_train_runs_total",
                               (double)atomic_load(&t->runs_promoted), "result", "promoted",
                               METRICS_END);
    rc |= metrics_write_sample(b, "understudy_train_runs_total", (double)atomic_load(&t->runs_kept),
                               "result", "kept", METRICS_END);
    rc |=
        metrics_write_sample(b, "understudy_train_runs_total", (double)atomic_load(&t->runs_failed),
                             "result", "failed", METRICS_END);
    rc |= metrics_write_scalar(b, "understudy_train_last_seconds", "gauge",
                               "Duration of the last completed training run.",
                               atomic_load(&t->last_seconds));
    rc |= metrics_write_scalar(b, "understudy_train_last_valid_logloss", "gauge",
                               "Validation log loss of the last completed training run.",
                               atomic_load(&t->last_valid_logloss));
    rc |= metrics_write_scalar(b, "understudy_policy_champion_version", "gauge",
                               "Version of the champion policy as this trainer knows it "
                               "(0 = none).",
                               (double)atomic_load(&t->champion));
    return rc ? -1 : 0;
}
