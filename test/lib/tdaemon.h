/*
 * tdaemon: integration-test helpers that drive real processes: a private
 * `understudy mock-kafka`, the daemon (`understudy run`), `understudy
 * replay`, and generators of contract events.  Child processes never hold
 * the test's stdout/stderr and die with the test binary (PR_SET_PDEATHSIG).
 */
#ifndef UNDERSTUDY_TDAEMON_H
#define UNDERSTUDY_TDAEMON_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- mock Kafka ---------------------------------------------------------- */

struct tmock {
    pid_t pid;
    char bootfile[512];
    char brokers[320];
};

/* Starts `understudy mock-kafka --topics T --partitions P` and waits for it. */
void tmock_start(struct tmock *m, const char *topics, int partitions);
/* SIGTERM, wait; returns the exit status (fails the test after 10 s). */
int tmock_stop(struct tmock *m);

/* ---- the daemon ---------------------------------------------------------- */

struct tdaemon {
    pid_t pid;
    char log[512];    /* its stderr */
    char config[512]; /* the YAML it runs with */
    int port;         /* metrics port, parsed from its log */
};

/*
 * Writes a config for the daemon into d->config: brokers, group, the three
 * default topic names, metrics on 127.0.0.1:0, batch_wait 50ms, and `extra`
 * (YAML appended as is; may be NULL).  Retraining is off (train.enabled:
 * false) unless extra has a train section.  The DSN is passed through the
 * environment (UNDERSTUDY_PG_DSN=dsn) when the daemon starts.
 */
void tdaemon_config(struct tdaemon *d, const char *name, const char *brokers, const char *group,
                    const char *extra);

/*
 * Starts `bin run -c d->config` with UNDERSTUDY_PG_DSN=dsn and, when
 * failpoint is not NULL, UNDERSTUDY_FAILPOINT=failpoint.  Waits until the
 * log shows the metrics port (fails the test after 20 s).  The log file is
 * appended to, so restarts keep one history.
 */
void tdaemon_start(struct tdaemon *d, const char *bin, const char *dsn, const char *failpoint);

/* Waits until /readyz answers 200 (fails the test after timeout_s). */
void tdaemon_wait_ready(struct tdaemon *d, int timeout_s);

/* Sends sig and waits up to timeout_s for the exit; returns the exit status
 * (128+signal when killed by a signal), or -1 on timeout (then SIGKILLs). */
int tdaemon_stop(struct tdaemon *d, int sig, int timeout_s);

/* Non-blocking: returns 1 and the status in *status when the daemon exited. */
int tdaemon_exited(struct tdaemon *d, int *status);

/* GET path on the metrics port; returns the body (caller frees), or NULL
 * when the daemon does not answer; *code gets the HTTP status. */
char *tdaemon_http(const struct tdaemon *d, const char *path, int *code);

/*
 * The value of one sample in a /metrics body, matched by its full series
 * text (e.g. "understudy_ingest_stored_total{topic=\"ops.states\"}");
 * -1 when absent.  For a name without labels, pass the name.
 */
double tdaemon_metric_value(const char *body, const char *series);

/* One series of the daemon's /metrics, fetched now; -1 when the daemon does
 * not answer or the series is absent. */
double tdaemon_metric(const struct tdaemon *d, const char *series);

/* Waits until that series equals want (within 1e-9); fails the test with
 * the last value seen and the daemon's log path after timeout_s. */
void tdaemon_wait_metric(const struct tdaemon *d, const char *series, double want, int timeout_s);

/* ---- events ------------------------------------------------------------- */

struct tgen {
    const char *kind;   /* "action" or "state" */
    size_t n;           /* lines to write */
    size_t first_id;    /* event ids are "<prefix>-<first_id + i>" */
    const char *prefix; /* id prefix, e.g. "t1" */
    double dup_rate;    /* fraction of lines that repeat an earlier event id */
    double bad_rate;    /* fraction of lines that are not valid events */
    uint64_t seed;
    size_t entities; /* distinct entity ids (default 200) */
};

/* Counts of what tgen_write wrote, by what the daemon should make of it. */
struct tgen_counts {
    size_t lines, unique, duplicates, bad;
};

/* Writes a JSONL file of contract events; fails the test on I/O errors. */
void tgen_write(const struct tgen *g, const char *path, struct tgen_counts *out);

/* Runs `bin replay --topic T path` with UNDERSTUDY_KAFKA_BROKERS=brokers;
 * fails the test unless every line was delivered. */
void treplay(const char *bin, const char *brokers, const char *topic, const char *path);

/* Starts `bin replay --topic T --rate N path` in the background (output
 * appended to log, dies with the test) and returns its pid; the caller
 * waits for it. */
pid_t treplay_start(const char *bin, const char *brokers, const char *topic, const char *path,
                    int rate, const char *log);

/* Runs `understudy migrate` against dsn; fails the test unless it exits 0. */
void tmigrate(const char *dsn);

/* SELECT count(*) of a table (name is trusted test text). */
long tcount(PGconn *conn, const char *table);

/* Sleeps for ms milliseconds. */
void tsleep_ms(long ms);

/* Polls until cond(ud) is true or timeout_s passes; returns the last value. */
int twait_until(int (*cond)(void *ud), void *ud, int timeout_s);

#endif
