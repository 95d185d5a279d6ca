#!/usr/bin/env bash
# The one command of a GPU device call: runs the CUDA tests, the correctness sweep, the sweep under
# compute-sanitizer and the standard benchmark table from the pack that scripts/device-pack made.
# Run from the repository root on the GPU machine with `.device` carried:
#
#   bash bench/device_run.sh all            # tests check sanitize bench
#   bash bench/device_run.sh tests check    # any stages, in the order given
#   bash bench/device_run.sh bench-quick    # the quick table (S 1k/4k, D 128, MHA/GQA)
#
# Stages:
#   tests       every .device/bin/*cuda*test* gtest binary; a binary fails on a nonzero exit, on
#               any skipped test (the GPU tests skip only without a device) and when none
#               passed; the stage fails when nvidia-smi -L lists no GPU
#   check       attnbench-server on a free loopback port + bench/correctness.py
#   sanitize    bench/correctness.py --small against the server under compute-sanitizer, first
#               --tool memcheck, then --tool racecheck; fails on any reported error
#   bench       attnbench-server + bench/standard_table.py (the full table)
#   bench-quick the same with --quick
#   ops         attnbench-server + bench/gpu_ops.py: NVML telemetry and device metrics, a request
#               the device cannot hold (another process holding its memory) then the next one,
#               and with two or more GPUs pinned requests and a spread sweep (issue #4 on a GPU)
#   variants    attnbench-server + bench/variants_table.py (score modifiers, block-sparse masks,
#               head dims against FlexAttention and SDPA; ATTNBENCH_VARIANTS_ARGS, e.g.
#               "--part=A --dims=128"); writes variants_table.md and variants_table.json
#   sqa         attnbench-server + bench/sqa_table.py (the SQA paper's Table 3: one layer of
#               each layout at the paper's lengths and batches, beside the paper's times;
#               ATTNBENCH_SQA_ARGS, e.g. "--quick" or "--tokens=131072,200000"); writes
#               sqa_table.md and sqa_table.json
#   layer       attnbench-server + bench/layer_table.py (issue #14's layer targets: one layer at
#               d_model 4096, 32 heads of dim 128, S 4k-32k, against its core alone and torch's
#               GEMMs of its projections; ATTNBENCH_LAYER_ARGS, e.g. "--layouts=mha,gqa");
#               writes layer_table.md and layer_table.json
#   decode      attnbench-server + bench/decode_table.py (issue #13's decode: S_q 1 against 512k
#               cached tokens, native, paged, int8, int4 and SAQ caches, GB/s against the measured
#               copy bandwidth and speed-ups over torch SDPA after its own dequantization or page
#               gather, then time against S_kv and S_q; ATTNBENCH_DECODE_ARGS, e.g.
#               "--parts=bandwidth --caches=native,int8"); writes decode_table.md and
#               decode_table.json
# Everything goes under $OUT (the device tool's result folder) when set, else
# /tmp/attnbench-device: device_run.log (this output), tests.log, correctness.log,
# correctness.json, sanitizer.log, server.log, standard_table.md, standard_table.json (8 files,
# the most the tool brings back). Each stage prints one PASS/FAIL line; a summary table ends it.
#
# Environment knobs: ATTNBENCH_DEVICE_BUDGET_S (seconds for the whole run, default 570: the tool
# stops a command at 600), ATTNBENCH_CHECK_ARGS, ATTNBENCH_SANITIZE_ARGS, ATTNBENCH_BENCH_ARGS,
# ATTNBENCH_OPS_ARGS (extra arguments of correctness.py / standard_table.py / gpu_ops.py, split
# on spaces). ATTNBENCH_TABLE_NCU (a kernel-name regex): the table stages (sqa, layer, decode,
# expressions) run their server under Nsight Compute, which profiles one launch of that kernel (--set full,
# past ATTNBENCH_TABLE_NCU_SKIP launches, default 3) into NAME_kernel.ncu-rep and
# NAME_kernel.txt; the table's timings of that run are then not to be quoted.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dev="$root/.device"
out_dir="${OUT:-/tmp/attnbench-device}"
budget_s="${ATTNBENCH_DEVICE_BUDGET_S:-570}"
python="${PYTHON:-python3}"

usage() {
  echo "usage: bash bench/device_run.sh [all|tests|check|sanitize|bench|bench-quick|ops|variants|sqa|layer|decode|expressions|profiler ...]" >&2
  exit 2
}

stages=()
[ "$#" -gt 0 ] || set -- all
for arg in "$@"; do
  case "$arg" in
    all) stages+=(tests check sanitize bench) ;;
    tests | check | sanitize | bench | bench-quick | ops | variants | sqa | layer | decode | \
      expressions | profiler)
      stages+=("$arg") ;;
    *) usage ;;
  esac
done

if [ ! -x "$dev/bin/attnbench-server" ]; then
  echo "[device_run] FAIL: no .device/bin/attnbench-server: run 'bash scripts/device-pack'" \
    "on the workstation and carry .device" >&2
  exit 1
fi

# Binaries scripts/device-pack compressed to fit the carry limit: unpacked once, in place.
for packed in "$dev"/bin/*.xz "$dev"/dev/*.xz; do
  [ -e "$packed" ] || continue
  "$python" -c 'import lzma, sys; open(sys.argv[1][:-3], "wb").write(lzma.open(sys.argv[1]).read())' \
    "$packed"
  chmod +x "${packed%.xz}"
  rm -f "$packed"
done

mkdir -p "$out_dir"
work="$(mktemp -d /tmp/attnbench-run.XXXXXX)"
exec > >(tee -a "$out_dir/device_run.log") 2>&1
tee_pid=$!

export LD_LIBRARY_PATH="$dev/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$dev/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# ---------------------------------------------------------------------------------------------
# The server: started in the background, stopped on every exit.
# ---------------------------------------------------------------------------------------------

server_pid=""
server_target=""
server_wrapper=()
server_flags=()

# Pids whose parent is $1.
child_pids() {
  local stat_file stat ppid dir
  for stat_file in /proc/[0-9]*/stat; do
    stat="$(cat "$stat_file" 2>/dev/null)" || continue
    # The fields after "(comm) " are: state ppid pgrp ...
    read -r _ ppid _ <<<"${stat##*) }"
    if [ "$ppid" = "$1" ]; then
      dir="${stat_file%/stat}"
      echo "${dir#/proc/}"
    fi
  done
}

# The attnbench-server process: $server_pid itself, or a descendant of a wrapper.
server_process() {
  local pid="$server_pid" depth child
  for depth in 1 2 3 4; do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "attnbench-serve" ]; then
      echo "$pid"
      return 0
    fi
    child="$(child_pids "$pid" | head -n 1)"
    [ -n "$child" ] || break
    pid="$child"
    : "$depth"
  done
  echo "$server_pid"
}

# start_server NAME STARTUP_TIMEOUT_S: runs "${server_wrapper[@]}" attnbench-server
# "${server_flags[@]}" and sets server_target from its startup line.
start_server() {
  local name="$1" timeout_s="$2" line="" waited=0
  : >"$work/server.out"
  : >"$work/server.err"
  "${server_wrapper[@]}" "$dev/bin/attnbench-server" --listen_address=127.0.0.1:0 \
    --log_level=warning "${server_flags[@]}" >"$work/server.out" 2>"$work/server.err" \
    </dev/null &
  server_pid=$!
  while [ "$waited" -lt $((timeout_s * 10)) ]; do
    line="$(grep -m 1 '^attnbench-server listening on ' "$work/server.out" || true)"
    if [ -n "$line" ] || ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.1
    waited=$((waited + 1))
  done
  if [[ ! "$line" =~ listening\ on\ ([^ ]+)\ metrics\ on\ ([^ ]+)\ backends\ ([^ ]+) ]]; then
    echo "[$name] the server did not start within ${timeout_s} s; its stderr:"
    tail -n 30 "$work/server.err"
    stop_server "$name" >/dev/null || true
    return 1
  fi
  server_target="${BASH_REMATCH[1]}"
  echo "[$name] $line"
}

# stop_server NAME: SIGTERM to the server (not its wrapper, which must see it exit), a bounded
# wait, then SIGKILL. Returns the exit status of what was started (the wrapper, if any).
stop_server() {
  local name="$1" target rc=0 i
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    target="$(server_process)"
    kill -TERM "$target" 2>/dev/null || true
    for i in $(seq 600); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
      : "$i"
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "[$name] the server did not stop in 60 s: killing it"
      kill -KILL "$target" "$server_pid" 2>/dev/null || true
    fi
  fi
  wait "$server_pid" 2>/dev/null || rc=$?
  {
    echo "===== server stderr ($name) ====="
    cat "$work/server.err"
  } >>"$out_dir/server.log"
  server_pid=""
  return "$rc"
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  if [ -n "$server_pid" ]; then stop_server cleanup >/dev/null 2>&1 || true; fi
  rm -rf "$work"
  # Let tee write the last lines before the tool collects the output.
  exec 1>&- 2>&-
  wait "$tee_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------

start_s=$SECONDS
summary=()

remaining_s() {
  echo $((budget_s - (SECONDS - start_s)))
}

# stage_limit DEFAULT_S: the seconds a stage may take, leaving 20 s for the summary.
stage_limit() {
  local left
  left=$(($(remaining_s) - 20))
  if [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}

record() { # STAGE RESULT SECONDS NOTE
  summary+=("$(printf '%-12s %-5s %5ss  %s' "$1" "$2" "$3" "$4")")
  echo "[$1] $2 ($3 s) $4"
}

# A GPU test binary passes only when it exits 0, at least one of its tests passed and none was
# skipped: on the device machine every skip is a failure (the tests skip only when they see no
# CUDA device), so a run that saw no device cannot read PASS. The stage fails up front when
# nvidia-smi lists no GPU.
stage_tests() {
  local limit="$1" t name rc passed failed skipped total_passed=0 total_skipped=0 bad=() log
  local gpus
  gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
  if [ "${gpus:-0}" -eq 0 ]; then
    STAGE_NOTE="no CUDA device visible (nvidia-smi -L lists no GPU): the GPU tests would only skip"
    return 1
  fi
  shopt -s nullglob
  local tests=("$dev"/bin/*cuda*test*)
  shopt -u nullglob
  if [ "${#tests[@]}" -eq 0 ]; then
    STAGE_NOTE="no .device/bin/*cuda*test* binaries (were the CUDA tests built and packed?)"
    return 1
  fi
  for t in "${tests[@]}"; do
    name="$(basename "$t")"
    log="$work/test.log"
    rc=0
    timeout -k 10 "$limit" "$t" --gtest_color=no >"$log" 2>&1 || rc=$?
    { echo "===== $name (rc $rc) ====="; cat "$log"; } >>"$out_dir/tests.log"
    passed="$(sed -n 's/^\[  PASSED  \] \([0-9]*\) tests\{0,1\}\..*/\1/p' "$log" | tail -n 1)"
    skipped="$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) tests\{0,1\}, listed below:.*/\1/p' "$log" |
      tail -n 1)"
    failed="$(grep -c '^\[  FAILED  \] [A-Za-z_]' "$log" || true)"
    total_passed=$((total_passed + ${passed:-0}))
    total_skipped=$((total_skipped + ${skipped:-0}))
    if [ "$rc" -ne 0 ]; then
      echo "[tests] $name: FAIL (rc $rc$([ "$rc" -eq 124 ] && echo ', timed out'), $failed failed)"
      grep '^\[  FAILED  \] [A-Za-z_]' "$log" | head -n 10 || tail -n 15 "$log"
      bad+=("$name")
    elif [ "${skipped:-0}" -gt 0 ]; then
      echo "[tests] $name: FAIL ($skipped skipped on the device machine, ${passed:-0} passed):" \
        "a GPU test skips only when it sees no CUDA device"
      grep -m 1 -A 1 ': Skipped$' "$log" | tail -n 1 | sed 's/^/  reason: /' || true
      grep '^\[  SKIPPED \] [A-Za-z_]' "$log" | sed 's/ ([0-9]* ms)$//' | sort -u |
        head -n 5 || true
      bad+=("$name(skipped)")
    elif [ "${passed:-0}" -eq 0 ]; then
      echo "[tests] $name: FAIL (exit 0 but no test passed)"
      tail -n 5 "$log"
      bad+=("$name(none passed)")
    else
      echo "[tests] $name: PASS (${passed} tests)"
    fi
  done
  STAGE_NOTE="${#tests[@]} binaries, $total_passed tests passed, $total_skipped skipped"
  if [ "${#bad[@]}" -gt 0 ]; then
    STAGE_NOTE="$STAGE_NOTE; failing: ${bad[*]} (tests.log)"
    return 1
  fi
}

# Runs correctness.py against the started server; per-case lines go to correctness.log, the
# console gets the non-passing lines and the summary.
run_correctness() { # LIMIT_S ARGS...
  local limit="$1" rc=0
  shift
  timeout -k 10 "$limit" "$python" bench/correctness.py --server="$server_target" "$@" \
    2>&1 | tee -a "$out_dir/correctness.log" | grep -v '^PASS ' || rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "[correctness] timed out after $limit s"
  return "$rc"
}

stage_check() {
  local limit="$1" rc=0
  local extra=()
  read -r -a extra <<<"${ATTNBENCH_CHECK_ARGS:-}"
  server_wrapper=()
  # The metrics endpoint on a free port; prometheus-cpp was seen refusing port 0 on the GPU
  # machine, and if it refuses this one too the server runs without it.
  server_flags=(--metrics_address="127.0.0.1:$(free_port)")
  if ! start_server check 180; then
    echo "[check] retrying with the metrics endpoint disabled"
    server_flags=(--metrics_address=)
    start_server check 180 || { STAGE_NOTE="server did not start (server.log)"; return 1; }
  fi
  echo "===== check =====" >>"$out_dir/correctness.log"
  run_correctness "$((limit - 10))" --json="$out_dir/correctness.json" "${extra[@]}" || rc=$?
  stop_server check || true
  STAGE_NOTE="$(grep '^\[correctness\] \(PASS\|FAIL\)' "$out_dir/correctness.log" | tail -n 1 |
    sed 's/^\[correctness\] //') (correctness.log)"
  return "$rc"
}

stage_sanitize() {
  local limit="$1" sanitizer tool rc san_rc log errors ours ignored notes=() failed=0 per_tool
  sanitizer="$(command -v compute-sanitizer || true)"
  [ -n "$sanitizer" ] || sanitizer=/usr/local/cuda/bin/compute-sanitizer
  if [ ! -x "$sanitizer" ]; then
    STAGE_NOTE="no compute-sanitizer (PATH, /usr/local/cuda/bin)"
    return 1
  fi
  local extra=()
  read -r -a extra <<<"${ATTNBENCH_SANITIZE_ARGS:---dtypes=bf16,fp32}"
  per_tool=$((limit / 2))
  [ "$per_tool" -gt 90 ] || per_tool=90
  for tool in memcheck racecheck; do
    log="$work/sanitizer.$tool.log"
    rc=0
    san_rc=0
    server_wrapper=("$sanitizer" --tool "$tool" --error-exitcode 86 --print-limit 50
      --log-file "$log")
    server_flags=(--metrics_address=)
    if ! start_server "sanitize-$tool" 240; then
      notes+=("$tool: server did not start")
      failed=1
      [ -f "$log" ] && { echo "===== $tool ====="; cat "$log"; } >>"$out_dir/sanitizer.log"
      continue
    fi
    echo "===== sanitize $tool =====" >>"$out_dir/correctness.log"
    run_correctness "$((per_tool - 60))" --small --rpc-timeout=300 "${extra[@]}" || rc=$?
    stop_server "sanitize-$tool" || san_rc=$?
    { echo "===== $tool (exit $san_rc) ====="; cat "$log" 2>/dev/null; } >>"$out_dir/sanitizer.log"
    # memcheck: "ERROR SUMMARY: N errors"; racecheck: "RACECHECK SUMMARY: ... (N errors, M warnings)"
    errors="$(grep -oE 'ERROR SUMMARY: [0-9]+ error|\([0-9]+ errors?' "$log" 2>/dev/null |
      grep -oE '[0-9]+' | tail -n 1 || true)"
    grep -E 'SUMMARY' "$log" 2>/dev/null | sed "s/^/[sanitize-$tool] /" || true
    ignored=0
    if [ "$tool" = racecheck ] && [ -n "$errors" ] && [ "$errors" != 0 ]; then
      ours="$(racecheck_errors "$log" | wc -l)"
      ignored=$((errors - ours))
      errors="$ours"
    fi
    # Under the sanitizer SIGTERM may end the server before its own handler runs (the
    # sanitizer's threads do not block it), so its exit status is not judged: the summary is.
    if [ -z "$errors" ]; then
      notes+=("$tool: no summary (exit $san_rc)")
      failed=1
    elif [ "$errors" != 0 ] || [ "$rc" -ne 0 ]; then
      notes+=("$tool: $errors errors, correctness rc $rc")
      failed=1
      if [ "$tool" = racecheck ]; then
        racecheck_errors "$log" | head -n 5
      else
        grep -m 5 -E '^========= (Invalid|Error)' "$log" || true
      fi
    else
      notes+=("$tool: 0 errors$([ "$ignored" -gt 0 ] && echo " ($ignored in library kernels ignored)")")
    fi
  done
  STAGE_NOTE="$(
    IFS=';'
    echo "${notes[*]}"
  ) (sanitizer.log)"
  return "$failed"
}

stage_bench() { # LIMIT_S QUICK(0|1)
  local limit="$1" quick="$2" rc=0 budget
  local extra=()
  read -r -a extra <<<"${ATTNBENCH_BENCH_ARGS:-}"
  [ "$quick" = 1 ] && extra=(--quick "${extra[@]}")
  server_wrapper=()
  server_flags=(--metrics_address= --max_request_bytes=$((48 << 30)))
  start_server bench 180 || { STAGE_NOTE="server did not start (server.log)"; return 1; }
  budget=$((limit - 60))
  [ "$budget" -gt 30 ] || budget=30
  timeout -k 10 "$limit" "$python" bench/standard_table.py --server="$server_target" \
    --out-dir="$out_dir" --time-budget="$budget" "${extra[@]}" || rc=$?
  stop_server bench || true
  if [ "$rc" -eq 0 ]; then
    STAGE_NOTE="table in $out_dir/standard_table.md"
  else
    STAGE_NOTE="standard_table.py exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')"
  fi
  return "$rc"
}

stage_ops() {
  local limit="$1" rc=0
  server_wrapper=()
  server_flags=(--metrics_address="127.0.0.1:$(free_port)" --max_request_bytes=$((48 << 30)))
  start_server ops 180 || { STAGE_NOTE="server did not start (server.log)"; return 1; }
  local metrics
  metrics="$(sed -nE 's/.*metrics on ([^ ]+) .*/\1/p' <<<"$(grep -m 1 'listening on' "$work/server.out")")"
  local extra=()
  read -r -a extra <<<"${ATTNBENCH_OPS_ARGS:-}"
  timeout -k 10 "$limit" "$python" bench/gpu_ops.py --server="$server_target" \
    --metrics="$metrics" "${extra[@]}" 2>&1 | tee "$out_dir/ops.log" || rc=$?
  stop_server ops || true
  STAGE_NOTE="$(grep '^\[ops\] \(PASS\|FAIL\)' "$out_dir/ops.log" | tail -n 1 | sed 's/^\[ops\] //') (ops.log)"
  return "$rc"
}

# The variants table: bench/variants_table.py against a server of its own, within the stage's
# limit (its --budget-s leaves a minute for the point in flight and the files).
stage_variants() {
  local limit="$1" rc=0 budget
  local extra=()
  read -r -a extra <<<"${ATTNBENCH_VARIANTS_ARGS:-}"
  server_wrapper=()
  server_flags=(--metrics_address= --max_request_bytes=$((48 << 30)))
  start_server variants 180 || { STAGE_NOTE="server did not start (server.log)"; return 1; }
  budget=$((limit - 60))
  [ "$budget" -gt 30 ] || budget=30
  timeout -k 10 "$limit" "$python" bench/variants_table.py --server="$server_target" \
    --out-dir="$out_dir" --budget-s="$budget" "${extra[@]}" || rc=$?
  stop_server variants || true
  if [ "$rc" -eq 0 ]; then
    STAGE_NOTE="table in $out_dir/variants_table.md"
  else
    STAGE_NOTE="variants_table.py exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')"
    STAGE_NOTE="$STAGE_NOTE$([ -f "$out_dir/variants_table.md" ] && echo "; table in $out_dir/variants_table.md")"
  fi
  return "$rc"
}

# A table script (bench/NAME_table.py) against a server of its own, within the stage's limit:
# the SQA paper's Table 3 (sqa, ATTNBENCH_SQA_ARGS), the layer targets (layer,
# ATTNBENCH_LAYER_ARGS) or the decode table (decode, ATTNBENCH_DECODE_ARGS); it writes
# NAME_table.md and NAME_table.json to $out_dir.
stage_table() {
  local name="$1" limit="$2" extra_args="$3" rc=0 budget
  local extra=()
  read -r -a extra <<<"$extra_args"
  server_wrapper=()
  local ncu report=""
  if [ -n "${ATTNBENCH_TABLE_NCU:-}" ]; then
    ncu="$(command -v ncu || echo /usr/local/cuda/bin/ncu)"
    report="$out_dir/${name}_kernel"
    server_wrapper=("$ncu" --target-processes all --kernel-name "regex:$ATTNBENCH_TABLE_NCU"
      --launch-skip "${ATTNBENCH_TABLE_NCU_SKIP:-3}" --launch-count 1 --set full -f -o "$report")
  fi
  server_flags=(--metrics_address= --max_request_bytes=$((48 << 30)))
  start_server "$name" 180 || { STAGE_NOTE="server did not start (server.log)"; return 1; }
  budget=$((limit - 60))
  [ "$budget" -gt 30 ] || budget=30
  timeout -k 10 "$limit" "$python" "bench/${name}_table.py" --server="$server_target" \
    --out-dir="$out_dir" --budget-s="$budget" "${extra[@]}" || rc=$?
  stop_server "$name" || true
  if [ -n "$report" ] && [ -f "$report.ncu-rep" ]; then
    "$ncu" --import "$report.ncu-rep" --page details >"$report.txt" 2>&1 || true
    echo "[$name] Nsight Compute: $report.ncu-rep, details in $report.txt"
  fi
  local table="$out_dir/${name}_table.md"
  if [ "$rc" -eq 0 ]; then
    STAGE_NOTE="table in $table"
  else
    STAGE_NOTE="${name}_table.py exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')"
    STAGE_NOTE="$STAGE_NOTE$([ -f "$table" ] && echo "; table in $table")"
  fi
  return "$rc"
}

# Issue #16's profiler agreement (bench/profiler_check.py): the service overhead against a plain
# server, then the same shapes against a server under Nsight Compute recording
# gpu__time_duration of every launch of ATTNBENCH_PROFILER_KERNEL (a kernel-name regex, default
# the forward kernels), then the server's medians against ncu's. ATTNBENCH_PROFILER_ARGS go to
# every phase (e.g. --backend=cuda_flash --iterations=30).
stage_profiler() {
  local limit="$1" rc=0 deadline=$((SECONDS + $1))
  local ncu extra=() report="$out_dir/profiler"
  ncu="$(command -v ncu || echo /usr/local/cuda/bin/ncu)"
  read -r -a extra <<<"${ATTNBENCH_PROFILER_ARGS:-}"
  server_flags=(--metrics_address= --max_request_bytes=$((48 << 30)))
  server_wrapper=()
  start_server profiler 180 || { STAGE_NOTE="server did not start (server.log)"; return 1; }
  timeout -k 10 $((deadline - SECONDS)) "$python" bench/profiler_check.py --phase=overhead \
    --server="$server_target" --out-dir="$out_dir" "${extra[@]}" || rc=$?
  stop_server profiler || true
  server_wrapper=("$ncu" --target-processes all
    --kernel-name "regex:${ATTNBENCH_PROFILER_KERNEL:-ForwardKernel}"
    --metrics gpu__time_duration.sum --clock-control none --cache-control none -f -o "$report")
  start_server profiler 300 || { STAGE_NOTE="server under ncu did not start (server.log)"; return 1; }
  timeout -k 10 $((deadline - SECONDS)) "$python" bench/profiler_check.py --phase=run \
    --server="$server_target" --runs="$out_dir/profiler_runs.json" "${extra[@]}" || rc=1
  stop_server profiler || true
  if [ ! -f "$report.ncu-rep" ]; then
    STAGE_NOTE="no Nsight Compute report (server.log)"
    return 1
  fi
  "$ncu" --import "$report.ncu-rep" --csv --page raw --metrics gpu__time_duration.sum \
    >"$out_dir/profiler_ncu.csv" 2>&1 || rc=1
  "$python" bench/profiler_check.py --phase=compare --runs="$out_dir/profiler_runs.json" \
    --ncu-csv="$out_dir/profiler_ncu.csv" --out-dir="$out_dir" || rc=1
  STAGE_NOTE="profiler_overhead.md, profiler_check.md"
  return "$rc"
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# racecheck_errors LOG: the race reports of kernels that are not the libraries' (cuBLAS's nvjet,
# CUTLASS, xmma GEMMs: races reported inside them are the library's business and were seen by
# the thousand), one line each; ATTNBENCH_RACECHECK_IGNORE (an extended regex on the kernel
# name) replaces that list.
racecheck_errors() {
  local ignore="${ATTNBENCH_RACECHECK_IGNORE:-^(nvjet|cutlass|sm[0-9]+_xmma|.*gemm)}"
  grep -iE '^=========.*(race reported|hazard detected)' "$1" 2>/dev/null | while IFS= read -r line; do
    kernel="$(sed -nE 's/.* at ([A-Za-z_][A-Za-z0-9_:<>, ]*)\+0x.*/\1/p' <<<"$line")"
    if [ -z "$kernel" ] || ! grep -qE "$ignore" <<<"$kernel"; then echo "$line"; fi
  done
}

gpu_clocks() {
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
    --format=csv,noheader 2>/dev/null | sed "s/^/[device_run] $1: /" || true
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

echo "[device_run] $(date -u '+%Y-%m-%d %H:%M:%S UTC'); stages: ${stages[*]}; budget ${budget_s} s;" \
  "results in $out_dir"
sed -n 's/^\(commit\|date\|archs\):/[device_run] pack \1:/p' "$dev/MANIFEST" 2>/dev/null || true
nvidia-smi -L || echo "[device_run] nvidia-smi -L failed"
gpu_clocks "clocks (name, SM, max SM, memory, temperature, power)"
"$python" -c 'import sys, grpc, google.protobuf as p; print(f"[device_run] python {sys.version.split()[0]}, grpcio {grpc.__version__}, protobuf {p.__version__}")' ||
  echo "[device_run] python lacks grpc or protobuf"
"$python" -c 'from attnbench.v1 import attnbench_pb2' ||
  echo "[device_run] WARNING: the stubs in .device/python do not import"
if ldd "$dev/bin/attnbench-server" | grep 'not found'; then
  echo "[device_run] WARNING: attnbench-server misses the libraries above"
fi

overall=0
for stage in "${stages[@]}"; do
  limit_default=120
  case "$stage" in
    tests) limit_default=120 ;;
    check) limit_default=240 ;;
    sanitize) limit_default=360 ;;
    bench) limit_default=600 ;;
    bench-quick) limit_default=150 ;;
    ops) limit_default=240 ;;
    variants) limit_default=560 ;;
    sqa) limit_default=560 ;;
    layer) limit_default=300 ;;
    decode) limit_default=400 ;;
    expressions) limit_default=560 ;;
    profiler) limit_default=300 ;;
  esac
  limit="$(stage_limit "$limit_default")"
  if [ "$limit" -lt 30 ]; then
    record "$stage" SKIP 0 "no time left in the ${budget_s} s budget"
    overall=1
    continue
  fi
  echo
  echo "[device_run] ===== $stage (up to $limit s) ====="
  STAGE_NOTE=""
  t0=$SECONDS
  rc=0
  case "$stage" in
    tests) stage_tests "$limit" || rc=$? ;;
    check) stage_check "$limit" || rc=$? ;;
    sanitize) stage_sanitize "$limit" || rc=$? ;;
    bench) stage_bench "$limit" 0 || rc=$? ;;
    bench-quick) stage_bench "$limit" 1 || rc=$? ;;
    ops) stage_ops "$limit" || rc=$? ;;
    variants) stage_variants "$limit" || rc=$? ;;
    sqa) stage_table sqa "$limit" "${ATTNBENCH_SQA_ARGS:-}" || rc=$? ;;
    layer) stage_table layer "$limit" "${ATTNBENCH_LAYER_ARGS:-}" || rc=$? ;;
    decode) stage_table decode "$limit" "${ATTNBENCH_DECODE_ARGS:-}" || rc=$? ;;
    expressions) stage_table expressions "$limit" "${ATTNBENCH_EXPRESSIONS_ARGS:-}" || rc=$? ;;
    profiler) stage_profiler "$limit" || rc=$? ;;
  esac
  if [ "$rc" -eq 0 ]; then
    record "$stage" PASS $((SECONDS - t0)) "$STAGE_NOTE"
  else
    record "$stage" FAIL $((SECONDS - t0)) "$STAGE_NOTE"
    overall=1
  fi
done

echo
gpu_clocks "clocks after"
echo "== attnbench device run: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null |
  head -n 1), $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - start_s)) s =="
printf '%-12s %-5s %6s  %s\n' stage result time note
printf '%s\n' "${summary[@]}"
echo "result: $([ "$overall" -eq 0 ] && echo PASS || echo FAIL)"
exit "$overall"
