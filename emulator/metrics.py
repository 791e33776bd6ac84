"""Serving metrics, defined exactly as `vllm bench serve` defines them.

Ported from vLLM 0.33.0 vllm/benchmarks/serve.py (calculate_metrics, benchmark) and
vllm/benchmarks/lib/endpoint_request_func.py (async_request_openai_completions), applied to the
records written by emulator/loadgen.py (times in seconds relative to the load's start):

    ttft    = first_token_s - sent_s            (first SSE chunk carrying a choice)
    itl     = differences of consecutive chunk_times, pooled over all requests
    e2el    = finish_s - sent_s                 (vLLM's latency: the LAST chunk carrying a choice)
    tpot    = (e2el - ttft) / (output_tokens - 1), only for requests with output_tokens > 1
    output_tokens = usage.completion_tokens; vLLM counts 1 when it is missing and no tokenizer is given
    duration = from the start of load to the end of the last request (vLLM's benchmark_duration)
    request_throughput = completed / duration; output_throughput = output tokens / duration;
    total_token_throughput = (prompt + output tokens of completed requests) / duration
    goodput: a completed request is good if every given SLO (ms) is >= its value, where its TPOT
             counts as 0 when output_tokens <= 1; request_goodput = good / duration
    slo_attainment (ours): good / ALL requests (failed requests count as missing the SLOs)

Statistics are numpy's: mean, median, std (population, ddof=0), percentiles (linear), each 0 when
there are no values (vLLM's `np.mean(x or 0)`); percentiles named p{N}_{metric}_ms as vLLM names them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MS_PER_S = 1000.0
# vLLM's default --metric-percentiles is "99"; the project reports p90 and p95 as well.
PERCENTILES = (90.0, 95.0, 99.0)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
SLO_KEYS = ("ttft", "tpot", "e2el")


def _succeeded(record: dict) -> bool:
    return record.get("error") is None and record.get("first_token_s") is not None


def _output_len(record: dict) -> int:
    # vLLM: `output_len = outputs[i].output_tokens or 1` when no tokenizer counts the text.
    return int(record.get("output_tokens") or 1)


def per_request_latencies(record: dict) -> dict:
    """TTFT, E2EL, TPOT (None when output <= 1) and ITLs of one successful request, in seconds."""
    ttft = record["first_token_s"] - record["sent_s"]
    e2el = record["finish_s"] - record["sent_s"]
    out = _output_len(record)
    chunks = record.get("chunk_times") or []
    return {
        "ttft": ttft,
        "e2el": e2el,
        "tpot": (e2el - ttft) / (out - 1) if out > 1 else None,
        "itl": [b - a for a, b in zip(chunks, chunks[1:])],
    }


def benchmark_duration(records: list[dict]) -> float:
    """vLLM times the benchmark from before the first arrival sleep to after the last request
    returns; the records' times are relative to that start, so it is the latest end time."""
    ends = [r.get("done_s") if r.get("done_s") is not None else r.get("finish_s") for r in records]
    ends = [e for e in ends if e is not None]
    return max(ends) if ends else 0.0


def _stats(name: str, values: list[float]) -> dict:
    """mean/median/std/percentiles in ms, `values or 0` exactly as vLLM does."""
    data = values or 0
    result = {
        f"mean_{name}_ms": float(np.mean(data)) * MS_PER_S,
        f"median_{name}_ms": float(np.median(data)) * MS_PER_S,
        f"std_{name}_ms": float(np.std(data)) * MS_PER_S,
    }
    for p in PERCENTILES:
        p_word = str(int(p)) if int(p) == p else str(p)
        result[f"p{p_word}_{name}_ms"] = float(np.percentile(data, p)) * MS_PER_S
    return result


def _validate_slos(slos: dict | None) -> dict:
    slos = dict(slos or {})
    for key, value in slos.items():
        if key not in SLO_KEYS:
            raise ValueError(f"slos.{key}: unknown SLO; allowed: {', '.join(SLO_KEYS)} (milliseconds)")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"slos.{key}: must be a positive number of milliseconds, got {value!r}")
    return slos


def _meets_slos(latency: dict, slos: dict) -> bool:
    # vLLM: TPOT is regarded as 0 for goodput when output_len <= 1; SLOs are inclusive (slo >= value).
    values = {"ttft": latency["ttft"], "tpot": latency["tpot"] or 0.0, "e2el": latency["e2el"]}
    return all(slos[key] / MS_PER_S >= values[key] for key in slos)


def record_meets_slos(record: dict, slos: dict) -> bool:
    """Whether one request is good (goodput's definition; a failed request never is)."""
    return _succeeded(record) and _meets_slos(per_request_latencies(record), _validate_slos(slos))


def _peak_output_rate(successes: list[dict]) -> tuple[float, int]:
    """vLLM's max_output_tokens_per_s and max_concurrent_requests: chunk timestamps (one "token"
    per chunk, as vLLM reconstructs them from ttft + itl) in 1-second buckets from the earliest send."""
    if not successes:
        return 0.0, 0
    start = min(r["sent_s"] for r in successes)
    end = max(r["finish_s"] for r in successes)
    buckets = int(np.ceil(end - start)) + 1
    tokens = np.zeros(buckets)
    concurrent = np.zeros(buckets)
    for r in successes:
        for t in r["chunk_times"]:
            bucket = int(t - start)
            if 0 <= bucket < buckets:
                tokens[bucket] += 1
        for second in range(int(r["sent_s"] - start), int(r["finish_s"] - start) + 1):
            concurrent[second] += 1
    return float(tokens.max()), int(concurrent.max())


def compute(records: list[dict], slos: dict | None = None, duration_s: float | None = None) -> dict:
    """Flat metrics under vllm bench serve's names, plus slo_attainment.

    `duration_s` is the load generator's measured benchmark duration (its summary line); without it
    the latest request end in the records is used. request_goodput and slo_attainment are None when
    no SLOs are given (vLLM reports request_goodput as None then).
    """
    slos = _validate_slos(slos)
    duration = duration_s if duration_s is not None else benchmark_duration(records)
    successes = [r for r in records if _succeeded(r)]
    latencies = [per_request_latencies(r) for r in successes]
    total_input = sum(int(r.get("prompt_tokens") or 0) for r in successes)
    total_output = sum(_output_len(r) for r in successes)
    good = sum(1 for lat in latencies if _meets_slos(lat, slos)) if slos else None

    def per_second(amount: float) -> float:
        return amount / duration if duration > 0 else 0.0

    metrics = {
        "duration": duration,
        "completed": len(successes),
        "failed": len(records) - len(successes),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": per_second(len(successes)),
        "request_goodput": per_second(good) if slos else None,
        "output_throughput": per_second(total_output),
        "total_token_throughput": per_second(total_input + total_output),
        "slo_attainment": (good / len(records) if records else 0.0) if slos else None,
    }
    metrics["max_output_tokens_per_s"], metrics["max_concurrent_requests"] = _peak_output_rate(successes)
    pooled = {
        "ttft": [lat["ttft"] for lat in latencies],
        "tpot": [lat["tpot"] for lat in latencies if lat["tpot"] is not None],
        "itl": [itl for lat in latencies for itl in lat["itl"]],
        "e2el": [lat["e2el"] for lat in latencies],
    }
    for name in LATENCY_METRICS:
        metrics.update(_stats(name, pooled[name]))
    return metrics


RECORD_COLUMNS = ("request_id", "arrival_s", "sent_s", "first_token_s", "finish_s", "done_s",
                  "prompt_tokens", "output_tokens", "requested_output_tokens", "prefix_group", "error",
                  "chunk_times")


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Per-request records plus their derived latencies (seconds; NaN for failed requests), ready
    for DataFrame.to_parquet (chunk_times is a list column)."""
    rows = []
    for r in records:
        row = {col: r.get(col) for col in RECORD_COLUMNS}
        row["chunk_times"] = [float(t) for t in (r.get("chunk_times") or [])]
        lat = per_request_latencies(r) if _succeeded(r) else {}
        row["ttft_s"] = lat.get("ttft")
        row["tpot_s"] = lat.get("tpot")
        row["e2el_s"] = lat.get("e2el")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*RECORD_COLUMNS, "ttft_s", "tpot_s", "e2el_s"])
    for col in ("arrival_s", "sent_s", "first_token_s", "finish_s", "done_s", "ttft_s", "tpot_s", "e2el_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    # Nullable ints: the prefix group is absent for workloads without shared prefixes.
    for col in ("prompt_tokens", "output_tokens", "requested_output_tokens", "prefix_group"):
        frame[col] = frame[col].astype("Int64")
    frame["error"] = frame["error"].astype("string")
    return frame
