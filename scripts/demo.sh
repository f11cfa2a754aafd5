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

# Produces a JSONL file to a topic with kcat, keyed by the given JSON field.
replay() {
    local file=$1 topic=$2 keyfield=$3
    awk -v k="$keyfield" '{
        key = ""
        if (match($0, "\"" k "\": *\"[^\"]*\"")) {
            s = substr($0, RSTART, RLENGTH); sub(/^[^:]*: *"/, "", s); sub(/"$/, "", s); key = s
        } else if (match($0, "\"" k "\": *[0-9]+")) {
            s = substr($0, RSTART, RLENGTH); sub(/^[^:]*: */, "", s); key = s
        }
        printf "%s\t%s\n", key, $0
    }' "$file" | kcat -P -b "$UNDERSTUDY_KAFKA_BROKERS" -t "$topic" -K $'\t' -X enable.idempotence=true
    printf '  %-14s %4d messages from %s\n' "$topic" "$(wc -l <"$file")" "$file"
}

step "replaying fixtures/events/ into mock Kafka with kcat"
replay fixtures/events/actions.jsonl ops.actions entity_id
replay fixtures/events/states.jsonl ops.states entity_id
replay fixtures/events/feedback.jsonl ops.feedback recommendation_id

step "what is in the topics (partition: messages)"
for t in ops.actions ops.states ops.feedback; do
    printf '  %-14s' "$t"
    kcat -C -b "$UNDERSTUDY_KAFKA_BROKERS" -t "$t" -o beginning -e -q -f '%p\n' | sort | uniq -c |
        awk '{printf " p%s: %s", $2, $1} END {print ""}'
done
echo "  first action event:"
kcat -C -b "$UNDERSTUDY_KAFKA_BROKERS" -t ops.actions -p 0 -o beginning -c 1 -q -f '    key=%k %s\n'

step "what is in PostgreSQL"
q -c "SELECT version, name, applied_at::timestamp(0) FROM schema_migrations ORDER BY version"
q -c "SELECT table_name, table_type FROM information_schema.tables
      WHERE table_schema = 'public' ORDER BY table_type, table_name"
q -c "SELECT grantee, table_name, string_agg(privilege_type, ',') AS privileges
      FROM information_schema.role_table_grants WHERE grantee = 'understudy_reader'
      GROUP BY 1, 2 ORDER BY 2"

step "not yet built"
echo "  ingest (Kafka -> PostgreSQL), training, recommendations and audits come next;"
echo "  see README.md, 'Status'."
