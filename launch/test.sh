#!/usr/bin/env bash
# test.sh: installs what is missing, builds with -Werror, and runs every test with CTest:
# the Criterion unit tests and the multi-rank tests under mpirun (1 to 4 ranks).
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
launch/build.sh -DDPTRAIN_WERROR=ON
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
cd build
ctest --output-on-failure --timeout 900
