-- Per-operator results of an audit run, next to its findings: how many
-- decisions each operator made in the audited window, whether there were
-- enough to audit, how often the champion agrees with the operator, what the
-- operator answered to recommendations, and the findings by severity.  A
-- dashboard needs these rows to tell "audited, nothing found" from "not
-- audited" (too few decisions), which audit_findings alone cannot say.
--
-- Written in the transaction that marks the run finished, like the
-- findings, so audit_operators_latest always shows one complete run, and
-- the same run as audit_findings_latest.

CREATE TABLE audit_operators (
    run_id           bigint NOT NULL REFERENCES audit_runs (id) ON DELETE CASCADE,
    operator_id      text NOT NULL,
    decisions        bigint NOT NULL,
    actions          bigint NOT NULL,
    audited          boolean NOT NULL,
    in_reference     boolean NOT NULL,
    outside_support  bigint NOT NULL DEFAULT 0,
    policy_agreement double precision,
    acceptance_rate  double precision,
    verdicts         bigint NOT NULL,
    findings_high    integer NOT NULL,
    findings_medium  integer NOT NULL,
    findings_low     integer NOT NULL,
    details          jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT audit_operators_run_operator_key PRIMARY KEY (run_id, operator_id),
    CONSTRAINT audit_operators_operator_id_len CHECK (octet_length(operator_id) BETWEEN 1 AND 128),
    CONSTRAINT audit_operators_counts_check CHECK (decisions >= 0 AND actions >= 0 AND actions <= decisions),
    CONSTRAINT audit_operators_outside_support_check CHECK (outside_support >= 0 AND outside_support <= decisions),
    CONSTRAINT audit_operators_verdicts_check CHECK (verdicts >= 0),
    CONSTRAINT audit_operators_findings_check
        CHECK (findings_high >= 0 AND findings_medium >= 0 AND findings_low >= 0),
    CONSTRAINT audit_operators_policy_agreement_range
        CHECK (policy_agreement IS NULL OR (policy_agreement >= 0 AND policy_agreement <= 1)),
    CONSTRAINT audit_operators_acceptance_rate_range
        CHECK (acceptance_rate IS NULL OR (acceptance_rate >= 0 AND acceptance_rate <= 1)),
    -- A rate needs at least one verdict to be a rate of.
    CONSTRAINT audit_operators_acceptance_needs_verdicts CHECK (acceptance_rate IS NULL OR verdicts > 0),
    CONSTRAINT audit_operators_details_object CHECK (jsonb_typeof(details) = 'object')
);

-- One operator's history across runs.
CREATE INDEX audit_operators_operator_idx ON audit_operators (operator_id, run_id);

COMMENT ON TABLE audit_operators IS
    'Per-operator results of the audit runs, one row per run and operator with decisions in the window.';
COMMENT ON COLUMN audit_operators.run_id IS 'audit_runs.id of the run.';
COMMENT ON COLUMN audit_operators.operator_id IS 'The operator.';
COMMENT ON COLUMN audit_operators.decisions IS 'The operator''s decisions in the audited window (holds included).';
COMMENT ON COLUMN audit_operators.actions IS 'Of those, the decisions that were not hold.';
COMMENT ON COLUMN audit_operators.audited IS 'Whether the operator had enough decisions (audit.min_support) to be audited; false = no findings possible.';
COMMENT ON COLUMN audit_operators.in_reference IS 'Whether the operator''s decisions were in the reference the other operators were compared with (false when left out as biased).';
COMMENT ON COLUMN audit_operators.outside_support IS 'Decisions in states outside the reference''s experience (feature values the rest of the team never showed), left out of every test.';
COMMENT ON COLUMN audit_operators.policy_agreement IS 'Share of the operator''s decisions the champion policy would have made too, in [0, 1]; NULL without a champion.';
COMMENT ON COLUMN audit_operators.acceptance_rate IS 'Share of the operator''s verdicts on recommendations that were accepted, in [0, 1]; NULL without verdicts.';
COMMENT ON COLUMN audit_operators.verdicts IS 'The operator''s verdicts on recommendations in the audited window.';
COMMENT ON COLUMN audit_operators.findings_high IS 'Findings of severity high about the operator in this run.';
COMMENT ON COLUMN audit_operators.findings_medium IS 'Findings of severity medium about the operator in this run.';
COMMENT ON COLUMN audit_operators.findings_low IS 'Findings of severity low about the operator in this run.';
COMMENT ON COLUMN audit_operators.details IS 'Object: "cells" (per decision class: observed and expected counts) and "disagreements" (the most frequent operator/champion disagreements).';

-- The same run as audit_findings_latest: the newest finished one.
CREATE VIEW audit_operators_latest AS
SELECT o.run_id,
       r.started_at AS run_started_at,
       r.finished_at AS run_finished_at,
       r.policy_version,
       r.window_from,
       r.window_to,
       o.operator_id,
       o.decisions,
       o.actions,
       o.audited,
       o.in_reference,
       o.outside_support,
       o.policy_agreement,
       o.acceptance_rate,
       o.verdicts,
       o.findings_high,
       o.findings_medium,
       o.findings_low,
       o.details
FROM audit_operators AS o
JOIN audit_runs AS r ON r.id = o.run_id
WHERE o.run_id = (SELECT l.id
                  FROM audit_runs AS l
                  WHERE l.status = 'finished'
                  ORDER BY l.started_at DESC, l.id DESC
                  LIMIT 1)
ORDER BY o.operator_id;

COMMENT ON VIEW audit_operators_latest IS
    'Per-operator results of the newest finished audit run (newest by start; the run of audit_findings_latest), by operator_id.';
COMMENT ON COLUMN audit_operators_latest.run_id IS 'The audit run.';
COMMENT ON COLUMN audit_operators_latest.run_started_at IS 'When the run started.';
COMMENT ON COLUMN audit_operators_latest.run_finished_at IS 'When the run finished.';
COMMENT ON COLUMN audit_operators_latest.policy_version IS 'Policy the operators were compared with; NULL when there was no champion.';
COMMENT ON COLUMN audit_operators_latest.window_from IS 'Start of the audited period of events.';
COMMENT ON COLUMN audit_operators_latest.window_to IS 'End of the audited period of events.';
COMMENT ON COLUMN audit_operators_latest.operator_id IS 'The operator.';
COMMENT ON COLUMN audit_operators_latest.decisions IS 'The operator''s decisions in the window (holds included).';
COMMENT ON COLUMN audit_operators_latest.actions IS 'Of those, the decisions that were not hold.';
COMMENT ON COLUMN audit_operators_latest.audited IS 'Whether the operator had enough decisions to be audited.';
COMMENT ON COLUMN audit_operators_latest.in_reference IS 'Whether the operator''s decisions were in the other operators'' reference.';
COMMENT ON COLUMN audit_operators_latest.outside_support IS 'Decisions outside the reference''s experience, left out of every test.';
COMMENT ON COLUMN audit_operators_latest.policy_agreement IS 'Share of decisions the champion would have made too; NULL without a champion.';
COMMENT ON COLUMN audit_operators_latest.acceptance_rate IS 'Share of verdicts on recommendations that were accepted; NULL without verdicts.';
COMMENT ON COLUMN audit_operators_latest.verdicts IS 'Verdicts on recommendations in the window.';
COMMENT ON COLUMN audit_operators_latest.findings_high IS 'Findings of severity high about the operator.';
COMMENT ON COLUMN audit_operators_latest.findings_medium IS 'Findings of severity medium about the operator.';
COMMENT ON COLUMN audit_operators_latest.findings_low IS 'Findings of severity low about the operator.';
COMMENT ON COLUMN audit_operators_latest.details IS 'Object with "cells" and "disagreements".';

-- The view is on the dashboard surface; the table is not.  As in 0004,
-- take away whatever default privileges granted before granting.
REVOKE ALL ON TABLE audit_operators, audit_operators_latest FROM PUBLIC;
REVOKE ALL ON TABLE audit_operators, audit_operators_latest FROM understudy_reader;
GRANT SELECT ON TABLE audit_operators_latest TO understudy_reader;
