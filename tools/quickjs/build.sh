#!/bin/sh
# Rebuilds guests/quickjs/quickjs.wasm, the QuickJS guest, from pinned sources.
#
#   tools/quickjs/build.sh [OUT]        (default OUT: guests/quickjs/quickjs.wasm)
#
# Needs clang, wasm-ld and wasi-libc (Debian: apt-get install clang lld wasi-libc
# libclang-rt-14-dev-wasm32) and, unless QUICKJS_TARBALL names a copy, npm to
# fetch the source once. Nothing else: `make test` and `make run` use the
# committed module and never run this.
#
# Sources: QuickJS 2021-03-27 as the npm package qjsc@0.3.0 ships it under
# deps/. The tarball and every file used are checked against SHA256SUMS, then
# quickjs-wasi.patch is applied (WASI configuration; columns in syntax errors).
# The build is deterministic: the same toolchain (TOOLCHAIN) gives the same
# bytes wherever the checkout or the temporary directory is.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/guests/quickjs/quickjs.wasm}
CC=${CC:-clang}

pkg=qjsc@0.3.0
tgz=qjsc-0.3.0.tgz
srcdir=package/deps/quickjs_2021_03_27
cache=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/logline/quickjs

die() { echo "quickjs build: $*" >&2; exit 1; }

command -v "$CC" >/dev/null || die "$CC not found (Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)"
for tool in sha256sum tar patch sed awk; do
	command -v $tool >/dev/null || die "$tool not found"
done

# Another toolchain builds a working module, but not these bytes.
have_clang=$("$CC" --version | head -1)
want_clang=$(awk '$1 == "clang" { $1 = ""; sub(/^ /, ""); print }' "$here/TOOLCHAIN")
[ "$have_clang" = "$want_clang" ] ||
	echo "quickjs build: warning: $have_clang, not the $want_clang of TOOLCHAIN: the bytes will differ" >&2

want() { awk -v f="$1" '$2 == f { print $1 }' "$here/SHA256SUMS"; }
check() { # file name
	got=$(sha256sum "$1" | cut -d' ' -f1)
	[ "$got" = "$(want "$2")" ] || die "$2: sha256 $got, want $(want "$2")"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/logline-quickjs.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# The tarball: QUICKJS_TARBALL, else the cache, else npm (cached for next time).
tarball=${QUICKJS_TARBALL:-$cache/$tgz}
if [ ! -f "$tarball" ] || [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$(want $tgz)" ]; then
	[ -z "${QUICKJS_TARBALL:-}" ] || die "QUICKJS_TARBALL=$QUICKJS_TARBALL: missing or wrong checksum"
	command -v npm >/dev/null || die "npm not found, and no cached $tgz (set QUICKJS_TARBALL)"
	(cd "$work" && npm pack --silent "$pkg" >/dev/null) || die "npm pack $pkg failed"
	check "$work/$tgz" "$tgz"
	mkdir -p "$cache"
	cp "$work/$tgz" "$cache/$tgz.tmp" && mv "$cache/$tgz.tmp" "$cache/$tgz"
	tarball=$cache/$tgz
fi
check "$tarball" "$tgz"

mkdir -p "$work/src"
files=$(awk '$2 != "'$tgz'" { print $2 }' "$here/SHA256SUMS")
for f in $files; do
	tar -xzf "$tarball" -C "$work" "$srcdir/$f" || die "$f is not in $tgz"
	check "$work/$srcdir/$f" "$f"
	cp "$work/$srcdir/$f" "$work/src/$f"
done
(cd "$work/src" && patch -s -p1 <"$here/quickjs-wasi.patch") || die "quickjs-wasi.patch does not apply"

# The prelude (the JavaScript half of the harness) becomes a C string.
cp "$root/guests/quickjs/harness/harness.c" "$work/src/harness.c"
sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$/\\n"/' \
	"$root/guests/quickjs/harness/prelude.js" >"$work/src/prelude.inc"

# Deterministic: no debug info, paths mapped to fixed names (assert()
# messages carry __FILE__), no timestamps anywhere.
cflags="--target=wasm32-wasi -O2 -funsigned-char -D_GNU_SOURCE
	-DCONFIG_VERSION=\"2021-03-27\" -DCONFIG_BIGNUM
	-ffile-prefix-map=$work/src=quickjs -Wno-everything"
cd "$work/src"
objs=
for f in quickjs libregexp libunicode cutils libbf harness; do
	# shellcheck disable=SC2086
	"$CC" $cflags -c "$f.c" -o "$f.o" || die "compiling $f.c failed"
	objs="$objs $f.o"
done
# A reactor (exports _initialize, which runs the constructors: the JS
# runtime is made there, before the sandbox's snapshot). The stack comes
# first, so a C stack overflow traps on an out-of-bounds store instead of
# running into data.
# shellcheck disable=SC2086
"$CC" --target=wasm32-wasi -O2 -mexec-model=reactor -o quickjs.wasm $objs -lm \
	-Wl,--stack-first -Wl,-z,stack-size=524288 -Wl,--strip-all \
	-Wl,--export=logline_prepare -Wl,--export=run || die "linking failed"

cp quickjs.wasm "$out.tmp" && mv "$out.tmp" "$out"
echo "$(sha256sum "$out" | cut -d' ' -f1)  $(basename "$out") ($(wc -c <"$out") bytes, $("$CC" --version | head -1))"
