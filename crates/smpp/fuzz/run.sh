#!/usr/bin/env bash
# A short, bounded fuzz run of every target (default 60 s each), for CI or by hand.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# Usage: crates/smpp/fuzz/run.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
for target in decode_frame receipt; do
	mkdir -p "fuzz/corpus/$target"
	cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
		-max_total_time="$seconds" -max_len=4096
done
