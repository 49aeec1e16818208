#!/usr/bin/env bash
# Builds the previous release's `otpgate` binary for the rolling-upgrade test and
# caches it, so the build is paid once per machine (or per CI cache).
#
#   scripts/build-old-release.sh [REV]    REV defaults to v0.1.0, else 02b404e
#
# Prints the path of the cached binary: target/old-release/otpgate-<commit>.
# The source is taken with `git archive` (no work tree is touched) and built
# with the dev profile minus debug info and incremental state, in a scratch
# target dir that is deleted afterwards: only the binary (about 60 MB) stays.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

rev="${1:-}"
if [[ -z "$rev" ]]; then
    # CI clones may lack tags; the first release is this commit.
    if git rev-parse -q --verify 'v0.1.0^{commit}' >/dev/null; then
        rev=v0.1.0
    else
        rev=02b404e
    fi
fi
if ! git rev-parse -q --verify "${rev}^{commit}" >/dev/null \
    && [[ "$(git rev-parse --is-shallow-repository)" == true ]]; then
    # A shallow CI clone: the first release is older than its depth.
    echo "build-old-release: $rev is not in this shallow clone; fetching the history" >&2
    git fetch --quiet --unshallow --tags >&2 || git fetch --quiet --tags origin "$rev" >&2 || true
fi
commit="$(git rev-parse --verify "${rev}^{commit}")" || {
    echo "build-old-release: $rev is not in this repository (the rolling-upgrade test needs the first release's commit)" >&2
    exit 1
}
out="$root/target/old-release"
bin="$out/otpgate-$commit"
mkdir -p "$out"
# Tests run in parallel processes: one builds, the others wait for its binary.
exec 9>"$out/.lock"
flock 9
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

work="$(mktemp -d "$out/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git archive "$commit" | tar -x -C "$work/src"
(
    cd "$work/src"
    CARGO_TARGET_DIR="$work/target" CARGO_INCREMENTAL=0 \
        CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" \
        cargo build --locked -p otpgate --bin otpgate \
        --config 'profile.dev.debug=0' >&2
)
cp "$work/target/debug/otpgate" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$bin"
