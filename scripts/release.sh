#!/usr/bin/env bash
# Builds otpgate's release artifacts for x86_64 Linux into dist/ (or $OUT):
#
#   otpgate-VERSION-x86_64-linux          the stripped binary (release profile)
#   otpgate_VERSION-1_amd64.deb           the Debian package (cargo-deb; see
#                                         [package.metadata.deb] in crates/otpgate/Cargo.toml)
#   otpgate-VERSION-x86_64-linux.tar.gz   binary, example configuration, systemd unit,
#                                         licence, README and docs/production.md
#   SHA256SUMS                            of the three (`sha256sum -c SHA256SUMS`)
#
# Needs cargo-deb (scripts/install-test-deps.sh installs it). The tarball's
# timestamps are the last commit's, so two runs on one commit give one tarball.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
out="${OUT:-dist}"
target_dir="${CARGO_TARGET_DIR:-target}"

host=$(rustc -vV | sed -n 's/^host: //p')
if [ "$host" != x86_64-unknown-linux-gnu ]; then
	echo "release.sh builds on and for x86_64-unknown-linux-gnu; this host is $host" >&2
	exit 1
fi
command -v cargo-deb >/dev/null || {
	echo "cargo-deb is missing: run scripts/install-test-deps.sh" >&2
	exit 1
}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' crates/otpgate/Cargo.toml | head -n1)
name="otpgate-$version-x86_64-linux"

cargo build --release --locked -p otpgate --bin otpgate
bin="$target_dir/release/otpgate"
# The release profile strips the binary; check that it did.
if readelf -S "$bin" | grep -qE '\.debug_info|\.symtab'; then
	echo "$bin still has debug info or symbols: check [profile.release]" >&2
	exit 1
fi

mkdir -p "$out"
rm -rf "${out:?}/$name" "$out/$name.tar.gz" "$out"/otpgate_"$version"-*_amd64.deb "$out/SHA256SUMS"
install -m 0755 "$bin" "$out/$name"
cargo deb -p otpgate --no-build --locked -o "$out/"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/docs"
install -m 0755 "$bin" "$stage/$name/otpgate"
install -m 0644 deploy/otpgate.toml deploy/otpgate.service LICENSE LICENSE-MIT LICENSE-APACHE \
	README.md "$stage/$name/"
install -m 0644 docs/production.md "$stage/$name/docs/"
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
	-C "$stage" -cf - "$name" | gzip -n -9 >"$out/$name.tar.gz"

(cd "$out" && sha256sum "$name" "$name.tar.gz" otpgate_"$version"-*_amd64.deb >SHA256SUMS)
ls -l "$out"
cat "$out/SHA256SUMS"
