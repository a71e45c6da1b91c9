#!/usr/bin/env bash
# build.sh: configures (once) and builds dptrain in build/ (Release, warnings on).
# Extra arguments go to cmake's configure step, e.g. -DDPTRAIN_WERROR=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)"
