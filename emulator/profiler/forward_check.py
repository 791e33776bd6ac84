"""Whole forward passes: the emulator's step time against the real GPU's.

forward_pass.py (beside this file) timed Llama-3 decoder steps (CUDA-graph replays) on a real
GPU; the results are under emulator/predictor/data/<sku>/forward_pass/. Here the same script runs
on virtual GPUs of that SKU under the profiled predictor, and each step's predicted time is set
beside the measured one. The steps' kernels were partly fitted on (profiler tables: off-grid
shapes only; generic kernels: KERNEL_FIT_COMPOSITIONS), so the held-out column says which steps
no kernel model saw. It sits above the predictor (it runs whole emulated processes through
emulator.vgpu_environment), which is why it lives with the profiler and not in emulator/predictor/.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from emulator.predictor import modelfile, tables

SCRIPT = Path(__file__).resolve().parent / "forward_pass.py"
TARGET = 0.05       # the bar: predicted step time within 5% of measured
# Which steps: the engine-style decoders' (fitted on in part) or the plain-PyTorch decoders'.
FOLDERS = {"engine": "forward_pass", "plain": "forward_pass_plain"}


def compare(sku: str, folder: str = "forward_pass") -> pd.DataFrame:
    """model, composition, measured_ms, emulated_ms, error, held_out for every measured step
    under data/<sku>/<folder>/."""
    from emulator.engines.envs import env_python
    from emulator.vgpu_environment import vgpu_environment
    measured = pd.read_csv(tables.DATA_DIR / sku / folder / "forward_pass.csv")
    with tempfile.TemporaryDirectory(prefix="revati-forward-") as tmp:
        env = vgpu_environment(1, sku, engine="vllm", workdir=Path(tmp))
        env["REVATI_PREDICTOR"] = f"profiled:{modelfile.ensure_model_file(sku)}"
        models = ",".join(measured["model"].unique())
        proc = subprocess.run([str(env_python("vllm")), str(SCRIPT), "--out", tmp, "--models", models], env=env,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"forward_pass.py on virtual GPUs failed:\n{proc.stderr[-3000:]}")
        emulated = pd.read_csv(Path(tmp) / "forward_pass.csv")
    table = measured.merge(emulated, on=["model", "composition"], suffixes=("_real", "_emu"))
    return pd.DataFrame({
        "model": table["model"], "composition": table["composition"],
        "measured_ms": table["graph_ms_real"], "emulated_ms": table["graph_ms_emu"],
        "error": table["graph_ms_emu"] / table["graph_ms_real"] - 1,
        "held_out": ~table["composition"].isin(tables.KERNEL_FIT_COMPOSITIONS) | (folder != "forward_pass"),
    })


def render_markdown(table: pd.DataFrame, sku: str, folder: str = "forward_pass") -> str:
    within = (table["error"].abs() <= TARGET).sum()
    steps = next(name for name, f in FOLDERS.items() if f == folder)
    lines = [f"# Whole forward passes on {sku}: emulated against measured ({steps} decoders)",
             "",
             f"Regenerate with `revati-tune predictor forward-pass --sku {sku} --steps {steps} --markdown`. Measured: "
             f"`emulator/profiler/forward_pass.py` on a real {sku.upper()} (CUDA-graph replays, "
             f"median); emulated: the same script on virtual {sku.upper()}s under the profiled predictor.",
             "",
             f"{within} of {len(table)} steps within {TARGET:.0%}; median |error| "
             f"{table['error'].abs().median():.1%}, largest {table['error'].abs().max():.1%}.",
             "",
             "| model | step | measured ms | emulated ms | error | kernels held out |",
             "|---|---|---:|---:|---:|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.model} | {r.composition} | {r.measured_ms:.3f} | {r.emulated_ms:.3f} | "
                     f"{r.error:+.1%} | {'yes' if r.held_out else 'no'} |")
    return "\n".join(lines) + "\n"


def render_text(table: pd.DataFrame) -> str:
    return table.to_string(index=False, formatters={"error": "{:+.1%}".format}) + "\n"
