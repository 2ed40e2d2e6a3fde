#!/usr/bin/env bash
# Smoke test: the stock mosquitto command-line clients against the broker.
#
#   bash tests/smoke_mosquitto_clients.sh
#
# Starts the broker on a free loopback port, subscribes with mosquitto_sub,
# publishes with mosquitto_pub and compares what arrives byte for byte.
#
# Environment:
#   SHARDMQ_BIN        broker binary (default target/debug/shardmq)
#   SHARDMQ_TEST_PEER  "mosquitto" runs the same checks against mosquitto,
#                      to validate the script itself.
set -euo pipefail

cd "$(dirname "$0")/.."

PEER=${SHARDMQ_TEST_PEER:-shardmq}
HOST=127.0.0.1
WORK=$(mktemp -d)
BROKER_PID=
SUB_PID=

cleanup() {
    local pid
    for pid in $SUB_PID $BROKER_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=tests/smoke_report.sh
. tests/smoke_report.sh

# -- broker ----------------------------------------------------------------

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# setpriv --pdeathsig: the broker dies with this script even if the script
# itself is killed before its EXIT trap can run.
DEATHSIG=()
if command -v setpriv >/dev/null; then DEATHSIG=(setpriv --pdeathsig KILL --); fi

case "$PEER" in
mosquitto)
    printf 'listener %s %s\nallow_anonymous true\npersistence false\n' "$PORT" "$HOST" >"$WORK/mosquitto.conf"
    BROKER_CMD=(mosquitto -c "$WORK/mosquitto.conf")
    ;;
shardmq)
    BIN=${SHARDMQ_BIN:-target/debug/shardmq}
    if [ ! -x "$BIN" ]; then
        fail "broker binary" "$BIN not found or not executable; run cargo build or set SHARDMQ_BIN"
        summary_and_exit
    fi
    BROKER_CMD=("$BIN" --listen "$HOST:$PORT" --shards 2)
    ;;
*)
    echo "unknown SHARDMQ_TEST_PEER=$PEER (expected shardmq or mosquitto)" >&2
    exit 2
    ;;
esac

echo "broker under test: $PEER on $HOST:$PORT"
"${DEATHSIG[@]}" "${BROKER_CMD[@]}" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!

ready=0
for _ in $(seq 1 150); do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    fail "broker startup" "not accepting connections on $HOST:$PORT" "$(tail -n 20 "$WORK/broker.log")"
    summary_and_exit
fi

# -- helpers ---------------------------------------------------------------

# Every received message is printed on one line in this format; debug lines
# (from -d) are told apart by the prefix.
FORMAT='MSG|%t|%q|%r|%p'

# pub ARGS...: mosquitto_pub; a failure is counted, not fatal, so the run
# still reaches its summary.
pub() {
    timeout 15 mosquitto_pub -h "$HOST" -p "$PORT" "$@" || fail "mosquitto_pub $*" "exited with $?"
}

# start_sub OUTFILE ARGS...: run mosquitto_sub in the background and return
# once its subscription has been acknowledged, so nothing published after
# this can be missed.
start_sub() {
    local out=$1
    shift
    # stdbuf: line-buffer the debug output, which otherwise sits in a stdio
    # buffer until exit instead of telling us the SUBACK has arrived.
    timeout 20 stdbuf -oL mosquitto_sub -h "$HOST" -p "$PORT" -d -F "$FORMAT" "$@" >"$out" 2>&1 &
    SUB_PID=$!
    local _
    for _ in $(seq 1 100); do
        if grep -q 'received SUBACK' "$out"; then return 0; fi
        if ! kill -0 "$SUB_PID" 2>/dev/null; then break; fi
        sleep 0.05
    done
    return 1
}

# wait_sub: wait for the background mosquitto_sub to exit (after its -C
# count or -W timeout); its exit status is not the verdict, its output is.
wait_sub() {
    wait "$SUB_PID" 2>/dev/null || true
    SUB_PID=
}

# messages OUTFILE: the received-message lines, sorted.
messages() {
    grep '^MSG|' "$1" | LC_ALL=C sort || true
}

# expect_messages NAME OUTFILE EXPECTED-LINES...: the exact set of messages.
expect_messages() {
    local name=$1 out=$2
    shift 2
    local expected got
    expected=$(printf '%s\n' "$@" | LC_ALL=C sort)
    got=$(messages "$out")
    if [ "$got" == "$expected" ]; then
        pass "$name"
    else
        fail "$name" "expected:" "$expected" "got:" "$got" "client output:" "$(tail -n 15 "$out")"
    fi
}

# -- checks ----------------------------------------------------------------

# Live delivery at each QoS. A subscription at QoS 2 gets each message at the
# QoS it was published with. Each mosquitto_pub is its own connection (maybe
# on another shard), so arrival order is not part of the contract: compare
# as sets.
out=$WORK/live.out
if start_sub "$out" -q 2 -t smoke/live -C 3 -W 10; then
    for q in 0 1 2; do
        pub -q "$q" -t smoke/live -m "live payload qos$q"
    done
    wait_sub
    for q in 0 1 2; do
        if messages "$out" | grep -qxF "MSG|smoke/live|$q|0|live payload qos$q"; then
            pass "live delivery qos$q"
        else
            fail "live delivery qos$q" "missing MSG|smoke/live|$q|0|live payload qos$q" "got:" "$(messages "$out")"
        fi
    done
    expect_messages "live delivery, nothing extra" "$out" \
        "MSG|smoke/live|0|0|live payload qos0" \
        "MSG|smoke/live|1|0|live payload qos1" \
        "MSG|smoke/live|2|0|live payload qos2"
else
    wait_sub
    fail "live delivery" "mosquitto_sub did not get a SUBACK" "$(tail -n 15 "$out")"
fi

# A wildcard subscription gets the matching topics and not the others.
out=$WORK/wildcard.out
if start_sub "$out" -q 1 -t 'smoke/+/x' -C 2 -W 10; then
    pub -q 1 -t smoke/a/y -m 'not for +/x'
    pub -q 1 -t smoke/a/b/x -m 'not for +/x either'
    pub -q 1 -t smoke/a/x -m 'a x'
    pub -q 1 -t smoke/b/x -m 'b x'
    wait_sub
    expect_messages "wildcard smoke/+/x" "$out" "MSG|smoke/a/x|1|0|a x" "MSG|smoke/b/x|1|0|b x"
else
    wait_sub
    fail "wildcard smoke/+/x" "mosquitto_sub did not get a SUBACK" "$(tail -n 15 "$out")"
fi

# A payload larger than one typical socket read.
big=$(head -c 20000 /dev/zero | tr '\0' 'z')
printf '%s' "$big" >"$WORK/big.payload"
out=$WORK/big.out
if start_sub "$out" -q 1 -t smoke/big -C 1 -W 10; then
    pub -q 1 -t smoke/big -f "$WORK/big.payload"
    wait_sub
    expect_messages "20000-byte payload" "$out" "MSG|smoke/big|1|0|$big"
else
    wait_sub
    fail "20000-byte payload" "mosquitto_sub did not get a SUBACK" "$(tail -n 15 "$out")"
fi

# Retained: stored, delivered to a later subscriber with the retain flag,
# then cleared by an empty retained publish.
pub -q 1 -r -t smoke/retained -m 'retained payload'
out=$WORK/retained.out
timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -q 1 -t smoke/retained -C 1 -W 10 -F "$FORMAT" >"$out" 2>&1 || true
expect_messages "retained message" "$out" "MSG|smoke/retained|1|1|retained payload"

pub -q 1 -r -n -t smoke/retained
out=$WORK/cleared.out
timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -q 1 -t smoke/retained -C 1 -W 2 -F "$FORMAT" >"$out" 2>&1 || true
expect_messages "retained message cleared" "$out"

# Persistent session: subscribe with -c (CleanSession=0), leave, publish,
# come back: the QoS 1 message was queued.
timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -c -i smoke-persist -q 1 -t smoke/persist -E >/dev/null 2>&1 ||
    fail "persistent subscribe" "mosquitto_sub -E failed"
pub -q 1 -t smoke/persist -m 'queued while away'
out=$WORK/persist.out
timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -c -i smoke-persist -q 1 -t smoke/persist -C 1 -W 10 -F "$FORMAT" >"$out" 2>&1 || true
expect_messages "offline queueing" "$out" "MSG|smoke/persist|1|0|queued while away"

if kill -0 "$BROKER_PID" 2>/dev/null; then
    pass "broker still running"
else
    fail "broker still running" "$(tail -n 20 "$WORK/broker.log")"
fi

summary_and_exit
