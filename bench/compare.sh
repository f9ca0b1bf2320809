#!/usr/bin/env bash
# bench/compare.sh: pop3d, Debian's Dovecot and null_pop3 under the same POP3
# load, interleaved, with medians, spread and ratios.
#
#   bench/compare.sh                 # everything, 3 rounds of 10 s per run
#   ROUNDS=5 DURATION=20 bench/compare.sh
#   SERVERS="dovecot null" SCENARIOS="S1-full-c16 S5-noop-c1" bench/compare.sh
#
# What it does:
#  1. builds pop3d and the examples (release);
#  2. installs Dovecot with apt-get if it is missing (needs root);
#  3. writes the fixture with mkfixture under $BENCH_DIR/fixture:
#     user1..200 x 20 messages x 4 KiB, big1..4 x one 20 MiB message,
#     idle1..$IDLE_CONNS x one 1 KiB message;
#  4. starts each server pinned to CPU $SERVER_CPU (taskset; Dovecot's
#     children inherit it), the load generator runs on CPU $LOADGEN_CPU;
#  5. warms every server up (one pass over every user), then runs each
#     scenario $ROUNDS times, servers interleaved and their order rotated
#     each round; S4 restarts the server first so its memory baseline is a
#     fresh server;
#  6. prints medians [min-max] per scenario and server, and the ratios.
#
# Scenarios (loadgen modes):
#   S1-full-c16, S1-full-c128  full sessions (USER PASS STAT UIDL LIST RETR* QUIT)
#   S2-login-c64               login storm (connect USER PASS QUIT)
#   S3-retr20M-c1, -c4         RETR of a 20 MiB message, repeated
#   S4-idle10k                 $IDLE_CONNS authenticated idle connections:
#                              server memory per connection (PSS and RSS)
#   S5-noop-c1                 NOOP ping-pong latency, one connection
#
# All traffic stays on 127.0.0.1; every run is bounded in time; every server
# started here is stopped on exit. Results: $BENCH_DIR/results.jsonl (one
# loadgen JSON line per run, label "server scenario round").
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_HOLD=${IDLE_HOLD:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/pop3d-bench}
SERVERS=${SERVERS:-"dovecot pop3d null"}
SCENARIOS=${SCENARIOS:-"S1-full-c16 S1-full-c128 S2-login-c64 S3-retr20M-c1 S3-retr20M-c4 S4-idle10k S5-noop-c1"}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
PORT_DOVECOT=${PORT_DOVECOT:-21110}
PORT_POP3D=${PORT_POP3D:-21111}
PORT_NULL=${PORT_NULL:-21112}

REPO=$(cd "$(dirname "$0")/.." && pwd)
FIXTURE=$BENCH_DIR/fixture
RESULTS=$BENCH_DIR/results.jsonl
EX=$REPO/target/release/examples

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

# Servers started by this script: name -> pid.
declare -A PID=()
declare -A PORT=([dovecot]=$PORT_DOVECOT [pop3d]=$PORT_POP3D [null]=$PORT_NULL)
declare -A UNAVAILABLE=()

cleanup() {
    for name in "${!PID[@]}"; do stop_server "$name"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 10,000 idle connections need 10,000 descriptors on each side, plus slack.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CONNS + 1000)) ]; then
    log "ulimit -n is $(ulimit -n): S4 with $IDLE_CONNS connections may fail (raise the hard limit)"
fi

mkdir -p "$BENCH_DIR"
cd "$REPO"

log "building (release)"
cargo build --release --examples --quiet
POP3D_BIN=$REPO/target/release/pop3d
if ! cargo build --release --bin pop3d --quiet; then
    UNAVAILABLE[pop3d]="does not build"
fi

if [[ " $SERVERS " == *" dovecot "* ]] && { ! command -v dovecot >/dev/null || [ ! -x /usr/lib/dovecot/pop3 ]; }; then
    log "installing Dovecot (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-pop3d >/dev/null
fi

log "fixture under $FIXTURE"
rm -rf "$FIXTURE"
"$EX/mkfixture" --root "$FIXTURE" --prefix user --users 200 --messages 20 --size 4K
"$EX/mkfixture" --root "$FIXTURE" --prefix big --users 4 --messages 1 --size 20M
"$EX/mkfixture" --root "$FIXTURE" --prefix idle --users "$IDLE_CONNS" --messages 1 --size 1K
# Dovecot refuses root for mail processes that serve many clients; pop3d
# runs as root and can read anything.
if id mail >/dev/null 2>&1; then chown -R mail:mail "$FIXTURE"; fi

DOVECOT_DIR=$BENCH_DIR/dovecot
mkdir -p "$DOVECOT_DIR"
sed -e "s#@RUN@#$DOVECOT_DIR#g; s#@PORT@#$PORT_DOVECOT#g; s#@FIXTURE@#$FIXTURE#g" \
    "$REPO/bench/dovecot.conf.in" > "$DOVECOT_DIR/dovecot.conf"

POP3D_CONF=$BENCH_DIR/pop3d.ron
# pop3d refuses to serve as root unless told to (the script runs as root
# to install and start Dovecot). Per-IP and per-user failure caps off: all
# load comes from one address.
ALLOW_ROOT=
[ "$(id -u)" = 0 ] && ALLOW_ROOT="allow_root: true,"
cat > "$POP3D_CONF" <<EOF
(
    listen: [(addr: "127.0.0.1:$PORT_POP3D")],
    workers: 1,
    $ALLOW_ROOT
    limits: (auth_failure_delay_ms: 100, max_connections: 200000, max_per_ip: 200000,
             max_auth_failures_per_ip: 0, max_auth_failures_per_user: 0),
    auth: (plugin: "passwd-file", config: (path: "$FIXTURE/passwd")),
    store: (plugin: "maildir", config: (root: "$FIXTURE/%u/Maildir")),
)
EOF

# Waits for a POP3 greeting on the port; fails after 15 s.
wait_greeting() {
    local port=$1 line
    for _ in $(seq 1 150); do
        # The braces keep the 2>/dev/null from sticking to the whole script.
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            line=
            read -r -t 2 line <&3 || true
            exec 3>&- 3<&-
            [[ "$line" == "+OK"* ]] && return 0
        fi
        sleep 0.1
    done
    return 1
}

start_server() {
    local name=$1 port=${PORT[$1]}
    if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
        exec 3>&- 3<&-
        die "port $port is already in use: set PORT_${name^^} to a free port"
    fi
    case $name in
        dovecot)
            : > "$DOVECOT_DIR/dovecot.log"
            : > "$DOVECOT_DIR/dovecot-info.log"
            taskset -c "$SERVER_CPU" dovecot -F -c "$DOVECOT_DIR/dovecot.conf" \
                >> "$DOVECOT_DIR/stdout.log" 2>&1 &
            ;;
        pop3d)
            # Its default log level (info: a line per login and logout).
            env -u RUST_LOG taskset -c "$SERVER_CPU" "$POP3D_BIN" --config "$POP3D_CONF" \
                > "$BENCH_DIR/pop3d.log" 2>&1 &
            ;;
        null)
            taskset -c "$SERVER_CPU" "$EX/null_pop3" --listen "127.0.0.1:$port" \
                --maildrop :20:4K --maildrop big:1:20M --maildrop idle:1:1K \
                > "$BENCH_DIR/null_pop3.log" 2>&1 &
            ;;
    esac
    PID[$name]=$!
    if ! wait_greeting "$port"; then
        log "$name did not greet on port $port within 15 s; skipping it"
        stop_server "$name"
        return 1
    fi
}

stop_server() {
    local name=$1 pid=${PID[$1]:-}
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    # Dovecot's master waits for its children; give it time, then insist.
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
}

# loadgen arguments per scenario (without --server/--label).
scenario_args() {
    case $1 in
        S1-full-c16)   echo "--mode full  --users $FIXTURE/users.user -c 16  --duration $DURATION --warmup $WARMUP" ;;
        S1-full-c128)  echo "--mode full  --users $FIXTURE/users.user -c 128 --duration $DURATION --warmup $WARMUP" ;;
        S2-login-c64)  echo "--mode login --users $FIXTURE/users.user -c 64  --duration $DURATION --warmup $WARMUP" ;;
        S3-retr20M-c1) echo "--mode retr  --users $FIXTURE/users.big  -c 1   --duration $DURATION --warmup $WARMUP --timeout 30" ;;
        S3-retr20M-c4) echo "--mode retr  --users $FIXTURE/users.big  -c 4   --duration $DURATION --warmup $WARMUP --timeout 30" ;;
        S4-idle10k)    echo "--mode idle  --users $FIXTURE/users.idle -c $IDLE_CONNS --duration $IDLE_HOLD --ramp-timeout 120 --timeout 60" ;;
        S5-noop-c1)    echo "--mode noop  --users $FIXTURE/users.user -c 1   --duration $DURATION --warmup $WARMUP" ;;
        *) die "unknown scenario $1" ;;
    esac
}

# Runs loadgen on its own CPU; the JSON line goes to $RESULTS. loadgen exits
# 1 when it counted errors: the line is kept (errors are part of the result).
run_loadgen() {
    local name=$1 label=$2; shift 2
    local line
    line=$(timeout 600 taskset -c "$LOADGEN_CPU" "$EX/loadgen" --server "127.0.0.1:${PORT[$name]}" \
        --server-pid "${PID[$name]}" --json --quiet --label "$label" "$@") || true
    if [ -z "$line" ]; then
        log "$label: loadgen produced no result"
        return 0
    fi
    printf '%s\n' "$line" >> "$RESULTS"
    printf '%s\n' "$line" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
lat = r["latency_ms"].get("session") or {}
mem = r.get("server_memory_kib") or {}
extra = ""
if r["mode"] == "idle":
    extra = " idle %s/%s, %.1f KiB PSS/conn" % (r["idle"]["ready"], r["connections"], mem.get("pss_per_conn") or 0)
print("   %-32s %9.1f sess/s %9.1f cmd/s %8.1f MB/s  errors %d%s" % (
    r["label"], r["sessions_per_s"], r["commands_per_s"], r["rx_mb_per_s"], r["errors_total"], extra))
' >&2
}

log "starting servers"
ACTIVE=()
for name in $SERVERS; do
    if [ -n "${UNAVAILABLE[$name]:-}" ]; then
        log "$name: ${UNAVAILABLE[$name]}; skipping it"
        continue
    fi
    if start_server "$name"; then ACTIVE+=("$name"); else UNAVAILABLE[$name]="did not start"; fi
done
[ ${#ACTIVE[@]} -gt 0 ] || die "no server started"

log "warm-up: every user once on every server (page cache, indexes, auth cache)"
for name in "${ACTIVE[@]}"; do
    taskset -c "$LOADGEN_CPU" "$EX/loadgen" --server "127.0.0.1:${PORT[$name]}" --quiet \
        --mode full --users "$FIXTURE/users.user" -c 16 --sessions 400 > /dev/null || true
    taskset -c "$LOADGEN_CPU" "$EX/loadgen" --server "127.0.0.1:${PORT[$name]}" --quiet \
        --mode retr --users "$FIXTURE/users.big" -c 4 --requests 8 --timeout 30 > /dev/null || true
    taskset -c "$LOADGEN_CPU" "$EX/loadgen" --server "127.0.0.1:${PORT[$name]}" --quiet \
        --mode login --users "$FIXTURE/users.idle" -c 64 --sessions "$IDLE_CONNS" --timeout 30 > /dev/null || true
done

: > "$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    # Rotate the server order so no server always runs right after another.
    order=("${ACTIVE[@]:$(( (round - 1) % ${#ACTIVE[@]} ))}" "${ACTIVE[@]:0:$(( (round - 1) % ${#ACTIVE[@]} ))}")
    log "round $round/$ROUNDS (order: ${order[*]})"
    for scenario in $SCENARIOS; do
        for name in "${order[@]}"; do
            if [ "$scenario" = S4-idle10k ]; then
                stop_server "$name"
                start_server "$name" || continue
                sleep 1
            fi
            # shellcheck disable=SC2046 # word splitting of the scenario's arguments is wanted
            run_loadgen "$name" "$name $scenario $round" $(scenario_args "$scenario")
        done
    done
done

for name in "${!UNAVAILABLE[@]}"; do log "not measured: $name (${UNAVAILABLE[$name]})"; done
python3 "$REPO/bench/summarize.py" "$RESULTS"
