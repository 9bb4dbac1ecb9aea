#!/bin/sh
# examples/demo.sh - what `make run` does after building: serve routes/ on
# the embedded broker, feed the examples' sample events into it with kcat,
# and show the routed output records next to kroute's own log.
# Ctrl-C stops everything (kroute drains, commits and exits 0).
cd "$(dirname "$0")/.." || exit 2
bin=.build/kroute
log=$(mktemp /tmp/kroute-demo.XXXXXX)
$bin run "$@" routes 2>"$log" &
kroute_pid=$!
tail -n +1 -f "$log" &
tail_pid=$!
viewer_pid=""

stop() {
    if [ -n "$viewer_pid" ]; then
        kill "$viewer_pid" 2>/dev/null
        wait "$viewer_pid" 2>/dev/null
    fi
    kill -INT "$kroute_pid" 2>/dev/null
    wait "$kroute_pid"
    code=$?
    sleep 0.2
    kill "$tail_pid" 2>/dev/null
    rm -f "$log"
    exit $code
}
trap stop INT TERM

# the embedded broker's address, from kroute's startup log
addr=""
for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*embedded broker listening on \([0-9.:]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 "$kroute_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    if kill -0 "$kroute_pid" 2>/dev/null; then
        echo "demo: kroute uses an external broker (KAFKA_BROKERS); not feeding samples" >&2
        wait "$kroute_pid"
    fi
    sleep 0.2
    kill "$tail_pid" 2>/dev/null
    rm -f "$log"
    exit 1
fi

echo "demo: feeding sample events into $addr" >&2
kcat -P -b "$addr" -t payment.completed -K'|' <examples/payments/samples.txt
kcat -P -b "$addr" -t user.created -K'|' <examples/welcome/samples.txt

# print every routed record as it lands
kcat -C -q -b "$addr" -G kroute-demo-viewer -o beginning -u \
    -f 'demo: >> %t[%p] key=%k %s\n' \
    ranking.points dataplatform.payments notification.requested \
    payment.completed.ranking.dlq user.created.dlq 2>/dev/null &
viewer_pid=$!
admin=$(sed -n 's/.*admin \(http:[^;]*\);.*/\1/p' "$log" | head -n 1)
echo "demo: kroute is running; Ctrl-C to stop. Try: curl -s $admin/metrics, $admin/routes, or" >&2
echo "demo: edit a handler under examples/ and watch it reload (curl -s $admin/reload)" >&2
wait "$kroute_pid"
stop
