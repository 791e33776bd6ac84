"""Reports on synthetic studies: loading, the Pareto front, the HTML report, exports, compare, the
capacity plan table, the CLI, and a screenshot that shows the Pareto plot was drawn.

The studies are built with Optuna's API to the study driver's contract (user_attrs outcome,
knobs, gpus, metrics, goodput_per_gpu, slo_attainment, run_dir, deploy_command, command); each
run folder holds a small requests.parquet (written through emulator.metrics.records_frame, the
same code a real run uses) and summary.json.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest

from emulator import metrics
from reports import cli, screenshot
from reports.compare import compare
from reports.figures import PARETO_COLOR
from reports.loading import load_study, trials_frame
from reports.pareto import best_by_gpus, hypervolume, pick
from reports.plan import NONE_HOLDS, plan_table
from reports.report import write_report

optuna.logging.set_verbosity(optuna.logging.WARNING)
SLO = {"ttft_ms": 500, "tpot_ms": 50, "e2el_ms": None, "attainment": 0.9}
CONFIG = {"model": "llama3_8b", "hf_id": "meta-llama/Llama-3.1-8B-Instruct", "hardware": "h100", "engine": "vllm",
          "workload": {"num_requests": 20, "rate": 4.0, "prompt_len": {"kind": "fixed", "value": 512}, "trace": None},
          "slo": SLO, "search": {"trials": 8}, "out": "runs/x"}
FAILED_REASON = "the vllm server exited with status 1 before the workload ended: CUDA out of memory"
INFEASIBLE_REASON = "tensor_parallel_size 3 does not divide the 32 attention heads"

# (outcome, gpus, tensor_parallel_size, max_num_seqs, goodput_per_gpu, slo_attainment, reason)
TRIALS = [
    ("ok", 1, 1, 64, 3.0, 0.95, None),          # front
    ("ok", 2, 2, 64, 3.5, 0.93, None),          # front
    ("ok", 2, 2, 128, 2.0, 0.99, None),         # dominated by trial 1
    ("ok", 4, 4, 256, 5.0, 0.50, None),         # best goodput, but misses the SLO
    ("failed", 8, 8, 64, None, None, FAILED_REASON),
    ("infeasible", 3, 3, 64, None, None, INFEASIBLE_REASON),
    ("timeout", 4, 2, 512, None, None, "ran past 1800 s"),
    ("ok", 4, 4, 128, 4.0, 0.92, None),         # front
]


def _records(n: int = 20) -> list[dict]:
    records = []
    for i in range(n):
        sent = 0.25 * i
        first = sent + 0.05 + 0.01 * (i % 5)
        chunks = [first + 0.02 * k for k in range(16)]
        records.append({"request_id": f"req-{i}", "arrival_s": sent, "sent_s": sent, "first_token_s": first,
                        "finish_s": chunks[-1], "done_s": chunks[-1], "prompt_tokens": 512, "output_tokens": 16,
                        "requested_output_tokens": 16, "error": None, "chunk_times": chunks})
    records.append({"request_id": "req-failed", "arrival_s": 1.0, "sent_s": 1.0, "finish_s": None, "done_s": 1.5,
                    "first_token_s": None, "prompt_tokens": 512, "error": "connection reset", "chunk_times": []})
    return records


def _write_run(run_dir: Path) -> dict:
    run_dir.mkdir(parents=True)
    records = _records()
    metrics.records_frame(records).to_parquet(run_dir / "requests.parquet")
    summary = {"metrics": metrics.compute(records, {"ttft": 500, "tpot": 50}),
               "gpu_time_by_family": [{"family": "gemm", "launches": 900, "seconds": 9.0, "share": 0.9},
                                      {"family": "attention", "launches": 100, "seconds": 1.0, "share": 0.1}],
               "virtual_seconds": 5.3, "wall_seconds": 7.1, "config": {"server_command": ["vllm", "serve"]}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary["metrics"]


def make_study(out: Path, trials=TRIALS, name: str = "synthetic", engines=None, skus=None,
               prices=None, layouts=None) -> optuna.Study:
    """engines, skus, layouts: each trial's engine, GPU type and layout (default vllm, the study's
    h100 and aggregated for all); prices: the study's SKU -> USD per GPU-hour (default: the SKU's
    default price). A pruned trial has the metrics of its first 5 requests."""
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name=name,
                                directions=["maximize", "minimize"])
    study.set_user_attr("config", {**CONFIG, **({"prices": prices} if prices else {})})
    study.set_user_attr("slo", SLO)
    for number, (outcome, gpus, tp, seqs, goodput, attainment, reason) in enumerate(trials):
        knobs = {"tensor_parallel_size": tp, "pipeline_parallel_size": 1, "data_parallel_size": gpus // tp,
                 "max_num_seqs": seqs, "enable_prefix_caching": None}
        attrs = {"outcome": outcome, "knobs": knobs, "gpus": gpus, "engine": engines[number] if engines else "vllm",
                 **({"sku": skus[number]} if skus else {}),
                 **({"layout": layouts[number]} if layouts else {}),
                 "deploy_command": f"vllm serve meta-llama/Llama-3.1-8B-Instruct --tensor-parallel-size {tp} "
                                   f"--data-parallel-size {gpus // tp} --max-num-seqs {seqs}",
                 "command": f"revati-tune run --model llama3_8b --sku h100 --tp {tp} --max-num-seqs {seqs}"}
        if outcome == "ok":
            run_dir = out / name / f"{number:04d}"
            attrs.update(metrics=_write_run(run_dir), goodput_per_gpu=goodput, slo_attainment=attainment,
                         run_dir=str(run_dir))
            trial = optuna.trial.create_trial(values=[goodput, gpus], user_attrs=attrs)
        else:
            attrs["reason"] = reason
            if outcome == "pruned":
                attrs["metrics"] = metrics.compute(_records(5), {"ttft": 500, "tpot": 50})
            trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs)
        study.add_trial(trial)
    return study


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    make_study(out)
    return out


@pytest.fixture(scope="module")
def report(study_dir, tmp_path_factory) -> Path:
    return write_report(study_dir, tmp_path_factory.mktemp("report"))


def test_loading_from_out_dir_url_and_file(study_dir):
    by_dir = trials_frame(load_study(study_dir))
    by_url = trials_frame(load_study(f"sqlite:///{study_dir / 'study.db'}", "synthetic"))
    by_file = trials_frame(load_study(study_dir / "study.db"))
    assert len(by_dir) == len(TRIALS) and by_dir.equals(by_url) and by_dir.equals(by_file)
    assert list(by_dir["outcome"]) == [t[0] for t in TRIALS]
    row = by_dir.iloc[0]
    assert row["tensor_parallel_size"] == 1 and row["max_num_seqs"] == 64
    assert row["p99_ttft_ms"] > 0 and row["request_throughput"] > 0
    assert row["run_dir"].endswith("0000") and row["deploy_command"].startswith("vllm serve")
    assert by_dir.iloc[4]["reason"] == FAILED_REASON
    # Null knobs are the engine's default: left out of the canonical knobs trials are matched by.
    assert "enable_prefix_caching" not in json.loads(row["knobs"])


def test_loading_refuses_ambiguous_and_unknown(study_dir, tmp_path):
    with pytest.raises(ValueError, match="neither a storage URL"):
        load_study(tmp_path)
    with pytest.raises(ValueError, match="no study 'nope'"):
        load_study(study_dir, "nope")
    make_study(tmp_path, TRIALS[:1], name="a")
    make_study(tmp_path, TRIALS[:1], name="b")
    with pytest.raises(ValueError, match="holds 2 studies"):
        load_study(tmp_path)


def test_feasible_and_pareto(study_dir):
    trials = trials_frame(load_study(study_dir))
    assert list(trials["feasible"]) == [True, True, True, False, False, False, False, True]
    # Trial 2 is dominated by trial 1 (same GPUs, less goodput); trial 3 beats everything but
    # missed the SLO; trials that did not run are never on the front.
    assert list(trials.index[trials["pareto"]]) == [0, 1, 7]
    assert best_by_gpus(trials).to_dict() == {1: 3.0, 2: 3.5, 4: 4.0}


def test_hypervolume_counts_only_the_feasible_front(study_dir):
    trials = trials_frame(load_study(study_dir))
    # Front (1 GPU, 3.0), (2, 3.5), (4, 4.0) under a 5-GPU bound: 3.0*4 + 0.5*3 + 0.5*1.
    assert hypervolume(trials, 5) == pytest.approx(14.0)
    assert hypervolume(trials[trials["gpus"] != 1], 5) == pytest.approx(3.5 * 3 + 0.5 * 1)


def test_equal_trials_are_both_on_the_front(tmp_path):
    trials = trials_frame(make_study(tmp_path, [TRIALS[0], TRIALS[0]]))
    assert list(trials["pareto"]) == [True, True]


def test_report_contents(report):
    html = report.read_text()
    assert report.name == "report.html"
    for div_id in ("pareto", "pareto-table", "deploy", "trials", "failures", "header"):
        assert f'id="{div_id}"' in html, div_id
    assert "llama3_8b (meta-llama/Llama-3.1-8B-Instruct)" in html and "<dd>H100 at $3.00 per GPU-hour</dd>" in html
    assert "TTFT ≤ 500 ms, TPOT ≤ 50 ms; at least 90% of requests good" in html
    assert "8 trials: 5 ran (4 held the SLO, 1 missed it), 2 failed or timed out, 1 infeasible" in html
    deploy = html[html.index('id="deploy"'):html.index('id="trials"')]
    for tp, seqs in ((1, 64), (2, 64), (4, 128)):
        assert f"--tensor-parallel-size {tp} --data-parallel-size" in deploy and f"--max-num-seqs {seqs}" in deploy
    assert "--max-num-seqs 256" not in deploy
    # Each recommended configuration's manifest and command, beside the report (tests/test_manifests.py).
    linked = re.findall(r'href="(deploy/trial-\d+\.(?:yaml|sh))"', deploy)
    assert len(linked) == 2 * 3 and all((report.parent / path).is_file() for path in linked)
    failures = html[html.index('id="failures"'):]
    for reason in (FAILED_REASON, INFEASIBLE_REASON, "ran past 1800 s"):
        assert reason in failures
    # A drill-down per trial that ran, each with its three figures (CDFs, load, GPU time).
    for number in (0, 1, 2, 3, 7):
        assert f'id="trial-{number}"' in html
    assert html.count('class="figure"') == 5 * 3
    assert "TTFT p50 / p90 / p99 (ms)" in html


def test_a_report_over_two_engines_compares_them(tmp_path):
    engines = ["vllm", "sglang", "sglang", "vllm", "vllm", "sglang", "vllm", "sglang"]
    html = write_report(make_study(tmp_path / "s", engines=engines), tmp_path / "r").read_text()
    table = _html_table(html, "engines-table")
    assert [r["engine"] for r in table] == ["vllm", "sglang"]
    assert [(r["trials"], r["ran"], r["held the SLO"]) for r in table] == [("4", "2", "1"), ("4", "3", "3")]
    # Per engine its best feasible trial: vLLM's trial 0 (3 good req/s per GPU), SGLang's trial 7 (4).
    assert [(r["best goodput/GPU"], r["its GPUs"]) for r in table] == [("3 (trial 0)", "1"), ("4 (trial 7)", "4")]
    assert [r["fewest GPUs holding the SLO"] for r in table] == ["1", "2"]
    assert [r["engine"] for r in _html_table(html, "pareto-table")] == ["vllm", "sglang", "sglang"]
    assert "Trial 7 (sglang)" in html


def test_a_report_over_two_gpu_types_picks_by_goodput_per_dollar_and_follows_the_prices(tmp_path):
    # The H200 serves 20% more per GPU; at $4.00 against $3.00 an hour that is less per dollar.
    two = [("ok", 1, 1, 64, 3.0, 0.95, None), ("ok", 1, 1, 64, 3.6, 0.95, None)]
    study = make_study(tmp_path / "s", two, skus=["h100", "h200"], prices={"h100": 3.0, "h200": 4.0})
    trials = trials_frame(study)
    assert list(trials["goodput_per_dollar"]) == pytest.approx([3600.0, 3240.0])
    assert list(trials["dollars_per_hour"]) == [3.0, 4.0]
    assert pick(trials)["sku"] == "h100" and list(trials["pareto"]) == [True, False]
    # Priced at $2.50, the H200 is the cheaper good request: the pick and the front change.
    repriced = trials_frame(study, {"h200": 2.5})
    assert pick(repriced)["sku"] == "h200" and list(repriced["pareto"]) == [False, True]
    html = write_report(study, tmp_path / "r", prices={"h200": 2.5}).read_text()
    assert "H200 at $2.50 per GPU-hour" in html and "trial 1: 1 x H200" in html
    table = _html_table(html, "skus-table")
    assert [(r["sku"], r["its good req/$"]) for r in table] == [("h100", "3600"), ("h200", "5184")]
    assert [r["GPU"] for r in _html_table(html, "pareto-table")] == ["H200"]
    with pytest.raises(ValueError, match="no price for h200"):
        trials_frame(make_study(tmp_path / "u", two, skus=["h100", "h200"], prices={"h100": 3.0}))


def test_a_report_of_layouts_says_why_one_lost_with_the_latencies_it_was_pruned_for(tmp_path):
    pruned = "pruned after 5 of 20 requests: 5 missed the SLOs (ttft 500 ms, tpot 50 ms)"
    two = [("pruned", 1, 1, 64, None, None, pruned), ("ok", 2, 1, 64, 3.0, 0.95, None)]
    study = make_study(tmp_path / "s", two, layouts=["aggregated", "disaggregated"])
    html = write_report(study, tmp_path / "r").read_text()
    aggregated, disaggregated = _html_table(html, "layouts-table")
    assert (aggregated["layout"], aggregated["held the SLO"], disaggregated["held the SLO"]) == ("aggregated", "0", "1")
    assert aggregated["why none held it"] == f"trial 0 (1 GPUs): pruned: {pruned}"
    assert aggregated["its TTFT / TPOT p50 (ms)"] == "70 / 20" and disaggregated["why none held it"] == ""
    assert [r["layout"] for r in _html_table(html, "pareto-table")] == ["disaggregated"]


def test_a_single_gpu_type_study_has_the_per_gpu_front_and_its_price(study_dir):
    trials = trials_frame(load_study(study_dir))
    # A study from before prices were recorded: its SKU's default price.
    assert set(trials["sku"]) == {"h100"} and set(trials["price_per_gpu_hour"]) == {3.0}
    assert pick(trials)["number"] == 7     # the most goodput per GPU that held the SLO (4.0 req/s)


def _html_table(html: str, table_id: str) -> list[dict]:
    """The rows of a pandas-written table, as {header: cell text}."""
    table = re.search(rf'<table[^>]*id="{table_id}".*?</table>', html, re.S).group(0)
    header = re.findall(r"<th>(.*?)</th>", table, re.S)
    rows = re.findall(r"<tr>\s*(<td>.*?)</tr>", table, re.S)
    return [dict(zip(header, (cell.strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)))) for row in rows]


def test_report_is_self_contained(report):
    html = report.read_text()
    assert not re.search(r"<script[^>]+src=", html), "no external scripts"
    assert not re.search(r"<link[^>]+href=[\"']https?:", html)
    assert "Plotly.newPlot" in html and len(html) > 1_000_000, "plotly.js inlined"


def test_trials_exported(report):
    csv = pd.read_csv(report.parent / "trials.csv")
    parquet = pd.read_parquet(report.parent / "trials.parquet")
    assert len(csv) == len(parquet) == len(TRIALS)
    assert list(parquet["pareto"]) == [True, True, False, False, False, False, False, True]
    assert {"tensor_parallel_size", "p99_e2el_ms", "deploy_command"} <= set(csv.columns)


def test_report_without_run_files_says_so(tmp_path):
    study = make_study(tmp_path / "s", TRIALS[:1])
    for path in (tmp_path / "s" / "synthetic" / "0000").iterdir():
        path.unlink()
    html = write_report(study, tmp_path / "r").read_text()
    assert "Not found:" in html and 'class="figure"' not in html


def test_compare(tmp_path):
    old = make_study(tmp_path / "old")
    changed = [TRIALS[0], ("ok", 2, 2, 32, 4.2, 0.95, None), *TRIALS[2:]]
    new = make_study(tmp_path / "new", changed)
    result = compare(old, tmp_path / "new")
    assert result.best_old == 4.0 and result.best_new == 4.2
    text = result.markdown()
    assert "+5.0%" in text
    assert "| 2 | 3.5 | 4.2 |" in text
    # The TP2, 64-sequence configuration left the front; the 32-sequence one joined it.
    assert '"max_num_seqs": 64, "pipeline_parallel_size": 1, "tensor_parallel_size": 2' in text.split("Only in new")[0]
    assert '"max_num_seqs": 32' in text.split("Only in new")[1]
    html = result.html()
    assert "<table" in html and "+5.0%" in html
    assert new.study_name == "synthetic"


def test_plan_table_text_and_in_report(study_dir, tmp_path):
    rows = [{"rate": 8, "gpus": 2, "knobs": {"tensor_parallel_size": 2, "max_num_seqs": None},
             "slo_attainment": 0.93, "goodput_per_gpu": 3.5},
            {"rate": 2, "gpus": 1, "config": {"tensor_parallel_size": 1}, "slo_attainment": 0.95,
             "goodput_per_gpu": 3.0},
            {"rate": 64, "gpus": None, "knobs": None, "slo_attainment": None, "goodput_per_gpu": None}]
    text = plan_table(rows)
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["2", "1", "95.0%", "3"] and lines[3].split()[0] == "64"
    assert NONE_HOLDS in lines[3] and '{"tensor_parallel_size": 2}' in lines[2]
    html = write_report(study_dir, tmp_path, plan=rows).read_text()
    assert 'id="plan"' in html and NONE_HOLDS in html
    # Over GPU types, the answer is a type and its cost an hour.
    typed = plan_table([{**rows[0], "sku": "h200", "dollars_per_hour": 8.0}]).splitlines()[1]
    assert typed.split()[4:6] == ["H200", "8.00"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revati-tune")
    cli.register(parser.add_subparsers(dest="subcommand", required=True))
    return parser


def test_cli_report_and_compare(study_dir, tmp_path, capsys):
    args = _parser().parse_args(["report", str(study_dir), "--out", str(tmp_path / "r")])
    assert args.run(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "report.html")
    assert {"report.html", "trials.csv", "trials.parquet"} <= {p.name for p in (tmp_path / "r").iterdir()}
    args = _parser().parse_args(["compare", str(study_dir), str(study_dir), "--out", str(tmp_path / "c")])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "+0.0%" in printed and (tmp_path / "c" / "compare.md").read_text() in printed
    assert (tmp_path / "c" / "compare.html").is_file()


def test_cli_report_reprices_a_gpu_type_and_refuses_a_bad_price(study_dir, tmp_path, capsys):
    args = _parser().parse_args(["report", str(study_dir), "--out", str(tmp_path), "--price", "h100_sxm_80gb=2"])
    assert args.run(args) == 0
    assert "H100 at $2.00 per GPU-hour" in (tmp_path / "report.html").read_text()
    for bad, words in (("h100", "could not convert"), ("b300=2", "unknown SKU 'b300'"), ("h100=-1", "positive")):
        with pytest.raises(SystemExit):
            _parser().parse_args(["report", str(study_dir), "--price", bad])
        assert f"--price: '{bad}'" in (err := capsys.readouterr().err) and words in err, err


def test_cli_report_defaults_to_the_study_folder(tmp_path, capsys):
    make_study(tmp_path, TRIALS[:1])
    args = _parser().parse_args(["report", str(tmp_path), "--study-name", "synthetic"])
    assert args.run(args) == 0
    assert (tmp_path / "report.html").is_file()


@pytest.mark.skipif(screenshot.chromium() is None,
                    reason="headless Chromium not installed (apt-get install -y chromium)")
def test_screenshot_shows_the_pareto_plot(report, tmp_path):
    png = screenshot.render(report, tmp_path / "report.png", width=1200, height=900)
    near = screenshot.color_pixels(png, PARETO_COLOR)
    # Three front markers of 13 px and the line between them: well over a few hundred pixels.
    assert near > 300, f"only {near} pixels of the front's colour in {png}"


SCRIPT = '<script>alert("study")</script>'


def test_the_report_escapes_every_string_from_the_study(tmp_path):
    """Model names, engine names, knob values, reasons and commands are shown as text, never run as
    HTML, in the page and in the Pareto plot's hover text (which plotly renders as HTML)."""
    study = make_study(tmp_path / "s", trials=TRIALS[:1])
    study.set_user_attr("config", {**CONFIG, "model": f"m{SCRIPT}", "hf_id": f"h{SCRIPT}"})
    attrs = {"outcome": "infeasible", "gpus": 1, "engine": f"vllm{SCRIPT}", "reason": f"r{SCRIPT}",
             "knobs": {"kv_cache_dtype": f"fp8{SCRIPT}"}, "deploy_command": f"d{SCRIPT}", "command": f"c{SCRIPT}"}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs))
    html = write_report(study, tmp_path / "r").read_text()
    assert "alert" in html and '<script>alert' not in html and '\\u003cscript\\u003ealert' not in html
    assert "m&lt;script&gt;alert(&#34;study&#34;)&lt;/script&gt;" in html       # the header's model
    assert "kv_cache_dtype=fp8&lt;script&gt;" in html                            # the trials table's knob
    # The Pareto plot's hover text holds the knob as HTML entities, which plotly shows as text.
    assert "kv_cache_dtype = fp8&lt;script&gt;" in html
