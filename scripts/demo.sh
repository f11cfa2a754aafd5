#!/usr/bin/env bash
# The demo, run by `make demo` inside scripts/devenv.sh (which provides a
# throwaway PostgreSQL and mock Kafka and exports UNDERSTUDY_BIN,
# UNDERSTUDY_PG_DSN, UNDERSTUDY_KAFKA_BROKERS).  Everything runs on the
# embedded default configuration; devenv.sh stops both services afterwards.
set -euo pipefail

bin=${UNDERSTUDY_BIN:?run through scripts/devenv.sh}
psql_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)/psql
[ -x "$psql_bin" ] || psql_bin=psql
q() { "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$UNDERSTUDY_PG_DSN" "$@"; }
if [ -t 1 ]; then b=$'\033[1m' n=$'\033[0m'; else b='' n=''; fi
step() { printf '\n%s== %s%s\n' "$b" "$*" "$n"; }

step "configuration (embedded defaults + environment overrides, secrets masked)"
"$bin" check-config

step "schema migrations"
"$bin" migrate
"$bin" migrate   # a second run is a no-op

step "replaying fixtures/events/ into Kafka (understudy replay: keyed by entity, idempotent producer)"
"$bin" replay --topic ops.actions fixtures/events/actions.jsonl
"$bin" replay --topic ops.states fixtures/events/states.jsonl
"$bin" replay --topic ops.feedback fixtures/events/feedback.jsonl
echo "  and three bad messages from an independent client (kcat), to show the dead letters:"
printf '%s\n' '{"event_id": "chg-bad-1", "ts": "yesterday"}' 'not json at all' \
    '{"event_id":"chg-bad-2","ts":"2026-11-02T10:00:00Z","operator_id":"op-01","campaign_id":"cmp-1","entity_type":"keyword","entity_id":"kw-1","action":"bid_change","delta_pct":0,"state":{}}' |
    kcat -P -b "$UNDERSTUDY_KAFKA_BROKERS" -t ops.actions

step "simulating a team of 8 operators on 96 campaigns (understudy simulate; op-03 never lowers bids on social)"
sim=$(mktemp -d /tmp/understudy-demo-sim.XXXXXX)
"$bin" simulate --out "$sim" --rows 16000 --campaigns 96 --seed 7 --bias op-03:never=bid_down@channel=social
# The last 2000 snapshots are held back: they arrive after the policy is
# promoted, as new states would, and get recommendations.
# Actions are split at the same time (ts strings in one format compare as
# times).
head -n 14000 "$sim/states.jsonl" >"$sim/states-first.jsonl"
tail -n +14001 "$sim/states.jsonl" >"$sim/states-new.jsonl"
cut=$(tail -n 1 "$sim/states-first.jsonl" | sed 's/.*"ts":"\([^"]*\)".*/\1/')
awk -v cut="$cut" '{ t = $0; sub(/.*"ts":"/, "", t); sub(/".*/, "", t); print > (t <= cut ? "'"$sim"'/actions-first.jsonl" : "'"$sim"'/actions-new.jsonl") }' "$sim/actions.jsonl"
"$bin" replay --topic ops.actions "$sim/actions-first.jsonl"
"$bin" replay --topic ops.states "$sim/states-first.jsonl"

step "running the daemon (understudy run) until every message is accounted for"
cfg=$(mktemp /tmp/understudy-demo.XXXXXX.yaml)
log=$(mktemp /tmp/understudy-demo.XXXXXX.log)
# Training runs below, from the command line, once everything is stored;
# the daemon keeps running and recommends once a champion exists.
# The simulator's features.yaml declares all 30 state keys it writes (the
# embedded default declares 7 of them, which cannot tell a creative from a
# campaign).
# The daemon audits the operators after each promotion and writes the
# reports into build/demo-report/ (kept after the demo, for a browser).
report_dir="$PWD/build/demo-report"
mkdir -p "$report_dir"
# The simulated team covers two and a half days, so day_of_week would put
# every newer snapshot outside the policy's experience (a weekday it never
# saw): the demo leaves that one feature out.
{ grep -v 'name: day_of_week' "$sim/features.yaml"; printf 'metrics:\n  listen: "127.0.0.1:0"\ntrain:\n  enabled: false\naudit:\n  lookback: 0s\n  report_dir: "%s"\n' "$report_dir"; } >"$cfg"
"$bin" run -c "$cfg" 2>"$log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true; rm -rf "$cfg" "$log" "$sim"' EXIT
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*metrics: listening on port \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$log"; echo "demo: the daemon did not start" >&2; exit 1; }
want=$(($(wc -l <fixtures/events/actions.jsonl) + $(wc -l <fixtures/events/states.jsonl) + $(wc -l <fixtures/events/feedback.jsonl) + 3 +
    $(wc -l <"$sim/actions-first.jsonl") + $(wc -l <"$sim/states-first.jsonl")))
for _ in $(seq 150); do
    got=$(q -Atc "SELECT coalesce(sum(next_offset), 0) FROM ingest_offsets")
    [ "$got" -ge "$want" ] && break
    sleep 0.2
done
echo "  $got of $want messages accounted for; /readyz says: $(curl -s "http://127.0.0.1:$port/readyz")"

step "metrics (http://127.0.0.1:$port/metrics, non-zero ingest counters)"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^understudy_ingest_(consumed|stored|duplicates|dead_letters|batches)' |
    grep -v ' 0$' | sed 's/^/  /'

step "what is in PostgreSQL"
q -c "SELECT 'action_events' AS table_name, count(*) FROM action_events
      UNION ALL SELECT 'state_events', count(*) FROM state_events
      UNION ALL SELECT 'feedback_events', count(*) FROM feedback_events
      UNION ALL SELECT 'dead_letters', count(*) FROM dead_letters"
q -c "SELECT topic, partition, \"offset\", reason FROM dead_letters ORDER BY id"
q -c "SELECT decision, count(*) FROM action_events GROUP BY 1 ORDER BY 2 DESC"
q -c "SELECT topic, partition, next_offset FROM ingest_offsets ORDER BY 1, 2"
q -c "SELECT grantee, table_name, string_agg(privilege_type, ',') AS privileges
      FROM information_schema.role_table_grants WHERE grantee = 'understudy_reader'
      GROUP BY 1, 2 ORDER BY 2"

step "training the policy on the event tables and promoting it (understudy train --from-db --promote)"
"$bin" train -c "$cfg" --from-db --promote
q -c "SELECT version, status, n_examples, round((metrics->>'valid_logloss')::numeric, 4) AS valid_logloss,
             round((metrics->>'valid_accuracy')::numeric, 4) AS valid_accuracy, train_from, train_to
      FROM policies ORDER BY version"

step "the champion policy (understudy model show --version N, first lines)"
champion=$(q -Atc "SELECT version FROM policies WHERE status = 'champion'")
"$bin" model show --version "$champion" >"$sim/show.txt"
head -n 24 "$sim/show.txt"

step "new snapshots arrive; the running daemon picked up the promotion (NOTIFY) and scores them"
for _ in $(seq 100); do
    [ "$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^understudy_recommend_policy_version \([0-9]*\).*/\1/p')" = "$champion" ] && break
    sleep 0.1
done
"$bin" replay --topic ops.actions "$sim/actions-new.jsonl"
"$bin" replay --topic ops.states "$sim/states-new.jsonl"
new=$(wc -l <"$sim/states-new.jsonl")
scored=0
for _ in $(seq 150); do
    scored=$(q -Atc "SELECT (SELECT count(*) FROM recommendations WHERE policy_version = $champion)
                          + (SELECT count(*) FROM abstentions WHERE policy_version = $champion)")
    [ "$scored" -ge "$new" ] && break
    sleep 0.2
done
echo "  $scored of $new new snapshots scored: each is one recommendation or one abstention"
q -c "SELECT 'recommendations' AS outcome, status AS detail, count(*) FROM recommendations GROUP BY status
      UNION ALL SELECT 'abstentions', reason, count(*) FROM abstentions GROUP BY reason ORDER BY 1, 3 DESC"

step "why the policy stayed silent (abstentions, one example per reason)"
q -c "SELECT DISTINCT ON (reason) reason, entity_type || ' ' || entity_id AS entity, action,
             round(confidence::numeric, 2) AS conf, round(ood_score::numeric, 1) AS ood,
             coalesce((SELECT string_agg(g->>'rule' || coalesce(' ' || round((g->>'value')::numeric, 2)
                                           || ' vs ' || round((g->>'limit')::numeric, 2), ''), '; ')
                       FROM jsonb_array_elements(guardrails) AS g WHERE (g->>'blocked')::boolean), '') AS blocked_by
      FROM abstentions ORDER BY reason, id"

step "per operator and action (view recommendation_stats, first rows)"
q -c "SELECT operator_id, action, recommended, open, superseded, abstained, abstained_hold AS hold,
             abstained_low_confidence AS low_conf, abstained_cooldown AS cooldown,
             abstained_not_allowed_for_entity AS not_allowed
      FROM recommendation_stats WHERE operator_id IN ('op-01', 'op-03') ORDER BY 1, 2"

step "recommender metrics"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^understudy_recommend_(leader|policy_version|open_total|abstentions_total|superseded_total)' |
    grep -v ' 0$' | sed 's/^/  /'

step "the daemon audits the operators after the promotion (its audit thread; understudy audit does the same on demand)"
for _ in $(seq 300); do
    [ "$(q -Atc "SELECT count(*) FROM audit_runs WHERE status <> 'running' AND policy_version = $champion")" -ge 1 ] && break
    sleep 0.2
done
grep -E 'audit: ' "$log" | sed 's/^/  /'

step "stopping the daemon (SIGTERM: drain, commit, leave the group)"
kill -TERM "$daemon"
wait "$daemon" || { cat "$log"; exit 1; }
grep -E 'run: |stopped' "$log" | sed 's/^/  /'


step "the open recommendations (view recommendations_open, as a dashboard reads it; newest first)"
q -c "SELECT entity_type || ' ' || entity_id AS entity, operator_id AS operator, action,
             round(delta_pct::numeric, 1) AS delta_pct, round(confidence::numeric, 2) AS conf,
             round(ood_score::numeric, 1) AS ood, explanation
      FROM recommendations_open LIMIT 12"
q -Atc "SELECT count(*) || ' open recommendation(s) in all, for ' || count(DISTINCT entity_id) || ' entities'
        FROM recommendations_open" | sed 's/^/  /'

step "the operator audit (views audit_operators_latest and audit_findings_latest, as a dashboard reads them)"
q -c "SELECT id AS run, status, policy_version AS policy, window_from, round(extract(epoch FROM finished_at - started_at)::numeric, 1) AS seconds, error
      FROM audit_runs ORDER BY id"
q -c "SELECT operator_id AS operator, decisions, actions, audited, in_reference,
             round(policy_agreement::numeric, 3) AS policy_agreement,
             findings_high AS high, findings_medium AS medium, findings_low AS low
      FROM audit_operators_latest"
q -c "SELECT operator_id AS operator, kind, action, region, round(observed::numeric, 1) AS observed,
             round(expected::numeric, 1) AS expected, to_char(q_value, '9.9EEEE') AS q, severity
      FROM audit_findings_latest"
q -Atc "SELECT summary FROM audit_findings_latest" | sed 's/^/  finding: /'
echo "  the HTML report: $report_dir/audit.html (also audit.md and audit.json)"
