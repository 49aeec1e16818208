#!/usr/bin/env bash
# The SMS-pumping guard's simulation (issue 16 part 3): the guard's judging
# (crates/otpgate/src/guard/judge.rs) with the default [guard] settings,
# driven by a simulated clock over a warm-up day and a measured day of
# normal traffic (~95,000 sends: 20 accounts, 30 prefixes of Nepal, India and
# Bangladesh, a daily rhythm, ~80% verified or, for 4 accounts that never
# verify, ~95% delivered) with a pumping attack of 5,000 sends at several
# rates to one prefix, through the key of one of the normal accounts.
# Prints a Markdown table: the share of attack sends held after the first
# 300, and of normal sends held. Seeded, so every run prints the same table.
#
# Usage: bench/pumping.sh [N]   (N: run scenario N alone and list which keys
#                                held normal sends)
# No peers, no database: the judging is pure; a debug build is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet -p otpgate --example pumping -- "$@"
