#!/bin/bash
# Fill .whl/ and .carry/ (both git-ignored) for docs/fidelity/run_on_device.sh, on this machine:
#   bash docs/fidelity/prepare_carry.sh [SKU]     (the SKU whose predictor model file travels; h200)
set -eu
SKU=${1:-h200}
for wheel in cffi==2.0.0 pycparser==3.00 pyzmq==27.1.0; do
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$wheel"
done
MODEL=$(python3 -c "from emulator.predictor.modelfile import ensure_model_file; print(ensure_model_file('$SKU'))")
rm -rf .carry/revati_home && mkdir -p .carry/revati_home/predictor && cp "$MODEL" .carry/revati_home/predictor/
