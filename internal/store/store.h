/*
 * store: everything that talks to PostgreSQL (libpq).  Connections,
 * migrations, and (as the daemon grows) batches, offsets, the policy
 * registry and queries.  SQL only through PQexecParams, prepared statements
 * or COPY; never SQL text built from data.
 */
#ifndef UNDERSTUDY_STORE_H
#define UNDERSTUDY_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct store;

/*
 * Connects with a libpq conninfo string or URI ("" = libpq defaults and PG*
 * environment).  password_file (may be NULL) names a file whose first line is
 * the password.  application_name is set to "understudy".  Returns 0 and a
 * new handle in *out, or -1 with a reason in err (the password never appears
 * in it).
 */
int store_connect(const char *dsn, const char *password_file, struct store **out, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* Closes the connection; NULL is a no-op. */
void store_free(struct store *st);

/* The libpq connection, for modules of store itself and for tests. */
struct pg_conn *store_conn(struct store *st);

/* One embedded migration (generated from schema/NNNN_name.sql at build time). */
struct store_migration {
    int version;
    const char *name; /* "0001_init.sql" */
    const char *sql;
};
extern const struct store_migration store_migrations[];
extern const size_t store_n_migrations;

/*
 * Applies the pending migrations in order, each in its own transaction, under
 * a PostgreSQL advisory lock, recording each in schema_migrations.  Already
 * applied ones are skipped (so running twice is a no-op); an applied
 * migration whose text changed since is an error.  Progress lines go to
 * report (NULL: to the log at info level).  *applied (may be NULL) gets the
 * number applied (committed), also on failure.
 * On failure the failing migration is rolled back, and err names the file,
 * the line of the failing statement and PostgreSQL's message.
 */
int store_migrate(struct store *st, FILE *report, int *applied, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes one line per known migration: version, name, applied_at or "pending". */
int store_migrate_status(struct store *st, FILE *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * The advisory lock store_migrate holds while it works (pg_advisory_lock with
 * one bigint key, scoped to the database): the bytes of "undrstdy".  Other
 * users of advisory locks in the same database must pick other keys.
 */
#define STORE_MIGRATE_LOCK_KEY 8461811192601797753LL

/*
 * store_migrate over an explicit list instead of the embedded one (tests use
 * it to feed failing or changed migrations).  list[0..n) must have strictly
 * increasing positive versions.  Errors besides those of store_migrate:
 * a version recorded in the database above the list's newest reads
 * "database is at schema version N, newer than this binary's M"; a pending
 * migration below the newest applied version is refused.  *applied counts
 * the migrations committed, also when a later one fails.
 */
int store_migrate_list(struct store *st, const struct store_migration *list, size_t n, FILE *report,
                       int *applied, char *err, size_t errlen) __attribute__((warn_unused_result));

/* store_migrate_status over an explicit list. */
int store_migrate_status_list(struct store *st, const struct store_migration *list, size_t n,
                              FILE *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * The checksum recorded for a migration: FNV-1a 64 of its text as 16
 * lower-case hex digits, written to out[17].  Can't fail.
 */
void store_migration_checksum(const char *sql, char out[17]);

/*
 * Splitting migration text into statements, the way psql would: a ';'
 * ends a statement unless it is inside '...' (with '' escapes), E'...'
 * (with backslash escapes), "..." identifiers, $tag$...$tag$ dollar quotes,
 * -- and nested slash-star comments, or parentheses.  Assumes
 * standard_conforming_strings (the default).  SQL-standard function bodies
 * (BEGIN ATOMIC ... END) are not understood: write function bodies in
 * dollar quotes.
 */
struct store_sql_iter {
    const char *sql; /* borrowed, NUL-terminated */
    size_t pos;
    int line; /* 1-based line at pos */
};

struct store_sql_stmt {
    const char *text; /* points into the iterator's sql; not NUL-terminated */
    size_t len;       /* leading blanks/comments and the ';' excluded */
    int line;         /* 1-based line of the statement's first token */
};

void store_sql_iter_init(struct store_sql_iter *it, const char *sql);

/*
 * Finds the next statement.  Returns 1 and fills *out, 0 when only blanks
 * and comments remain, or -1 with "line N: unterminated ..." in err when a
 * quote or comment is not closed.
 */
int store_sql_iter_next(struct store_sql_iter *it, struct store_sql_stmt *out, char *err,
                        size_t errlen) __attribute__((warn_unused_result));

/*
 * Checks that the database's schema is exactly the one this binary embeds.
 * Returns 0, or -1 with a reason that says what to run (migrate, or an
 * upgrade of understudy).
 */
int store_check_schema(struct store *st, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- ingest batches (batch.c) ------------------------------------------ */

struct event;

enum store_outcome {
    STORE_ROW_PENDING = 0,    /* not written (yet, or the batch was rolled back) */
    STORE_ROW_STORED,         /* a new event row */
    STORE_ROW_DUPLICATE,      /* its event_id was already stored: nothing changed */
    STORE_ROW_DEAD_LETTER,    /* undecodable: stored in dead_letters with its reason */
    STORE_ROW_DEAD_LETTER_DB, /* decoded, but PostgreSQL refused it: dead letter too */
};

/*
 * One consumed message.  The caller fills the first part (pointers are
 * borrowed for the duration of the call); store_write_batch fills outcome and,
 * for STORE_ROW_DEAD_LETTER_DB, the database's reason.
 */
struct store_row {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key; /* may be NULL */
    size_t keylen;
    const void *raw; /* the message value as received */
    size_t rawlen;
    const struct event *ev; /* decoded event, or NULL for a dead letter */
    const char *reason;     /* when ev is NULL: why it is not an event */

    enum store_outcome outcome;
    char db_sqlstate[6];
    char db_reason[320];
};

/*
 * Writes one consumer batch in one transaction: events (duplicates by
 * event_id skipped and marked), dead letters (undecodable messages, and rows
 * PostgreSQL refused, isolated by bisection under savepoints), and for every
 * (topic, partition) in the batch next_offset = GREATEST(stored, max + 1) in
 * ingest_offsets for group_id.  Returns 0 after COMMIT with every row's
 * outcome set, or -1 with a reason in err when the transaction was rolled back
 * (connection lost, server unavailable, serialization failure, missing
 * table...): then nothing was written, every outcome is PENDING, and the same
 * batch may be retried as it is.
 */
int store_write_batch(struct store *st, const char *group_id, struct store_row *rows, size_t n,
                      char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Reads the next offsets recorded for group_id/topic for partitions[0..n)
 * into next[0..n) (-1 where none is recorded).  Returns 0 or -1 with a reason.
 */
int store_load_offsets(struct store *st, const char *group_id, const char *topic,
                       const int32_t *partitions, size_t n, int64_t *next, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Sets the session's statement_timeout (milliseconds; lock waits count).
 * The daemon uses it to bound its last write on shutdown.  Returns 0 or -1
 * with a reason.
 */
int store_set_statement_timeout(struct store *st, int64_t ms, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Runs SELECT 1.  Returns 0 when the database answers, -1 with a reason. */
int store_ping(struct store *st, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Re-establishes the connection with the same parameters (PQreset).  Returns
 * 0, or -1 with a reason (the password never appears in it). */
int store_reconnect(struct store *st, char *err, size_t errlen) __attribute__((warn_unused_result));

/* ---- training examples (examples.c) ------------------------------------ */

struct event_feature_spec;
struct event_feature_value;

/*
 * What store_load_examples reads.  since_us/until_us bound ts as
 * [since, until) (INT64_MIN / INT64_MAX for unbounded); include_operators
 * NULL means every operator (a snapshot without operator_id only passes
 * when there is no include list); exclude_operators may be NULL.
 */
struct store_example_query {
    const struct event_feature_spec *features;
    size_t n_features;
    int64_t settle_ms; /* labels.settle_window */
    int64_t hold_ms;   /* labels.hold_window */
    int64_t since_us;
    int64_t until_us;
    const char *const *include_operators;
    size_t n_include;
    const char *const *exclude_operators;
    size_t n_exclude;
};

/* One labelled example; every pointer is valid only during the callback. */
struct store_example {
    const char *event_id;
    const char *label; /* a decision class: hold, bid_up, ... */
    int64_t ts_us;
    const char *operator_id; /* NULL for a snapshot without one */
    const char *entity_type;
    const char *entity_id;
    double delta_pct;                         /* NaN unless bid/budget change */
    const struct event_feature_value *values; /* [n_features] */
};

/* Returns 0 to go on, -1 (with err filled) to stop the load. */
typedef int (*store_example_fn)(void *arg, const struct store_example *ex, char *err,
                                size_t errlen);

/*
 * Streams the examples of the contract's labelling rule (examples.c has
 * the rule and the feature extraction) to fn in ts order.  *n_rows (may be
 * NULL) counts the rows fn accepted.  Returns 0, or -1 with the reason
 * (a database error, or fn's).
 */
int store_load_examples(struct store *st, const struct store_example_query *q, store_example_fn fn,
                        void *arg, size_t *n_rows, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- policy registry (registry.c) --------------------------------------- */

#define STORE_POLICY_CHANNEL "understudy_policy"
/* pg_advisory_lock key of the one instance that trains; another key
 * serialises promotions. */
#define STORE_TRAIN_LOCK_KEY   8461811192601797754LL
#define STORE_PROMOTE_LOCK_KEY 8461811192601797755LL

struct store_policy_row {
    const char *model_json;      /* the serialized model (jsonb text) */
    const char *parameters_json; /* object */
    const char *metrics_json;    /* object */
    int64_t train_from_us;       /* INT64_MIN = unknown */
    int64_t train_to_us;         /* INT64_MIN = unknown */
    int64_t n_examples;          /* -1 = unknown */
};

/* Inserts a challenger; its version goes to *version.  0 or -1. */
int store_policy_insert(struct store *st, const struct store_policy_row *p, int *version, char *err,
                        size_t errlen) __attribute__((warn_unused_result));

/*
 * Reads the current champion: *version (0 when there is none) and, when
 * model_json is not NULL, a copy of its model (caller frees; NULL when
 * there is no champion).  0 or -1.
 */
int store_policy_champion(struct store *st, int *version, char **model_json, char *err,
                          size_t errlen) __attribute__((warn_unused_result));

/* Reads one version's model (caller frees) and status ("champion", ...;
 * status may be NULL).  Returns 0, 1 when there is no such version, or -1. */
int store_policy_get(struct store *st, int version, char **model_json, char status[16], char *err,
                     size_t errlen) __attribute__((warn_unused_result));

/*
 * Makes version the champion and retires the previous one, in one
 * transaction that also sends NOTIFY understudy_policy with the version as
 * payload (delivered at commit).  expected_champion is the champion the
 * caller compared against (0 = none): when another promotion changed the
 * champion meanwhile, nothing changes and 1 is returned.  0 on success, -1
 * on error.
 */
int store_policy_promote(struct store *st, int version, int expected_champion, char *err,
                         size_t errlen) __attribute__((warn_unused_result));

/* created_at of the newest policy version as microseconds since the
 * epoch, INT64_MIN when there is none.  0 or -1. */
int store_policy_newest(struct store *st, int64_t *created_us, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The largest action_events.id (0 for an empty table), to count new
 * actions since a training run.  0 or -1. */
int store_max_action_id(struct store *st, int64_t *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Tries the session-level advisory lock key without waiting: *got is 1 when
 * this session now holds it (held until store_advisory_unlock or the
 * connection ends).  0 or -1.
 */
int store_try_advisory_lock(struct store *st, int64_t key, int *got, char *err, size_t errlen)
    __attribute__((warn_unused_result));
int store_advisory_unlock(struct store *st, int64_t key, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- the recommender's reads and writes (recs.c) ------------------------ */

struct util_buf;

#define STORE_STATES_CHANNEL "understudy_states"
/* pg_advisory_lock key of the one instance that recommends; a
 * transaction-level lock on another key serialises recommendation writes. */
#define STORE_RECOMMEND_LOCK_KEY       8461811192601797756LL
#define STORE_RECOMMEND_WRITE_LOCK_KEY 8461811192601797757LL

/* Which stored state snapshots store_load_snapshots reads (ordered by
 * state_events.id, at most limit of them). */
enum store_snapshot_select {
    STORE_SNAP_AFTER_ID = 0, /* id > after_id */
    STORE_SNAP_UNSCORED,     /* after_id < id <= until_id, no recommendation or
                                abstention of any version */
    STORE_SNAP_SINCE_TS,     /* id > after_id and ts >= since_us */
    STORE_SNAP_OPEN_OTHER,   /* id > after_id and an open recommendation of a
                                version other than `version` */
    STORE_SNAP_IN_RANGES,    /* id > after_id and in one of ranges[] (inclusive) */
};

struct store_snapshot_query {
    enum store_snapshot_select by;
    int64_t after_id;
    int64_t until_id;
    int64_t since_us;
    int version;
    int64_t limit;
    const int64_t (*ranges)[2];
    size_t n_ranges;
};

/* One stored snapshot; pointers are valid only during the callback. */
struct store_snapshot {
    int64_t id;             /* state_events.id */
    const char *event_json; /* the snapshot as a wire state event */
    size_t event_len;
    int64_t last_action_us; /* newest action on the entity at or before its ts;
                               INT64_MIN when none */
    int64_t last_rec_us;    /* newest snapshot_ts of a recommendation for the
                               entity before its ts; INT64_MIN when none */
};

typedef int (*store_snapshot_fn)(void *arg, const struct store_snapshot *s, char *err,
                                 size_t errlen);

/*
 * Calls fn for each selected snapshot.  *n_rows (may be NULL) gets the
 * number read.  Returns 0, or -1 with the reason (a database error, or
 * fn's).
 */
int store_load_snapshots(struct store *st, const struct store_snapshot_query *q,
                         store_snapshot_fn fn, void *arg, size_t *n_rows, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* What store_recs_write did. */
#define STORE_RECS_MAX_REASONS 16
struct store_recs_written {
    int64_t opened;     /* new open recommendations */
    int64_t abstained;  /* new abstentions */
    int64_t superseded; /* open recommendations that left open */
    size_t n_reasons;   /* the new abstentions by reason */
    struct {
        char reason[32];
        int64_t n;
    } reasons[STORE_RECS_MAX_REASONS];
};

/*
 * Writes scored snapshots in one transaction.  rows_json is a JSON array of
 * objects as recommend_result_json makes them; status "open" ones become
 * recommendations (expiring ttl_ms after now), "abstain" ones abstentions.
 * A (snapshot, version) already written to either table is skipped and
 * changes nothing else.  Then an open recommendation of another version
 * for a snapshot just written is superseded, and for every entity with a
 * new open recommendation only the one with the newest (snapshot_ts, id)
 * stays open.  progress >= 0 moves recommender_progress.scored_through up
 * to it.  When published is not NULL, each new recommendation still open
 * at the end is appended to it as one JSON line (the row, with id).
 * Returns 0 after COMMIT (err may then say the published copy is short),
 * or -1 with the reason (nothing written).
 */
int store_recs_write(struct store *st, const char *rows_json, int64_t ttl_ms, int64_t progress,
                     struct util_buf *published, struct store_recs_written *out, char *err,
                     size_t errlen) __attribute__((warn_unused_result));

/* Marks open recommendations past expires_at as expired; *n gets how many. */
int store_recs_expire(struct store *st, int64_t *n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * The recommender's position: *scored_through from recommender_progress,
 * or -1 when it was never set, and *max_id, the largest state_events.id
 * (0 when none).  0 or -1.
 */
int store_recs_progress(struct store *st, int64_t *scored_through, int64_t *max_id, char *err,
                        size_t errlen) __attribute__((warn_unused_result));
int store_recs_set_progress(struct store *st, int64_t scored_through, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* LISTEN channel on this session. */
int store_listen(struct store *st, const char *channel, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Waits up to timeout_ms for a notification on this session, or for
 * wake_fd (-1 = none) to become readable.  Sets bits of *got: 1 for
 * understudy_policy, 2 for understudy_states, 4 for wake_fd.  Returns 0, or
 * -1 when the connection failed.
 */
int store_wait_notify(struct store *st, int wake_fd, int timeout_ms, unsigned *got, char *err,
                      size_t errlen) __attribute__((warn_unused_result));
#define STORE_NOTIFY_POLICY 1u
#define STORE_NOTIFY_STATES 2u
#define STORE_NOTIFY_WAKE   4u

/* ---- operator audits (audit.c) ------------------------------------------ */

/* pg_advisory_lock key of the one daemon that schedules audits (held for
 * the life of its session), and of whoever runs an audit (the daemon or
 * `understudy audit`; held for the run), so two audits never overlap. */
#define STORE_AUDIT_LOCK_KEY     8461811192601797758LL
#define STORE_AUDIT_RUN_LOCK_KEY 8461811192601797759LL

/*
 * Inserts a run with status 'running'; its id goes to *run_id.
 * policy_version 0 stores NULL (no champion); from_us/to_us INT64_MIN store
 * NULL.  parameters_json is a JSON object's text (NULL = {}).  0, or -1 with
 * PostgreSQL's reason (e.g. an unknown policy version).
 */
int store_audit_begin(struct store *st, int policy_version, int64_t from_us, int64_t to_us,
                      const char *parameters_json, int64_t *run_id, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Finishes run_id in one transaction: every element of doc->'findings'
 * becomes a row of audit_findings and every element of doc->'operators' a
 * row of audit_operators (audit.c has the mapping; JSON null becomes SQL
 * NULL), doc->'parameters' (when present) replaces the run's parameters,
 * and the run becomes 'finished' at now().  A missing array counts as
 * empty.  *n_findings gets the findings written.  Returns 0 after COMMIT,
 * or -1 with the reason and nothing written, the run left as it was: when
 * the run does not exist or is not 'running' ("audit run N is failed, not
 * running"), when doc is not a JSON object, or with PostgreSQL's message
 * when doc is not JSON or an element breaks a constraint (unknown action
 * or severity, p-value out of [0, 1], a duplicate operator...).  After a
 * refusal of the document the run is still 'running', for the caller to
 * mark failed.
 */
int store_audit_finish(struct store *st, int64_t run_id, const char *doc_json, int64_t *n_findings,
                       char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Marks run_id failed at now() with the first line of error (NULL or empty:
 * "unspecified error").  Returns 0 when it did, 1 when the run was not
 * 'running' (finished, failed already, or no such run; nothing changed),
 * -1 with the reason on a database error.
 */
int store_audit_fail(struct store *st, int64_t run_id, const char *error, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#define STORE_AUDIT_INTERRUPTED "interrupted: the auditing process stopped before it finished"

/*
 * Marks every 'running' run failed with STORE_AUDIT_INTERRUPTED; *n gets
 * how many.  Only the holder of STORE_AUDIT_RUN_LOCK_KEY may call it: a
 * run left 'running' by an earlier holder can then no longer be finished.
 * 0 or -1.
 */
int store_audit_fail_stale(struct store *st, int64_t *n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * started_at (microseconds since the epoch) of the newest finished run,
 * the one audit_findings_latest shows; INT64_MIN when none.  0 or -1.
 */
int store_audit_last_finished(struct store *st, int64_t *started_us, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Returns 0 to go on; anything else stops store_audit_verdicts. */
typedef int (*store_audit_verdict_fn)(void *arg, const char *operator_id, int64_t accepted,
                                      int64_t total);

/*
 * Operators' verdicts on recommendations (feedback_events) with ts in
 * [from_us, to_us) (from_us INT64_MIN, to_us INT64_MAX: unbounded): fn is
 * called once per operator with at least one verdict, in operator_id
 * order, with the number of recommendations the operator judged (total)
 * and of those accepted.  A recommendation judged more than once by one operator counts
 * once, with the operator's latest verdict in the window.  operator_id is
 * valid only during the call.  Returns 0, or -1 with the reason (a
 * database error, or "stopped by the callback" when fn returned non-zero).
 */
int store_audit_verdicts(struct store *st, int64_t from_us, int64_t to_us,
                         store_audit_verdict_fn fn, void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
