"""The load generator's workload (spec, arrivals, lengths, traces), its run against a mock
streaming server, and the metrics computed as `vllm bench serve` computes them."""
import json
import math
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emulator import loadgen, metrics
from emulator.loadgen import ArrivalSpec, LengthDist, SpecError, WorkloadSpec

REPO = Path(__file__).resolve().parents[1]
ENGINE_PYTHON = Path.home() / ".local/share/revati-tune/envs/vllm/bin/python"


def base_spec(**overrides) -> dict:
    spec = {
        "base_url": "http://127.0.0.1:8000", "model": "m", "num_requests": 10, "seed": 1,
        "arrival": {"process": "poisson", "rate": 5.0},
        "prompt_len": {"kind": "fixed", "value": 8}, "output_len": {"kind": "fixed", "value": 4},
    }
    spec.update(overrides)
    return spec


# ---------------------------------------------------------------------------- spec validation

@pytest.mark.parametrize("overrides, field, hint", [
    ({"num_requests": 0}, "num_requests", ">= 1"),
    ({"arrival": {"process": "weibull", "rate": 1}}, "arrival.process", "'poisson', 'gamma'"),
    ({"arrival": {"process": "gamma", "rate": -1}}, "arrival.rate", "> 0"),
    ({"arrival": {"process": "poisson", "rate": 1, "burstiness": 0.5}}, "arrival.burstiness", "gamma"),
    ({"prompt_len": {"kind": "zipf"}}, "prompt_len.kind", "'lognormal'"),
    ({"output_len": {"kind": "uniform", "low": 9, "high": 3}}, "output_len.high", ">= low"),
    ({"output_len": {"kind": "empirical", "values": []}}, "output_len.values", "non-empty"),
    ({"trace": {"path": "x.csv", "format": "parquet"}}, "trace.format", "'azure', 'jsonl'"),
    ({"shared_prefix": {"groups": 0, "prefix_len": 4}}, "shared_prefix.groups", ">= 1"),
    ({"max_concurrency": 0}, "max_concurrency", ">= 1"),
    ({"base_url": "127.0.0.1:8000"}, "base_url", "http"),
    ({"rate": 3}, "rate", "allowed:"),
    ({"api": "tgi"}, "api", "'openai', 'sglang'"),
])
def test_spec_errors_name_the_field_and_the_fix(overrides, field, hint):
    with pytest.raises(SpecError) as err:
        WorkloadSpec.from_dict(base_spec(**overrides))
    assert f"{field}:" in str(err.value) and hint in str(err.value)


def test_spec_accepts_inf_rate_and_optional_fields():
    spec = WorkloadSpec.from_dict(base_spec(arrival={"process": "gamma", "rate": "inf", "burstiness": 0.5},
                                            shared_prefix={"groups": 2, "prefix_len": 3}, max_concurrency=4))
    assert spec.arrival.rate == math.inf and spec.max_concurrency == 4 and spec.shared_prefix.groups == 2


# ---------------------------------------------------------------------------- arrivals, lengths

def gaps(times):
    return [b - a for a, b in zip([0.0] + times, times)]


def test_poisson_mean_interarrival_is_one_over_rate():
    times = loadgen.arrival_times(ArrivalSpec("poisson", 4.0), 20000, random.Random(0))
    assert statistics.mean(gaps(times)) == pytest.approx(0.25, rel=1e-9)  # vLLM rescales to n/rate
    # exponential gaps: coefficient of variation 1
    assert statistics.stdev(gaps(times)) / statistics.mean(gaps(times)) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_burstiness_sets_the_coefficient_of_variation(burstiness):
    g = gaps(loadgen.arrival_times(ArrivalSpec("gamma", 2.0, burstiness), 20000, random.Random(0)))
    # gamma(shape k): CV = 1/sqrt(k)
    assert statistics.stdev(g) / statistics.mean(g) == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)


def test_infinite_rate_sends_everything_at_zero():
    assert loadgen.arrival_times(ArrivalSpec("poisson", math.inf), 5, random.Random(0)) == [0.0] * 5


@pytest.mark.parametrize("dist, low, high", [
    ({"kind": "fixed", "value": 7}, 7, 7),
    ({"kind": "uniform", "low": 3, "high": 9}, 3, 9),
    ({"kind": "normal", "mean": 5, "std": 10}, 1, 1000),
    ({"kind": "empirical", "values": [2, 11]}, 2, 11),
])
def test_length_distributions_stay_in_range(dist, low, high):
    rng = random.Random(0)
    samples = [LengthDist.from_dict(dist, "prompt_len").sample(rng) for _ in range(2000)]
    assert min(samples) >= low and max(samples) <= high
    assert all(isinstance(s, int) for s in samples)
    if dist["kind"] == "uniform":
        assert set(samples) == set(range(3, 10))
    if dist["kind"] == "normal":
        assert min(samples) == 1  # clipped


def test_lognormal_mean_is_the_length_mean():
    rng = random.Random(0)
    dist = LengthDist.from_dict({"kind": "lognormal", "mean": 500, "sigma": 0.5}, "output_len")
    samples = [dist.sample(rng) for _ in range(40000)]
    assert statistics.mean(samples) == pytest.approx(500, rel=0.02)
    assert statistics.median(samples) == pytest.approx(500 * math.exp(-0.125), rel=0.03)


def test_plan_is_seeded_and_shares_prefixes_within_groups():
    spec = WorkloadSpec.from_dict(base_spec(shared_prefix={"groups": 2, "prefix_len": 5},
                                            prompt_len={"kind": "fixed", "value": 8}))
    plan = loadgen.plan_requests(spec)
    assert [p.prompt for p in plan] == [p.prompt for p in loadgen.plan_requests(spec)]
    assert all(len(p.prompt) == 8 and all(10 <= t < 30000 for t in p.prompt) for p in plan)
    assert [p.prefix_group for p in plan[:4]] == [0, 1, 0, 1]
    assert plan[0].prompt[:5] == plan[2].prompt[:5] != plan[1].prompt[:5]
    assert plan[0].prompt[5:] != plan[2].prompt[5:]


# ---------------------------------------------------------------------------- traces

def test_azure_trace_is_relative_and_scaled(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:15:46.1805900,100,0\n"
                    "2023-11-16 18:15:46.6805900,374,44\n"
                    "2023-11-16 18:15:48.1805900,5,9\n")
    spec = WorkloadSpec.from_dict({"base_url": "http://h:1", "model": "m", "num_requests": 3,
                                   "trace": {"path": str(path), "format": "azure", "time_scale": 2.0}})
    plan = loadgen.plan_requests(spec)
    assert [p.arrival_s for p in plan] == pytest.approx([0.0, 1.0, 4.0])
    assert [len(p.prompt) for p in plan] == [100, 374, 5]
    assert [p.output_len for p in plan] == [1, 44, 9]  # lengths clipped to >= 1


def test_azure_trace_accepts_seconds(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n10.5,3,4\n12.0,5,6\n")
    rows = loadgen.read_trace(loadgen.TraceSpec(str(path), "azure"))
    assert rows == [(0.0, 3, 4, None), (1.5, 5, 6, None)]


def test_jsonl_trace_with_prefix_groups(tmp_path):
    path = tmp_path / "trace.jsonl"
    lines = [{"arrival_s": 5.0, "prompt_tokens": 6, "output_tokens": 2, "prefix_group": 7},
             {"arrival_s": 5.5, "prompt_tokens": 6, "output_tokens": 3, "prefix_group": 7},
             {"arrival_s": 6.0, "prompt_tokens": 6, "output_tokens": 3}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    spec = WorkloadSpec.from_dict({"base_url": "http://h:1", "model": "m", "num_requests": 3,
                                   "trace": {"path": str(path), "format": "jsonl", "time_scale": 0.5},
                                   "shared_prefix": {"groups": 1, "prefix_len": 4}})
    plan = loadgen.plan_requests(spec)
    assert [p.arrival_s for p in plan] == pytest.approx([0.0, 0.25, 0.5])
    assert [p.prefix_group for p in plan] == [7, 7, None]
    assert plan[0].prompt[:4] == plan[1].prompt[:4]


@pytest.mark.parametrize("fmt, text, words", [
    ("azure", "TIMESTAMP,ContextTokens\n1,2\n", ["lacks the Azure trace column(s) GeneratedTokens",
                                                  "it has TIMESTAMP, ContextTokens"]),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2,3,4\n1,3,4\n",
     ["line 3: TIMESTAMP 1 is before the previous row's (2)", "sort the trace by TIMESTAMP"]),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n1,-3,4\n", ["line 2: ContextTokens '-3' is negative"]),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\nnan,3,4\n", ["line 2: TIMESTAMP nan is not a finite time"]),
    ("jsonl", '{"arrival_s": 1, "prompt_tokens": 1, "output_tokens": 1}\n'
              '{"arrival_s": 0.5, "prompt_tokens": 1, "output_tokens": 1}\n', ["line 2: arrival_s 0.5 is before"]),
    ("jsonl", '{"arrival_s": -1, "prompt_tokens": 1, "output_tokens": 1}\n', ["line 1: arrival_s -1 is negative"]),
    ("jsonl", '{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": -2}\n', ["line 1: output_tokens -2 is negative"]),
    ("jsonl", '{"arrival_s": 0, "prompt_tokens": 1}\n', ["line 1: expected {arrival_s, prompt_tokens"]),
])
def test_a_bad_trace_is_refused_with_its_line_and_the_fix(tmp_path, fmt, text, words):
    path = tmp_path / f"trace.{fmt}"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        loadgen.read_trace(loadgen.TraceSpec(str(path), fmt))
    assert str(err.value).startswith(f"trace.path: {path} ")
    for word in words:
        assert word in str(err.value), str(err.value)


def test_a_missing_trace_file_is_named(tmp_path):
    with pytest.raises(SpecError, match=r"trace.path: cannot read .*nope.csv \(No such file or directory\)"):
        loadgen.read_trace(loadgen.TraceSpec(str(tmp_path / "nope.csv"), "azure"))


def test_trace_shorter_than_num_requests_names_the_field(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text(json.dumps({"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}) + "\n")
    spec = WorkloadSpec.from_dict({"base_url": "http://h:1", "model": "m", "num_requests": 2,
                                   "trace": {"path": str(path), "format": "jsonl"}})
    with pytest.raises(SpecError, match="num_requests: .*at most 1"):
        loadgen.plan_requests(spec)


# ---------------------------------------------------------------------------- metrics

def record(rid, sent, chunks, out, prompt=10, error=None):
    return {"request_id": rid, "arrival_s": sent, "sent_s": sent, "first_token_s": chunks[0] if chunks else None,
            "chunk_times": chunks, "finish_s": chunks[-1] if chunks else None,
            "done_s": (chunks[-1] if chunks else sent) + 0.01, "prompt_tokens": prompt, "output_tokens": out,
            "requested_output_tokens": out, "error": error, "prefix_group": None}


TINY = [
    # A: ttft 0.1, e2el 0.4, 4 tokens in 4 chunks -> tpot 0.1, itls 0.1 0.1 0.1
    record("A", 0.0, [0.1, 0.2, 0.3, 0.4], 4),
    # B: ttft 0.3, e2el 0.9, 4 tokens in 3 chunks (one chunk carried two) -> tpot 0.2, itls 0.2 0.4
    record("B", 0.5, [0.8, 1.0, 1.4], 4),
    # C: failed
    record("C", 1.0, [], 0, error="HTTP 500"),
]


def test_metrics_match_a_hand_computed_example():
    m = metrics.compute(TINY, {"ttft": 200, "tpot": 150}, duration_s=2.0)
    assert m["completed"] == 2 and m["failed"] == 1
    assert m["mean_ttft_ms"] == pytest.approx(200.0) and m["median_ttft_ms"] == pytest.approx(200.0)
    assert m["std_ttft_ms"] == pytest.approx(100.0)
    assert m["mean_tpot_ms"] == pytest.approx(150.0)
    assert m["mean_itl_ms"] == pytest.approx(1000 * (0.1 * 3 + 0.2 + 0.4) / 5)
    assert m["median_itl_ms"] == pytest.approx(100.0)
    assert m["mean_e2el_ms"] == pytest.approx(650.0)
    assert m["p99_e2el_ms"] == pytest.approx(400 + 0.99 * 500)  # numpy linear interpolation
    assert m["request_throughput"] == pytest.approx(1.0)
    assert m["output_throughput"] == pytest.approx(4.0)
    assert m["total_token_throughput"] == pytest.approx(14.0)
    # only A meets ttft <= 200 ms and tpot <= 150 ms
    assert m["request_goodput"] == pytest.approx(0.5)
    assert m["slo_attainment"] == pytest.approx(1 / 3)


def test_slos_are_inclusive_and_failed_requests_miss_them():
    m = metrics.compute(TINY, {"e2el": 900}, duration_s=2.0)
    assert m["request_goodput"] == pytest.approx(1.0) and m["slo_attainment"] == pytest.approx(2 / 3)
    assert metrics.compute(TINY)["slo_attainment"] is None


def test_duration_defaults_to_the_last_request_end():
    assert metrics.compute(TINY)["duration"] == pytest.approx(1.41)


def test_unknown_slo_names_the_key():
    with pytest.raises(ValueError, match="slos.ttfb: unknown SLO"):
        metrics.compute(TINY, {"ttfb": 1})


def test_records_frame_round_trips_through_parquet(tmp_path):
    frame = metrics.records_frame(TINY)
    frame.to_parquet(tmp_path / "r.parquet")
    import pandas as pd
    back = pd.read_parquet(tmp_path / "r.parquet")
    assert list(back["chunk_times"][1]) == [0.8, 1.0, 1.4]
    assert back["tpot_s"][0] == pytest.approx(0.1) and math.isnan(back["ttft_s"][2])


# ---------------------------------------------------------------------------- end to end (mock server)

class MockServer(BaseHTTPRequestHandler):
    """Streams like vLLM's /v1/completions without a tokenizer (text "" per chunk, the first chunk
    carrying two tokens, then a usage chunk with empty choices, then [DONE]) or like SGLang's
    /generate with token ids (every chunk the output ids so far with their counts, the first
    carrying two tokens, then [DONE]); short_by tokens fewer than asked for."""

    server_version = "mock-vllm"
    state = None  # set per server: lock, in_flight, max_in_flight, health_calls, payloads, short_by

    def log_message(self, *args):
        pass

    def do_GET(self):
        s = self.server.state
        s["health_calls"] += 1
        self.send_response(200 if s["health_calls"] > 2 else 503)  # not ready for the first polls
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        s = self.server.state
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with s["lock"]:
            s["payloads"].append(payload)
            s["in_flight"] += 1
            s["max_in_flight"] = max(s["max_in_flight"], s["in_flight"])
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            sglang = self.path == "/generate"
            n = (payload["sampling_params"]["max_new_tokens"] if sglang else payload["max_tokens"]) - s["short_by"]
            sizes = [2] + [1] * (n - 2) if n >= 2 else [1]
            for i, _ in enumerate(sizes):
                time.sleep(0.01)
                if sglang:
                    done = sum(sizes[:i + 1])
                    self.send_event({"output_ids": list(range(done)), "meta_info": {
                        "prompt_tokens": len(payload["input_ids"]), "completion_tokens": done,
                        "finish_reason": {"type": "length"} if i == len(sizes) - 1 else None}})
                    continue
                choice = {"index": 0, "text": "", "token_ids": None, "logprobs": None,
                          "finish_reason": "length" if i == len(sizes) - 1 else None}
                self.send_event({"id": "cmpl", "object": "text_completion", "choices": [choice], "usage": None})
            if not sglang:
                self.send_event({"id": "cmpl", "object": "text_completion", "choices": [],
                                 "usage": {"prompt_tokens": len(payload["prompt"]), "completion_tokens": n,
                                           "total_tokens": len(payload["prompt"]) + n}})
            self.wfile.write(b"data: [DONE]\n\n")
        finally:
            with s["lock"]:
                s["in_flight"] -= 1

    def send_event(self, data):
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()


@pytest.fixture
def mock_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), MockServer)
    server.daemon_threads = True
    server.state = {"lock": threading.Lock(), "in_flight": 0, "max_in_flight": 0, "health_calls": 0,
                    "payloads": [], "short_by": 0}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def loadgen_python() -> str:
    """The generator runs under the engine environment's Python in production; use it when present."""
    if ENGINE_PYTHON.exists():
        return str(ENGINE_PYTHON)
    pytest.importorskip("aiohttp")
    return sys.executable


def run_loadgen(tmp_path, spec: dict, timeout=60):
    spec_path, out = tmp_path / "spec.json", tmp_path / "records.jsonl"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([loadgen_python(), "-m", "emulator.loadgen", "--spec", str(spec_path), "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, out


@pytest.mark.parametrize("api", ["openai", "sglang"])
def test_loadgen_end_to_end_records_and_concurrency(tmp_path, mock_server, api):
    spec = base_spec(base_url=f"http://127.0.0.1:{mock_server.server_address[1]}", num_requests=12,
                     arrival={"process": "poisson", "rate": "inf"}, max_concurrency=3,
                     output_len={"kind": "uniform", "low": 3, "high": 6}, ready_timeout_s=30, api=api)
    proc, out = run_loadgen(tmp_path, spec)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    records, summary = lines[:-1], lines[-1]["summary"]
    assert summary["completed"] == 12 and summary["failed"] == 0
    assert mock_server.state["max_in_flight"] == 3
    assert mock_server.state["health_calls"] >= 3
    payload = mock_server.state["payloads"][0]
    if api == "openai":
        assert payload["ignore_eos"] is True and payload["stream"] is True and payload["temperature"] == 0
        assert payload["stream_options"] == {"include_usage": True} and payload["model"] == "m"
    else:
        assert payload["stream"] is True and len(payload["input_ids"]) == 8
        assert payload["sampling_params"]["ignore_eos"] is True and payload["sampling_params"]["temperature"] == 0
    for r in records:
        assert r["error"] is None
        assert r["output_tokens"] == r["requested_output_tokens"]
        assert len(r["chunk_times"]) == r["output_tokens"] - 1  # first chunk carried two tokens
        assert r["sent_s"] < r["first_token_s"] == r["chunk_times"][0] <= r["finish_s"] == r["chunk_times"][-1]
        assert r["finish_s"] <= r["done_s"] and r["prompt_tokens"] == 8
    m = metrics.compute(records, {"ttft": 60000}, duration_s=summary["duration_s"])
    assert m["completed"] == 12 and m["slo_attainment"] == 1.0 and m["mean_itl_ms"] > 5


def test_loadgen_fails_clearly_when_the_server_never_becomes_ready(tmp_path):
    spec = base_spec(base_url="http://127.0.0.1:9", ready_timeout_s=1.0)  # discard port: refused
    proc, out = run_loadgen(tmp_path, spec)
    assert proc.returncode != 0
    assert "not ready after 1.0 s" in proc.stderr and "ready_timeout_s" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("api", ["openai", "sglang"])
def test_a_request_the_engine_ends_early_fails_with_the_reason(tmp_path, mock_server, api):
    """ignore_eos sets every output length: an engine that stops a request itself (under
    emulation: on a token no kernel computed) is not serving the workload."""
    mock_server.state["short_by"] = 1
    spec = base_spec(base_url=f"http://127.0.0.1:{mock_server.server_address[1]}", num_requests=3,
                     arrival={"process": "poisson", "rate": "inf"}, output_len={"kind": "fixed", "value": 5},
                     ready_timeout_s=30, api=api)
    proc, out = run_loadgen(tmp_path, spec)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in out.read_text().splitlines()][:-1]
    assert [r["error"] for r in records] == ["the engine ended the request after 4 of the 5 output tokens asked "
                                             "for with ignore_eos"] * 3
