#!/usr/bin/env bash
# Installs what `make image` and `make image-test` need on Debian (bookworm): mmdebstrap (the root
# filesystem), umoci and skopeo (the OCI layout and archive), runc (starting the image in the test; crun 1.8
# refuses this kind of machine's hybrid cgroup hierarchy), and python3.11-venv (pip for the wheels).
set -euo pipefail
missing=()
for tool in mmdebstrap umoci skopeo runc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
python3.11 -c 'import ensurepip' 2>/dev/null || missing+=(python3.11-venv)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "image-tools: as root, apt-get install ${missing[*]}" >&2; exit 1; }
  echo "image-tools: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
