#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: the SMPP PDU decoder and the
# receipt parser (crates/smpp/fuzz), phone numbers (crates/otp-domain/fuzz) and
# the send endpoint's body handling (crates/otpgate/fuzz). A target fails on a
# panic, an input slower than 10 s, or memory over the RSS limit (also the
# largest single allocation allowed); the crashing input is left in
# <crate>/fuzz/artifacts/<target>/. Corpora grow in <crate>/fuzz/corpus/ (not
# committed); hand-written seeds live in <crate>/fuzz/seeds/.
#
# Usage: scripts/fuzz.sh [seconds-per-target]     (default 30)
#   FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_TARGETS="phone send_body" to run some.
#
# Installs cargo-fuzz from crates.io when it is missing. cargo-fuzz passes -Z
# flags, so it needs a nightly toolchain: the installed one, or one rustup can
# fetch; failing both, the stable toolchain with RUSTC_BOOTSTRAP=1, which
# accepts the same flags.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds="${1:-30}"
rss_mb="${FUZZ_RSS_LIMIT_MB:-2048}"

if cargo +nightly --version >/dev/null 2>&1; then
	toolchain=(+nightly)
elif rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
	toolchain=(+nightly)
else
	echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
	export RUSTC_BOOTSTRAP=1
	toolchain=()
fi
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# crate, target, longest input in bytes
all=(
	"crates/smpp decode_frame 4096"
	"crates/smpp receipt 4096"
	"crates/otp-domain phone 256"
	"crates/otpgate send_body 8192"
)

results=()
failed=0
for entry in "${all[@]}"; do
	read -r crate target max_len <<<"$entry"
	if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $target "* ]]; then
		continue
	fi
	inputs=("fuzz/corpus/$target")
	[ -d "$crate/fuzz/seeds/$target" ] && inputs+=("fuzz/seeds/$target")
	options=(-max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss_mb" -timeout=10)
	[ -f "$crate/fuzz/$target.dict" ] && options+=(-dict="fuzz/$target.dict")
	mkdir -p "$crate/fuzz/corpus/$target"
	log="$root/$crate/fuzz/$target.log"
	echo "fuzz: $target for ${seconds}s (log: $crate/fuzz/$target.log)"
	if (cd "$crate" && cargo "${toolchain[@]}" fuzz run "$target" "${inputs[@]}" -- "${options[@]}") >"$log" 2>&1; then
		runs=$(grep -Eo '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n1 || true)
		results+=("$target: ok, ${runs:-no summary}")
	else
		failed=1
		results+=("$target: FAILED, see $crate/fuzz/$target.log and $crate/fuzz/artifacts/$target/")
		grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -n 5 || true
	fi
done

printf '%s\n' "${results[@]}"
exit "$failed"
