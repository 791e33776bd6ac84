#!/bin/bash
# The real side of docs/fidelity/step_timeline.py: one device call, results in $OUT/timeline.tgz.
#
#   device tool: run(command="bash docs/fidelity/timeline_on_device.sh [NAME:MODEL:CUDNN[:ARGS] ...]", carry=[".whl"])
#
# ARGS: more step_timeline flags, '+' for spaces; validate's shared-prefix overload is
#   llama3_8b_prefix:llama3_8b:on:--batch+64+--requests+96+--prompt-len+1280:1536+--shared-prefix+4:1024
#   here:        revati-tune exec --gpus 1 --sku h100 -- $REVATI_TRANSFORMERS_PYTHON -m docs.fidelity.step_timeline \
#                    --model-dir conf/model/MODEL --cuda-activity off --out DIR
#
# The 1B runs twice: its second process shows what a first cuDNN build costs once another process
# on the machine has built one (a cache that outlives the process, or not).
# Each run is capped at STEP_LIMIT_S seconds (default 200) so that one slow run leaves the others.
set -u
OUT=${OUT:-/tmp/timeline-out}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
mkdir -p /tmp/timeline
for run in "${@:-llama3_8b:llama3_8b:on llama3_8b_cudnn_off:llama3_8b:off llama3_2_1b:llama3_2_1b:on llama3_2_1b_again:llama3_2_1b:on}"; do
    for spec in $run; do
        IFS=: read -r name model cudnn extra <<< "$spec"
        echo "== $name"
        timeout "${STEP_LIMIT_S:-200}" python3 -m docs.fidelity.step_timeline --model-dir "conf/model/$model" \
            --cudnn-attention "$cudnn" ${extra//+/ } --out "/tmp/timeline/$name" > "/tmp/timeline/$name.log" 2>&1
        echo "exit $?"; grep -A12 full_decode_median_ms "/tmp/timeline/$name.log"; grep -A3 '"memory"' "/tmp/timeline/$name.log"
        tar czf "$OUT/timeline.tgz" -C /tmp timeline    # after each run: a call cut short keeps what it measured
    done
done
