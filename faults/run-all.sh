#!/usr/bin/env bash
# Runs every fault script of this folder one after another and prints a table of
# verdicts. Exit status: 0 when none failed (a SKIP is not a failure), else 1.
#
#   faults/run-all.sh                 # every fault; pg-restart only with FAULT_PG_RESTART=1
#   faults/run-all.sh kill9 disk-full # only these (script names without .sh)
#
# The binary is built once (or taken from FAULT_BIN) and handed to each script;
# every FAULT_* knob of faults/lib.sh and of the scripts passes through. Each
# script's output goes to $FAULT_LOGS (default a new /tmp/faults-run.* folder).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [ -z "${FAULT_BIN:-}" ]; then
  cargo build --release -p otpgate --locked || exit 2
  export FAULT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/otpgate"
fi
logs=${FAULT_LOGS:-$(mktemp -d /tmp/faults-run.XXXXXX)}
mkdir -p "$logs"
all=("kill9 sqlite" "kill9 postgres" "smsc-restart" "pg-restart" "disk-full" "slow-smsc" "three-nodes")
if [ $# -gt 0 ]; then
  wanted=()
  for w in "$@"; do
    for f in "${all[@]}"; do [ "${f%% *}" = "$w" ] || [ "$f" = "$w" ] && wanted+=("$f"); done
  done
  all=("${wanted[@]}")
fi
rows=()
failed=0
for f in "${all[@]}"; do
  read -r script arg <<< "$f"
  name="$script${arg:+-$arg}"
  echo "== $name" >&2
  start=$(date +%s)
  # shellcheck disable=SC2086
  bash "faults/$script.sh" $arg > "$logs/$name.log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  line=$(grep '^VERDICT ' "$logs/$name.log" | tail -1)
  verdict=$(awk '{print $3}' <<< "$line")
  figures=$(cut -d' ' -f4- <<< "$line")
  if [ -z "$verdict" ]; then verdict=FAIL; figures="no verdict (exit $rc): $(tail -3 "$logs/$name.log" | tr '\n' ' ')"; fi
  if [ "$verdict" = FAIL ] || { [ "$verdict" = PASS ] && [ "$rc" != 0 ]; }; then failed=1; fi
  echo "   $verdict in ${took}s" >&2
  rows+=("$name|$verdict|${took}s|$figures")
done
echo
echo "binary $FAULT_BIN, tree at commit $(git rev-parse --short HEAD), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ); logs in $logs"
printf '%-20s %-7s %-6s %s\n' fault verdict time figures
for r in "${rows[@]}"; do
  IFS='|' read -r n v t fig <<< "$r"
  printf '%-20s %-7s %-6s %s\n' "$n" "$v" "$t" "$fig"
done
exit $failed
