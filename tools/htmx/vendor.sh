#!/bin/sh
# Vendors htmx and its SSE extension for the example page /examples/htmx
# (host/api/examples/vendor/, embedded in the binary: nothing is fetched at
# run time, and the page loads no script from another origin).
#
#   tools/htmx/vendor.sh [OUTDIR]     (default OUTDIR: host/api/examples/vendor)
#
# Needs npm (to fetch the two tarballs), sha256sum and tar. The tarballs and
# every copied file are checked against SHA256SUMS; host/api's
# TestVendoredHTMX checks the committed copies against it too. To move to
# another version: change the pins below, run with UPDATE=1 (which rewrites
# SHA256SUMS from what npm served), review the diff, commit.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/host/api/examples/vendor}

# htmx 2.0.x, the newest of the 2.0 line (npm view htmx.org@2 version), and
# the SSE extension for htmx 2.
htmx=htmx.org@2.0.11
sse=htmx-ext-sse@2.2.4

die() { echo "htmx vendor: $*" >&2; exit 1; }
for tool in npm sha256sum tar awk; do
	command -v $tool >/dev/null || die "$tool not found"
done

want() { awk -v f="$1" '$2 == f { print $1 }' "$here/SHA256SUMS"; }
check() { # file name
	got=$(sha256sum "$1" | cut -d' ' -f1)
	if [ "${UPDATE:-}" = 1 ]; then
		echo "$got  $2" >>"$sums"
		return
	fi
	[ "$got" = "$(want "$2")" ] || die "$2: sha256 $got, want $(want "$2")"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/logline-htmx.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
sums=$work/SHA256SUMS

cd "$work"
npm pack --silent "$htmx" "$sse" >/dev/null || die "npm pack $htmx $sse failed"
htgz=$(echo "$htmx" | sed 's/@/-/').tgz
stgz=$(echo "$sse" | sed 's/@/-/').tgz
check "$htgz" "$htgz"
check "$stgz" "$stgz"
mkdir h s
tar -xzf "$htgz" -C h
tar -xzf "$stgz" -C s

# name in OUTDIR <- file in the package
mkdir -p "$out"
copy() { # from name
	check "$1" "$2"
	cp "$1" "$out/$2.tmp" && mv "$out/$2.tmp" "$out/$2"
}
copy h/package/dist/htmx.min.js htmx.min.js
copy h/package/LICENSE htmx.LICENSE
copy s/package/dist/sse.min.js sse.min.js

if [ "${UPDATE:-}" = 1 ]; then
	cp "$sums" "$here/SHA256SUMS"
	echo "htmx vendor: wrote $here/SHA256SUMS" >&2
fi
echo "htmx vendor: $htmx and $sse in $out" >&2
