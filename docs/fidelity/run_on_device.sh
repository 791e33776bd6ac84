#!/bin/bash
# How docs/fidelity/<sku>.csv and .md were measured: `revati-tune validate` on a lent GPU machine.
#
#   device tool: run(command="bash docs/fidelity/run_on_device.sh SCENARIO... ", carry=[".whl", ".carry"])
#
# The GPU machines have torch, transformers and aiohttp but no registry: pyzmq, cffi and pycparser
# (the Timekeeper's) travel as wheels in .whl/ and the predictor's model file in .carry/, both made
# by docs/fidelity/prepare_carry.sh. The vGPU library is built there (gcc and CUDA headers are on
# the image), after docs/fidelity/missing_cuda_symbols.py has added any CUDA entry point that the
# installed torch imports and the library lacks. Results go to $OUT: the table, the console log,
# device facts, the run folders (runs.tgz). ATTENTION_CHECK=1 also runs attention_check.py.
#
# Each scenario is served --real-repeats times (default 3) on the GPU and once emulated, about two
# minutes a scenario on an H100 (more for llama3_8b and its prefix and long groups): split `all` over
# several calls with --budget under the call's limit, and pass the capacity of a group measured in an
# earlier call (--capacity GROUP=RPS, the median real req/s of its overloaded scenario).
set -u
OUT=${OUT:-/tmp/validate-out}
SKU_TABLE=${SKU_TABLE:-$OUT/fidelity}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site REVATI_HOME=/tmp/revati_home
mkdir -p $REVATI_HOME/predictor && cp .carry/revati_home/predictor/* $REVATI_HOME/predictor/
# torch here may import CUDA entry points that the library's surface (scanned from torch 2.14)
# lacks: add them as stubs and build the library here (gcc and the CUDA headers are on the image).
# --real-only serves the real side alone (emulated later with --real-from): no library needed.
LIB="not built (--real-only)"
if [[ " $* " != *" --real-only "* ]]; then
    python3 docs/fidelity/missing_cuda_symbols.py --apply > $OUT/surface_added.txt
    cat $OUT/surface_added.txt
    LIB=$(python3 -c "from emulator.vgpu.build import build_library; print(build_library())") || exit 1
fi
{ nvidia-smi; nproc; free -g; uname -r; which nvcc gcc; python3 -c "import torch, transformers, aiohttp, zmq; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, \
'aiohttp', aiohttp.__version__, 'pyzmq', zmq.__version__)"; echo "vGPU library: $LIB"; } > $OUT/device.txt 2>&1
cat $OUT/device.txt
[ -n "${ATTENTION_CHECK:-}" ] && python3 docs/fidelity/attention_check.py --out $OUT/attention.csv
python3 -m autotune.validate "$@" --out /tmp/validate-runs --table "$SKU_TABLE" 2>&1 | tee $OUT/validate.log
status=${PIPESTATUS[0]}

tar czf $OUT/runs.tgz -C /tmp validate-runs 2>/dev/null
ls -la $OUT
exit $status
