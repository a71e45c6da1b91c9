#!/usr/bin/env bash
# install.sh: installs a build with `cmake --install BUILD --prefix P` and checks what a user of
# the installed dptrain gets: the program, the public headers, libdptrain.a and libdptrain.so
# (SONAME, no CLI code), dptrain.pc, the CMake package, the man page, the bash completion and
# the licence. A C program built against the installed library, through pkg-config (shared,
# and --static) and through find_package(dptrain) in a small CMake project, loads a model that
# the installed dptrain trained on a synthetic dataset and predicts rows with the public API;
# its outputs must equal `dptrain predict`'s within 1e-6. Nothing runs with LD_LIBRARY_PATH.
# Exits non-zero on any failure, 77 (skip) only when a tool the checks need is not installed.
# usage: bash tests/install.sh BUILD_DIR SCRATCH_DIR
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
if [ $# -ne 2 ] || [ ! -f "$1/CMakeCache.txt" ]; then
    echo "usage: bash tests/install.sh BUILD_DIR SCRATCH_DIR (BUILD_DIR: a configured build)" >&2
    exit 2
fi
BUILD=$(cd "$1" && pwd)
# shellcheck source=tests/mpi/lib.sh
source "$HERE/mpi/lib.sh" "$BUILD/dptrain" "$2"   # pass, fail, finish; set -euo pipefail
WORK=$(cd "$WORK" && pwd)
P=$WORK/prefix
unset LD_LIBRARY_PATH
SKIPS=()
skip() { echo "skip: $*"; SKIPS+=("$*"); }
end() {
    finish || exit 1
    if [ ${#SKIPS[@]} -gt 0 ]; then
        echo "skipped (not installed): ${SKIPS[*]}"
        exit 77
    fi
    exit 0
}
cache() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt"; }
LIBDIR=$(cache CMAKE_INSTALL_LIBDIR)
LIBDIR=${LIBDIR:-lib}
case $LIBDIR in /*) L=$LIBDIR ;; *) L=$P/$LIBDIR ;; esac
CC=${CC:-cc}
have() { command -v "$1" >/dev/null 2>&1; }

# --- install ----------------------------------------------------------------------------------
if out=$(cmake --install "$BUILD" --prefix "$P" 2>&1); then
    pass "cmake --install --prefix $P"
else
    fail "cmake --install failed"; echo "$out" | tail -20 >&2; end
fi
DPTRAIN=$P/bin/dptrain

# --- the files --------------------------------------------------------------------------------
check_file() { # check_file TEST PATH: PATH is there and not empty
    if [ -s "$2" ]; then pass "$1"; else fail "$1: $2 missing or empty"; fi
}
if [ -x "$DPTRAIN" ] && [ -f "$DPTRAIN" ]; then pass "bin/dptrain"; else fail "bin/dptrain missing"; fi
headers() { find "$1" -maxdepth 1 -name '*.h' -printf '%f\n' 2>/dev/null | sort || true; }
want_h=$(headers "$SRC/include/dptrain")
got_h=$(headers "$P/include/dptrain")
if [ -n "$want_h" ] && [ "$want_h" = "$got_h" ]; then
    pass "include/dptrain: the $(wc -l <<<"$want_h") public headers"
else
    fail "include/dptrain: headers differ from the source's: $(diff <(echo "$want_h") <(echo "$got_h") | tr '\n' ' ')"
fi
check_file "static library" "$L/libdptrain.a"
check_file "shared library" "$L/libdptrain.so"
check_file "pkg-config file" "$L/pkgconfig/dptrain.pc"
for f in dptrainConfig.cmake dptrainConfigVersion.cmake dptrainTargets.cmake; do
    check_file "CMake package: $f" "$L/cmake/dptrain/$f"
done
check_file "bash completion" "$P/share/bash-completion/completions/dptrain"
if grep -q "MIT License" "$P/share/doc/dptrain/LICENSE" 2>/dev/null &&
   grep -q "Copyright (c) 2026 the dptrain authors" "$P/share/doc/dptrain/LICENSE"; then
    pass "share/doc/dptrain/LICENSE (MIT, the dptrain authors)"
else
    fail "share/doc/dptrain/LICENSE missing or not the MIT licence of the dptrain authors"
fi
MAN=$P/share/man/man1/dptrain.1
HELP2MAN=$(cache DPTRAIN_HELP2MAN)
if [ -s "$MAN" ]; then
    pass "share/man/man1/dptrain.1"
elif [ -z "$HELP2MAN" ] || [[ $HELP2MAN == *NOTFOUND ]]; then
    skip "help2man (the build made no man page; launch/setup.sh installs it)"
else
    fail "share/man/man1/dptrain.1 missing although the build found $HELP2MAN"
fi

# The library: every module's objects, no CLI code, a SONAME from the project version.
VERSION=$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")$/\1/p' "$L/cmake/dptrain/dptrainConfigVersion.cmake" 2>/dev/null || true)
if [[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]]; then
    pass "CMake package version $VERSION"
else
    fail "no version in dptrainConfigVersion.cmake"; VERSION=unknown
fi
if have nm && have readelf; then
    members=$(ar t "$L/libdptrain.a" 2>/dev/null || true)
    missing=""
    for o in model.c.o dataset.c.o comm.c.o ckpt.c.o train.c.o; do
        grep -qx "$o" <<<"$members" || missing+=" $o"
    done
    if [ -z "$missing" ] && ! grep -qx "main.c.o" <<<"$members"; then
        pass "libdptrain.a: core, data, dist, io and train objects, no CLI"
    else
        fail "libdptrain.a members: missing$missing; or has main.c.o: $(tr '\n' ' ' <<<"$members")"
    fi
    syms=$(nm -D --defined-only "$L/libdptrain.so" 2>/dev/null || true)
    if grep -qw dp_model_load <<<"$syms" && grep -qw dp_model_forward <<<"$syms" &&
       ! grep -qwE 'main|dp_cmd_train' <<<"$syms"; then
        pass "libdptrain.so exports the API (dp_model_load, dp_model_forward), no CLI code"
    else
        fail "libdptrain.so symbols: dp_model_load/dp_model_forward missing or CLI code in it"
    fi
    dyn=$(readelf -d "$L/libdptrain.so" 2>/dev/null || true)
    soname=$(sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p' <<<"$dyn")
    major=${VERSION%%.*}
    if [ "$major" = 0 ]; then want_so=libdptrain.so.0.$(cut -d. -f2 <<<"$VERSION"); else want_so=libdptrain.so.$major; fi
    if [ "$soname" = "$want_so" ] && [ -e "$L/$soname" ] && [ -e "$L/libdptrain.so.$VERSION" ] &&
       [ "$(readlink -f "$L/libdptrain.so")" = "$(readlink -f "$L/libdptrain.so.$VERSION")" ]; then
        pass "SONAME $soname, libdptrain.so -> $soname -> libdptrain.so.$VERSION"
    else
        fail "SONAME '$soname' (want $want_so) or the symlinks to libdptrain.so.$VERSION are wrong"
    fi
    if grep -q TEXTREL <<<"$dyn"; then
        fail "libdptrain.so has text relocations (code that is not position-independent)"
    else
        pass "libdptrain.so: position-independent (no TEXTREL)"
    fi
else
    skip "binutils (nm, readelf)"
fi

# --- the installed program --------------------------------------------------------------------
if v=$("$DPTRAIN" --version 2>&1) && [ "$v" = "dptrain $VERSION" ]; then
    pass "bin/dptrain --version: $v (no LD_LIBRARY_PATH)"
else
    fail "bin/dptrain --version printed '$v', expected 'dptrain $VERSION'"
fi
N=6
D=$WORK/blobs.h5
cd "$WORK"
if "$DPTRAIN" synth blobs --out "$D" --n-train 300 --n-test 40 --features 5 --classes 3 \
       --seed 7 >/dev/null &&
   "$DPTRAIN" train --data "$D" --layers 5,16,3 --epochs 3 --batch 32 --lr 0.1 --seed 3 \
       --out "$WORK/run" --quiet >/dev/null &&
   "$DPTRAIN" predict --checkpoint "$WORK/run/model.h5" --data "$D" --output "$WORK/pred.csv" \
       >/dev/null && [ "$(wc -l <"$WORK/pred.csv")" = 41 ]; then
    pass "installed dptrain: synth blobs, train, predict (40 rows)"
else
    fail "installed dptrain could not make the dataset, the model or the predictions"; end
fi

# The first N rows of predict's probability columns (p0,p1,... by the CSV header, wherever
# they are among its other columns) into want.txt.
awk -F, -v n="$N" '
    NR == 1 { for (j = 1; j <= NF; j++) if ($j ~ /^p[0-9]+$/) col[++k] = j; next }
    NR <= 1 + n { line = ""; for (j = 1; j <= k; j++) line = line (j > 1 ? "," : "") $(col[j]); print line }
    ' "$WORK/pred.csv" >"$WORK/want.txt"
# same_rows GOT WANT: the lines of numbers GOT and WANT are N rows of equal shape whose
# values differ by at most 1e-6.
same_rows() {
    awk -F, -v n="$N" -v tol=1e-6 '
        NR == FNR { got[FNR] = $0; ng = FNR; next }
        {
            r = FNR; nw = FNR
            k = split(got[r], g, ",")
            if (k != NF || NF < 2) { bad = bad sprintf(" row %d: %d columns vs %d;", r, k, NF); next }
            for (j = 1; j <= k; j++) {
                if (g[j] !~ /^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$/) {
                    bad = bad sprintf(" row %d col %d: %s is not a number;", r, j - 1, g[j]); continue
                }
                d = g[j] - $j; if (d < 0) d = -d
                if (d > tol) bad = bad sprintf(" row %d col %d: %s vs %s;", r, j - 1, g[j], $j)
            }
        }
        END {
            if (ng != n || nw != n) bad = bad sprintf(" %d rows vs %d, want %d;", ng, nw, n)
            if (bad != "") { print "   " bad > "/dev/stderr"; exit 1 }
        }' "$1" "$2"
}
# The comparison itself can fail: a copy of predict's rows with one value moved by 1e-5.
awk -F, -v OFS=, 'NR == 2 { $1 = $1 + 1e-5 } { print }' "$WORK/want.txt" >"$WORK/off.txt"
if same_rows "$WORK/want.txt" "$WORK/want.txt" &&
   ! same_rows "$WORK/off.txt" "$WORK/want.txt" 2>/dev/null; then
    pass "the comparison passes predict's own rows and fails a 1e-5 change"
else
    fail "the comparison does not tell equal rows from different ones ($(head -2 "$WORK/pred.csv" | tr '\n' ' '))"
fi

# check_prog NAME EXE LINK: EXE loads the model and prints N rows equal to predict's; LINK is
# "shared" (it needs libdptrain.so) or "static" (it does not).
check_prog() {
    local name=$1 exe=$2 link=$3 needed
    if [ ! -x "$exe" ]; then fail "$name: not built"; return; fi
    if have readelf; then
        needed=$(readelf -d "$exe" | grep NEEDED || true)
        if [ "$link" = shared ] && ! grep -q "libdptrain.so" <<<"$needed"; then
            fail "$name: not linked against libdptrain.so"; return
        fi
        if [ "$link" = static ] && grep -q "libdptrain.so" <<<"$needed"; then
            fail "$name: linked against libdptrain.so, not libdptrain.a"; return
        fi
    fi
    local rc=0
    "$exe" "$WORK/run/model.h5" "$D" "$N" >"$WORK/$name.txt" 2>"$WORK/$name.err" || rc=$?
    if [ "$rc" != 0 ]; then
        fail "$name: exit $rc ($(tail -3 "$WORK/$name.err"))"; return
    fi
    if same_rows "$WORK/$name.txt" "$WORK/want.txt"; then
        pass "$name: the $N rows equal dptrain predict's within 1e-6 ($link, no LD_LIBRARY_PATH)"
    else
        fail "$name: outputs differ from dptrain predict's"
    fi
}

# The program a user writes: public headers only, no MPI (a model file is read with HDF5's
# default driver, so MPI need not be started), softmax because the model was trained with
# cross-entropy (dptrain predict writes softmax probabilities).
cat >"$WORK/prog.c" <<'EOF'
/* prog.c: loads a model file with libdptrain and prints the first rows of a dataset's test
 * split through it (forward pass, then softmax: the model was trained with cross-entropy),
 * one line p0,p1,... per row, like dptrain predict. usage: prog MODEL.h5 DATA.h5 N_ROWS */
#include <dptrain/data.h>
#include <dptrain/err.h>
#include <dptrain/io.h>
#include <dptrain/nn.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int rc = DP_OK;
    dp_model *m = NULL;
    dp_dataset *d = NULL;
    size_t *idx = NULL;
    float *x = NULL, *p = NULL;
    if (argc != 4 || atoi(argv[3]) < 1) {
        fprintf(stderr, "usage: %s MODEL.h5 DATA.h5 N_ROWS\n", argv[0]);
        return 2;
    }
    const int n = atoi(argv[3]);
    DP_TRY(dp_model_load(argv[1], n, &m, NULL));
    DP_TRY(dp_dataset_load(argv[2], &d));
    const dp_model_cfg *cfg = dp_model_config(m);
    const int k = cfg->sizes[cfg->n_layers];
    if (cfg->sizes[0] != d->test.n_features || (size_t)n > d->test.n) {
        DP_FAIL(DP_EINVAL, "the model (%d inputs) does not fit the data (%d features, %zu rows)",
                cfg->sizes[0], d->test.n_features, d->test.n);
    }
    DP_CALLOC(idx, n);
    DP_CALLOC(x, (size_t)n * d->test.n_features);
    DP_CALLOC(p, (size_t)n * k);
    for (int i = 0; i < n; i++) {
        idx[i] = (size_t)i;
    }
    dp_split_gather(&d->test, idx, n, x, NULL, NULL);
    const float *out = dp_model_forward(m, x, n);
    dp_act_forward(DP_ACT_SOFTMAX, p, out, n, k);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < k; j++) {
            printf("%s%.9g", j ? "," : "", p[(size_t)i * k + j]);
        }
        printf("\n");
    }
done:
    if (rc != DP_OK) {
        fprintf(stderr, "prog: %s\n", dp_errmsg());
    }
    free(idx);
    free(x);
    free(p);
    dp_dataset_free(&d);
    dp_model_free(&m);
    return rc == DP_OK ? 0 : 1;
}
EOF

# --- pkg-config -------------------------------------------------------------------------------
CFLAGS_W=(-std=c11 -Wall -Wextra -Werror)
if ! have "$CC"; then
    skip "a C compiler ($CC)"
elif ! have pkg-config; then
    skip "pkg-config"
else
    export PKG_CONFIG_PATH=$L/pkgconfig
    pc_version=$(pkg-config --modversion dptrain 2>&1 || true)
    if [ "$pc_version" = "$VERSION" ]; then
        pass "pkg-config --modversion dptrain: $pc_version"
    else
        fail "pkg-config --modversion dptrain: '$pc_version', expected $VERSION"
    fi
    if pc=$(pkg-config --cflags --libs dptrain 2>&1) && [[ " $pc " == *" -I$P/include "* ]] &&
       [[ " $pc " == *" -L$L "* ]] && [[ " $pc " == *" -ldptrain "* ]]; then
        pass "pkg-config --cflags --libs dptrain: $pc"
        # shellcheck disable=SC2086 # flags
        if out=$("$CC" "${CFLAGS_W[@]}" "$WORK/prog.c" -o "$WORK/prog_pc" $pc -Wl,-rpath,"$L" 2>&1); then
            check_prog prog_pc "$WORK/prog_pc" shared
        else
            fail "cc prog.c \$(pkg-config --cflags --libs dptrain) failed"; echo "$out" | tail -10 >&2
        fi
    else
        fail "pkg-config --cflags --libs dptrain: '$pc' lacks -I$P/include, -L$L or -ldptrain"
    fi
    # --static: Libs.private and Requires.private give what libdptrain.a needs.
    if pcs=$(pkg-config --static --cflags --libs dptrain 2>&1) && grep -q hdf5 <<<"$pcs" &&
       grep -q -- "-lmpi" <<<"$pcs" && grep -q -- "-lopenblas" <<<"$pcs"; then
        pass "pkg-config --static --libs dptrain names MPI, HDF5 and OpenBLAS"
        pcs=${pcs//-ldptrain/-l:libdptrain.a}
        # shellcheck disable=SC2086 # flags
        if out=$("$CC" "${CFLAGS_W[@]}" "$WORK/prog.c" -o "$WORK/prog_pc_static" $pcs 2>&1); then
            check_prog prog_pc_static "$WORK/prog_pc_static" static
        else
            fail "cc prog.c libdptrain.a \$(pkg-config --static --libs dptrain) failed"
            echo "$out" | tail -10 >&2
        fi
    else
        fail "pkg-config --static --cflags --libs dptrain: '$pcs' lacks hdf5, -lmpi or -lopenblas"
    fi
    unset PKG_CONFIG_PATH
fi

# --- find_package(dptrain) --------------------------------------------------------------------
if have "$CC"; then
    mkdir -p "$WORK/cmake_user"
    cp "$WORK/prog.c" "$WORK/cmake_user/prog.c"
    cat >"$WORK/cmake_user/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(use_dptrain LANGUAGES C)
set(WANT_VERSION "" CACHE STRING "version to ask find_package for")
find_package(dptrain ${WANT_VERSION} CONFIG REQUIRED)
add_executable(prog prog.c)
target_link_libraries(prog PRIVATE dptrain::dptrain)
add_executable(prog_static prog.c)
target_link_libraries(prog_static PRIVATE dptrain::dptrain_static)
EOF
    CM=$WORK/cmake_user
    if out=$(cmake -S "$CM" -B "$CM/build" -DCMAKE_PREFIX_PATH="$P" -DWANT_VERSION="$VERSION" \
                 -DCMAKE_C_COMPILER="$CC" -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" 2>&1) &&
       out=$(cmake --build "$CM/build" 2>&1); then
        pass "find_package(dptrain $VERSION CONFIG) and a build against dptrain::dptrain"
        check_prog cmake_prog "$CM/build/prog" shared
        check_prog cmake_prog_static "$CM/build/prog_static" static
    else
        fail "CMake project using find_package(dptrain) failed"; echo "$out" | tail -15 >&2
    fi
    # The version file refuses an incompatible version.
    if cmake -S "$CM" -B "$CM/build99" -DCMAKE_PREFIX_PATH="$P" -DWANT_VERSION=99.0 \
           -DCMAKE_C_COMPILER="$CC" >"$WORK/cmake99.log" 2>&1; then
        fail "find_package(dptrain 99.0) succeeded against version $VERSION"
    elif grep -q "not accepted" "$WORK/cmake99.log" &&
         grep -qF "dptrainConfig.cmake, version: $VERSION" "$WORK/cmake99.log"; then
        pass "find_package(dptrain 99.0) is refused (version $VERSION)"
    else
        fail "find_package(dptrain 99.0) failed, but not on the version"; tail -10 "$WORK/cmake99.log" >&2
    fi
fi

# --- man page ---------------------------------------------------------------------------------
if [ -s "$MAN" ]; then
    if ! have man; then
        skip "man (man-db; launch/setup.sh installs it)"
    else
        page=$(MANPAGER=cat MANWIDTH=100 LC_ALL=C.UTF-8 man -l "$MAN" 2>&1 || true)
        missing=""
        for w in "--layers" "--checkpoint" "--output" "--n-train" "--atol" "--steps" \
                 "COMMAND TRAIN" "COMMAND PREDICT" "$VERSION"; do
            grep -qF -- "$w" <<<"$page" || missing+=" '$w'"
        done
        if [ -z "$missing" ]; then
            pass "man -l dptrain.1: the commands' options (--layers, --checkpoint, ...) and $VERSION"
        else
            fail "man -l dptrain.1 lacks$missing"; head -20 <<<"$page" >&2
        fi
    fi
fi

# --- bash completion --------------------------------------------------------------------------
COMP=$P/share/bash-completion/completions/dptrain
# complete WORDS...: the completions bash would offer for the command line WORDS (the last
# word is the one being completed), one per line.
complete_words() {
    bash --norc --noprofile -c '
        source "$1" || exit 1
        fn=$(complete -p dptrain | sed -n "s/.*-F \([^ ]*\).*/\1/p")
        [ -n "$fn" ] || exit 1
        shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        "$fn" dptrain "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf "%s\n" "${COMPREPLY[@]}"' _ "$COMP" "$@"
}
# expect_completion NAME WANT UNWANTED WORDS...: WANT (a line) is offered ("": nothing is),
# UNWANTED (a line, or "") is not.
expect_completion() {
    local name=$1 want=$2 unwanted=$3 got; shift 3
    if ! got=$(complete_words "$@" 2>&1); then
        fail "completion of '$*': the script failed: $got"; return
    fi
    if [ -z "$want" ] && [ -n "$got" ]; then
        fail "$name: '$*' offers $(tr '\n' ' ' <<<"$got"), expected nothing"; return
    fi
    if [ -n "$want" ] && ! grep -qxF -- "$want" <<<"$got"; then
        fail "$name: '$*' does not offer '$want' (offers: $(tr '\n' ' ' <<<"$got"))"; return
    fi
    if [ -n "$unwanted" ] && grep -qxF -- "$unwanted" <<<"$got"; then
        fail "$name: '$*' offers '$unwanted' (offers: $(tr '\n' ' ' <<<"$got"))"; return
    fi
    pass "$name: '$*' -> $(tr '\n' ' ' <<<"$got")"
}
if [ -s "$COMP" ]; then
    mkdir -p "$WORK/cdir/sub.d"
    : >"$WORK/cdir/data.h5"
    expect_completion "completion: commands" train info dptrain tr
    expect_completion "completion: train options" --layers --data dptrain train --lay
    expect_completion "completion: options of eval" --checkpoint --layers dptrain eval --
    expect_completion "completion: a file option" "$WORK/cdir/data.h5" "" \
        dptrain predict --data "$WORK/cdir/d"
    expect_completion "completion: --opt=FILE" "--data=$WORK/cdir/data.h5" "" \
        dptrain predict "--data=$WORK/cdir/da"
    expect_completion "completion: a directory option" "$WORK/cdir/sub.d" "$WORK/cdir/data.h5" \
        dptrain train --out "$WORK/cdir/"
    expect_completion "completion: words of an option" off "" dptrain train --batchnorm o
    expect_completion "completion: sub-commands" blobs "" dptrain synth b
    expect_completion "completion: no files after a value option" "" "$WORK/cdir/data.h5" \
        dptrain train --lr "$WORK/cdir/"
    # Nothing drifted: every command of the installed dptrain's --help and every option on the
    # option lines of each command's --help is offered.
    cmds=$("$DPTRAIN" --help | sed -n '/^commands:/,/^$/s/^  \([a-z][a-z]*\) .*/\1/p')
    offered=$(complete_words dptrain "" || true)
    drift=""
    for c in $cmds; do
        grep -qxF "$c" <<<"$offered" || drift+=" $c"
        opts=$("$DPTRAIN" "$c" --help 2>/dev/null | grep -oE '^ +(-[a-z], )?--[a-z][a-z0-9-]*' |
               grep -oE -- '--[a-z][a-z0-9-]*' | sort -u || true)
        copts=$(complete_words dptrain "$c" -- || true)
        for o in $opts; do grep -qxF -- "$o" <<<"$copts" || drift+=" $c$o"; done
    done
    if [ -n "$cmds" ] && [ -z "$drift" ]; then
        pass "completion offers every command (${cmds//$'\n'/ }) and every option of their --help"
    else
        fail "completion lacks:$drift (commands: ${cmds//$'\n'/ })"
    fi
fi

end
