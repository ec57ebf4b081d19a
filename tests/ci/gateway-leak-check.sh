#!/usr/bin/env bash
# A CI leak check, as a project would write it for its own server:
# run the server under `observer run --fail-on-leak`, drive a workload,
# stop the server gracefully, and let the observer's exit status decide.
#
# usage: gateway-leak-check.sh OBSERVER BIN_DIR CYCLES REPORT [observer options...]
#   OBSERVER  the observer binary
#   BIN_DIR   directory with leaky-gateway and chat-load
#   CYCLES    connect/chat/disconnect sessions to drive
#   REPORT    where the observer writes its final JSON report
# exit status: the observer's (0 no leak, 1 leak found, 2 error)
set -euo pipefail

observer=$1 bin=$2 cycles=$3 report=$4
shift 4
work=$(mktemp -d)
observer_pid=
# On any way out before the observer was waited for (a failed workload),
# stop it as at the end, so nothing is left running or attached.
stop_observer() {
    if [ -n "$observer_pid" ]; then
        kill -INT "$observer_pid" 2> /dev/null || true
        wait "$observer_pid" 2> /dev/null || true
    fi
}
trap 'stop_observer; rm -rf "$work"' EXIT
# Made before the observer starts: the loop below reads them at once.
: > "$work/gateway.out"
: > "$work/observer.err"

# allocate returns its PooledBuf through a hidden result pointer: the
# first argument on x86-64, x8 as it was at entry on arm64.
case "$(uname -m)" in
    aarch64) result='x8@entry' ;;
    *) result='arg0' ;;
esac
"$observer" run --fail-on-leak --format json --output "$report" --interval 500ms \
    --alloc 'bufpool::BufPool::allocate' --size "*($result+8)" --alloc-id "*$result" \
    --release 'bufpool::BufPool::release' --release-id '*arg1' \
    "$@" -- "$bin/leaky-gateway" --listen 127.0.0.1:0 \
    > "$work/gateway.out" 2> "$work/observer.err" &
observer_pid=$!

address=
for _ in $(seq 200); do
    address=$(sed -n 's/^listening on //p' "$work/gateway.out")
    [ -n "$address" ] && break
    kill -0 "$observer_pid" 2> /dev/null || break
    sleep 0.05
done
if [ -z "$address" ]; then
    echo "gateway-leak-check: the gateway did not start" >&2
    cat "$work/observer.err" >&2
    wait "$observer_pid" || true
    observer_pid=
    exit 2
fi

"$bin/chat-load" --addr "$address" --sessions "$cycles" --messages 3 > /dev/null

# Graceful stop: the observer passes SIGINT on to the gateway, waits for it
# to exit, then reports every buffer still outstanding.
kill -INT "$observer_pid"
status=0
wait "$observer_pid" || status=$?
observer_pid=
grep -v '^observer: \[' "$work/observer.err" >&2 || true
exit "$status"
