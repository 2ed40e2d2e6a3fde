#!/usr/bin/env bash
# Smoke test of the Debian package, as root on a Debian machine without a
# running systemd (a CI container):
#
#   cargo deb -- --bin shardmq && bash tests/smoke_package.sh [DEB]
#
# Installs the package with dpkg, checks what it put where, verifies the
# unit with systemd-analyze (the unit's ExecStart binary must exist, so
# only after the install), runs the installed binary with the installed
# configuration as the package's user, checks a mosquitto_pub/mosquitto_sub
# round trip through it, stops it with SIGTERM (exit status 0), runs the
# installed tuning check, and purges the package.
set -euo pipefail

cd "$(dirname "$0")/.."

DEB=${1:-$(ls -t target/debian/shardmq_*.deb 2>/dev/null | head -n 1)}
HOST=127.0.0.1
WORK=$(mktemp -d)
BROKER_PID=
SUB_PID=

cleanup() {
    local pid
    for pid in $SUB_PID $BROKER_PID; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=tests/smoke_report.sh
. tests/smoke_report.sh

if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then
    fail "package" "no target/debian/shardmq_*.deb; run cargo deb first"
    summary_and_exit
fi

# -- install -----------------------------------------------------------------

if dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1; then
    pass "dpkg -i $(basename "$DEB")"
else
    fail "dpkg -i $(basename "$DEB")" "$(cat "$WORK/dpkg.log")"
    summary_and_exit
fi

for path in /usr/bin/shardmq /etc/shardmq/shardmq.toml /lib/systemd/system/shardmq.service \
    /usr/share/shardmq/tuning/sysctl.conf /usr/share/shardmq/tuning/check \
    /usr/share/doc/shardmq/README.md; do
    if [ -e "$path" ]; then pass "installed $path"; else fail "installed $path" "missing"; fi
done

if grep -qx /etc/shardmq/shardmq.toml /var/lib/dpkg/info/shardmq.conffiles 2>/dev/null; then
    pass "the configuration is a conffile"
else
    fail "the configuration is a conffile" "not in shardmq.conffiles"
fi

if getent passwd shardmq >/dev/null; then
    pass "system user shardmq"
else
    fail "system user shardmq" "postinst did not create it"
fi

if systemd-analyze verify /lib/systemd/system/shardmq.service >"$WORK/verify.log" 2>&1; then
    pass "systemd-analyze verify shardmq.service"
else
    fail "systemd-analyze verify shardmq.service" "$(cat "$WORK/verify.log")"
fi

# -- run the installed broker --------------------------------------------------

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# As the unit runs it: its user, its configuration (the store in
# /var/lib/shardmq). The loopback port and two shards keep it off the
# machine's real port and cores.
start_broker() {
    setpriv --reuid=shardmq --regid=shardmq --init-groups --pdeathsig KILL -- \
        /usr/bin/shardmq --config /etc/shardmq/shardmq.toml --listen "$HOST:$PORT" --shards 2 \
        >>"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    ready=0
    for _ in $(seq 1 100); do
        if python3 -c "import socket, sys; socket.create_connection(('$HOST', $PORT), 0.2)" 2>/dev/null; then
            ready=1
            break
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ "$ready" -eq 1 ]; then
        pass "installed broker accepts on $HOST:$PORT ($1)"
    else
        fail "installed broker accepts on $HOST:$PORT ($1)" "$(cat "$WORK/broker.log")"
        summary_and_exit
    fi
}

stop_broker() {
    kill -TERM "$BROKER_PID"
    broker_rc=0
    wait "$BROKER_PID" || broker_rc=$?
    BROKER_PID=
    if [ "$broker_rc" -eq 0 ]; then
        pass "SIGTERM: exit status 0 ($1)"
    else
        fail "SIGTERM: exit status 0 ($1)" "exit $broker_rc" "$(tail -n 20 "$WORK/broker.log")"
    fi
}

start_broker "first start"

mosquitto_sub -h "$HOST" -p "$PORT" -t smoke/package -C 1 -W 10 >"$WORK/got" 2>"$WORK/sub.err" &
SUB_PID=$!
# A publish before the subscription is in place would be lost: retained
# makes the order irrelevant.
mosquitto_pub -h "$HOST" -p "$PORT" -t smoke/package -m "from the package" -r -q 1
sub_rc=0
wait "$SUB_PID" || sub_rc=$?
SUB_PID=
if [ "$sub_rc" -eq 0 ] && [ "$(cat "$WORK/got")" = "from the package" ]; then
    pass "mosquitto_pub -> installed broker -> mosquitto_sub"
else
    fail "mosquitto_pub -> installed broker -> mosquitto_sub" "exit $sub_rc, got: $(cat "$WORK/got")" \
        "$(cat "$WORK/sub.err")"
fi

stop_broker "first start"

# The packaged configuration keeps a store: the retained value outlives
# the restart.
start_broker "restart"
if mosquitto_sub -h "$HOST" -p "$PORT" -t smoke/package -C 1 -W 10 >"$WORK/got2" 2>"$WORK/sub2.err" \
    && [ "$(cat "$WORK/got2")" = "from the package" ]; then
    pass "the retained value is in the store after a restart"
else
    fail "the retained value is in the store after a restart" "got: $(cat "$WORK/got2")" \
        "$(cat "$WORK/sub2.err")" "$(tail -n 20 "$WORK/broker.log")"
fi
stop_broker "restart"

if /usr/share/shardmq/tuning/check >"$WORK/check.log" 2>&1; then
    pass "installed tuning/check runs"
else
    fail "installed tuning/check runs" "$(cat "$WORK/check.log")"
fi

# -- remove --------------------------------------------------------------------

if dpkg --purge shardmq >"$WORK/purge.log" 2>&1 && [ ! -e /usr/bin/shardmq ]; then
    pass "dpkg --purge shardmq"
else
    fail "dpkg --purge shardmq" "$(cat "$WORK/purge.log")"
fi

summary_and_exit
