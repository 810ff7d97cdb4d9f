#!/usr/bin/env bash
# Builds opsync's container image without a Docker daemon: dist/opsync-$VERSION.oci.tar, an OCI archive that
# `skopeo copy oci-archive:dist/opsync-$VERSION.oci.tar docker://REGISTRY/opsync:$VERSION` pushes anywhere.
#
# Two layers, the same as the Dockerfile's result:
#   1. the root filesystem: Debian bookworm's python3.11 and its runtime libraries (hack/image/packages),
#      extracted by mmdebstrap, without shell, package manager or compiler; the standard library's bytecode
#      compiled by that interpreter, since nothing can be written at run time (read-only root);
#   2. /opt/opsync: opsync's wheel and exactly the packages of requirements.lock (pip --require-hashes,
#      wheels only: nothing is compiled), with their bytecode.
# The image runs `python3.11 -m opsync` as 65532:65532 with HOME and TMPDIR in /tmp.
#
# Needs root (mmdebstrap, chroot) and the Debian packages mmdebstrap, umoci and skopeo (hack/image-tools.sh
# installs them). Environment: VERSION (default: opsync/__init__.py's), OUT (default dist/), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

VERSION=${VERSION:-$(sed -nE 's/^__version__ = "(.*)"$/\1/p' opsync/__init__.py)}
OUT=${OUT:-$repo/dist}
SUITE=bookworm
PYTHON_VERSION=3.11  # the interpreter of hack/image/packages; requirements.lock is resolved for it
ARCH=amd64
WHEEL_ARCH=x86_64
IMAGE_USER=65532:65532
archive=$OUT/opsync-$VERSION.oci.tar

for tool in mmdebstrap umoci skopeo dpkg-deb chroot; do
  command -v "$tool" >/dev/null || { echo "image: $tool is missing; run hack/image-tools.sh" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "image: run as root (mmdebstrap --mode=root and chroot)" >&2; exit 1; }
[ -f requirements.lock ] || { echo "image: requirements.lock is missing; run make lock" >&2; exit 1; }
build_python=$(command -v "python$PYTHON_VERSION" || true)
[ -n "$build_python" ] || { echo "image: python$PYTHON_VERSION is needed to run pip" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/opsync-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
app=$work/app
mkdir -p "$OUT" "$app/opt/opsync"
listed() { grep -vE '^\s*(#|$)' "$1"; }

echo "image: root filesystem from Debian $SUITE: $(listed hack/image/packages | paste -sd' ')"
mmdebstrap --quiet --mode=root --variant=extract --architectures=$ARCH --skip=cleanup/apt/cache \
  --include="$(listed hack/image/packages | paste -sd,)" $SUITE "$rootfs" ${DEBIAN_MIRROR:-}
debs=$rootfs/var/cache/apt/archives

# Each kept package gets its control file under /var/lib/dpkg/status.d/ (as distroless images do), so image
# scanners know the Debian versions without a dpkg database. The dropped packages' files go.
mkdir -p "$rootfs/var/lib/dpkg/status.d"
for deb in "$debs"/*.deb; do
  package=$(dpkg-deb --field "$deb" Package)
  if listed hack/image/drop | grep -qx "$package"; then
    # Files first, then the folders they leave empty (deepest first).
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's|^\./||' | sort -r | while read -r path; do
      if [ -d "$rootfs/$path" ] && [ ! -L "$rootfs/$path" ]; then
        rmdir --ignore-fail-on-non-empty "$rootfs/$path"
      else
        rm -f "$rootfs/$path"
      fi
    done
  else
    dpkg-deb --field "$deb" >"$rootfs/var/lib/dpkg/status.d/$package"
  fi
done
rm -rf "$rootfs/var/cache/apt" "$rootfs/var/lib/apt" "$rootfs/var/lib/dpkg/"{alternatives,info,triggers,updates,status,arch,parts} \
  "$rootfs/var/log/"* "$rootfs/etc/apt" "$rootfs/usr/share/"{man,info,locale,lintian,bug,menu} \
  "$rootfs/usr/bin/dpkg"* "$rootfs/usr/sbin/"*
find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -exec rm -rf {} + 2>/dev/null || true
if find "$rootfs" ! -type d \( -name sh -o -name bash -o -name dash -o -name busybox -o -name '*awk' \) | grep .; then
  echo "image: a shell is in the root filesystem" >&2; exit 1
fi

# Users and name resolution: the numeric user has a name, and /etc/hosts is read before DNS.
cat >"$rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/usr/sbin/nologin
nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<EOF
root:x:0:
nonroot:x:65532:
EOF
echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0700 "$rootfs/root"

# The standard library's bytecode, by the image's own interpreter (Debian compiles it in a maintainer
# script, which extraction does not run).
chroot "$rootfs" "/usr/bin/python$PYTHON_VERSION" -m compileall -q "/usr/lib/python$PYTHON_VERSION" \
  >/dev/null || true  # a few test and template files do not compile, on Debian too
chroot "$rootfs" "/usr/bin/python$PYTHON_VERSION" -c 'import ssl, ctypes, sqlite3, asyncio, json, zoneinfo'

echo "image: opsync $VERSION and requirements.lock into /opt/opsync"
"$build_python" -m venv "$work/pip"
pip=("$work/pip/bin/pip" --quiet --disable-pip-version-check --no-input)
"${pip[@]}" wheel --no-deps --wheel-dir "$work/wheel" .
# Wheels for the image's interpreter and glibc (bookworm: 2.36), whatever machine builds.
platforms=(--platform "linux_$WHEEL_ARCH" --platform "manylinux1_$WHEEL_ARCH" --platform "manylinux2010_$WHEEL_ARCH"
  --platform "manylinux2014_$WHEEL_ARCH")
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_$WHEEL_ARCH"); done
target=(--target "$app/opt/opsync" --only-binary=:all: --implementation cp --python-version "$PYTHON_VERSION"
  --abi "cp${PYTHON_VERSION/./}" "${platforms[@]}" --no-compile)
"${pip[@]}" install "${target[@]}" --require-hashes --no-deps -r requirements.lock
rm -rf "$app/opt/opsync/bin"
"${pip[@]}" install "${target[@]}" --no-deps "$work/wheel"/opsync-*.whl
rm -rf "$app/opt/opsync/bin"  # console scripts name the build's interpreter; the entrypoint is python -m
# The image trusts what certifi (from the lock) trusts, at the paths OpenSSL looks at by default.
install -d "$rootfs/etc/ssl/certs" "$rootfs/usr/lib/ssl"
cp "$app/opt/opsync/certifi/cacert.pem" "$rootfs/etc/ssl/certs/ca-certificates.crt"
ln -sfn /etc/ssl/certs/ca-certificates.crt "$rootfs/usr/lib/ssl/cert.pem"
ln -sfn /etc/ssl/certs "$rootfs/usr/lib/ssl/certs"
# Bytecode by the image's interpreter, as the image sees the files (a read-only root cannot take it later).
mkdir -p "$rootfs/opt"
mount --bind "$app/opt" "$rootfs/opt"
compiled=0
chroot "$rootfs" "/usr/bin/python$PYTHON_VERSION" -m compileall -q /opt/opsync >/dev/null || compiled=$?
umount "$rootfs/opt"
[ "$compiled" = 0 ] || { echo "image: compiling /opt/opsync failed" >&2; exit 1; }

echo "image: OCI layout"
layout=$work/oci
umoci init --layout "$layout"
umoci new --image "$layout:opsync"
umoci unpack --image "$layout:opsync" "$work/bundle" >/dev/null
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --refresh-bundle --history.created_by "hack/image.sh: Debian $SUITE $(listed hack/image/packages | paste -sd' ')" \
  --image "$layout:opsync" "$work/bundle"
cp -a "$app/." "$work/bundle/rootfs/"
umoci repack --history.created_by "hack/image.sh: opsync $VERSION, requirements.lock" \
  --image "$layout:opsync" "$work/bundle"
config=(--config.user "$IMAGE_USER" --config.workingdir /tmp
  --config.entrypoint "/usr/bin/python$PYTHON_VERSION" --config.entrypoint -m --config.entrypoint opsync
  --config.cmd run
  --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env PYTHONPATH=/opt/opsync
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env PYTHONUNBUFFERED=1 --config.env HOME=/tmp --config.env TMPDIR=/tmp
  --config.label org.opencontainers.image.title=opsync
  --config.label "org.opencontainers.image.description=Keep Kubernetes Secrets in sync with 1Password"
  --config.label org.opencontainers.image.source=https://github.com/opsync/opsync
  --config.label org.opencontainers.image.licenses=Apache-2.0
  --config.label "org.opencontainers.image.version=$VERSION"
  --config.label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  --author "The opsync authors" --os linux --architecture $ARCH)
umoci config --image "$layout:opsync" --tag "$VERSION" "${config[@]}"
umoci rm --image "$layout:opsync"
umoci gc --layout "$layout"
rm -f "$archive"
skopeo copy --quiet "oci:$layout:$VERSION" "oci-archive:$archive:$VERSION"
echo "image: $archive ($(du -h "$archive" | cut -f1) archive; root filesystem $(du -sh --apparent-size "$work/bundle/rootfs" | cut -f1))"
