#!/bin/sh
# Builds dconn's container image with no registry and no container engine: mmdebstrap extracts the
# Debian packages of image/packages into one layer (cached: rebuilt only when the list or the
# scripts change), umoci adds a second layer with `make install`'s tree, the policies and the
# examples, sets the configuration (non-root user, dconn as entrypoint), and writes the OCI layout
# OUT/oci (tag VERSION) and its archive OUT/dconn-VERSION.oci.tar; OUT/contents.txt lists both.
# usage: image/build.sh VERSION STAGE OUT   (STAGE: make install DESTDIR=STAGE PREFIX=/usr; as root)
set -eu
version=${1:?VERSION}
stage=${2:?STAGE}
out=${3:?OUT}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
[ "$(id -u)" = 0 ] || { echo "image: run as root (mmdebstrap writes a root-owned tree)" >&2; exit 1; }
# dates in the image: the last commit's (for the Debian layer, the last that changed its inputs),
# so that two builds of the same tree from the same Debian mirror give the same image
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
base_epoch=$(git -C "$here" log -1 --format=%ct -- packages rootfs.sh rootfs 2>/dev/null) || base_epoch=
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
user=65532:65532
mkdir -p "$out"

# 1. Debian layer, under a name that changes with its inputs
key=$(cd "$here" && find packages rootfs.sh rootfs -type f | sort | xargs cat | sha256sum | cut -c1-16)
base=$out/debian-$key.tar
if [ ! -f "$base" ]; then
  rm -rf "$out/debian.tmp" "$out"/debian-*.tar
  # merged /usr as in Debian 12 (the packages are unpacked through these links)
  # shellcheck disable=SC2016 # $1 is the hook's argument, the tree
  mmdebstrap --quiet --variant=extract --skip=cleanup/apt/cache \
    --include="$(sed 's/#.*//' "$here/packages" | xargs | tr ' ' ,)" \
    --setup-hook='for d in bin sbin lib lib64; do mkdir -p "$1/usr/$d" && ln -s "usr/$d" "$1/$d"; done' \
    bookworm "$out/debian.tmp"
  "$here/rootfs.sh" "$out/debian.tmp" "$base.tmp" "${base_epoch:-$epoch}"
  mv "$base.tmp" "$base"
  rm -rf "$out/debian.tmp"
fi

# 2. dconn layer: make install's tree (stripped), policies/ and examples/ beside the Lua library
# (the policies refer to ../examples/cloudedge), the example's generated telemetry and models
app=$out/dconn.tmp
rm -rf "$app" && cp -a "$stage" "$app"
strip --strip-unneeded "$app/usr/bin/dconn" "$app"/usr/lib/dconn/*.so
tar -C "$repo" --exclude=telemetry-24h.csv --exclude=__pycache__ --exclude=mlruns --exclude='.*' -cf - policies examples \
  | tar -C "$app/usr/share/dconn" -xf -
chmod -R u=rwX,go=rX "$app" && find "$app/usr/share" -type f -exec chmod 644 {} +
tar -C "$app" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf "$out/dconn.tar" .
rm -rf "$app"

# 3. the image
oci=$out/oci.tmp
rm -rf "$oci"
umoci init --layout "$oci"
umoci new --image "$oci:$version"
umoci raw add-layer --image "$oci:$version" --history.created "$created" \
  --history.created_by "mmdebstrap --variant=extract bookworm: image/packages, image/rootfs.sh" "$base"
umoci raw add-layer --image "$oci:$version" --history.created "$created" \
  --history.created_by "make install PREFIX=/usr; policies/ and examples/ in /usr/share/dconn" "$out/dconn.tar"
umoci config --image "$oci:$version" --created "$created" --history.created "$created" \
  --history.created_by "image/build.sh: user, entrypoint, labels" \
  --config.user "$user" --config.workingdir /tmp --config.env PATH=/usr/bin:/bin \
  --config.entrypoint /usr/bin/dconn --config.cmd run --config.cmd=--listen --config.cmd 0.0.0.0:8080 \
  --config.cmd /etc/dconn/policy.lua --config.exposedports 8080/tcp \
  --config.label org.opencontainers.image.title=dconn \
  --config.label org.opencontainers.image.version="$version" \
  --config.label org.opencontainers.image.description="QoS-driven placement agent for Kubernetes"
umoci gc --layout "$oci"
chmod -R go+rX "$oci"
rm -rf "$out/oci" && mv "$oci" "$out/oci"
archive=$out/dconn-$version.oci.tar
tar -C "$out/oci" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf "$archive.tmp" .
mv "$archive.tmp" "$archive"

# 4. what is in it: OUT/contents.txt (printed by make image), OUT/files.txt (every file)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
size() { stat -c %s "$1"; }
{ tar -tvf "$base"; tar -tvf "$out/dconn.tar"; } | sort -k6 > "$out/files.txt"
# shellcheck disable=SC2046 # the compressed sizes of the two layers, as $1 and $2
set -- $(umoci stat --image "$out/oci:$version" --json | grep -o '"size":[0-9]*' | cut -d: -f2)
status=$(tar -xOf "$base" ./var/lib/dpkg/status)
share=./usr/share/dconn
{
  echo "dconn:$version: $out/oci (tag $version) and $archive, $(mib "$(size "$archive")")"
  echo "  user $user, entrypoint /usr/bin/dconn, arguments: run --listen 0.0.0.0:8080 /etc/dconn/policy.lua"
  echo "  programs:$(awk '$1 ~ /^-..x/ && $6 !~ /^\.\/usr\/lib\// { printf " %s", substr($6, 2) }' "$out/files.txt")"
  echo "  layer 1: $(mib "$1") ($(mib "$(size "$base")") unpacked), $(echo "$status" | grep -c '^Package:') Debian 12 packages:"
  echo "$status" | awk '/^Package:/ { p = $2 } /^Version:/ { printf "    %-48s", p " " $2; if (++n % 2 == 0) print "" }
    END { if (n % 2) print "" }' | sed 's/ *$//'
  echo "  layer 2: $(mib "$2") ($(mib "$(size "$out/dconn.tar")") unpacked), make install and the examples:"
  tar -tvf "$out/dconn.tar" ./usr/bin/dconn ./usr/lib/dconn/ | awk '$1 ~ /^-/ { printf "    %s %.1f MiB\n", substr($6, 2), $3 / 1048576 }'
  for d in lua policies examples; do
    echo "    ${share#.}/$d/: $(grep -c " $share/$d/.*[^/]\$" "$out/files.txt") files, $(tar -tvf "$out/dconn.tar" "$share/$d" \
      | awk '{ s += $3 } END { printf "%.1f MiB", s / 1048576 }')"
  done
} > "$out/contents.txt"
rm -f "$out/dconn.tar"
