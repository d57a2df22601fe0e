#!/usr/bin/env bash
# End-to-end benchmark (issue 7): the simulator and the worker as two processes on loopback, the
# simulator without rate limits, one full cycle of all kinds into a fresh database, then a second
# cycle. Prints per cycle: wall time, CPU time (user+sys) of each process, the worker's peak RSS,
# requests/s, stored buckets/s, database bytes per stored bucket, the worker's CPU per stored
# bucket and the share of CPU spent in the simulator vs the worker.
#
#   tests/e2e_bench.sh                    100,000 owned Tweets over 200 accounts + 100,000 public
#   tests/e2e_bench.sh rss                peak RSS of the worker at 20k, 200k and 1M Tweets
#   E2E_JOBS="totals hourly" tests/e2e_bench.sh rss
#                                         the same without /historical, whose backfill of a 1M
#                                         world is ~25G dense buckets (hours on 2 cores)
#
# Not part of `cargo test`: run it by hand on an otherwise idle machine. Settings (environment):
#   E2E_OWNED=100000 E2E_ACCOUNTS=200 E2E_PUBLIC=100000   the world
#   E2E_JOBS="totals hourly historical"                    the kinds of each cycle
#   E2E_CYCLES=2                                           cycles into the same database
#   E2E_SPREAD_DAYS=120                                    Tweets created over that many days
#   E2E_KEEP=1                                             keep the temporary folder
#   CARGO_TARGET_DIR                                       where the release binary is built
#   E2E_BIN=path                                           use this binary instead (no build)
# Needs: cargo, /usr/bin/time (Debian package `time`), sqlite3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$here/target}"
bin="${E2E_BIN:-$target/release/engagement-ingest}"

need() { command -v "$1" >/dev/null || { echo "e2e_bench: $1 is missing ($2)" >&2; exit 2; }; }
need cargo "install the Rust toolchain"
need sqlite3 "apt-get install sqlite3"
[[ -x /usr/bin/time ]] || { echo "e2e_bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }

[[ -n "${E2E_BIN:-}" ]] || (cd "$here" && cargo build --release --locked --quiet --bin engagement-ingest)

tick="$(getconf CLK_TCK)"
# CPU seconds (user+sys) a process has used so far.
cpu_of() { awk -v t="$tick" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }
hwm_of() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# world OWNED ACCOUNTS PUBLIC SPREAD_DAYS: a world file with no rate limits and no faults.
world() {
    local owned=$1 accounts=$2 public=$3 spread=$4 per rest i n
    per=$((owned / accounts))
    rest=$((owned - per * accounts))
    printf 'seed = 7\n[app]\nconsumer_key = "bench-consumer"\nconsumer_secret = "bench-secret"\n'
    printf 'bearer_token = "bench-bearer"\n'
    for ((i = 0; i < accounts; i++)); do
        n=$per
        ((i < rest)) && n=$((n + 1))
        printf '[[accounts]]\nhandle = "acct%03d"\nuser_id = %d\naccess_token = "%d-acct"\n' \
            "$i" $((100000 + i)) $((100000 + i))
        printf 'access_token_secret = "secret-%d"\ntweets = %d\n' "$i" "$n"
    done
    printf '[public]\ntweets = %d\n[tweets]\nspread_days = %d\n' "$public" "$spread"
    # [limits] left out: 0 = unlimited on every endpoint.
}

# bench OWNED ACCOUNTS PUBLIC CYCLES JOBS...: runs the cycles, prints a table; sets PEAK_RSS_MB.
bench() {
    local owned=$1 accounts=$2 public=$3 cycles=$4
    shift 4
    local jobs=("$@") job_args=() dir sim_pid addr
    for j in "${jobs[@]}"; do job_args+=(--job "$j"); done
    dir="$(mktemp -d "${TMPDIR:-/tmp}/e2e_bench.XXXXXX")"
    world "$owned" "$accounts" "$public" "${E2E_SPREAD_DAYS:-120}" >"$dir/world.toml"

    local t0 t1
    t0=$(date +%s.%N)
    "$bin" -q sim --world "$dir/world.toml" --listen 127.0.0.1:0 \
        --export-config "$dir/worker.toml" --export-inventory "$dir/tweets.csv" \
        >"$dir/sim.out" 2>"$dir/sim.err" &
    sim_pid=$!
    until [[ -s "$dir/sim.out" ]]; do
        kill -0 "$sim_pid" 2>/dev/null || { cat "$dir/sim.err" >&2; exit 1; }
        sleep 0.05
    done
    t1=$(date +%s.%N)
    addr="$(head -1 "$dir/sim.out")"
    echo "world: $owned owned Tweets over $accounts accounts + $public public;" \
        "jobs: ${jobs[*]}; simulator ${addr#listening on } ready in" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", b - a }')," \
        "RSS $(hwm_of "$sim_pid") MB; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
    printf '%-6s %8s %8s %8s %9s %8s %8s %10s %12s %10s %8s %8s %6s\n' \
        cycle wall_s worker_s sim_s rss_MB requests req/s buckets buckets/s B/bucket \
        db_MB ns/bkt sim%
    PEAK_RSS_MB=0
    local c
    for ((c = 1; c <= cycles; c++)); do
        local sim_before sim_after start end code=0
        sim_before=$(cpu_of "$sim_pid")
        start=$(date +%s.%N)
        (cd "$dir" && /usr/bin/time -f '%U %S %M' -o "$dir/time.$c" \
            "$bin" -q --config worker.toml run "${job_args[@]}" 2>"$dir/worker.$c.err") || code=$?
        end=$(date +%s.%N)
        sim_after=$(cpu_of "$sim_pid")
        if ((code != 0)); then
            echo "cycle $c: the worker exited with $code (see $dir/worker.$c.err)" >&2
            tail -5 "$dir/worker.$c.err" >&2
        fi
        sqlite3 "$dir/engagement.sqlite" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
        local run series totals size
        run=$(sqlite3 -separator ' ' "$dir/engagement.sqlite" \
            "SELECT requests, rows_written FROM runs ORDER BY run_id DESC LIMIT 1")
        series=$(sqlite3 "$dir/engagement.sqlite" "SELECT count(*) FROM series")
        totals=$(sqlite3 "$dir/engagement.sqlite" "SELECT count(*) FROM totals")
        size=$(stat -c %s "$dir/engagement.sqlite")
        read -r user sys rss_kb <"$dir/time.$c"
        read -r requests rows <<<"$run"
        awk -v c="$c" -v wall="$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" \
            -v user="$user" -v sys="$sys" -v rss="$rss_kb" -v req="$requests" -v rows="$rows" \
            -v simcpu="$(awk -v a="$sim_before" -v b="$sim_after" 'BEGIN { print b - a }')" \
            -v stored="$((series + totals))" -v size="$size" 'BEGIN {
                w = user + sys
                printf "%-6s %8.1f %8.1f %8.1f %9.0f %8d %8.0f %10d %12.0f %10.1f %8.0f %8.0f %6.0f\n",
                    c, wall, w, simcpu, rss / 1024, req, req / wall, rows, rows / wall,
                    (stored ? size / stored : 0), size / 1048576, (rows ? 1e9 * w / rows : 0),
                    100 * simcpu / (simcpu + w)
            }'
        ((rss_kb / 1024 > PEAK_RSS_MB)) && PEAK_RSS_MB=$((rss_kb / 1024))
    done
    echo "stored in the database: $series series buckets, $totals totals rows," \
        "$((size / 1048576)) MB; simulator peak RSS $(hwm_of "$sim_pid") MB"
    kill "$sim_pid"
    wait "$sim_pid" 2>/dev/null || true
    if [[ -n "${E2E_KEEP:-}" ]]; then echo "kept $dir"; else rm -rf "$dir"; fi
}

# shellcheck disable=SC2206
jobs=(${E2E_JOBS:-totals hourly historical})
case "${1:-cycle}" in
cycle)
    bench "${E2E_OWNED:-100000}" "${E2E_ACCOUNTS:-200}" "${E2E_PUBLIC:-100000}" \
        "${E2E_CYCLES:-2}" "${jobs[@]}"
    ;;
rss)
    # Half owned (over 200 accounts), half public, one cycle each.
    summary=()
    for n in 20000 200000 1000000; do
        bench $((n / 2)) 200 $((n / 2)) 1 "${jobs[@]}"
        summary+=("$n Tweets: ${PEAK_RSS_MB} MB")
        echo
    done
    echo "worker peak RSS (jobs: ${jobs[*]}): ${summary[*]}"
    ;;
*)
    echo "usage: $0 [cycle|rss]" >&2
    exit 2
    ;;
esac
