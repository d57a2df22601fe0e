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
#   tests/e2e_bench.sh compare            the worker beside a plain Python client (tests/plain_client.py:
#                                         requests + requests-oauthlib + json + sqlite3 executemany)
#                                         on one simulator, the same requests, one full cycle each into
#                                         its own fresh database; prints requests, buckets received,
#                                         rows stored, CPU (user+sys), wall and peak RSS of each, the
#                                         CPU ratio worker/python, and checks that both databases hold
#                                         the same series and totals. World by default: 1,000 owned
#                                         Tweets over 20 accounts (created over 80 days) + 20,000 public.
#                                         E2E_PERF=1 then profiles a third worker run (perf record -g,
#                                         into a throwaway database, so the figures above carry no
#                                         profiling cost) and prints the top of perf report --no-children.
#   tests/e2e_bench.sh agency             builds the default world's database (200,000 Tweets, one full
#                                         cycle), then times "daily impressions per account for 30
#                                         days" with sqlite3 (.timer on, best of 3; on the
#                                         account_days rollup when the database has it, else on daily)
#                                         and `query accounts --since 30d` (best of 3)
#   E2E_DB=path tests/e2e_bench.sh agency the same queries on an existing database (no build)
#
# Not part of `cargo test`: run it by hand on an otherwise idle machine. Settings (environment):
#   E2E_OWNED=100000 E2E_ACCOUNTS=200 E2E_PUBLIC=100000   the world (compare: 1000, 20, 20000)
#   E2E_JOBS="totals hourly historical"                    the kinds of each cycle
#   E2E_CYCLES=2                                           cycles into the same database
#   E2E_SPREAD_DAYS=120                                    Tweets created over that many days
#                                                          (compare: 80)
#   E2E_KEEP=1                                             keep the temporary folder
#   E2E_PERF=1                                             compare: also profile the worker
#   E2E_PYTHON=python3                                     compare: the Python interpreter
#   CARGO_TARGET_DIR                                       where the release binary is built
#   E2E_BIN=path                                           use this binary instead (no build)
# Needs: cargo, /usr/bin/time (Debian package `time`), sqlite3; compare: Python 3.11+ with
# `pip install requests requests-oauthlib`, and perf (linux-perf) for E2E_PERF=1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$here/target}"
bin="${E2E_BIN:-$target/release/engagement-ingest}"
[[ "$bin" == /* ]] || bin="$PWD/$bin"

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

# start_sim DIR: serves DIR/world.toml on a loopback port, exports DIR/worker.toml and
# DIR/tweets.csv; sets SIM_PID, SIM_ADDR and SIM_READY (how long it took).
start_sim() {
    local dir=$1 t0 t1
    t0=$(date +%s.%N)
    "$bin" -q sim --world "$dir/world.toml" --listen 127.0.0.1:0 \
        --export-config "$dir/worker.toml" --export-inventory "$dir/tweets.csv" \
        >"$dir/sim.out" 2>"$dir/sim.err" &
    SIM_PID=$!
    # shellcheck disable=SC2064
    trap "stop_sim $SIM_PID" EXIT
    until [[ -s "$dir/sim.out" ]]; do
        kill -0 "$SIM_PID" 2>/dev/null || { cat "$dir/sim.err" >&2; exit 1; }
        sleep 0.05
    done
    t1=$(date +%s.%N)
    SIM_ADDR="$(head -1 "$dir/sim.out")"
    SIM_ADDR=${SIM_ADDR#listening on }
    SIM_READY=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", b - a }')
}

stop_sim() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# bench OWNED ACCOUNTS PUBLIC CYCLES JOBS...: runs the cycles, prints a table; sets PEAK_RSS_MB.
bench() {
    local owned=$1 accounts=$2 public=$3 cycles=$4
    shift 4
    local jobs=("$@") job_args=() dir sim_pid addr
    for j in "${jobs[@]}"; do job_args+=(--job "$j"); done
    dir="$(mktemp -d "${TMPDIR:-/tmp}/e2e_bench.XXXXXX")"
    world "$owned" "$accounts" "$public" "${E2E_SPREAD_DAYS:-120}" >"$dir/world.toml"

    start_sim "$dir"
    sim_pid=$SIM_PID
    addr=$SIM_ADDR
    echo "world: $owned owned Tweets over $accounts accounts + $public public;" \
        "jobs: ${jobs[*]}; simulator $addr ready in $SIM_READY," \
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
    stop_sim "$sim_pid"
    if [[ -n "${E2E_KEEP:-}" ]]; then echo "kept $dir"; else rm -rf "$dir"; fi
}

# timed NAME DIR CMD...: runs CMD in DIR under /usr/bin/time; sets T_CPU (user+sys seconds),
# T_WALL (seconds) and T_RSS (peak RSS, MB); CMD's stdout goes to DIR/NAME.out, stderr to
# DIR/NAME.err. Returns CMD's exit code.
timed() {
    local name=$1 dir=$2 code=0 user sys rss wall
    shift 2
    (cd "$dir" && /usr/bin/time -f '%U %S %M %e' -o "$dir/$name.time" "$@" \
        >"$dir/$name.out" 2>"$dir/$name.err") || code=$?
    read -r user sys rss wall < <(tail -1 "$dir/$name.time")
    T_CPU=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    T_WALL=$wall
    T_RSS=$((rss / 1024))
    return "$code"
}

# q DB SQL: one value (or row) from DB.
q() { sqlite3 -separator ' ' "$1" "$2"; }

# compare OWNED ACCOUNTS PUBLIC SPREAD_DAYS: the worker and tests/plain_client.py, one full
# cycle each into its own fresh database against one simulator; then both databases compared.
compare() {
    local owned=$1 accounts=$2 public=$3 spread=$4 py=${E2E_PYTHON:-python3} dir sim_pid
    need "$py" "install Python 3.11 or later"
    "$py" -c 'import requests, requests_oauthlib' 2>/dev/null ||
        { echo "e2e_bench: $py lacks requests: pip install requests requests-oauthlib" >&2; exit 2; }
    dir="$(mktemp -d "${TMPDIR:-/tmp}/e2e_compare.XXXXXX")"
    world "$owned" "$accounts" "$public" "$spread" >"$dir/world.toml"
    start_sim "$dir"
    sim_pid=$SIM_PID
    echo "world: $owned owned Tweets over $accounts accounts (created over $spread days) + $public" \
        "public; simulator $SIM_ADDR ready in $SIM_READY; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
    mkdir "$dir/worker" "$dir/python"
    local w_cpu w_wall w_rss p_cpu p_wall p_rss code=0
    timed worker "$dir/worker" "$bin" -q --config ../worker.toml run || code=$?
    ((code == 0)) || { echo "the worker exited with $code:" >&2; tail -5 "$dir/worker/worker.err" >&2; }
    w_cpu=$T_CPU w_wall=$T_WALL w_rss=$T_RSS
    local wdb="$dir/worker/engagement.sqlite" pdb="$dir/python/plain.sqlite" now
    sqlite3 "$wdb" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
    # The Python client's database: the worker's schema and its metric names, nothing else.
    {
        sqlite3 "$wdb" .schema | grep -v '^CREATE TABLE sqlite_'
        q "$wdb" "SELECT format('INSERT INTO metrics VALUES (%d, %Q);', metric_id, name) FROM metrics"
    } >"$dir/schema.sql"
    # Planned as of the worker's start, so both ask for the same windows.
    now=$(q "$wdb" "SELECT min(started_at) FROM runs")
    code=0
    timed python "$dir/python" "$py" "$here/tests/plain_client.py" --config ../worker.toml \
        --schema ../schema.sql --db plain.sqlite --now "$now" || code=$?
    ((code == 0)) || { echo "the Python client exited with $code:" >&2; tail -5 "$dir/python/python.err" >&2; }
    p_cpu=$T_CPU p_wall=$T_WALL p_rss=$T_RSS
    local sim_cpu
    sim_cpu=$(cpu_of "$sim_pid")

    local w_recv p_recv w_req p_req w_rows p_rows
    w_recv=$(grep -o '[0-9,]* hourly buckets\? received' "$dir/worker/worker.out" | tr -d , | cut -d' ' -f1)
    p_recv=$(tail -1 "$dir/python/python.out" | "$py" -c 'import json, sys; print(json.load(sys.stdin)["buckets_received"])')
    w_req=$(q "$wdb" "SELECT count(*) FROM requests")
    p_req=$(q "$pdb" "SELECT count(*) FROM requests")
    w_rows=$(q "$wdb" "SELECT (SELECT count(*) FROM series) + (SELECT count(*) FROM totals)")
    p_rows=$(q "$pdb" "SELECT (SELECT count(*) FROM series) + (SELECT count(*) FROM totals)")
    printf '%-8s %9s %12s %11s %8s %8s %8s\n' client requests buckets_recv rows_stored cpu_s wall_s rss_MB
    printf '%-8s %9d %12d %11d %8.2f %8.2f %8d\n' worker "$w_req" "${w_recv:-0}" "$w_rows" "$w_cpu" "$w_wall" "$w_rss"
    printf '%-8s %9d %12d %11d %8.2f %8.2f %8d\n' python "$p_req" "${p_recv:-0}" "$p_rows" "$p_cpu" "$p_wall" "$p_rss"
    awk -v w="$w_cpu" -v p="$p_cpu" -v s="$sim_cpu" 'BEGIN {
        printf "CPU worker/python: %.3f (1/%.1f; target 1/10 or less); simulator CPU for both runs: %.1f s\n",
            (p ? w / p : 0), (w ? p / w : 0), s }'

    # Same requests, same series, same totals (values; observation times differ).
    local same=1 a b
    a=$(q "$wdb" "SELECT endpoint, credential, tweet_count, count(*) FROM requests GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    b=$(q "$pdb" "SELECT endpoint, credential, tweet_count, count(*) FROM requests GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    if [[ "$a" == "$b" ]]; then
        echo "requests: the same per endpoint, credential and batch size"
    else
        same=0
        echo "requests DIFFER (endpoint credential tweets count; < worker, > python):"
        diff <(echo "$a") <(echo "$b") | head -20 || true
    fi
    local check
    check="SELECT 'series rows ' || count(*) || ', Tweets ' || count(DISTINCT tweet_id) || ', sum ' || total(value) FROM series;
           SELECT 'totals rows ' || count(*) || ', Tweets ' || count(DISTINCT tweet_id) || ', sum ' || total(value) FROM totals;"
    a=$(q "$wdb" "$check")
    b=$(q "$pdb" "$check")
    echo "worker: ${a//$'\n'/; }"
    echo "python: ${b//$'\n'/; }"
    local only
    only=$(q "$wdb" "ATTACH '$pdb' AS p;
        SELECT (SELECT count(*) FROM (SELECT tweet_id, metric_id, hour, value FROM main.series
                                      EXCEPT SELECT tweet_id, metric_id, hour, value FROM p.series)),
               (SELECT count(*) FROM (SELECT tweet_id, metric_id, hour, value FROM p.series
                                      EXCEPT SELECT tweet_id, metric_id, hour, value FROM main.series)),
               (SELECT count(*) FROM (SELECT tweet_id, metric_id, value FROM main.totals
                                      EXCEPT SELECT tweet_id, metric_id, value FROM p.totals)),
               (SELECT count(*) FROM (SELECT tweet_id, metric_id, value FROM p.totals
                                      EXCEPT SELECT tweet_id, metric_id, value FROM main.totals))")
    read -r a b c d <<<"$only"
    echo "rows only the worker stored: $a series, $c totals; only the Python client: $b series, $d totals"
    ((a + b + c + d == 0)) || same=0
    if [[ -n "${E2E_PERF:-}" ]]; then profile "$dir"; fi
    stop_sim "$sim_pid"
    if [[ -n "${E2E_KEEP:-}" ]]; then echo "kept $dir"; else rm -rf "$dir"; fi
    ((same)) || { echo "e2e_bench: the two databases differ (an hour may have ended between the runs: run again)" >&2; return 1; }
    echo "both databases hold the same series and totals"
}

# profile DIR: a third worker run into DIR/perf (a throwaway database) under `perf record -g -p`;
# prints the top 25 of `perf report --no-children`.
profile() {
    local dir=$1 wpid ppid
    need perf "apt-get install linux-perf"
    mkdir "$dir/perf"
    (cd "$dir/perf" && exec "$bin" -q --config ../worker.toml run >/dev/null 2>"$dir/perf/worker.err") &
    wpid=$!
    perf record -q -g -p "$wpid" -o "$dir/perf/perf.data" 2>"$dir/perf/record.err" &
    ppid=$!
    wait "$wpid" || true
    wait "$ppid" || true
    echo "perf report --no-children, worker (a third run, into a throwaway database), top 25:"
    perf report -i "$dir/perf/perf.data" --no-children --stdio -g none --sort dso,symbol \
        2>/dev/null | awk '/^ +[0-9]/ && n < 25 { print; n++ }'
}

# best_real: the best "Run Time: real" of sqlite3's .timer lines on stdin, in ms.
best_real() { awk '/^Run Time: real/ { if (b == "" || $4 < b) b = $4 } END { printf "%.1f", b * 1000 }'; }

# agency: a 200,000-Tweet database (or E2E_DB), and the agency's most frequent questions timed.
agency() {
    local db=${E2E_DB:-} dir="" sim_pid
    dir="$(mktemp -d "${TMPDIR:-/tmp}/e2e_agency.XXXXXX")"
    if [[ -z "$db" ]]; then
        local owned=${E2E_OWNED:-100000} accounts=${E2E_ACCOUNTS:-200} public=${E2E_PUBLIC:-100000}
        local spread=${E2E_SPREAD_DAYS:-120}
        world "$owned" "$accounts" "$public" "$spread" >"$dir/world.toml"
        start_sim "$dir"
        sim_pid=$SIM_PID
        echo "building: $owned owned Tweets over $accounts accounts + $public public, created over" \
            "$spread days; one full cycle; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)"
        timed worker "$dir" "$bin" -q --config worker.toml run ||
            { echo "the worker exited with $?:" >&2; tail -5 "$dir/worker.err" >&2; }
        echo "built in ${T_WALL} s wall (worker ${T_CPU} s CPU, simulator $(cpu_of "$sim_pid") s CPU)"
        stop_sim "$sim_pid"
        db="$dir/engagement.sqlite"
        sqlite3 "$db" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
    fi
    echo "database: $(q "$db" "SELECT count(*) FROM tweets") Tweets," \
        "$(q "$db" "SELECT count(*) FROM series") stored buckets, $(($(stat -c %s "$db") / 1048576)) MB"
    local view=daily sql
    sql="SELECT owner, day, CAST(total(value) AS INTEGER) FROM $view WHERE metric = 'impressions' AND day >= date('now', '-30 days') GROUP BY owner, day"
    if [[ -n "$(q "$db" "SELECT name FROM sqlite_master WHERE name = 'account_days'")" ]]; then
        # The daily rollup per account (schema 6), as schema/README.md's example reads it.
        view=account_days
        sql="SELECT owner, day, value FROM account_days WHERE metric_id = (SELECT metric_id FROM metrics WHERE name = 'impressions') AND day >= CAST(strftime('%s', 'now', 'start of day', '-29 days') AS INTEGER)"
    fi
    local out rows sum ms
    out=$(printf '.timer on\n%s;\n%s;\n%s;\n' "$sql" "$sql" "$sql" | sqlite3 -separator ' ' "$db")
    ms=$(best_real <<<"$out")
    rows=$(grep -vc '^Run Time' <<<"$out" || true)
    sum=$(grep -v '^Run Time' <<<"$out" | awk '{ s += $3 } END { printf "%d", s }')
    echo "daily impressions per account, 30 days (sqlite3 on $view, best of 3): $ms ms;" \
        "$((rows / 3)) rows, $((sum / 3)) impressions"
    local best="" best_cpu="" i t
    for i in 1 2 3; do
        /usr/bin/time -f '%e %U %S' -o "$dir/query.time" "$bin" -q query accounts --since 30d --db "$db" \
            >"$dir/query.out" 2>"$dir/query.err" ||
            { echo "query accounts failed:" >&2; tail -3 "$dir/query.err" >&2; break; }
        t=$(awk '{ printf "%.0f", $1 * 1000 }' "$dir/query.time")
        if [[ -z "$best" ]] || ((t < best)); then
            best=$t
            best_cpu=$(awk '{ printf "%.0f", ($2 + $3) * 1000 }' "$dir/query.time")
        fi
    done
    echo "engagement-ingest query accounts --since 30d (best of 3, whole process): ${best:-?} ms" \
        "wall, ${best_cpu:-?} ms CPU; $(wc -l <"$dir/query.out") lines"
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
compare)
    compare "${E2E_OWNED:-1000}" "${E2E_ACCOUNTS:-20}" "${E2E_PUBLIC:-20000}" "${E2E_SPREAD_DAYS:-80}"
    ;;
agency)
    agency
    ;;
*)
    echo "usage: $0 [cycle|rss|compare|agency]" >&2
    exit 2
    ;;
esac
