# shellcheck shell=bash
# Sourced by scripts that run the SMSC peer (bench/smpp.sh, faults/lib.sh).
#
# smsc_start DIR NAME [smsc.js flags...]
#   Starts `node peers/smsc/smsc.js --port 0 FLAGS` in the background with its
#   events in DIR/NAME.out and its pid in DIR/NAME.pid (callers usually run this
#   inside $(...), where a shell variable would be lost), waits for its
#   `listening` event and prints the port. A `--port N` among FLAGS wins over
#   the default 0 (to restart an SMSC where its clients expect it).
smsc_start() {
  local dir="$1" name="$2" here port
  shift 2
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  node "$here/smsc.js" --port 0 "$@" > "$dir/$name.out" 2>&1 &
  echo $! > "$dir/$name.pid"
  for _ in $(seq 1 100); do
    port=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e.get("event") == "listening": print(e["port"]); break' "$dir/$name.out" 2>/dev/null || true)
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.1
  done
  echo "the SMSC peer $name did not start: $(cat "$dir/$name.out")" >&2
  return 1
}
