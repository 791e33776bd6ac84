"""`revati-tune`: the command line.

    revati-tune doctor                      what is installed, what is missing and how to fix it
    revati-tune setup ENGINE [--force]      build (or adopt) the managed env of a serving engine
    revati-tune build [--force]             build the vGPU library
    revati-tune exec [--engine vllm] --gpus N --sku h100 -- CMD ...
                                            run CMD on N virtual GPUs of a SKU
    revati-tune predictor accuracy --sku h200 [--markdown]
                                            held-out error of the runtime predictor's models
    revati-tune predictor fit --sku h200    write the model file the C predictor loads
    revati-tune predictor forward-pass --sku h200
                                            emulated against measured whole forward passes
    revati-tune run STUDY.yaml [KEY=VALUE ...]
                                            serve a study's workload with one configuration on an
                                            emulated deployment, measured as `vllm bench serve` does
    revati-tune search STUDY.yaml [KEY=VALUE ...]
                                            search configurations (Optuna); writes a report
    revati-tune plan STUDY.yaml --rates 2,4,8   the cheapest deployment (fewest GPUs) that holds the SLO at each rate
    revati-tune report STUDY_DIR | compare OLD NEW
                                            the HTML report of a study; what moved between two

Plain argparse for the subcommands (the `exec -- CMD` passthrough needs nothing more); study
configuration goes through Hydra (autotune/config.py), with its override syntax.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

from emulator import leftovers
from emulator.engines import envs
from emulator.hardware import MAX_DEVICES, SKU_ALIASES, load_sku
from emulator.process_groups import end_group, signal_group
from emulator.timekeeper.server import Timekeeper
from emulator.vgpu_environment import vgpu_environment
from reports import cli as reports_cli

BUILD_MODULE = "emulator.vgpu.build"
# Seconds between looks at what an exec'd command holds in /dev/shm (to remove it once it ends).
LOOK_S = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.subcommand == "plan":   # its usage puts KEY=VALUE after --rates, where argparse takes no positional
        args.overrides += [arg for arg in extra if not arg.startswith("-")]
        extra = [arg for arg in extra if arg.startswith("-")]
    if extra:
        hint = ("; the study's values are set as KEY=VALUE, e.g. engine.tensor_parallel_size=4"
                if hasattr(args, "overrides") else "")
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if args.subcommand == "exec" and not args.command:
        args.parser.error("a command is needed after `--`, e.g. "
                          "`revati-tune exec --gpus 2 --sku h100 -- nvidia-smi`")
    try:
        return args.run(args)
    except Exception as error:
        if not isinstance(error, _errors_that_say_the_fix()):
            raise
        print(f"revati-tune: error: {error}", file=sys.stderr)
        return 1


def _errors_that_say_the_fix() -> tuple[type[Exception], ...]:
    """Errors whose message tells the user what to do: printed without a traceback."""
    errors: tuple[type[Exception], ...] = (ValueError, envs.EngineEnvError)
    try:
        return (*errors, importlib.import_module(BUILD_MODULE).BuildError)
    except ImportError:
        return errors


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="revati-tune", description="GPU-less autotuner for LLM serving.")
    commands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")

    doctor = commands.add_parser("doctor", help="check what is installed and say how to fix gaps")
    doctor.set_defaults(run=_doctor)

    setup = commands.add_parser("setup", help="build or verify the managed env of a serving engine")
    setup.add_argument("engine", choices=sorted(envs.RECIPES))
    setup.add_argument("--force", action="store_true", help="delete the env and rebuild it")
    setup.set_defaults(run=_setup)

    build = commands.add_parser("build", help="build the vGPU library")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(run=_build)

    run = commands.add_parser(
        "exec", help="run a command on virtual GPUs",
        usage="revati-tune exec [--engine ENGINE] --gpus N --sku SKU -- CMD [ARG ...]")
    run.add_argument("--engine", choices=sorted(envs.RECIPES),
                     help="put this engine's managed env first on PATH")
    run.add_argument("--gpus", type=_gpu_count, required=True,
                     help=f"number of virtual GPUs, 1 to {MAX_DEVICES}")
    run.add_argument("--sku", type=_sku_name, required=True,
                     help="GPU model: a name from conf/hardware (h100, h200, a100) or a yaml path")
    run.add_argument("--deadlock-after", type=_positive(zero=True), default=10.0, metavar="SECONDS",
                     help="fail when every thread has been blocked with nothing to wait for this "
                          "long (wall seconds; 0 never: for servers waiting on outside clients)")
    run.add_argument("--timeout", type=_positive(), default=None, metavar="SECONDS",
                     help="fail when the command runs longer than this (wall seconds)")
    run.add_argument("--cpu-scale", type=_positive(), default=None,
                     help="virtual seconds charged per second of host CPU time (default: the SKU's server "
                          "host against this one, measured in the command's Python; 1 where either is unknown)")
    run.add_argument("command", nargs="*", help="the command to run, after `--`")
    run.set_defaults(run=_exec, parser=run)

    _study_command(commands, "run", _run, "engine.tensor_parallel_size=4 workload.rate=8 out=runs/x",
                   "serve a study's workload with one configuration (the engine group's values) on virtual "
                   "GPUs, measured as `vllm bench serve` measures it")
    _study_command(commands, "search", _search, "workload.rate=8 search.trials=60 search.parallel=2",
                   "search the configurations of a study for the most good requests per GPU")

    plan = commands.add_parser(
        "plan", help="capacity planning: the cheapest deployment (with one GPU type, the fewest GPUs) that "
                     "holds the SLO at each of several rates",
        usage="revati-tune plan STUDY.yaml --rates R1,R2,... [KEY=VALUE ...]")
    plan.add_argument("study", type=Path)
    plan.add_argument("--rates", required=True, type=_rates, help="requests per second, comma-separated")
    plan.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    plan.set_defaults(run=_plan, parser=plan)

    reports_cli.register(commands)
    importlib.import_module("autotune.validate").register(commands)

    predictor = commands.add_parser("predictor", help="the runtime predictor's fitted models")
    actions = predictor.add_subparsers(dest="action", required=True, metavar="ACTION")
    accuracy = actions.add_parser("accuracy", help="print the held-out error table of a SKU's "
                                                   "models, from the committed measurements")
    accuracy.add_argument("--markdown", action="store_true", help="as a markdown document")
    fit = actions.add_parser("fit", help="fit a SKU's models and write the model file the C "
                                         "predictor loads; prints its path")
    forward = actions.add_parser("forward-pass", help="emulate the measured whole forward passes "
                                                      "and print emulated against measured step times")
    forward.add_argument("--markdown", action="store_true", help="as a markdown document")
    forward.add_argument("--steps", choices=("engine", "plain"), default="engine",
                         help="the engine-style decoder steps (forward_pass/, default) or the plain-PyTorch "
                              "decoders' (forward_pass_plain/)")
    for action, handler in ((accuracy, _predictor_accuracy), (fit, _predictor_fit),
                            (forward, _predictor_forward_pass)):
        action.add_argument("--sku", required=True, type=lambda text: _sku_name(text.lower()),
                            help="a SKU with measurements under emulator/predictor/data")
        action.set_defaults(run=handler)
    return parser


def _study_command(commands: argparse._SubParsersAction, name: str, handler: Callable, example: str,
                   help_text: str) -> None:
    parser = commands.add_parser(name, help=help_text, usage=f"revati-tune {name} STUDY.yaml [KEY=VALUE ...]")
    parser.add_argument("study", type=Path, help="a study file, e.g. conf/llama70b_h100.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"Hydra overrides, e.g. {example}")
    parser.set_defaults(run=handler, parser=parser)


def _gpu_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_DEVICES:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_DEVICES}, "
                                         f"got {text!r}")
    return count


def _positive(zero: bool = False) -> Callable[[str], float]:
    """A finite number > 0 (>= 0 where 0 has a meaning) for argparse, refused with the fix."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value) or value < 0 or value == 0 and not zero:
            raise argparse.ArgumentTypeError(f"must be a number {'>= 0' if zero else '> 0'}, got {text!r}")
        return value
    return parse


def _sku_name(text: str) -> str:
    try:
        load_sku(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


# ---- doctor ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str
    required: bool = True


def doctor_checks() -> list[Check]:
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    nvcc = cuda_home / "bin" / "nvcc"
    nvcc_found = str(nvcc) if nvcc.exists() else shutil.which("nvcc")
    compiler = os.environ.get("CC") or shutil.which("cc")
    # The toolkit nvcc belongs to has the headers too, wherever it is installed.
    headers = [cuda_home / "include" / "cuda.h"]
    if nvcc_found:
        headers.append(Path(nvcc_found).resolve().parent.parent / "include" / "cuda.h")
    header = next((h for h in headers if h.exists()), headers[0])
    checks = [
        Check("python", sys.version_info >= (3, 11), sys.version.split()[0],
              "install Python 3.11 or newer"),
        Check("C compiler (cc)", compiler is not None, compiler or "not on PATH",
              "apt-get install gcc"),
        Check("nvcc", nvcc_found is not None, nvcc_found or f"not at {nvcc} nor on PATH",
              f"install CUDA toolkit 13 at {cuda_home} (or set CUDA_HOME)"),
        Check("CUDA headers", header.exists(), str(header),
              f"install CUDA toolkit 13 at {cuda_home} (or set CUDA_HOME)"),
        _library_check(),
    ]
    for engine in sorted(envs.RECIPES):
        ready = envs.is_ready(engine)
        checks.append(Check(f"{engine} env", ready,
                            f"{envs.env_path(engine)}{'' if ready else ' (not set up)'}",
                            f"revati-tune setup {engine}", required=False))
    return checks


def _library_check() -> Check:
    try:
        build = importlib.import_module(BUILD_MODULE)
    except ImportError as error:
        if error.name == BUILD_MODULE:
            return Check("vGPU library", False, "vGPU build module missing "
                         "(emulator/vgpu/build.py)", "use a complete revati-tune checkout")
        return Check("vGPU library", False, f"vGPU build module failed to import: {error}",
                     f"pip install -e . (or fix {BUILD_MODULE})")
    try:
        built, libdir = build.library_status()
    except build.BuildError as error:  # no CUDA headers to build against
        return Check("vGPU library", False, str(error), "see the CUDA headers check")
    return Check("vGPU library", built, f"{libdir}{'' if built else ' (not built)'}",
                 "revati-tune build")


def _doctor(args: argparse.Namespace) -> int:
    checks = doctor_checks()
    table = Table(title="revati-tune doctor")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        status = "[green]ok" if check.ok else "[red]missing" if check.required else "[yellow]warn"
        table.add_row(check.name, status, check.detail, "" if check.ok else check.fix)
    Console().print(table)
    missing = [check for check in checks if check.required and not check.ok]
    if missing:
        print(f"{len(missing)} required piece(s) missing: {', '.join(c.name for c in missing)}")
        return 1
    return 0


# ---- setup, build ------------------------------------------------------------------------------

def _setup(args: argparse.Namespace) -> int:
    envs.setup(args.engine, force=args.force)
    return 0


def _build(args: argparse.Namespace) -> int:
    build = importlib.import_module(BUILD_MODULE)
    print(build.build_library(force=args.force, echo=print))
    return 0


# ---- predictor ---------------------------------------------------------------------------------

NO_MEASUREMENTS = 2


def _predictor_accuracy(args: argparse.Namespace) -> int:
    # Imported here: pandas would cost every other subcommand (exec above all) start-up time.
    from emulator.predictor import accuracy, modelfile, models, tables
    sku = SKU_ALIASES.get(args.sku, args.sku)
    try:
        measured = tables.load(sku)
    except tables.NoMeasurements as error:
        print(f"revati-tune: {error}", file=sys.stderr)
        return NO_MEASUREMENTS
    table = accuracy.accuracy_of(measured, models.fit(measured, load_sku(sku)), modelfile.ensure_model_file(sku))
    print(accuracy.render_markdown(table, measured) if args.markdown
          else accuracy.render_text(table), end="")
    return 0


def _predictor_fit(args: argparse.Namespace) -> int:
    from emulator.predictor import modelfile, tables
    try:
        print(modelfile.ensure_model_file(SKU_ALIASES.get(args.sku, args.sku)))
    except tables.NoMeasurements as error:
        print(f"revati-tune: {error}", file=sys.stderr)
        return NO_MEASUREMENTS
    return 0


def _predictor_forward_pass(args: argparse.Namespace) -> int:
    from emulator.predictor import tables
    from emulator.profiler import forward_check
    sku = SKU_ALIASES.get(args.sku, args.sku)
    folder = forward_check.FOLDERS[args.steps]
    if not (tables.DATA_DIR / sku / folder / "forward_pass.csv").is_file():
        print(f"revati-tune: no measured forward passes for SKU {sku!r} (emulator/predictor/data/{sku}/"
              f"{folder}/)", file=sys.stderr)
        return NO_MEASUREMENTS
    table = forward_check.compare(sku, folder)
    print(forward_check.render_markdown(table, sku, folder) if args.markdown else forward_check.render_text(table),
          end="")
    return 0


# ---- run, search, plan ------------------------------------------------------------------------------

def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",")]
    except ValueError:
        rates = []
    if not rates or any(not r > 0 for r in rates):
        raise argparse.ArgumentTypeError(f"must be positive numbers separated by commas, e.g. 2,4,8; got {text!r}")
    return rates


def _run(args: argparse.Namespace) -> int:
    from autotune import config as study_config
    from autotune.progress import RunProgress, summary_table
    from emulator.deployment import RunFailed, die_with_parent, serve, stop_like_ctrl_c
    stop_like_ctrl_c()
    try:
        die_with_parent()
        config = study_config.load(args.study, args.overrides, for_run=True)
        _print_notes(config)
        run_config = config.run_config()
        with RunProgress(config.workload) as progress:
            summary = serve(run_config, config.out, progress=progress.update)
    except RunFailed as error:
        print(f"revati-tune: the run failed: {error}", file=sys.stderr)
        return 1
    except ValueError as error:         # refused before launch: names the field or knob and the fix
        print(f"revati-tune: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("revati-tune: interrupted; the deployment was stopped", file=sys.stderr)
        return 130
    Console().print(summary_table(summary))
    for note in summary.config["emulation_notes"]:
        print(f"  note: {note}")
    print(f"results in {config.out}")
    return 0


def _print_notes(config) -> None:
    # Not prefixed "revati-tune:": a trial's reason is the last such line of its log (autotune/trial.py).
    for note in config.notes:
        print(f"note: {note}", file=sys.stderr)


def _search(args: argparse.Namespace) -> int:
    from autotune import config as study_config
    from autotune.search import search
    try:
        config = study_config.load(args.study, args.overrides)
    except study_config.ConfigError as error:
        print(f"revati-tune: {error}", file=sys.stderr)
        return 2
    _print_notes(config)
    signal.signal(signal.SIGINT, signal.default_int_handler)      # also in a shell's background job
    try:
        report = search(config)
    except study_config.ConfigError as error:      # its storage or out folder cannot be opened
        print(f"revati-tune: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"revati-tune: stopped; completed trials are kept in {config.storage}; run the same command "
              f"to resume", file=sys.stderr)
        return 130
    print(f"report: {report}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from autotune import config as study_config
    from autotune.plan import plan
    try:
        _print_notes(study_config.load(args.study, args.overrides))     # errors in the study file show before any run
    except study_config.ConfigError as error:
        print(f"revati-tune: {error}", file=sys.stderr)
        return 2
    try:
        print(plan(args.study, args.overrides, args.rates))
    except study_config.ConfigError as error:      # its storage or out folder cannot be opened
        print(f"revati-tune: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("revati-tune: stopped; run the same command to resume", file=sys.stderr)
        return 130
    return 0


# ---- exec --------------------------------------------------------------------------------------

TIMEKEEPER_FAILED = 3


def _exec(args: argparse.Namespace) -> int:
    """Run the command, and every process it starts, on virtual GPUs in virtual time."""
    cpu_scale = args.cpu_scale if args.cpu_scale is not None else _exec_calibration(args)
    timekeeper = Timekeeper(cpu_scale=cpu_scale, watchdog_s=args.timeout,
                            deadlock_after_s=args.deadlock_after or float("inf"),
                            log=lambda line: print(line, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="revati-exec-") as workdir, timekeeper:
        # What the command leaves besides processes (its TMPDIR, /dev/shm files it held) goes when
        # it ends, as a deployment's does (emulator/leftovers.py).
        record = Path(workdir) / leftovers.RECORD_FILE
        kept = leftovers.Leftovers(record)
        env = kept.environment(vgpu_environment(args.gpus, args.sku, engine=args.engine, workdir=Path(workdir)))
        env.update(timekeeper.env())
        try:
            returncode = run_process_group(args.command, env, stop=lambda: timekeeper.failure is not None,
                                           look=lambda pid: kept.look_at(leftovers.session_pids({pid})))
        finally:
            leftovers.sweep(record)
        return TIMEKEEPER_FAILED if timekeeper.failure else returncode


def _exec_calibration(args: argparse.Namespace) -> float:
    """cpu_scale for exec, as `run` calibrates it (emulator/host_cpu.py): measured in the Python that
    will run the command (the engine env's, or the command's own interpreter), said on stderr."""
    from emulator.host_cpu import calibrate
    path = os.pathsep.join(filter(None, (str(envs.env_python(args.engine).parent) if args.engine else None,
                                         os.environ.get("PATH"))))
    program = shutil.which(args.command[0], path=path) if args.command else None
    if program is None or not Path(program).name.startswith("python"):
        print(f"revati-tune: host CPU time charged 1:1 (not a Python command to measure this host in; "
              f"--cpu-scale sets it)", file=sys.stderr)
        return 1.0
    try:
        calibration = calibrate(load_sku(args.sku).sku, Path(program))
    except RuntimeError as error:     # no torch there: the benchmark dispatches torch ops
        print(f"revati-tune: host CPU time charged 1:1 ({error}; --cpu-scale sets it)", file=sys.stderr)
        return 1.0
    print(f"revati-tune: {calibration.note}", file=sys.stderr)
    return calibration.cpu_scale


def run_process_group(command: list[str], env: dict[str, str], stop: Callable[[], bool] = lambda: False,
                      look: Callable[[int], None] = lambda pid: None) -> int:
    """Run command in a session of its own and return its exit status (128+N if killed by
    signal N). SIGINT, SIGTERM and SIGHUP sent to us are forwarded to its whole process group,
    and whatever is left of the group when the command exits, or when stop() turns true, is
    terminated, then killed. look(session id) is called about every LOOK_S while it runs."""
    child: subprocess.Popen | None = None
    early: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if child is None:
            early.append(signum)
        else:
            signal_group(child.pid, signum)

    # SIGHUP too: in its own session the child no longer gets the terminal's hangup.
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, forward) for signum in forwarded}
    try:
        try:
            child = subprocess.Popen(command, env=env, start_new_session=True)
        except OSError as error:
            print(f"revati-tune: cannot run {command[0]}: {error.strerror}", file=sys.stderr)
            return 127 if isinstance(error, FileNotFoundError) else 126
        for signum in early:
            signal_group(child.pid, signum)
        last_look = 0.0
        while (returncode := _wait(child, 0.1)) is None:
            if time.monotonic() - last_look > LOOK_S:
                look(child.pid)
                last_look = time.monotonic()
            if stop():
                end_group(child.pid)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child is not None:
            end_group(child.pid)
    return 128 - returncode if returncode < 0 else returncode


def _wait(child: subprocess.Popen, seconds: float) -> int | None:
    try:
        return child.wait(seconds)
    except subprocess.TimeoutExpired:
        return None




if __name__ == "__main__":
    sys.exit(main())
