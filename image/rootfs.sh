#!/bin/sh
# Turns the tree `mmdebstrap --variant=extract` unpacked (no maintainer script ran, so no shell is
# needed in it) into the image's Debian layer: what those scripts would have set up and the image
# needs (the BLAS/LAPACK alternatives, the CA bundle, dpkg's status for scanners), the users, and
# nothing else: no package pulled in only to run maintainer scripts, no docs, no setup leftovers.
# usage: image/rootfs.sh ROOT OUT.tar EPOCH   (as root; ROOT's debs are in var/cache/apt/archives;
# no date in OUT.tar is later than EPOCH)
set -eu
root=${1:?ROOT}
out=${2:?OUT.tar}
epoch=${3:?EPOCH}
if [ ! -d "$root/var/cache/apt/archives" ] || [ "$(realpath "$root")" = / ]; then
  echo "rootfs.sh: $root is not a tree mmdebstrap extracted" >&2
  exit 1
fi
here=$(cd "$(dirname "$0")" && pwd)
# perl-base, mawk and debconf run maintainer scripts, openssl makes the CA links; libyaml-dev is
# a dependency of lua-yaml that only a compiler uses
drop=" debconf perl-base openssl mawk libyaml-dev "

: > "$root/var/lib/dpkg/status"
for deb in "$root"/var/cache/apt/archives/*.deb; do
  pkg=$(dpkg-deb -f "$deb" Package)
  case $drop in
    *" $pkg "*)
      # its files, then its directories that are left empty (deepest first)
      dpkg-deb --fsys-tarfile "$deb" | tar -t | sort -r | while read -r path; do
        path=${path%/}
        if [ -d "$root/$path" ] && [ ! -L "$root/$path" ]; then rmdir "$root/$path" 2>/dev/null || true
        else rm -f "$root/$path"; fi
      done ;;
    *) dpkg-deb -f "$deb" | sed '1a Status: install ok installed' >> "$root/var/lib/dpkg/status"
       echo >> "$root/var/lib/dpkg/status" ;;
  esac
done

# no programs: the ones kept packages ship (update-ca-certificates, a motd script) are
# maintainer tools that need a shell
find "$root" -type f -perm /111 ! -path "$root/usr/lib/*" -delete
mkdir -p "$root/usr/bin" "$root/usr/sbin"

# update-alternatives: OpenBLAS as libblas.so.3, liblapack.so.3 and libopenblas.so.0
for dir in "$root"/usr/lib/*/openblas-pthread; do
  for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do ln -sf "openblas-pthread/$lib" "$dir/../$lib"; done
done
# update-ca-certificates: every certificate of the package, one bundle (libcurl's default CA file)
mkdir -p "$root/etc/ssl/certs"
# shellcheck disable=SC1003 # sed's "append a newline if missing"
for crt in "$root"/usr/share/ca-certificates/mozilla/*.crt; do sed -e '$a\' "$crt"; done \
  > "$root/etc/ssl/certs/ca-certificates.crt"

# users (root and dconn, 65532, the image's user) and name service order
cp "$here"/rootfs/etc/* "$root/etc/"
install -d -o 65532 -g 65532 -m 755 "$root/home/dconn"

# docs but the copyrights, translations, debugger and compiler helpers, iconv modules (dconn
# converts nothing), mmdebstrap's and apt's state, device nodes (the runtime makes /dev)
find "$root/usr/share/doc" -type f ! -name copyright -delete
find "$root/usr/share/doc" -depth -type d -empty -delete
rm -rf "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale "$root"/usr/share/lintian \
  "$root"/usr/share/gdb "$root"/usr/share/gcc "$root"/usr/lib/*/gconv \
  "$root"/etc/apt "$root"/etc/dpkg/dpkg.cfg.d "$root"/var/cache/apt "$root"/var/lib/apt "$root"/var/log/* \
  "$root"/var/lib/dpkg/info "$root"/var/lib/dpkg/triggers "$root"/var/lib/dpkg/updates \
  "$root"/var/lib/dpkg/alternatives "$root"/etc/resolv.conf "$root"/etc/hostname "$root"/etc/fstab "${root:?}"/dev/*
mkdir -p "$root/proc" "$root/sys" "$root/tmp" && chmod 1777 "$root/tmp"

tar -C "$root" --sort=name --numeric-owner --mtime="@$epoch" --clamp-mtime -cf "$out" .
