#!/usr/bin/env bash
# What a sitting lent a GPU owes, prepared as ONE call of the device tool (its 15 minutes include
# the machine's start, and a machine left idle for 30 s between two calls is gone, with whatever
# ran on it: the first GPU sitting, 2026-12-04, lost its second call's workers that way):
#
#   1. install; bench/gpu.py alone on the GPU (-> $OUT/gpu.log, gpu.json, RESULTS.md)
#   2. every Table 1 FCRN-B `paper` run not yet stored, and at N=64 its `count-last-cut` after it,
#      one process a draw, all at once on the one GPU (a stored run exits at once); on the H200
#      five at a time took about 3.3 min each
#   3. meanwhile the tests marked gpu (-> suite-gpu.log), under the hypothesis profile "gpu"
#      (derandomised, fewer examples: a float64 finite-difference check is thousands of tiny
#      launches on a GPU, and the same tests run with the full count on the CPU backends in CI),
#      each test stopped after 90 s so one slow test cannot eat the rest
#   4. wait for the runs until SECONDS after the start, then copy the rows they stored
#      (-> table1-new.jsonl) and the end of each run's log (-> workers.log)
#
# Here, once (the data beside the checkout does not travel; 17 MB):
#   mkdir -p .carry && cp -r ../shared/data/vgg_cells .carry/ && echo /.carry/ >> .git/info/exclude
# Then, from the device tool:
#   run(command="bash bench/device_session.sh 540", carry=[".carry"], timeout_s=580)
# and here: cat <files_at>/table1-new.jsonl >> bench/runs/table1.jsonl; python bench/table1.py report;
# copy the gpu section of <files_at>/RESULTS.md into bench/RESULTS.md.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ROWS=bench/runs/table1.jsonl
LOGS=/tmp/minifcrn-device
until=$((SECONDS + ${1:-540}))

python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
    || { echo "install failed: see install.log"; exit 1; }
if [ ! -d ../shared/data/vgg_cells ] && [ -d .carry/vgg_cells ]; then
    mkdir -p ../shared/data && cp -r .carry/vgg_cells ../shared/data/
fi
rows_before=$(wc -l <"$ROWS")

timeout 200 python3 bench/gpu.py --out "$OUT/gpu.json" >"$OUT/gpu.log" 2>&1
echo "gpu.py: exit $? after ${SECONDS} s ($(tail -n 1 "$OUT/gpu.log"))"
cp bench/RESULTS.md "$OUT/RESULTS.md"

mkdir -p "$LOGS"
for n in 8 16 32 64; do
    variants=paper
    [ "$n" = 64 ] && variants="paper count-last-cut"  # the N=64 probe on every draw, from the same patch phase
    for draw in 0 1 2 3 4; do
        python3 bench/table1.py train --model fcrn-b --variant $variants --n "$n" --draws "$draw" \
            --device cuda --quiet >"$LOGS/n$n-d$draw.log" 2>&1 </dev/null &
    done
done

per_test=$(python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout 90")  # the device image has it
left=$((until - SECONDS - 20))
if [ "$left" -gt 30 ]; then
    HYPOTHESIS_PROFILE=gpu timeout "$left" python3 -m pytest -v -p no:cacheprovider -m gpu $per_test \
        -rfE --tb=short --durations=15 >"$OUT/suite-gpu.log" 2>&1
    echo "suite, GPU tests: exit $? after ${SECONDS} s ($(tail -n 1 "$OUT/suite-gpu.log"))"
fi

while pgrep -f 'table1.py train' >/dev/null && [ "$SECONDS" -lt "$until" ]; do sleep 5; done
tail -n +"$((rows_before + 1))" "$ROWS" >"$OUT/table1-new.jsonl"
for f in "$LOGS"/*.log; do echo "== $f"; tr '\r' '\n' <"$f" | tail -n 3; done >"$OUT/workers.log" 2>&1
echo "table1: $(wc -l <"$OUT/table1-new.jsonl") new rows after ${SECONDS} s; runs unfinished: $(pgrep -fc 'table1.py train')"
