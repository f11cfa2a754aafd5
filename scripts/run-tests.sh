#!/usr/bin/env bash
# Runs cmocka test binaries and prints one summary line at the end:
#   tests: N passed, N failed
#
#   scripts/run-tests.sh --bin BIN [--fp-bin BIN] [--unit "B1 B2"] [--integration "B3 B4"]
#                        [--valgrind]
#
# --fp-bin names the build with failpoints (exported as UNDERSTUDY_FP_BIN).
#
# Unit binaries run directly; integration binaries run inside one
# scripts/devenv.sh environment (one PostgreSQL cluster + one mock Kafka for
# all of them).  Output of each binary is shown and kept in build/test-logs/.
# A binary that dies without cmocka's summary (a crash, a sanitizer abort)
# counts as one failed test.
set -uo pipefail

bin=build/understudy
unit=""
integ=""
valgrind=0
inside=0
while [ $# -gt 0 ]; do
    case "$1" in
    --bin) bin=$2; shift 2 ;;
    --fp-bin) export UNDERSTUDY_FP_BIN=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --unit) unit=$2; shift 2 ;;
    --integration) integ=$2; shift 2 ;;
    --valgrind) valgrind=1; shift ;;
    --inside) inside=1; shift ;;
    *) echo "usage: scripts/run-tests.sh --bin BIN [--unit LIST] [--integration LIST] [--valgrind]" >&2; exit 2 ;;
    esac
done

mkdir -p build/test-logs
passed=0
failed=0

run_one() {
    local t=$1 name log rc p f
    name=$(basename "$t")
    log=build/test-logs/$name.log
    echo "== $name"
    # Output goes to a file, not a pipe: a stray child process that kept the
    # pipe open would otherwise hang the run.
    if [ "$valgrind" -eq 1 ]; then
        valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
            "$t" >"$log" 2>&1
    else
        "$t" >"$log" 2>&1
    fi
    rc=$?
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    p=${p:-0}
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!! $name exited with status $rc without a cmocka failure count: counted as 1 failure"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

for t in $unit; do run_one "$t"; done

if [ -n "$integ" ]; then
    if [ "$inside" -eq 1 ]; then
        for t in $integ; do run_one "$t"; done
    else
        # Run the integration binaries inside one environment; the inner run
        # reports its counts on its last line, which we fold into ours.
        out=$(mktemp)
        scripts/devenv.sh --bin "$bin" -- "$0" --bin "$bin" --inside --integration "$integ" >"$out" 2>&1
        rc=$?
        cat "$out"
        line=$(grep -E '^integration: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
        rm -f "$out"
        if [ -n "$line" ]; then
            p=$(echo "$line" | sed 's/^integration: \([0-9]*\) passed.*/\1/')
            f=$(echo "$line" | sed 's/.* \([0-9]*\) failed$/\1/')
            passed=$((passed + p))
            failed=$((failed + f))
        fi
        if [ "$rc" -ne 0 ] && { [ -z "$line" ] || [ "${f:-0}" -eq 0 ]; }; then
            echo "!! the integration environment failed (status $rc): counted as 1 failure"
            failed=$((failed + 1))
        fi
    fi
fi

if [ "$inside" -eq 1 ]; then
    echo "integration: $passed passed, $failed failed"
else
    echo "tests: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
