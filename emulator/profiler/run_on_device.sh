#!/bin/bash
# How emulator/predictor/data/<sku>/ is measured: one device-tool call on the real GPU.
#
#   here:    python3 emulator/profiler/fetch_vllm_kernels.py
#   device:  run(command="bash emulator/profiler/run_on_device.sh [FAMILIES]", carry=[".carry"])
#   here:    tar xzf <files_at>/profile.tgz -C emulator/predictor/data/<sku>
#            revati-tune predictor fit --sku <sku>
#
# FAMILIES (default: every family of profile_gpu.py, then the forward passes) is a comma list;
# "forward_pass" names the engines' whole-step measurement, "memory_bound" profile_memory_bound.py
# (efficient attention, memory-bound torch ops) and "forward_pass_plain" the plain-PyTorch
# decoders' steps (forward_pass.py's PLAIN_MODELS, into forward_pass_plain/), "small_copies"
# probe_small_copies.py, "cudnn_graphs" probe_cudnn_graphs.py (host time of cuDNN SDPA graph
# builds), "host_cpu" the host's speed at engine step work (emulator/host_cpu.py, the server side of
# the CPU calibration), "launch_cost" probe_launch_cost.py (the host's time per eager op on CUDA
# tensors, GPU idle and busy, against CPU tensors). Everything lands in
# one tarball because the device tool returns at most 8 files. STEP_LIMIT_S caps each step (timeout(1)): rows are written
# as they are measured, so a step cut short still returns what it measured.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/profile-out}
FAMILIES=${1:-gemm,attention,elementwise,copy,forward_pass}
WORK=/tmp/profile
mkdir -p "$WORK" "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.limit --format=csv
kernel_families=$(echo "$FAMILIES" | tr ',' '\n' | grep -vx -e forward_pass -e memory_bound -e forward_pass_plain -e small_copies -e cudnn_graphs -e host_cpu -e launch_cost \
    | paste -sd, -)
step() { timeout "${STEP_LIMIT_S:-0}" "$@"; }
has() { echo "$FAMILIES" | tr ',' '\n' | grep -qx "$1"; }
status=0
if [ -n "$kernel_families" ]; then
    step python3 emulator/profiler/profile_gpu.py --out "$WORK" --families "$kernel_families" \
        --max-seconds 480 || status=1
fi
if has memory_bound; then
    step python3 emulator/profiler/profile_memory_bound.py --out "$WORK" || status=1
fi
if has small_copies; then
    step python3 emulator/profiler/probe_small_copies.py --out "$WORK" || status=1
fi
if has host_cpu; then
    step python3 -m emulator.host_cpu --out "$WORK/host_cpu.json" || status=1
fi
if has launch_cost; then
    step python3 emulator/profiler/probe_launch_cost.py --out "$WORK" || status=1
fi
if has cudnn_graphs; then
    step python3 emulator/profiler/probe_cudnn_graphs.py --out "$WORK" || status=1
fi
forward_passes() {  # folder, forward_pass.py arguments
    local folder=$1; shift
    step python3 emulator/profiler/forward_pass.py --out "$WORK/$folder" --kernel-profile "$@" || status=1
    gzip -f "$WORK/$folder/kernels.csv" 2>/dev/null
}
has forward_pass && forward_passes forward_pass
has forward_pass_plain && forward_passes forward_pass_plain \
    --models "$(python3 -c 'from emulator.profiler.forward_pass import PLAIN_MODELS; print(",".join(PLAIN_MODELS))')"
tar czf "$OUT/profile.tgz" -C "$WORK" .
cp "$WORK/profile.log" "$OUT/" 2>/dev/null
ls -la "$WORK" "$WORK"/forward_pass* 2>/dev/null
exit $status
