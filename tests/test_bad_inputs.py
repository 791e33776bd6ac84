"""Bad input, refused early (issue 23): one table of bad study files and overrides, trace files and
command lines, each run through the real entry point (autotune.cli.main, as `revati-tune ARGS`), each
refused with a non-zero exit and a message that names the field and what would work, before any
engine process starts.

docs/bad_inputs.md is this table rendered with the messages as they are:

    REVATI_WRITE_BAD_INPUTS=1 python3 -m pytest -q tests/test_bad_inputs.py

writes it; without the variable, the test checks that it lists exactly these cases and messages.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import autotune
from autotune import cli, config

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad_inputs.md"
FLAGSHIP = "conf/llama70b_h100.yaml"
ENGINES = "conf/smoke_engines.yaml"
STUDY_COMMANDS = ("run", "search", "plan")
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@dataclass(frozen=True)
class Case:
    where: str                          # study file, trace file or CLI
    argv: tuple[str, ...]               # revati-tune's arguments; {tmp} is the case's folder
    field: str                          # how the message names the field
    fix: tuple[str, ...]                # what the message says would work
    files: tuple[tuple[str, str], ...] = ()     # (name, text) written to {tmp} first


def study(*args: str, field: str, fix: tuple[str, ...] | str, files=(), where="study file") -> Case:
    """revati-tune COMMAND STUDY OVERRIDES..., the flagship study unless a study file is given."""
    command, *rest = args
    if not rest or not rest[0].endswith(".yaml"):
        rest = [FLAGSHIP, *rest]
    return Case(where, (command, *rest), field, (fix,) if isinstance(fix, str) else fix, tuple(files))


def trace(name: str, text: str, *, field: str, fix: tuple[str, ...] | str, requests: int = 2,
          trace_format: str | None = None) -> Case:
    """A study run over a trace file written to {tmp}."""
    fmt = trace_format or ("azure" if name.endswith(".csv") else "jsonl")
    return study("search", f"workload.trace={{path:{{tmp}}/{name},format:{fmt}}}", f"workload.num_requests={requests}",
                 field=field, fix=fix, files=((name, text),), where="trace file")


def command(*argv: str, field: str, fix: tuple[str, ...] | str, files=()) -> Case:
    return Case("CLI", argv, field, (fix,) if isinstance(fix, str) else fix, tuple(files))


STUDY_FILE_HEAD = ("defaults:\n  - model: llama3_8b\n  - hardware: h100\n  - workload: chat\n  - slo: interactive\n"
                   "  - engine: vllm\n  - search: default\n  - _self_\nout: studies/mine\n")

CASES = [
    # ---- study files and their overrides
    study("search", "{tmp}/typo.yaml", field="wokload: unknown", fix="allowed: model, hardware, workload",
          files=(("typo.yaml", STUDY_FILE_HEAD + "wokload:\n  rate: 8\n"),)),
    study("search", "{tmp}/bad.yaml", field="search.trials", fix="must be an integer >= 1, got 'many'",
          files=(("bad.yaml", STUDY_FILE_HEAD + "search:\n  trials: many\n"),)),
    study("search", "conf/no_such_study.yaml", field="study file conf/no_such_study.yaml not found",
          fix="for example: conf/llama70b_h100.yaml"),
    study("search", "nonsense", field="override 'nonsense'", fix="is not KEY=VALUE (for example: workload.rate=8)"),
    study("search", "rate=3", field="rate: unknown", fix="did you mean workload.rate?"),
    study("search", "search.trialz=3", field="search.trialz: unknown", fix="search has: trials, runner, parallel"),
    study("search", "model=llama3_9b", field="model: llama3_9b is not an option", fix=("llama3_70b", "tiny_llama")),
    study("run", "engine=tgi", field="engine: tgi is not an option", fix="options: sglang, vllm"),
    study("search", "+model.hf_idd=x", field="model.hf_idd: unknown", fix="allowed: name, hf_id"),
    study("search", "slo=[1]", field="slo: pick one option by its name", fix="options: batch, interactive"),
    study("run", "engine.tensor_parallel_size=4", "hardware.sku=b300", field="hardware.sku",
          fix="known SKUs are a100, h100, h200"),
    study("search", "search.skus=[h200]", field="search.skus", fix="must include the study's hardware (h100"),
    study("search", "search.skus=[h100,h200]", "search.price_per_gpu_hour={h200: 0}",
          field="search.price_per_gpu_hour.h200", fix="must be a positive number of USD per GPU-hour"),
    study("search", "workload.rate=0", field="workload.rate", fix="must be > 0"),
    study("search", "workload.rate=fast", field="workload.rate", fix='must be a finite number or "inf"'),
    study("search", "workload.num_requests=-5", field="workload.num_requests", fix="must be an integer >= 1"),
    study("search", "workload.burstiness=0", field="workload.burstiness", fix="must be > 0"),
    study("search", "workload.output_len.mean=-3", field="workload.output_len.mean", fix="must be > 0"),
    study("search", "workload.prompt_len.kind=zipf", field="workload.prompt_len.kind", fix="'lognormal'"),
    study("search", "workload.prompt_len={kind:fixed,value:0}", field="workload.prompt_len",
          fix="++workload.prompt_len={kind:fixed,value:0}"),
    study("search", "++workload.prompt_len={kind:fixed,value:0}", field="workload.prompt_len.value",
          fix="must be >= 1"),
    study("search", "workload.max_concurrency=0", field="workload.max_concurrency", fix="must be an integer >= 1"),
    study("search", "workload.shared_prefix={groups:0,prefix_len:4}", field="workload.shared_prefix.groups",
          fix="must be an integer >= 1"),
    study("search", "workload.shared_prefix={groups:2,prefix_len:64,size:3}", field="workload.shared_prefix.size",
          fix="allowed: groups, prefix_len"),
    study("search", "+workload.base_url=http://10.0.0.1:8000", field="workload.base_url: unknown",
          fix="allowed: num_requests, rate"),
    study("search", "slo.ttft_ms=-5", field="slo.ttft_ms", fix="must be a positive number of milliseconds or null"),
    study("search", "slo.attainment=2", field="slo.attainment", fix="must be a share in (0, 1]"),
    study("search", "slo.ttft_ms=null", "slo.tpot_ms=null", field="slo:", fix="give at least one of ttft_ms"),
    study("search", "search.trials=0", field="search.trials", fix="must be an integer >= 1"),
    study("search", "search.parallel=0", field="search.parallel", fix="must be auto or an integer >= 1"),
    study("search", "search.sampler=cmaes", field="search.sampler", fix="one of tpe, random, nsga2, grid"),
    study("search", "search.max_gpus=32", field="search.max_gpus", fix="an integer from 1 to 16"),
    study("search", "search.space=[1]", field="search.space", fix="must be a mapping such as {KEY: VALUE}"),
    study("search", "search.space.max_num_seqs=[64,-1]", field="search.space.max_num_seqs",
          fix="must be a positive integer"),
    study("search", "search.space.tensor_parallel_size=[2,3]", field="search.space.tensor_parallel_size",
          fix=("64 attention heads", "leave 3 out")),
    study("search", "search.space.tensor_parallel_size=[16]", field="search.space.tensor_parallel_size",
          fix="use at most 8"),
    study("search", "search.max_gpus=2", field="search.space.tensor_parallel_size",
          fix=("over the budget search.max_gpus=2", "leave 4 out")),
    study("search", "search.storage=study.db", field="search.storage", fix="an Optuna storage URL or null"),
    study("search", "search.storage=foo://bar", field="search.storage: cannot open foo://bar",
          fix="give an Optuna storage URL that opens, e.g. sqlite:///"),
    study("search", "search.storage=sqlite:////no/such/folder/study.db",
          field="search.storage: cannot open sqlite:////no/such/folder/study.db",
          fix=("unable to open database file", "give an Optuna storage URL that opens")),
    study("search", ENGINES, "search.engines=[tgi]", field="search.engines", fix="vllm, sglang"),
    study("search", ENGINES, "+search.engine_args.sglang.max_num_seqs=4",
          field="search.engine_args.sglang.max_num_seqs", fix="known: tp_size"),
    study("run", "engine.tensor_parallel_size=3", field="engine.tensor_parallel_size",
          fix="does not divide the model's 64 attention heads: use one of [1, 2, 4, 8]"),
    study("run", "engine.tensor_parallel_size=16", field="engine.tensor_parallel_size", fix="use at most 8"),
    study("run", "engine.tensor_parallel_size=0", field="engine.tensor_parallel_size", fix="must be an integer >= 1"),
    study("run", field="engine: the weights take 131.4 GiB per GPU at tensor_parallel_size=1",
          fix="use at least 2 GPUs per replica (tensor_parallel_size x pipeline_parallel_size)"),
    study("run", "engine=sglang", field="engine: the weights take 131.4 GiB per GPU at tp_size=1",
          fix=("use at least 2 GPUs per replica (tp_size x pp_size)", "note: engine=sglang")),
    study("run", "engine.tensor_parallel_size=8", "engine.data_parallel_size=3", field="engine.data_parallel_size",
          fix="use data_parallel_size <= 2"),
    study("run", "engine.tensor_parallel_size=4", "engine.decode_instances=2", field="engine.decode_instances",
          fix="set prefill_instances >= 1 with them"),
    study("run", "engine.tensor_parallel_size=4", "engine.prefill_instances=1", "engine.pipeline_parallel_size=2",
          field="engine", fix="pipeline_parallel_size and data_parallel_size must be 1"),
    study("run", "engine.tensor_parallel_size=4", "engine.max_model_len=1000000", field="engine.max_model_len",
          fix="use at most 131072"),
    study("run", "engine.tensor_parallel_size=4", "engine.compilation_mode=9", field="engine.compilation_mode",
          fix="must be one of 0 (none)"),
    study("run", "engine.tensor_parallel_size=4", "engine.enforce_eager=maybe", field="engine.enforce_eager",
          fix="must be true or false"),
    study("run", "engine=sglang", "engine.tp_size=4", "engine.max_model_len=4096", field="engine.max_model_len",
          fix=("not a sglang argument", "known: tp_size")),
    study("run", "engine=sglang", "engine.tp_size=4", "engine.schedule_policy=priority",
          field="engine.schedule_policy", fix="use one of fcfs, lpm"),
    study("run", "engine.tensor_parallel_size=4", "search.trial_timeout_s=0", field="search.trial_timeout_s",
          fix="must be a positive number of seconds"),
    study("run", "engine.tensor_parallel_size=4", "out={tmp}/a_file", field="out: cannot create",
          fix="give a folder you can write", files=(("a_file", "not a folder\n"),)),
    # ---- trace files
    trace("t.csv", "TIMESTAMP,ContextTokens\n1,2\n", field="workload.trace.path",
          fix=("lacks the Azure trace column(s) GeneratedTokens", "it has TIMESTAMP, ContextTokens")),
    trace("t.csv", AZURE + "2,3,4\n1,3,4\n", field="workload.trace.path", fix="line 3: TIMESTAMP 1 is before "
          "the previous row's (2); sort the trace by TIMESTAMP"),
    trace("t.csv", AZURE + "1,-3,4\n", requests=1, field="workload.trace.path",
          fix="line 2: ContextTokens '-3' is negative; token counts are >= 0"),
    trace("t.csv", AZURE + "yesterday,3,4\n", requests=1, field="workload.trace.path",
          fix="is neither seconds nor 'YYYY-MM-DD HH:MM:SS[.f]'"),
    trace("t.csv", AZURE, field="workload.trace.path", fix="holds no requests; give a trace with a row per request"),
    trace("t.jsonl", '{"arrival_s": 1, "prompt_tokens": 1, "output_tokens": 1}\n'
                     '{"arrival_s": 0.5, "prompt_tokens": 1, "output_tokens": 1}\n',
          field="workload.trace.path", fix="line 2: arrival_s 0.5 is before the previous row's (1); sort the trace"),
    trace("t.jsonl", '{"arrival_s": 0, "prompt_tokens": 1}\n', requests=1, field="workload.trace.path",
          fix="line 1: expected {arrival_s, prompt_tokens, output_tokens, prefix_group}"),
    trace("t.jsonl", '{"arrival_s": -1, "prompt_tokens": 1, "output_tokens": 1}\n', requests=1,
          field="workload.trace.path", fix="line 1: arrival_s -1 is negative; times are seconds >= 0"),
    trace("t.csv", AZURE + "1,3,4\n2,3,4\n", requests=3, field="workload.num_requests",
          fix="lower num_requests to at most 2"),
    trace("t.csv", AZURE + "1,3,4\n", requests=1, trace_format="parquet", field="workload.trace.format",
          fix="must be one of 'azure', 'jsonl'"),
    study("search", "workload.trace={path:{tmp}/none.csv,format:azure}", "workload.num_requests=1",
          field="workload.trace.path: cannot read", fix="give an existing azure trace file", where="trace file"),
    study("search", "workload.trace={path:{tmp}/t.csv,format:azure,time_scale:0}", "workload.num_requests=1",
          field="workload.trace.time_scale", fix="must be > 0", files=(("t.csv", AZURE + "1,3,4\n"),),
          where="trace file"),
    study("search", "workload.trace={path:{tmp}/t.csv,format:azure,speed:2}", "workload.num_requests=1",
          field="workload.trace.speed", fix="allowed: path, format, time_scale", files=(("t.csv", AZURE + "1,3,4\n"),),
          where="trace file"),
    # ---- the command line
    command("exec", "--gpus", "0", "--sku", "h100", "--", "true", field="argument --gpus",
            fix="must be an integer from 1 to 16"),
    command("exec", "--gpus", "2", "--sku", "b300", "--", "true", field="argument --sku",
            fix="known SKUs are a100, h100, h200"),
    command("exec", "--gpus", "2", "--sku", "h100", "--timeout", "0", "--", "true", field="argument --timeout",
            fix="must be a number > 0"),
    command("exec", "--gpus", "2", "--sku", "h100", "--cpu-scale", "nan", "--", "true", field="argument --cpu-scale",
            fix="must be a number > 0"),
    command("exec", "--gpus", "2", "--sku", "h100", field="a command is needed after `--`",
            fix="revati-tune exec --gpus 2 --sku h100 -- nvidia-smi"),
    command("setup", "tgi", field="argument engine", fix="choose from 'sglang', 'vllm'"),
    command("run", FLAGSHIP, "engine.tensor_parallel_size=4", "out={tmp}/out", "--gpus", "4",
            field="unrecognized arguments: --gpus 4",
            fix="the study's values are set as KEY=VALUE"),
    command("plan", FLAGSHIP, "--rates", "0,4", field="argument --rates", fix="must be positive numbers"),
    command("plan", FLAGSHIP, "workload.rate=8", field="the following arguments are required: --rates",
            fix="--rates R1,R2"),
    command("plan", FLAGSHIP, "--rates", "2,4", "search.trials=0", field="search.trials",
            fix="must be an integer >= 1"),
    command("validate", "all", "--real-repeats", "0", field="argument --real-repeats", fix="at least 1"),
    command("validate", "all", "--timeout", "-1", field="argument --timeout", fix="must be a number of wall seconds > 0"),
    command("validate", "all", "--budget", "0", field="argument --budget", fix="must be a number of wall seconds > 0"),
    command("validate", "all", "--sku", "b300", field="argument --sku", fix="known SKUs are a100, h100, h200"),
    command("validate", "llama3_9b", field="unknown scenario 'llama3_9b'", fix="known: all, a model"),
    command("validate", "all", "--capacity", "llama3_8b-b16=fast", field="--capacity 'llama3_8b-b16=fast'",
            fix="expected GROUP=RPS with RPS > 0"),
    command("validate", "all", "--real-from", "{tmp}/runs.json", field="--real-from",
            fix="not a runs.json of validate", files=(("runs.json", "[]\n"),)),
    command("predictor", "accuracy", "--sku", "b300", field="argument --sku", fix="known SKUs are a100, h100, h200"),
    command("predictor", "accuracy", "--sku", "a100", field="no predictor measurements for SKU 'a100'",
            fix="SKUs with measurements: h100, h200"),
    command("predictor", "forward-pass", "--sku", "h200", "--steps", "fast", field="argument --steps",
            fix="choose from 'engine', 'plain'"),
    command("report", "{tmp}/no_study", field="$TMP/no_study", fix="neither a storage URL, nor a study file, "
            "nor a folder with study.db"),
]


@dataclass(frozen=True)
class Outcome:
    code: object                # the exit status (SystemExit's code for argparse), or what was raised
    stderr: str
    message: str                # the error as the doc shows it ($TMP for the case's folder)
    started: tuple[str, ...]    # what would have started a process, deployment or trial
    left: tuple[str, ...]       # server.log / processes.json found under the case's folder


def argv_of(case: Case, tmp: Path) -> list[str]:
    argv = [arg.replace("{tmp}", str(tmp)) for arg in case.argv]
    if argv[0] in STUDY_COMMANDS and not any(arg.startswith("out=") for arg in argv):
        argv.append(f"out={tmp}/out")
    return argv


def message_of(stderr: str, tmp: Path) -> str:
    """The error lines, with $TMP for tmp; of argparse's, its usage where it is one line."""
    lines = stderr.replace(str(tmp), "$TMP").replace(str(REPO) + "/", "").strip().splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"revati-tune[\w -]*: error: ", line)), 0)
    if start == 1 and lines[0].startswith("usage: "):
        start = 0
    return "\n".join(line.rstrip() for line in lines[start:])


def run_case(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    tmp.mkdir(parents=True)
    for name, text in case.files:
        (tmp / name).write_text(text)
    started = []

    def start(what):
        def refuse(*args, **kwargs):
            started.append(what)
            raise AssertionError(f"{what} was started for a bad input")
        return refuse
    monkeypatch.setattr(subprocess, "Popen", start("a process"))
    monkeypatch.setattr("emulator.deployment.serve", start("a deployment"))
    monkeypatch.setattr("autotune.local_runner.run_trials", start("a trial"))
    ray_runner = types.SimpleNamespace(run_trials=start("a Ray trial"))
    monkeypatch.setitem(sys.modules, "autotune.ray_runner", ray_runner)
    monkeypatch.setattr(autotune, "ray_runner", ray_runner, raising=False)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv_of(case, tmp))
        except SystemExit as exit:
            code = exit.code
        except BaseException as error:     # recorded: the case's test fails with it
            code = f"raised {type(error).__name__}: {error}"
    left = tuple(str(p.relative_to(tmp)) for name in ("server.log", "processes.json") for p in tmp.rglob(name))
    return Outcome(code, stderr.getvalue(), message_of(stderr.getvalue(), tmp), tuple(started), left)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> list[Outcome]:
    """Every case, run once (the per-case tests and the doc share them)."""
    root = tmp_path_factory.mktemp("bad")
    # `run` and `search` set how SIGINT and SIGTERM stop them: this process's are put back.
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.chdir(REPO)
            monkeypatch.delenv("REVATI_DIE_WITH_PARENT", raising=False)
            return [run_case(case, root / f"{i:02d}", monkeypatch) for i, case in enumerate(CASES, start=1)]
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def test_the_table_has_enough_distinct_cases():
    assert len(CASES) >= 30
    assert len({(case.argv, case.files) for case in CASES}) == len(CASES)
    assert {case.where for case in CASES} == {"study file", "trace file", "CLI"}


@pytest.mark.parametrize("index", range(len(CASES)), ids=[" ".join(case.argv)[:80] for case in CASES])
def test_a_bad_input_is_refused_early_naming_the_field_and_the_fix(index, outcomes):
    case, outcome = CASES[index], outcomes[index]
    assert not outcome.started and not outcome.left, outcome
    assert isinstance(outcome.code, int) and outcome.code != 0, outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    for words in (case.field, *case.fix):
        assert words in outcome.message, outcome.message


def test_the_doc_lists_exactly_these_cases_and_their_messages(outcomes):
    text = render(outcomes)
    if os.environ.get("REVATI_WRITE_BAD_INPUTS") == "1":
        DOC.write_text(text)
    assert DOC.is_file() and DOC.read_text() == text, (
        f"{DOC.relative_to(REPO)} does not list the current cases and messages: regenerate it with "
        f"REVATI_WRITE_BAD_INPUTS=1 python3 -m pytest -q tests/test_bad_inputs.py")


def render(outcomes: list[Outcome]) -> str:
    lines = [
        "# Bad input: what revati-tune refuses, and what it says",
        "",
        "Written by `tests/test_bad_inputs.py` (`REVATI_WRITE_BAD_INPUTS=1 python3 -m pytest -q "
        "tests/test_bad_inputs.py`), which fails when this file no longer lists exactly its cases and "
        "their messages. Each input runs through `revati-tune`'s entry point (`autotune.cli.main`) and is "
        "refused with a non-zero exit and no engine process, deployment or trial started. `$TMP` is the "
        "case's folder: files listed under an input are written there first, and the study commands "
        "(`run`, `search`, `plan`) are given `out=$TMP/out` unless the input sets `out`. Exit 2 is a "
        "refused configuration or argument, 1 a refused value found by the subcommand.",
        "",
        "| # | where | input | exit | message |",
        "|---|---|---|---|---|",
    ]
    for i, (case, outcome) in enumerate(zip(CASES, outcomes), start=1):
        typed = " ".join(["revati-tune", *(arg.replace("{tmp}", "$TMP") for arg in case.argv)])
        given = [_code(typed)]
        for name, text in case.files:
            given += [f"$TMP/{name}:", *(_code(line) for line in text.splitlines())]
        message = [_code(line) for line in outcome.message.splitlines()]
        lines.append(f"| {i} | {case.where} | {'<br>'.join(given)} | {outcome.code} | {'<br>'.join(message)} |")
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    """Inline code in a table cell: a backtick inside needs a double fence, a pipe its escape."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


# ---- good input: what must load

def test_run_of_the_flagship_with_another_engine_loads(tmp_path):
    """The study's `engine:` section and search.space are in vLLM's names; `run engine=sglang` uses
    neither: they are left out with a note, and the deployment is checked (not started)."""
    study = config.load(FLAGSHIP, ["engine=sglang", "engine.tp_size=4", f"out={tmp_path / 'run'}"], for_run=True)
    assert study.engine == "sglang" and study.run_config().knobs.tensor_parallel == 4
    assert "max_model_len" not in study.engine_args
    assert study.notes == ("engine=sglang: the study's engine settings max_model_len are not sglang arguments "
                           "and are left out (set sglang's own as engine.KEY=VALUE)",)
    assert not (tmp_path / "run").exists()


def test_plan_takes_overrides_after_its_rates(tmp_path, monkeypatch):
    """`revati-tune plan STUDY --rates R1,R2 KEY=VALUE ...` as its usage writes it."""
    planned = []
    monkeypatch.setattr("autotune.plan.plan", lambda study, overrides, rates: planned.append((overrides, rates)) or "")
    out = f"out={tmp_path / 'plan'}"
    assert cli.main(["plan", FLAGSHIP, "--rates", "2,4", "engine.tensor_parallel_size=4", out]) == 0
    assert planned == [(["engine.tensor_parallel_size=4", out], [2.0, 4.0])]
