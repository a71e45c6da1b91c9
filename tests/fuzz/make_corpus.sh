#!/usr/bin/env bash
# make_corpus.sh: regenerates the seed corpus of the fuzz targets, tests/fuzz/corpus/<target>/,
# from a dptrain binary: small valid inputs made by the project's own tools (dptrain synth,
# convert and a 2-epoch train), variants made with hdf5-tools (compressed, chunked, latest
# file format, /x at the root), and a few malformed ones. Every file stays small (the whole
# corpus is about 250 KB). The input formats of the targets (a first byte of options, then
# length-prefixed parts) are described at the top of each tests/fuzz/fuzz_<target>.c.
# Names: bad-* (and raw-bad-* for ckpt) must be refused, the others must load (checked by
# tests/fuzz/fuzz.sh). tests/fuzz/regress/<target>/ (inputs of bugs found by fuzzing and
# fixed, same naming) is kept by hand and not touched here.
#
# usage: tests/fuzz/make_corpus.sh [DPTRAIN]     (default: build/dptrain, then dptrain on PATH)
# Needs python3 (to write the binary seeds) and h5repack, h5copy (hdf5-tools).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DPTRAIN=${1:-$ROOT/build/dptrain}
[ -x "$DPTRAIN" ] || DPTRAIN=$(command -v dptrain || true)
[ -n "$DPTRAIN" ] && [ -x "$DPTRAIN" ] || { echo "make_corpus: no dptrain binary (give its path)" >&2; exit 2; }
OUT=$HERE/corpus
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export DPTRAIN_BLAS_CORETYPE=off
cd "$WORK"
q() { "$DPTRAIN" "$@" >/dev/null; }

# --- the project's own files ----------------------------------------------------------------
q synth blobs --out blobs.h5 --n-train 8 --n-test 4 --features 3 --classes 2
q synth line --out line.h5 --n-train 8 --n-test 4
q synth spirals --out spirals.h5 --n-train 6 --n-test 0 --classes 3
printf 'a,b,label\n1,2,0\n3,4,1\n5,6,1\n0.5,-1,0\n' >c.csv
printf 'x1,x2,y1,y2\n1,2,0.5,1\n3,4,1.5,2\n5,6,2.5,3\n' >r.csv
q convert csv --train c.csv --test c.csv --label-col -1 --out csv-class.h5
q convert csv --train r.csv --targets 2 --out csv-reg2.h5
python3 - <<'EOF'
import struct
def idx(path, magic, dims, body):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(body))
idx("ti", 0x803, [3, 2, 2], range(0, 120, 10))
idx("tl", 0x801, [3], [0, 2, 1])
EOF
q convert idx --train-images ti --train-labels tl --test-images ti --test-labels tl --out idx.h5
# a 2-epoch run: a checkpoint and a model file; and one with batch norm, Adam and early
# stopping (more of /state: three optimizer slots, best_params, best_buffers, history)
q train --data blobs.h5 --layers 3,4,2 --epochs 2 --batch 4 --out run1 --quiet
q train --data line.h5 --layers 1,3:tanh:bn,1 --loss mse --optimizer adam --val-fraction 0.25 \
    --patience 5 --epochs 2 --batch 2 --out run2 --quiet
ckpt1=$(ls run1/checkpoints/ckpt-*.h5 | tail -1)
ckpt2=$(ls run2/checkpoints/ckpt-*.h5 | tail -1)

# --- variants by hdf5-tools ---------------------------------------------------------------------
h5repack -f GZIP=1 blobs.h5 blobs-gzip.h5
h5repack -l CHUNK=2x3 -f SHUF blobs.h5 blobs-chunked.h5
h5repack -L line.h5 line-latest.h5
h5copy -i blobs.h5 -o root.h5 -s /test/x -d /x
h5copy -i blobs.h5 -o root.h5 -s /test/y -d /y
h5copy -i blobs.h5 -o xonly.h5 -s /test -d /test
h5repack -L "${ckpt1}" ckpt-latest.h5 2>/dev/null || true # user block dropped: a model file

# --- write the corpus ---------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"/{dataset,ckpt,csv,idx}
python3 - "$OUT" "$ckpt1" "$ckpt2" <<'EOF'
import gzip, os, struct, sys
out, ckpt1, ckpt2 = sys.argv[1:4]
def put(target, name, data):
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)
def rd(p):
    with open(p, "rb") as f:
        return f.read()
def lp(*parts):  # all parts but the last with a 2-byte little-endian length prefix
    return b"".join(struct.pack("<H", len(p)) + p for p in parts[:-1]) + parts[-1]
def flip(b, at):
    b = bytearray(b); b[at % len(b)] ^= 0xff; return bytes(b)

# dataset: HDF5 dataset files
blobs = rd("blobs.h5")
for n in ["blobs", "line", "spirals", "csv-class", "csv-reg2", "idx", "blobs-gzip",
          "blobs-chunked", "line-latest", "root", "xonly"]:
    put("dataset", n + ".h5", rd(n + ".h5"))
put("dataset", "bad-truncated.h5", blobs[:3000])
put("dataset", "bad-superblock.h5", flip(blobs, 20))
put("dataset", "bad-not-hdf5.h5", b"this is not an HDF5 file\n")
put("dataset", "bad-model-file.h5", rd("run1/model.h5"))

# ckpt: byte 0 even = the HDF5 part of a checkpoint (the harness writes the header),
# odd = the whole file as it is
c1, c2 = rd(ckpt1), rd(ckpt2)
put("ckpt", "rebuild-ckpt-sgd", b"\x00" + c1[512:])
put("ckpt", "rebuild-ckpt-adam-bn-early", b"\x00" + c2[512:])
put("ckpt", "rebuild-model-file", b"\x00" + rd("run2/model.h5"))
put("ckpt", "raw-ckpt-sgd", b"\x01" + c1)
put("ckpt", "raw-model-sgd", b"\x01" + rd("run1/model.h5"))
put("ckpt", "raw-model-bn", b"\x01" + rd("run2/model.h5"))
if os.path.exists("ckpt-latest.h5"):
    put("ckpt", "raw-model-repacked-ckpt", b"\x01" + rd("ckpt-latest.h5"))
put("ckpt", "raw-bad-crc", b"\x01" + flip(c1, 4000))
put("ckpt", "raw-bad-truncated", b"\x01" + c1[:600])
put("ckpt", "raw-bad-version", b"\x01" + c1[:512].replace(b"format_version 1", b"format_version 9") + c1[512:1024])
put("ckpt", "raw-bad-length", b"\x01" + c1[:512].replace(b"length ", b"length 9") + c1[512:])
put("ckpt", "raw-bad-header-only", b"\x01" + c1[:512])

# csv: byte 0 = options (bits 0-1 label column 0,-1,1,2; bits 2-3 targets 0,0,1,2;
# bit 4 gzip train; bit 5 gzip test; bit 6 a test file, then train is length-prefixed)
cls = b"a,b,label\n1,2,0\n3,4,1\n5,6,1\n0.5,-1,0\n"
put("csv", "label-last-header", b"\x01" + cls)
put("csv", "label-first-noheader", b"\x00" + b"0,1.5,2\n1,3,4\n2,1e-3,-7\n")
put("csv", "label-col1-crlf-blank", b"\x02" + b"x, label ,y\r\n1, 0 ,2\r\n\r\n3,1,4\r\n")
put("csv", "targets1", b"\x08" + b"x1,x2,y\n1,2,3.5\n4,5,6.5\n")
put("csv", "targets2-with-test", b"\x4c" + lp(b"1,2,3,4\n5,6,7,8\n", b"9,10,11,12\n"))
put("csv", "with-test-gzip", b"\x71" + lp(cls, b"7,8,1\n"))
put("csv", "raw-gzip", b"\x01" + gzip.compress(cls, mtime=0))
put("csv", "bad-ragged", b"\x01" + b"1,2,0\n3,4\n")
put("csv", "bad-nan-inf", b"\x01" + b"nan,2,0\n1e39,4,1\n")
put("csv", "bad-label", b"\x01" + b"1,2,0.5\n3,4,-1\n")
put("csv", "bad-gzip-truncated", b"\x01" + gzip.compress(cls * 4, mtime=0)[:30])
put("csv", "bad-empty", b"\x01")

# idx: byte 0 = options (bit 0 gzip train images, 1 gzip train labels, 2 a test pair,
# 3 gzip test images, 4 gzip test labels), then length-prefixed parts
def idx(magic, dims, body):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + bytes(body)
img = idx(0x803, [3, 2, 2], range(0, 120, 10))
lab = idx(0x801, [3], [0, 2, 1])
put("idx", "train", b"\x00" + lp(img, lab))
put("idx", "train-test", b"\x04" + lp(img, lab, idx(0x803, [1, 2, 2], [1, 2, 3, 4]), idx(0x801, [1], [3])))
put("idx", "gzip-by-harness", b"\x1f" + lp(img, lab, img, lab))
put("idx", "raw-gzip", b"\x00" + lp(gzip.compress(img, mtime=0), gzip.compress(lab, mtime=0)))
put("idx", "bad-magic", b"\x00" + lp(idx(0x801, [3, 2, 2], range(12)), lab))
put("idx", "bad-truncated", b"\x00" + lp(img[:-3], lab))
put("idx", "bad-count", b"\x00" + lp(img, idx(0x801, [2], [0, 1])))
put("idx", "bad-trailing", b"\x00" + lp(img + b"\x00", lab))
put("idx", "bad-test-shape", b"\x04" + lp(img, lab, idx(0x803, [1, 1, 4], [1, 2, 3, 4]), idx(0x801, [1], [3])))
put("idx", "bad-huge-header", b"\x00" + lp(idx(0x803, [0xffffffff, 0xffff, 0xffff], []), lab))
put("idx", "bad-gzip-truncated", b"\x00" + lp(gzip.compress(img, mtime=0)[:20], lab))
EOF
du -sb "$OUT" | awk '{print "make_corpus: " $1 " bytes in " "'"$OUT"'"}'
for t in dataset ckpt csv idx; do echo "  $t: $(ls "$OUT/$t" | wc -l) seeds"; done
