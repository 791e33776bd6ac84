"""Load generator: replays a workload against a serving engine's streaming API, like `vllm bench serve`.

Runs as its own process inside the emulated deployment, so every clock it reads and every sleep it
takes is virtual; nothing here knows that. It must import only the standard library and aiohttp
(it runs under the engine environment's Python, where numpy/pandas are not guaranteed), and aiohttp
only where requests are sent, so the workload code can be imported and tested anywhere.

    python -m emulator.loadgen --spec SPEC.json --out RECORDS.jsonl

The spec (see `WorkloadSpec`) describes arrivals, prompt/output lengths, shared prefixes or a trace,
and the API to send to (`API`): OpenAI completions (vLLM's, with token-id prompts) or SGLang's
native /generate (SGLang's OpenAI endpoints need a tokenizer; `sglang.bench_serving` uses /generate).
The output is one JSON line per request (times in seconds relative to t0, the monotonic time at
which load starts) and a final line {"summary": {...}}. What the fields mean is what
emulator/metrics.py needs to compute the metrics exactly as `vllm bench serve` does:

    sent_s          when the POST was issued (after the client concurrency semaphore), = vLLM's start_time
    first_token_s   arrival of the first SSE chunk carrying a token (vLLM: ttft = this - sent)
    chunk_times     one timestamp per SSE chunk carrying a token (vLLM: itl = their differences)
    finish_s        the last such chunk (vLLM: latency = most_recent_timestamp - start_time)
    done_s          when the response (or the error) was fully handled; ends the benchmark duration
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import csv
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

# Token ids drawn for prompts: clear of the special tokens at the bottom of every vocabulary and
# below the smallest vocabulary of the supported models (32000 for Mixtral).
TOKEN_ID_LOW = 10
TOKEN_ID_HIGH = 30000  # exclusive

HEALTH_POLL_INTERVAL_S = 0.5
# vllm bench serve's session timeout; virtual time, so it only bounds a genuinely stuck request.
REQUEST_TIMEOUT_S = 6 * 60 * 60


class SpecError(ValueError):
    """A workload spec field is invalid; the message names the field and the fix."""


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------

def _require(cond: bool, field_name: str, message: str) -> None:
    if not cond:
        raise SpecError(f"workload spec: {field_name}: {message}")


def _number(data: dict, key: str, path: str, *, positive: bool = False, minimum: float | None = None,
            default=None, allow_inf: bool = False) -> float:
    value = data.get(key, default)
    name = f"{path}.{key}" if path else key
    if allow_inf and value in ("inf", float("inf")):
        return float("inf")
    expected = "a finite number or \"inf\"" if allow_inf else "a finite number"
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
             name, f"must be {expected}, got {value!r}")
    if positive:
        _require(value > 0, name, f"must be > 0, got {value!r}")
    if minimum is not None:
        _require(value >= minimum, name, f"must be >= {minimum}, got {value!r}")
    return float(value)


def _integer(data: dict, key: str, path: str, *, minimum: int, default=None) -> int:
    value = data.get(key, default)
    name = f"{path}.{key}" if path else key
    _require(isinstance(value, int) and not isinstance(value, bool), name,
             f"must be an integer >= {minimum}, got {value!r}")
    _require(value >= minimum, name, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _choice(data: dict, key: str, path: str, allowed: tuple[str, ...], default=None) -> str:
    value = data.get(key, default)
    _require(value in allowed, f"{path}.{key}" if path else key,
             f"must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def _known_fields(data: dict, path: str, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    _require(not unknown, f"{path}.{unknown[0]}" if unknown else path, f"unknown field; allowed: {', '.join(allowed)}")


def _section(data: dict, key: str, path: str = "") -> dict | None:
    value = data.get(key)
    _require(value is None or isinstance(value, dict), f"{path}.{key}" if path else key,
             f"must be an object (or null), got {value!r}")
    return value


DIST_KINDS = ("fixed", "uniform", "normal", "lognormal", "empirical")


@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution. Samples are rounded to int and clipped to >= 1.

    fixed {value}; uniform {low, high}: integers in [low, high], both inclusive;
    normal {mean, std}; empirical {values}: uniform choice among the listed lengths;
    lognormal {mean, sigma}: `mean` is the mean of the LENGTH (in tokens, before rounding and
    clipping) and `sigma` the standard deviation of log(length), i.e. log(length) ~
    Normal(mu, sigma) with mu = ln(mean) - sigma**2 / 2, so the median is mean * exp(-sigma**2 / 2).
    """

    kind: str
    params: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data, path: str) -> "LengthDist":
        _require(isinstance(data, dict), path, f"must be an object with a 'kind', got {data!r}")
        kind = _choice(data, "kind", path, DIST_KINDS)
        if kind == "fixed":
            params = {"value": _number(data, "value", path, minimum=1)}
        elif kind == "uniform":
            params = {"low": _integer(data, "low", path, minimum=1),
                      "high": _integer(data, "high", path, minimum=1)}
            _require(params["low"] <= params["high"], f"{path}.high",
                     f"must be >= low ({params['low']}), got {params['high']}")
        elif kind == "normal":
            params = {"mean": _number(data, "mean", path, positive=True),
                      "std": _number(data, "std", path, minimum=0)}
        elif kind == "lognormal":
            params = {"mean": _number(data, "mean", path, positive=True),
                      "sigma": _number(data, "sigma", path, minimum=0)}
        else:
            values = data.get("values")
            _require(isinstance(values, list) and len(values) > 0
                     and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1
                             for v in values),
                     f"{path}.values", "must be a non-empty list of lengths >= 1")
            params = {"values": list(values)}
        return cls(kind, params)

    def sample(self, rng: random.Random) -> int:
        p = self.params
        if self.kind == "fixed":
            raw = p["value"]
        elif self.kind == "uniform":
            raw = rng.randint(p["low"], p["high"])
        elif self.kind == "normal":
            raw = rng.gauss(p["mean"], p["std"])
        elif self.kind == "lognormal":
            mu = math.log(p["mean"]) - p["sigma"] ** 2 / 2
            raw = rng.lognormvariate(mu, p["sigma"])
        else:
            raw = rng.choice(p["values"])
        return max(1, int(round(raw)))


@dataclass(frozen=True)
class ArrivalSpec:
    """Inter-arrival times: gamma(shape=burstiness, scale=1/(rate*burstiness)), as vllm bench serve.

    burstiness 1 is a Poisson process; < 1 burstier, > 1 more regular. rate "inf" sends all at t=0.
    """

    process: str
    rate: float
    burstiness: float = 1.0

    @classmethod
    def from_dict(cls, data, path: str = "arrival") -> "ArrivalSpec":
        _require(isinstance(data, dict), path, f"must be an object, got {data!r}")
        process = _choice(data, "process", path, ("poisson", "gamma"))
        rate = _number(data, "rate", path, positive=True, allow_inf=True)
        burstiness = _number(data, "burstiness", path, positive=True, default=1.0)
        if process == "poisson":
            _require(burstiness == 1.0, f"{path}.burstiness",
                     f"must be 1 for process 'poisson' (got {burstiness}); use process 'gamma' for bursty arrivals")
        return cls(process, rate, burstiness)


@dataclass(frozen=True)
class SharedPrefixSpec:
    groups: int
    prefix_len: int

    @classmethod
    def from_dict(cls, data, path: str = "shared_prefix") -> "SharedPrefixSpec":
        _known_fields(data, path, ("groups", "prefix_len"))
        return cls(_integer(data, "groups", path, minimum=1), _integer(data, "prefix_len", path, minimum=0))


TRACE_FORMATS = ("azure", "jsonl")


@dataclass(frozen=True)
class TraceSpec:
    path: str
    format: str
    time_scale: float = 1.0

    @classmethod
    def from_dict(cls, data, path: str = "trace") -> "TraceSpec":
        _known_fields(data, path, ("path", "format", "time_scale"))
        file_path = data.get("path")
        _require(isinstance(file_path, str) and file_path != "", f"{path}.path", "must be a file path")
        return cls(file_path, _choice(data, "format", path, TRACE_FORMATS),
                   _number(data, "time_scale", path, positive=True, default=1.0))


@dataclass(frozen=True)
class WorkloadSpec:
    """What to send, when, and where. With a trace, arrival/prompt_len/output_len are not used."""

    base_url: str
    model: str
    num_requests: int
    seed: int = 0
    arrival: ArrivalSpec | None = None
    prompt_len: LengthDist | None = None
    output_len: LengthDist | None = None
    shared_prefix: SharedPrefixSpec | None = None
    trace: TraceSpec | None = None
    max_concurrency: int | None = None
    ready_timeout_s: float = 600.0
    api: str = "openai"                 # a key of APIS

    @classmethod
    def from_dict(cls, data) -> "WorkloadSpec":
        _require(isinstance(data, dict), "spec", f"must be a JSON object, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        _require(not unknown, unknown[0] if unknown else "", f"unknown field; allowed: {', '.join(sorted(known))}")
        base_url = data.get("base_url")
        _require(isinstance(base_url, str) and base_url.startswith(("http://", "https://")), "base_url",
                 f"must be an http(s) URL such as 'http://127.0.0.1:8000', got {base_url!r}")
        model = data.get("model")
        _require(isinstance(model, str) and model != "", "model", "must be the served model name")
        trace_data = _section(data, "trace")
        trace = TraceSpec.from_dict(trace_data) if trace_data is not None else None
        arrival = prompt_len = output_len = None
        if trace is None:
            for key in ("arrival", "prompt_len", "output_len"):
                _require(data.get(key) is not None, key, "is required when no trace is given")
            arrival = ArrivalSpec.from_dict(data["arrival"])
            prompt_len = LengthDist.from_dict(data["prompt_len"], "prompt_len")
            output_len = LengthDist.from_dict(data["output_len"], "output_len")
        prefix_data = _section(data, "shared_prefix")
        max_concurrency = data.get("max_concurrency")
        if max_concurrency is not None:
            max_concurrency = _integer(data, "max_concurrency", "", minimum=1)
        return cls(
            base_url=base_url.rstrip("/"),
            model=model,
            num_requests=_integer(data, "num_requests", "", minimum=1),
            seed=_integer(data, "seed", "", minimum=0, default=0),
            arrival=arrival,
            prompt_len=prompt_len,
            output_len=output_len,
            shared_prefix=SharedPrefixSpec.from_dict(prefix_data) if prefix_data is not None else None,
            trace=trace,
            max_concurrency=max_concurrency,
            ready_timeout_s=_number(data, "ready_timeout_s", "", positive=True, default=600.0),
            api=_choice(data, "api", "", tuple(APIS), default="openai"),
        )


# --------------------------------------------------------------------------------------------
# Workload: arrivals, lengths, prompts
# --------------------------------------------------------------------------------------------

@dataclass
class PlannedRequest:
    request_id: str
    arrival_s: float
    prompt: list[int]
    output_len: int
    prefix_group: int | None


def arrival_times(arrival: ArrivalSpec, n: int, rng: random.Random) -> list[float]:
    """Scheduled send times, relative to t0, exactly as vllm bench serve's get_request computes them:
    the first request also waits one sampled gap, and the cumulative times are rescaled so the last
    one lands at n / rate (vLLM does this to remove the 1-2% seed-to-seed drift of the sum)."""
    if arrival.rate == float("inf"):
        return [0.0] * n
    scale = 1.0 / (arrival.rate * arrival.burstiness)
    times, total = [], 0.0
    for _ in range(n):
        total += rng.gammavariate(arrival.burstiness, scale)
        times.append(total)
    if total > 0:
        factor = (n / arrival.rate) / total
        times = [t * factor for t in times]
    return times


def random_token_ids(rng: random.Random, count: int) -> list[int]:
    return [rng.randrange(TOKEN_ID_LOW, TOKEN_ID_HIGH) for _ in range(count)]


def build_prompt(rng: random.Random, length: int, prefix: list[int] | None) -> list[int]:
    """`length` is the whole prompt; a shared prefix takes its first min(prefix_len, length) ids."""
    shared = (prefix or [])[:length]
    return shared + random_token_ids(rng, length - len(shared))


def _parse_timestamp(text: str, line: int) -> float:
    """Azure trace TIMESTAMP: seconds, or a datetime such as '2023-11-16 18:15:46.6805900'
    (7 fractional digits, which datetime.fromisoformat of Python 3.11 rejects) with an optional
    timezone; returned as seconds since the epoch."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d+))?\s*(Z|[+-]\d\d:?\d\d)?", text)
    if match is None:
        raise SpecError(f"line {line}: TIMESTAMP {text!r} is neither seconds nor 'YYYY-MM-DD HH:MM:SS[.f]'")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    tz = timezone.utc
    if match.group(8) and match.group(8) != "Z":
        sign = 1 if match.group(8)[0] == "+" else -1
        digits = match.group(8)[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    whole = datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp()
    return whole + (float("0." + match.group(7)) if match.group(7) else 0.0)


def _positive_int(value, line: int, column: str) -> int:
    """A token count; 0 is taken as 1 (a request has at least one token), a negative one refused."""
    try:
        number = int(round(float(value)))
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"line {line}: {column} {value!r} is not a number") from None
    if number < 0:
        raise SpecError(f"line {line}: {column} {value!r} is negative; token counts are >= 0")
    return max(1, number)


def _in_order(time_s: float, previous: float | None, line: int, column: str) -> float:
    """A row's time, refused if it is not a finite number or comes before the previous row's: a
    trace out of order is most often a broken export, and sorting it would replay another workload."""
    if not math.isfinite(time_s):
        raise SpecError(f"line {line}: {column} {time_s!r} is not a finite time")
    if previous is not None and time_s < previous:
        raise SpecError(f"line {line}: {column} {time_s:g} is before the previous row's ({previous:g}); "
                        f"sort the trace by {column}")
    return time_s


def read_azure_trace(path: str) -> list[tuple[float, int, int, int | None]]:
    """(arrival seconds, prompt tokens, output tokens, prefix group) from the Azure LLM inference
    trace CSV (columns TIMESTAMP, ContextTokens, GeneratedTokens)."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or [])
        if missing:
            raise SpecError(f"lacks the Azure trace column(s) {', '.join(sorted(missing))} (it has "
                            f"{', '.join(reader.fieldnames or []) or 'none'})")
        for line, row in enumerate(reader, start=2):
            time_s = _in_order(_parse_timestamp(row["TIMESTAMP"], line), rows[-1][0] if rows else None, line,
                               "TIMESTAMP")
            rows.append((time_s,
                         _positive_int(row["ContextTokens"], line, "ContextTokens"),
                         _positive_int(row["GeneratedTokens"], line, "GeneratedTokens"), None))
    return rows


def read_jsonl_trace(path: str) -> list[tuple[float, int, int, int | None]]:
    """Rows of {arrival_s, prompt_tokens, output_tokens, prefix_group (optional, int or null)}."""
    rows = []
    with open(path) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
                group = item.get("prefix_group")
                arrival_s = _in_order(float(item["arrival_s"]), rows[-1][0] if rows else None, line, "arrival_s")
                if arrival_s < 0:
                    raise SpecError(f"line {line}: arrival_s {arrival_s:g} is negative; times are seconds >= 0")
                rows.append((arrival_s, _positive_int(item["prompt_tokens"], line, "prompt_tokens"),
                             _positive_int(item["output_tokens"], line, "output_tokens"),
                             None if group is None else int(group)))
            except SpecError:
                raise
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise SpecError(f"line {line}: expected {{arrival_s, prompt_tokens, output_tokens, "
                                f"prefix_group}}, got {text.strip()[:200]!r} ({exc})") from None
    return rows


def read_trace(trace: TraceSpec) -> list[tuple[float, int, int, int | None]]:
    """Trace rows in time order, arrival times relative to the first request and scaled."""
    try:
        rows = read_azure_trace(trace.path) if trace.format == "azure" else read_jsonl_trace(trace.path)
    except OSError as error:
        raise SpecError(f"trace.path: cannot read {trace.path} ({error.strerror}); give an existing {trace.format} "
                        f"trace file (a path relative to where revati-tune runs, or absolute)") from None
    except SpecError as error:
        raise SpecError(f"trace.path: {trace.path} {error}") from None
    if not rows:
        raise SpecError(f"trace.path: {trace.path} holds no requests; give a trace with a row per request")
    first = rows[0][0]
    return [((t - first) * trace.time_scale, p, o, g) for t, p, o, g in rows]


def trace_rows(spec: WorkloadSpec) -> list[tuple[float, int, int, int | None]]:
    """The first num_requests rows of the spec's trace; refused if it has fewer."""
    rows = read_trace(spec.trace)
    if len(rows) < spec.num_requests:
        raise SpecError(f"num_requests: the trace has only {len(rows)} requests, got {spec.num_requests}; "
                        f"lower num_requests to at most {len(rows)}")
    return rows[:spec.num_requests]


def plan_requests(spec: WorkloadSpec) -> list[PlannedRequest]:
    """The full, seeded request plan. Deterministic for a given spec."""
    rng = random.Random(spec.seed)
    if spec.trace is not None:
        rows = trace_rows(spec)
    else:
        times = arrival_times(spec.arrival, spec.num_requests, rng)
        rows = []
        for i, t in enumerate(times):
            group = i % spec.shared_prefix.groups if spec.shared_prefix else None
            rows.append((t, spec.prompt_len.sample(rng), spec.output_len.sample(rng), group))
    # Prefixes are drawn lazily per group, so a trace's group ids can be any integers.
    prefixes: dict[int, list[int]] = {}
    prefix_len = spec.shared_prefix.prefix_len if spec.shared_prefix else 0
    planned = []
    for i, (t, prompt_len, output_len, group) in enumerate(rows):
        prefix = None
        if group is not None and prefix_len > 0:
            if group not in prefixes:
                prefixes[group] = random_token_ids(rng, prefix_len)
            prefix = prefixes[group]
        planned.append(PlannedRequest(f"req-{i}", t, build_prompt(rng, prompt_len, prefix), output_len, group))
    return planned


# --------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------

class SSEParser:
    """Splits a byte stream into SSE messages (same rules as vLLM's StreamedResponseHandler)."""

    def __init__(self) -> None:
        self.buffer = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data: bytes) -> list[str]:
        self.buffer += self._decoder.decode(data)
        messages = []
        while "\n\n" in self.buffer:
            message, self.buffer = self.buffer.split("\n\n", 1)
            if message.strip():
                messages.append(message.strip())
        return messages


def new_record(planned: PlannedRequest) -> dict:
    return {
        "request_id": planned.request_id, "arrival_s": planned.arrival_s, "sent_s": None,
        "first_token_s": None, "chunk_times": [], "finish_s": None, "done_s": None,
        "prompt_tokens": len(planned.prompt), "output_tokens": 0,
        "requested_output_tokens": planned.output_len, "error": None, "prefix_group": planned.prefix_group,
    }


class OpenAICompletions:
    """POST /v1/completions (vLLM): a chunk with a choice is one timestamp (as vLLM counts); the
    usage chunk (choices empty) carries the authoritative token counts."""
    path = "/v1/completions"

    @staticmethod
    def payload(spec: WorkloadSpec, planned: PlannedRequest) -> dict:
        return {
            "model": spec.model, "prompt": planned.prompt, "max_tokens": planned.output_len,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
        }

    @staticmethod
    def handle(data: dict, record: dict, now: float) -> None:
        if data.get("choices"):
            _token_chunk(record, now)
        elif usage := data.get("usage"):
            record["output_tokens"] = usage.get("completion_tokens") or 0
            if usage.get("prompt_tokens") is not None:
                record["prompt_tokens"] = usage["prompt_tokens"]


class SGLangGenerate:
    """POST /generate (SGLang's native API, token ids in and out): every chunk carries the output
    so far and its token counts; one with new output ids is one timestamp (as sglang.bench_serving
    and vLLM count chunks)."""
    path = "/generate"

    @staticmethod
    def payload(spec: WorkloadSpec, planned: PlannedRequest) -> dict:
        return {"input_ids": planned.prompt, "stream": True,
                "sampling_params": {"max_new_tokens": planned.output_len, "ignore_eos": True, "temperature": 0}}

    @staticmethod
    def handle(data: dict, record: dict, now: float) -> None:
        meta = data.get("meta_info") or {}
        tokens = meta.get("completion_tokens") or 0
        if tokens > record["output_tokens"]:
            _token_chunk(record, now)
            record["output_tokens"] = tokens
        if meta.get("prompt_tokens") is not None:
            record["prompt_tokens"] = meta["prompt_tokens"]


APIS = {"openai": OpenAICompletions, "sglang": SGLangGenerate}


def _token_chunk(record: dict, now: float) -> None:
    if record["first_token_s"] is None:
        record["first_token_s"] = now
    record["chunk_times"].append(now)
    record["finish_s"] = now


def handle_message(api, message: str, record: dict, now: float) -> None:
    """One SSE message of the API's stream."""
    if message.startswith(":"):  # SSE comment / keep-alive
        return
    payload = message.removeprefix("data: ")
    if payload == "[DONE]":
        return
    data = json.loads(payload)
    if data.get("error"):
        record["error"] = f"server error in stream: {data['error']}"
    else:
        api.handle(data, record, now)


async def send_request(session, spec: WorkloadSpec, planned: PlannedRequest, t0: float) -> dict:
    api = APIS[spec.api]
    record = new_record(planned)
    record["sent_s"] = time.monotonic() - t0
    try:
        async with session.post(spec.base_url + api.path, json=api.payload(spec, planned),
                                headers={"x-request-id": planned.request_id}) as response:
            if response.status != 200:
                body = (await response.text())[:500]
                record["error"] = f"HTTP {response.status} {response.reason}: {body}"
            else:
                parser = SSEParser()
                async for data in response.content.iter_any():
                    for message in parser.feed(data):
                        handle_message(api, message, record, time.monotonic() - t0)
                if record["error"] is None and record["first_token_s"] is None:
                    record["error"] = "the stream ended without a chunk carrying a token"
                elif record["error"] is None and 0 < record["output_tokens"] != planned.output_len:
                    # Output lengths are the workload's (ignore_eos): an engine that stops a request
                    # itself is not serving the workload (under emulation: a stop on a token that
                    # no kernel computed).
                    record["error"] = (f"the engine ended the request after {record['output_tokens']} of the "
                                       f"{planned.output_len} output tokens asked for with ignore_eos")
    except Exception as exc:  # a failed request is a record, never a crash of the generator
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["done_s"] = time.monotonic() - t0
    return record


async def wait_until_ready(session, base_url: str, timeout_s: float) -> None:
    """Poll GET /health every 0.5 s until it answers 200, or raise after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        try:
            async with session.get(f"{base_url}/health") as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except Exception as exc:  # connection refused while the server starts
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"server at {base_url} not ready after {timeout_s} s "
                               f"(GET /health: {last}); raise ready_timeout_s or check the engine log")
        await asyncio.sleep(HEALTH_POLL_INTERVAL_S)


READY_LINE = "loadgen: the server is ready; sending the workload"


async def run_load(spec: WorkloadSpec, plan: list[PlannedRequest], on_record=None) -> tuple[list[dict], dict]:
    """Send the plan; `on_record(record)` is called as each request ends (in the order they end)."""
    import aiohttp  # only here: the workload code above must import without it

    # As vllm bench serve: one session whose pool is capped at max_concurrency (0 = unlimited).
    connector = aiohttp.TCPConnector(limit=spec.max_concurrency or 0, limit_per_host=spec.max_concurrency or 0,
                                     force_close=False, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
        await wait_until_ready(session, spec.base_url, spec.ready_timeout_s)
        semaphore = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None
        async def limited(planned: PlannedRequest) -> dict:
            if semaphore is None:
                record = await send_request(session, spec, planned, t0)
            else:
                async with semaphore:
                    record = await send_request(session, spec, planned, t0)
            if on_record is not None:
                on_record(record)
            return record

        print(READY_LINE, flush=True)   # the run driver times start-up and serving from this line
        t0 = time.monotonic()
        tasks = []
        for planned in plan:
            delay = t0 + planned.arrival_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(limited(planned)))
        records = await asyncio.gather(*tasks)
        duration = time.monotonic() - t0
    failed = sum(1 for r in records if r["error"] is not None)
    summary = {"num_requests": len(records), "completed": len(records) - failed, "failed": failed,
               "duration_s": duration, "total_output_tokens": sum(r["output_tokens"] for r in records)}
    return list(records), summary


def write_records(path: str, records: list[dict], summary: dict) -> None:
    """The records in plan order and the summary, replacing the file the run streamed."""
    with open(path + ".tmp", "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.write(json.dumps({"summary": summary}) + "\n")
    os.replace(path + ".tmp", path)


class RecordStream:
    """The records file while the load runs: `{"planned_requests": N}`, then each request's record
    as it ends, flushed, so that a study can see how a trial is going (autotune/pruning.py)."""

    def __init__(self, path: str, planned: int):
        self.file = open(path, "w")
        self.write({"planned_requests": planned})

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="workload spec JSON file")
    parser.add_argument("--out", required=True, help="per-request records, JSON lines")
    args = parser.parse_args(argv)
    try:
        with open(args.spec) as f:
            spec = WorkloadSpec.from_dict(json.load(f))
        plan = plan_requests(spec)
        stream = RecordStream(args.out, len(plan))
        try:
            records, summary = asyncio.run(run_load(spec, plan, stream.write))
        except BaseException:
            os.remove(args.out)         # a load that did not run leaves no records
            raise
        finally:
            stream.close()
    except (SpecError, TimeoutError, OSError, json.JSONDecodeError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    write_records(args.out, records, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
