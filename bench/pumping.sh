#!/usr/bin/env bash
# The SMS-pumping guard's simulation (issue 16 part 3): the guard's judging
# (crates/otpgate/src/guard/judge.rs) with the default [guard] settings,
# driven by a simulated clock over a warm-up day and a measured day of
# normal traffic (~95,000 sends: 20 accounts, 30 prefixes of Nepal, India and
# Bangladesh, a daily rhythm, ~80% verified or, for 4 accounts that never
# verify, ~95% delivered; half of each account's sends to returning users,
# numbers it proved before) with a pumping attack of 5,000 sends at several
# rates to one prefix, through the key of one of the normal accounts. Each
# send is decided by judge::decide as in the server, the store's "is this
# number proven" answered from the simulation's own record.
# Prints a Markdown table: the share of attack sends held after the first
# 300, of normal sends held, and of sends a hold let through as proven.
# Seeded, so every run prints the same table.
#
# Usage: bench/pumping.sh [N] [--returning SHARE]
#   N: run scenario N alone and list which keys held normal sends;
#   SHARE: the share of normal sends to returning users (0-1, default 0.5).
# No peers, no database: the judging is pure; a debug build is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet -p otpgate --example pumping -- "$@"
