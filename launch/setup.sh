#!/usr/bin/env bash
# setup.sh: installs the Debian packages dptrain needs, only those that are missing, plus
# any packages named as arguments (launch/scaling.sh asks for gnuplot-nox this way).
# Runs apt-get as root, or through sudo when there is one.
set -euo pipefail
PKGS=(gcc make libc6-dev cmake pkg-config
      libopenmpi-dev openmpi-bin libopenblas-dev
      libhdf5-openmpi-dev hdf5-tools zlib1g-dev libcriterion-dev libinih-dev libjansson-dev
      libdnnl-dev
      dataset-fashion-mnist python3 help2man man-db "$@")
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all packages present"
    exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO=(sudo); else
        echo "setup: error: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
