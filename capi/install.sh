#!/usr/bin/env bash
# Builds the C library (release) and installs it for C programs:
#   PREFIX/lib/libframeshare.so, PREFIX/lib/libframeshare.a, PREFIX/include/frameshare.h,
#   PREFIX/lib/pkgconfig/frameshare.pc (generated for PREFIX).
# Then: cc prog.c $(pkg-config --cflags --libs frameshare) (with PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
# unless PREFIX is one pkg-config searches already, such as /usr/local).
#   capi/install.sh PREFIX           build and install
#   capi/install.sh --no-build PREFIX install what target/release holds
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=1
if [ "${1:-}" = --no-build ]; then build=0; shift; fi
[ $# -eq 1 ] || { echo "usage: $0 [--no-build] PREFIX" >&2; exit 2; }
mkdir -p "$1"
prefix=$(cd "$1" && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/release
if [ "$build" = 1 ]; then
  # On its own: built with other packages, cargo would unify the library's features with
  # theirs (gbm, vulkan, …) and libframeshare would need their system libraries.
  (cd "$root" && cargo build --release -p frameshare-c)
fi
for f in libframeshare.so libframeshare.a; do
  [ -f "$target/$f" ] || { echo "$target/$f is missing: build with cargo build --release -p frameshare-c" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$target/libframeshare.so" "$prefix/lib/"
install -m 0644 "$target/libframeshare.a" "$prefix/lib/"
install -m 0644 "$root/capi/include/frameshare.h" "$prefix/include/"
# Libs.private: what the static library needs besides libc (rustc --print native-static-libs).
cat > "$prefix/lib/pkgconfig/frameshare.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: frameshare
Description: Move video frames between Linux processes without copying them (C API)
Version: $version
Libs: -L\${libdir} -lframeshare
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl
Cflags: -I\${includedir}
PC
# A system prefix: refresh the loader's cache so programs find the library.
# (Not a pipe into grep -q: under pipefail, ldconfig's SIGPIPE would fail the test.)
if [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then
  dirs=$(ldconfig -v -N 2>/dev/null || true)
  if grep -q "^$prefix/lib:" <<<"$dirs"; then ldconfig; fi
fi
echo "installed frameshare $version in $prefix (lib, include, lib/pkgconfig/frameshare.pc)"
