#!/bin/sh
# spec/run.sh [all|unit|integration|kafka|asan|package|integration-file FILE...] - runs the busted
# suites and prints the totals over all of them as the last line: "N passed, N failed"
# (", N skipped" when some are pending). Exit status 1 if anything failed.
#   unit         spec/unit + every examples/*/ spec (the C core as a Lua module)
#   integration  spec/integration: the kroute binary against the mock broker
#   kafka        spec/integration again against real Apache Kafka (spec/support/kafka.sh
#                fetches it through Maven into .build/kafka on first use)
#   asan         spec/integration again with the AddressSanitizer+UBSan build, on the mock
#   package      spec/package: `make deb` and the .deb's contents; as root on Debian also
#                dpkg -i, the installed kroute on the shipped examples, dpkg --purge
# `all` runs both brokers, and the asan suite beside the mock one (both mostly wait);
# KROUTE_TEST_BROKER=mock or =kafka keeps only that one's integration run.
# integration-file runs on the broker it names (mock when unset). Each suite's
# output is kept in .build/test/NAME.tap; its line of counts gives its time.
#   (unit also replays the fuzz corpus, spec/fuzz/corpus, under ASan+UBSan)
cd "$(dirname "$0")/.." || exit 2
export LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;"
export LUA_CPATH=".build/lua/?.so;;"
mkdir -p .build/test
# busted's own #! picks whatever `lua` is; the specs need Lua 5.4
busted="lua5.4 /usr/bin/busted"
suite=${1:-all}
passed=0 failed=0 skipped=0

# Counts a suite's TAP lines in .build/test/NAME.tap into the totals.
tally() {
    name=$1 out=.build/test/$1.tap elapsed=$2
    p=$(grep -c '^ok .*# SKIP' "$out")
    s=$p
    p=$(($(grep -c '^ok ' "$out") - s))
    f=$(grep -c '^not ok ' "$out")
    # a spec file that fails to load shows up as "not ok" too; a crashed
    # busted that printed no plan at all counts as one failure
    grep -q '^1\.\.[0-9]' "$out" || f=$((f + 1))
    echo "== $name: $p passed, $f failed, $s skipped ($elapsed s)"
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

run_suite() {
    name=$1
    shift
    echo "== $name"
    start=$(date +%s)
    # TAP lines are counted; everything else (logs, diagnostics) passes through
    "$@" 2>&1 | tee ".build/test/$name.tap"
    tally "$name" $(($(date +%s) - start))
}

# Starts a suite in the background, its output kept for finish_suite.
start_suite() {
    name=$1
    shift
    bg_start=$(date +%s)
    "$@" >".build/test/$name.tap" 2>&1 &
    bg_pid=$!
}

# Waits for the suite start_suite started, prints its output, counts it.
finish_suite() {
    wait "$bg_pid"
    echo "== $1 (ran beside the suite above)"
    cat ".build/test/$1.tap"
    tally "$1" $(($(date +%s) - bg_start))
}

case $suite in
all | unit)
    run_suite unit $busted -o TAP spec/unit examples ;;
esac
case $suite in
all | unit)
    run_suite fuzz-corpus env ASAN_OPTIONS=detect_leaks=1:exitcode=66 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=66 \
        .build/fuzz-regress spec/fuzz/corpus ;;
esac
only=${KROUTE_TEST_BROKER:-}
asan_suite() {
    env KROUTE_BIN=.build/kroute-asan \
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=66 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=66 \
        KROUTE_TEST_BROKER=mock $busted -o TAP spec/integration
}
# `all` runs the mock suite and the ASan suite side by side: both spend most
# of their time waiting on brokers, rebalances and timers (the mock suite
# used a fifth of one core), and each spec has its own broker, ports and
# folders, so together they take about the time of one.
asan_beside=0
if [ "$suite" = all ] && [ "$only" != kafka ]; then
    asan_beside=1
    start_suite asan asan_suite
fi
case $suite in
all | integration)
    [ "$suite" = all ] && [ "$only" = kafka ] ||
        run_suite integration env KROUTE_TEST_BROKER=mock $busted -o TAP spec/integration ;;
esac
if [ "$asan_beside" = 1 ]; then
    finish_suite asan
fi
case $suite in
all | kafka)
    if [ "$suite" = kafka ] || [ "$only" != mock ]; then
        if sh spec/support/kafka.sh fetch; then
            run_suite kafka env KROUTE_TEST_BROKER=kafka $busted -o TAP \
                spec/unit/testsupport_admin_spec.lua spec/integration
        else
            echo "== kafka: Apache Kafka could not be fetched through Maven (see above)"
            failed=$((failed + 1))
        fi
        # every JVM a spec started is stopped, also when busted itself died
        spec/support/kafka.sh stop-all
    fi ;;
esac
case $suite in
all) [ "$asan_beside" = 1 ] || run_suite asan asan_suite ;;
asan) run_suite asan asan_suite ;;
esac
case $suite in
all | package)
    run_suite package $busted -o TAP spec/package ;;
esac

case $suite in
integration-file)
    shift
    run_suite "$(basename "$1" .lua)" $busted -o TAP "$@" ;;
esac

if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
