#!/usr/bin/env bash
# Using trained models: `eval` reports what training reported and the same at any rank
# count; `predict` writes the same file at any rank count, probabilities that sum to 1 and
# predicted classes that agree with eval's accuracy, and takes data without labels (a
# split's x without y, a root /x, a CSV file of feature rows) with the same outputs;
# `info` describes models and checkpoints; bad input gives one message, the documented
# exit code, no crash and no hang.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

"$DPTRAIN" synth blobs --features 8 --classes 3 --noise 0.7 --n-train 600 --n-test 200 --out blobs.h5 >/dev/null
"$DPTRAIN" synth blobs --features 5 --classes 3 --n-train 100 --n-test 50 --out five.h5 >/dev/null
"$DPTRAIN" synth blobs --features 8 --classes 3 --n-train 100 --n-test 0 --out notest.h5 >/dev/null
"$DPTRAIN" synth line --n-train 300 --n-test 100 --out line.h5 >/dev/null
"$DPTRAIN" synth spirals --classes 2 --n-train 400 --n-test 100 --out spir.h5 >/dev/null

# figure NAME LINE: the number after NAME in LINE ("test loss 0.4323" -> 0.4323).
figure() { sed -nE "s/.*$1 ([-0-9.e]+).*/\1/p" <<<"$2"; }

# --- a classifier with a validation hold-out, a regressor, a binary classifier ----------
# (The classifier also writes a checkpoint per epoch: c/checkpoints/ckpt-0000000045.h5 last.)
done_c=$(run_np 2 train --data blobs.h5 --layers 8,16,3 --epochs 3 --lr 0.1 --momentum 0.9 \
         --batch 32 --val-fraction 0.2 --out c --quiet)
CK=c/checkpoints/ckpt-0000000045.h5
done_r=$(run_np 2 train --data line.h5 --layers 1,8,1 --loss mse --epochs 3 --lr 0.05 \
         --batch 32 --out r --quiet)
"$DPTRAIN" train --data spir.h5 --layers 2,16,1 --loss binary-cross-entropy --epochs 3 \
    --lr 0.1 --batch 32 --out b --quiet >/dev/null

# --- eval: the figures of train's final line, at 1, 2 and 3 ranks -----------------------
want="loss $(figure 'test loss' "$done_c") accuracy $(figure 'test accuracy' "$done_c")"
for np in 1 2 3; do
    out=$(run_np "$np" eval --checkpoint c/model.h5 --data blobs.h5)
    got=$(sed -nE 's/^eval: c\/model.h5 on blobs.h5 \/test \(200 rows\): (.*)$/\1/p' <<<"$out")
    if [ "$got" = "$want" ]; then pass "eval on $np rank(s) = train's test figures ($got)"
    else fail "eval on $np rank(s): '$out', train said '$want'"; fi
done
out=$(run_np 3 eval --checkpoint c/model.h5 --data blobs.h5 --split val)
if [ "$(figure loss "$out")" = "$(figure 'val loss' "$done_c")" ] && grep -q '(120 rows;' <<<"$out"
then pass "eval --split val re-creates the training run's hold-out (120 rows)"
else fail "eval --split val: '$out', train said '$done_c'"; fi
out=$(run_np 2 eval --checkpoint c/model.h5 --data blobs.h5 --split train)
if grep -q '/train without the validation hold-out (480 rows)' <<<"$out"; then
    pass "eval --split train takes the 480 training rows"
else fail "eval --split train: '$out'"; fi
out=$(run_np 2 eval --checkpoint r/model.h5 --data line.h5)
if [ "$(figure loss "$out")" = "$(figure 'test loss' "$done_r")" ] && ! grep -q accuracy <<<"$out"
then pass "eval of a regressor: train's test loss, no accuracy"
else fail "eval of a regressor: '$out', train said '$done_r'"; fi
out=$(run_np 2 eval --checkpoint c/model.h5 --data blobs.h5 --json)
if grep -Eq '^\{"model":"c/model.h5","data":"blobs.h5","split":"test","rows":200,.*"accuracy":0\.[0-9]+\}$' <<<"$out"
then pass "eval --json prints one JSON object"
else fail "eval --json: '$out'"; fi

# --- predict: identical at 1 and 3 ranks; probabilities, labels, accuracy ---------------
run_np 1 predict --checkpoint c/model.h5 --data blobs.h5 --output p1.csv >/dev/null
out=$(run_np 3 predict --checkpoint c/model.h5 --data blobs.h5 --output p3.csv)
if [ "$out" = "predict: wrote 200 rows x 3 to p3.csv" ] && cmp -s p1.csv p3.csv; then
    pass "predict CSV: 1 and 3 ranks write identical files"
else fail "predict CSV at 1 and 3 ranks differ ($out)"; fi
for np in 1 3; do run_np $np predict --checkpoint c/model.h5 --data blobs.h5 --split val --output v$np.h5 >/dev/null; done
if cmp -s <(h5dump -d /predictions v1.h5 | tail -n +2) <(h5dump -d /predictions v3.h5 | tail -n +2) &&
   cmp -s <(h5dump -d /labels v1.h5 | tail -n +2) <(h5dump -d /labels v3.h5 | tail -n +2) &&
   cmp -s <(h5dump -d /true_labels v1.h5 | tail -n +2) <(h5dump -d /true_labels v3.h5 | tail -n +2) &&
   h5dump -d /predictions -H v1.h5 | grep -q 'SIMPLE { ( 120, 3 )' &&
   h5dump -d /true_labels -H v1.h5 | grep -q 'SIMPLE { ( 120 )'; then
    pass "predict HDF5 --split val: 1 and 3 ranks write identical [120, 3] predictions, predicted and true labels"
else fail "predict HDF5 at 1 and 3 ranks differ"; fi
# A wider model, so that the matrix products' blocking shows in the last bits (it does with
# OpenBLAS's Haswell and SkylakeX kernels when a row's place in the product moves), and
# blocks of 16 rows spread over 1, 2 and 3 ranks: the files are still byte-identical.
"$DPTRAIN" synth blobs --features 64 --classes 5 --n-train 400 --n-test 200 --out wide.h5 >/dev/null
run_np 2 train --data wide.h5 --layers 64,96,5 --epochs 1 --lr 0.05 --batch 32 --out w --quiet >/dev/null
for np in 1 2 3; do
    run_np $np predict --checkpoint w/model.h5 --data wide.h5 --eval-batch 16 --output w$np.csv >/dev/null
done
if [ -s w1.csv ] && cmp -s w1.csv w2.csv && cmp -s w1.csv w3.csv; then
    pass "predict, 64-96-5 model, --eval-batch 16: 1, 2 and 3 ranks write identical files"
else fail "predict of the wider model differs between 1, 2 and 3 ranks"; fi
# h5vals FILE DATASET: the integers of a 1-D dataset, one per line.
h5vals() { h5dump -d "$2" -y -w 0 "$1" | sed -n '/DATA {/,/}/p' | tr -c '0-9\n' ' ' | tr -s ' ' '\n' | grep .; }
check=$(awk 'FILENAME == ARGV[1] { y[FNR - 1] = $1; next } FILENAME == ARGV[2] { row[FNR] = $1; next }
    { n++; if (y[row[FNR]] != $1) bad++ } END { print (n == 120 && !bad) ? "OK" : "BAD " bad "/" n }' \
    <(h5vals blobs.h5 /train/y) <(h5vals v1.h5 /rows) <(h5vals v1.h5 /true_labels))
if [ "$check" = OK ]; then pass "predict HDF5 --split val: /true_labels = /train/y at /rows"
else fail "predict HDF5 /true_labels against /train/y: $check"; fi
if h5dump -a /split v1.h5 | grep -q '"val"' && h5dump -a /model v1.h5 | grep -q '"c/model.h5"'
then pass "predict HDF5 names the model and the split"
else fail "predict HDF5 attributes"; fi
if ls | grep -q '\.tmp\.'; then fail "predict left a temporary file: $(ls | grep '\.tmp\.')"
else pass "predict leaves no temporary file"; fi
# Rows of probabilities sum to 1, predicted = argmax, true_label = /test/y, and predicted
# against /test/y gives eval's accuracy.
h5dump -d /test/y -y -w 0 blobs.h5 | sed -n '/DATA {/,/}/p' | tr -c '0-9\n' ' ' | tr -s ' ' '\n' | grep . > truth.txt
acc_eval=$(figure accuracy "$(run_np 1 eval --checkpoint c/model.h5 --data blobs.h5)")
check=$(awk -F, -v acc="$acc_eval" 'NR == FNR { y[FNR] = $1; next }
    FNR == 1 { if ($0 != "predicted,p0,p1,p2,true_label") bad = bad " header"; next }
    { s = 0; arg = 2; for (j = 2; j <= NF - 1; j++) { s += $j; if ($j > $arg) arg = j }
      nsum += (s < 1 - 1e-5 || s > 1 + 1e-5); narg += ($1 != arg - 2)
      n++; hit += ($1 == y[n]); ntrue += ($NF != y[n]) }
    END { if (nsum) bad = bad " " nsum " rows do not sum to 1"
          if (narg) bad = bad " " narg " predicted classes are not the argmax"
          if (ntrue) bad = bad " " ntrue " true labels are not /test/y"
          if (n != 200) bad = bad " rows=" n
          if (sprintf("%.4f", hit / n) != acc) bad = bad " accuracy " hit "/" n "!=" acc
          print bad ? "BAD" bad : "OK " hit "/" n }' truth.txt p1.csv)
if [[ $check == OK* ]]; then pass "predicted classes: argmax, rows sum to 1, true_label = /test/y, $check = eval's accuracy $acc_eval"
else fail "predicted classes: $check"; fi
run_np 2 predict --checkpoint r/model.h5 --data line.h5 --output r.csv >/dev/null
if [ "$(head -1 r.csv)" = "y0" ] && [ "$(wc -l < r.csv)" = 101 ]; then pass "predict of a regressor: y0, 100 rows"
else fail "regression CSV: $(head -2 r.csv | tr '\n' ' ')"; fi
run_np 2 predict --checkpoint b/model.h5 --data spir.h5 --output b.csv >/dev/null
check=$(awk -F, 'NR == 1 { if ($0 != "predicted,p1,true_label") bad = 1; next }
    { if ($2 < 0 || $2 > 1 || $1 != ($2 > 0.5 ? 1 : 0) || ($3 != 0 && $3 != 1)) bad = 1; n++ }
    END { print (bad || n != 100) ? "BAD" : "OK" }' b.csv)
if [ "$check" = OK ]; then pass "predict of a binary classifier: predicted,p1,true_label with predicted = p1 > 0.5"
else fail "binary CSV: $(head -3 b.csv | tr '\n' ' ')"; fi

# --- predict on data without labels: a split's x without y, a root /x, CSV feature rows ---
# The same 200 rows as blobs.h5 /test/x in each: the outputs equal the labelled run's
# (p1.csv without its true_label column), byte for byte, at 1 and 3 ranks; no true_label.
h5copy -i blobs.h5 -o nolab.h5 -s /test/x -d /test/x -p
h5copy -i blobs.h5 -o rootx.h5 -s /test/x -d /x
h5copy -i blobs.h5 -o neither.h5 -s /test/y -d /labels
h5dump -d /test/x -m %.9g -y -w 0 -o xraw.txt blobs.h5 >/dev/null
tr -s ', \n' '\n' <xraw.txt | grep . | awk '{ printf "%s%s", $0, (NR % 8 ? "," : "\n") }' >feat.csv
(echo "f0,f1,f2,f3,f4,f5,f6,f7"; sed 's/,/, /g; s/$/\r/' feat.csv) | gzip >feath.csv.gz
sed 's/,true_label$//; s/,[0-9]*$//; 1s/^.*$/predicted,p0,p1,p2/' p1.csv >want.csv
[ "$(head -1 want.csv)" = "predicted,p0,p1,p2" ] && [ "$(wc -l <want.csv)" = 201 ] || fail "could not make want.csv"
for in in nolab.h5 rootx.h5 feat.csv feath.csv.gz; do
    for np in 1 3; do run_np $np predict --checkpoint c/model.h5 --data "$in" --output "u$np-$in.csv" >/dev/null || true; done
    if [ -s "u1-$in.csv" ] && cmp -s "u1-$in.csv" "u3-$in.csv" && cmp -s "u1-$in.csv" want.csv; then
        pass "predict $in (no labels): 1 and 3 ranks identical, = the labelled run's outputs, no true_label column"
    else fail "predict $in: $(head -2 "u1-$in.csv" 2>/dev/null | tr '\n' ' ')"; fi
done
"$DPTRAIN" synth blobs --features 64 --classes 5 --n-train 10 --n-test 200 --seed 5 --out wide2.h5 >/dev/null
h5copy -i wide2.h5 -o wide2x.h5 -s /test/x -d /x
for np in 1 2 3; do
    run_np $np predict --checkpoint w/model.h5 --data wide2x.h5 --eval-batch 16 --output wx$np.h5 >/dev/null
done
if cmp -s <(h5dump -d /predictions wx1.h5 | tail -n +2) <(h5dump -d /predictions wx2.h5 | tail -n +2) &&
   cmp -s <(h5dump -d /predictions wx1.h5 | tail -n +2) <(h5dump -d /predictions wx3.h5 | tail -n +2) &&
   h5dump -a /split wx1.h5 | grep -q '"/x"' && h5dump -d /labels -H wx1.h5 | grep -q 'SIMPLE { ( 200 )' &&
   ! h5dump -d /true_labels -H wx1.h5 >/dev/null 2>&1; then
    pass "predict HDF5 of a root /x, 64-96-5 model, --eval-batch 16: 1, 2, 3 ranks identical; split \"/x\"; no /true_labels"
else fail "predict HDF5 of a root /x"; fi
expect_exit 1 "predict: a file with no rows to run on (one message, no hang)" "neither.h5: no rows to run a model on: none of /test/x, /train/x, /x" -- \
    run_np 2 predict --checkpoint c/model.h5 --data neither.h5 --output x.csv
expect_exit 2 "eval: data without y is refused, pointing to predict" "eval needs true labels or targets, but nolab.h5 has /test/x and no /test/y" -- \
    run_np 2 eval --checkpoint c/model.h5 --data nolab.h5
expect_exit 2 "eval: a CSV of feature rows is refused" "eval needs true labels or targets, but feat.csv is a CSV file" -- \
    "$DPTRAIN" eval --checkpoint c/model.h5 --data feat.csv
expect_exit 2 "predict --split train of a root /x" "--split train: rootx.h5 holds its rows at the root" -- \
    "$DPTRAIN" predict --checkpoint c/model.h5 --data rootx.h5 --split train --output x.csv
expect_exit 2 "predict --split val of nolab.h5 (no /train)" "nolab.h5 has no /train split" -- \
    "$DPTRAIN" predict --checkpoint c/model.h5 --data nolab.h5 --split val --output x.csv
printf '1,2,3,4,5,6,7,8\n1,2,3,4,5,6,7\n' >ragged.csv
expect_exit 1 "predict: a ragged CSV row is named file:line" "ragged.csv:2: 7 columns, expected 8" -- \
    run_np 2 predict --checkpoint c/model.h5 --data ragged.csv --output x.csv
printf '1,2,3,4,5,6,7,8\n1,2,3,x,5,6,7,8\n' >notnum.csv
expect_exit 1 "predict: a CSV field that is not a number" "notnum.csv:2: column 4: 'x' is not a number" -- \
    "$DPTRAIN" predict --checkpoint c/model.h5 --data notnum.csv --output x.csv
expect_exit 2 "predict: a CSV with the wrong number of features" "c/model.h5 takes 8 inputs but five.csv has 5 columns" -- \
    bash -c "printf '1,2,3,4,5\n' >five.csv && \"\$0\" predict --checkpoint c/model.h5 --data five.csv --output x.csv" "$DPTRAIN"
[ -e x.csv ] && fail "a failed predict wrote x.csv" || pass "failed predicts write no output"

# --- info ------------------------------------------------------------------------------
out=$(run_np 2 info c/model.h5)
if grep -q '^layers: 8,16:relu,3:identity (2 layers, 195 parameters)' <<<"$out" &&
   grep -q '^format: dptrain-model' <<<"$out" && grep -q '"val_fraction":0.2' <<<"$out"; then
    pass "info: layer sizes, parameter count, format and config"
else fail "info: $out"; fi
out=$("$DPTRAIN" info c/model.h5 --json)
if grep -Eq '^\{"file":"c/model.h5",.*"sizes":\[8,16,3\],.*"n_params":195,.*"config":\{' <<<"$out"
then pass "info --json"; else fail "info --json: $out"; fi

# --- checkpoints: the same figures; info shows the training state ----------------------
out=$(run_np 3 eval --checkpoint "$CK" --data blobs.h5)
if [ "$(figure loss "$out")" = "$(figure 'test loss' "$done_c")" ] &&
   [ "$(figure accuracy "$out")" = "$(figure 'test accuracy' "$done_c")" ]
then pass "eval of the last checkpoint = train's test figures"
else fail "eval of the checkpoint: '$out', train said '$done_c'"; fi
out=$(run_np 2 info "$CK")
if grep -q '^format: dptrain-checkpoint' <<<"$out" &&
   grep -q '^checkpoint: format version 1, written by dptrain .* on 2 ranks' <<<"$out" &&
   grep -q '^position: 3 epochs done, .*step 45, finished' <<<"$out" &&
   grep -q '^optimizer: sgd, 1 state array of 195 floats: momentum_buffer' <<<"$out" &&
   grep -q '^data: blobs.h5: 8 features, train 600 rows (fingerprint [0-9a-f]\{16\})' <<<"$out" &&
   grep -q "^  epoch 3 step 45 .* test loss $(figure 'test loss' "$done_c") acc $(figure 'test accuracy' "$done_c")" <<<"$out"
then pass "info of a checkpoint: writer, position, optimizer slots, data, history"
else fail "info of a checkpoint: $out"; fi
expect_exit 2 "eval --split val of a checkpoint on other data" "five.h5 /train is not the data .* was trained on" -- \
    run_np 2 eval --checkpoint "$CK" --data five.h5 --split val
cp "$CK" badck.h5
size=$(stat -c %s badck.h5)
printf 'XXXXXXXX' | dd of=badck.h5 bs=1 seek=$((size / 2)) conv=notrunc status=none
expect_exit 1 "eval: damaged checkpoint (checksum)" "badck.h5: damaged checkpoint" -- \
    run_np 2 eval --checkpoint badck.h5 --data blobs.h5
expect_exit 1 "info: damaged checkpoint (checksum)" "badck.h5: damaged checkpoint" -- "$DPTRAIN" info badck.h5
head -c 3000 "$CK" > short.h5
expect_exit 1 "predict: truncated checkpoint" "short.h5: truncated" -- \
    "$DPTRAIN" predict --checkpoint short.h5 --data blobs.h5 --output x.h5

# --- errors: exit code, one message naming the file or field, no crash, no hang ---------
# Failures of files and data under mpirun (the ranks must agree); option errors, which every
# rank finds alike, in one process (mpirun takes 2 s to wind up a failed job).
E=(--checkpoint c/model.h5 --data blobs.h5)
rc=0; out=$(run_np 2 eval --checkpoint nope.h5 --data blobs.h5 2>&1) || rc=$?
if [ "$rc" = 1 ] && grep -q 'nope.h5: cannot open' <<<"$out" && [ "$(grep -c 'error:' <<<"$out")" = 1 ]
then pass "eval: missing model file: exit 1, one message naming it (not one per rank)"
else fail "eval: missing model file: exit $rc: $out"; fi
expect_exit 1 "eval: missing data file" "nodata.h5" -- run_np 2 eval --checkpoint c/model.h5 --data nodata.h5
expect_exit 2 "eval: wrong number of features" "c/model.h5 takes 8 inputs but five.h5 /test/x has 5 features" -- \
    run_np 2 eval --checkpoint c/model.h5 --data five.h5
expect_exit 2 "predict: wrong number of features" "takes 8 inputs but five.h5" -- \
    run_np 3 predict --checkpoint c/model.h5 --data five.h5 --output x.csv
expect_exit 2 "eval --split val without val_fraction" "r/model.h5: --split val .* val_fraction 0" -- \
    run_np 2 eval --checkpoint r/model.h5 --data line.h5 --split val
expect_exit 2 "eval: unknown option" "unknown option '--bogus'" -- run_np 2 eval "${E[@]}" --bogus
expect_exit 1 "predict: unwritable output (rank 0 fails, all stop)" "nodir/p.csv" -- \
    run_np 2 predict "${E[@]}" --output nodir/p.csv
expect_exit 2 "eval: no /test" "notest.h5 has no /test split" -- "$DPTRAIN" eval --checkpoint c/model.h5 --data notest.h5
expect_exit 2 "eval: a loss the output layer cannot give" "binary-cross-entropy-probs reads a sigmoid output" -- \
    "$DPTRAIN" eval "${E[@]}" --loss binary-cross-entropy-probs
expect_exit 2 "predict: unknown option" "unknown option '--json'" -- "$DPTRAIN" predict "${E[@]}" --output x.h5 --json
expect_exit 2 "info: unknown option" "unknown option '--bogus'" -- "$DPTRAIN" info c/model.h5 --bogus
expect_exit 2 "info: no file" "give one model file" -- "$DPTRAIN" info
expect_exit 2 "eval: --data missing" "--data FILE is required" -- "$DPTRAIN" eval --checkpoint c/model.h5
expect_exit 2 "predict: --output missing" "--output FILE is required" -- "$DPTRAIN" predict "${E[@]}"
expect_exit 2 "eval: bad --eval-batch" "--eval-batch: 'many' is not an integer" -- "$DPTRAIN" eval "${E[@]}" --eval-batch many
expect_exit 2 "eval: bad --split" "unknown split 'dev'" -- "$DPTRAIN" eval "${E[@]}" --split dev
expect_exit 1 "info: a dataset is not a model" "blobs.h5: format is 'dptrain-dataset'" -- "$DPTRAIN" info blobs.h5
expect_exit 0 "eval --help lists options with defaults" "--eval-batch N .*\[1000\]" -- "$DPTRAIN" eval --help
expect_exit 0 "predict --help" "--output P" -- "$DPTRAIN" predict --help
expect_exit 0 "info --help" "--json" -- "$DPTRAIN" info --help
# A damaged model file: the middle half overwritten (HDF5 metadata included).
cp c/model.h5 bad.h5
size=$(stat -c %s bad.h5)
head -c $((size / 2)) /dev/zero | tr '\0' '\377' | dd of=bad.h5 bs=1 seek=$((size / 4)) conv=notrunc status=none
expect_exit 1 "eval: damaged model file" "bad.h5" -- run_np 2 eval --checkpoint bad.h5 --data blobs.h5
expect_exit 1 "info: damaged model file" "bad.h5" -- "$DPTRAIN" info bad.h5
finish
