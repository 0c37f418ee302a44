#!/usr/bin/env bash
# What a sitting lent a GPU owes, prepared as two calls of the device tool (its 15 minutes
# include the machine's start, so there is no time to improvise there):
#
#   start    install; the tests marked gpu (-> $OUT/suite-gpu.log); bench/gpu.py (-> $OUT/gpu.log,
#            gpu.json, RESULTS.md); then Table 1's missing FCRN-B `paper` runs on the GPU, one
#            worker per draw, in process sessions of their own (setsid), so they outlive the call
#            while the machine stays warm; meanwhile the rest of the suite (-> suite-cpu.log)
#   collect  wait up to SECONDS for the workers, then copy the rows they finished to $OUT
#
# Here, once (the data beside the checkout does not travel; 17 MB):
#   mkdir -p .carry && cp -r ../shared/data/vgg_cells .carry/ && echo /.carry/ >> .git/info/exclude
# Then, from the device tool, the second at once (the machine is kept warm for 30 s):
#   run(command="bash bench/device_session.sh start 520", carry=[".carry"], timeout_s=560)
#   run(command="bash bench/device_session.sh collect 200", timeout_s=230)
# (about 13 minutes in all, of the 15 with the start: size the second to what status says is left)
# and here: cat <files_at>/table1-new.jsonl >> bench/runs/table1.jsonl; python bench/table1.py report
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STATE=/tmp/minifcrn-device   # outlives a call, not the machine
ROWS=bench/runs/table1.jsonl

start() {  # start SECONDS: the call's own budget, install to collect
    local until=$((SECONDS + ${1:-540}))
    mkdir -p "$STATE"
    python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
        || { echo "install failed: see install.log"; return 1; }
    if [ ! -d ../shared/data/vgg_cells ] && [ -d .carry/vgg_cells ]; then
        mkdir -p ../shared/data && cp -r .carry/vgg_cells ../shared/data/
    fi
    wc -l <"$ROWS" >"$STATE/rows_before"
    # each step has its own limit, so a hang or a crash in one still leaves time for the next
    timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu --maxfail=20 >"$OUT/suite-gpu.log" 2>&1
    echo "suite, GPU tests: exit $? ($(tail -n 1 "$OUT/suite-gpu.log"))"
    timeout 150 python3 bench/gpu.py --out "$OUT/gpu.json" >"$OUT/gpu.log" 2>&1
    echo "gpu.py: exit $? ($(tail -n 1 "$OUT/gpu.log"))"
    cp bench/RESULTS.md "$OUT/RESULTS.md"
    for draw in 0 1 2 3 4; do  # stored rows are skipped; N=8 draw 0 is well on its way on the CPU
        local ns="8 16 64"; [ "$draw" = 0 ] && ns="16 64 8"
        setsid nohup python3 bench/table1.py train --model fcrn-b --variant paper --n $ns \
            --draws "$draw" --device cuda --quiet >"$STATE/worker$draw.log" 2>&1 </dev/null &
    done
    # the rest of the suite runs on the CPU cores meanwhile (16: the workers take 2 each)
    local left=$((until - SECONDS - 30))
    if [ "$left" -gt 10 ]; then
        timeout "$left" python3 -m pytest -q -p no:cacheprovider -m "not gpu" >"$OUT/suite-cpu.log" 2>&1
        echo "suite, the rest: exit $? ($(tail -n 1 "$OUT/suite-cpu.log"))"
    fi
    collect $((until - SECONDS - 10))
}

collect() {  # collect [SECONDS]: wait up to SECONDS for the workers, then copy what they finished
    local until=$((SECONDS + ${1:-0}))
    while pgrep -f 'table1.py train' >/dev/null && [ "$SECONDS" -lt "$until" ]; do sleep 10; done
    tail -n +"$(( $(cat "$STATE/rows_before") + 1 ))" "$ROWS" >"$OUT/table1-new.jsonl"
    tail -n 20 "$STATE"/worker*.log >"$OUT/workers.log" 2>&1
    echo "table1: $(wc -l <"$OUT/table1-new.jsonl") new rows; workers still running: $(pgrep -fc 'table1.py train')"
}

case "${1:-}" in
    start) start "${2:-540}" ;;
    collect) collect "${2:-0}" ;;
    *) echo "usage: bash bench/device_session.sh start|collect [SECONDS]" >&2; exit 2 ;;
esac
