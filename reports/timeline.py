"""What one run did over virtual time and how its latencies spread, from requests.parquet alone
(the columns of emulator.metrics.records_frame; times in seconds from the start of the load).

The queue is seen from the client, as the per-request times allow: a request is *waiting* from
being sent until its first token (queued or in prefill) and *running* from its first token until
its last (decoding). A failed request waits until it is given up on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

CDF_POINTS = 201        # a CDF is drawn through this many quantiles, whatever the request count
THROUGHPUT_BINS = 60


def itls_s(requests: pd.DataFrame) -> np.ndarray:
    """Inter-token latencies pooled over all requests, as vLLM pools them."""
    gaps = [np.diff(np.asarray(chunks, dtype=float)) for chunks in requests["chunk_times"] if len(chunks) > 1]
    return np.concatenate(gaps) if gaps else np.empty(0)


def latency_cdfs(requests: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """metric (ttft, tpot, itl, e2el) -> quantiles: columns ms and share (of values <= ms)."""
    values = {
        "ttft": requests["ttft_s"].dropna().to_numpy(),
        "tpot": requests["tpot_s"].dropna().to_numpy(),
        "itl": itls_s(requests),
        "e2el": requests["e2el_s"].dropna().to_numpy(),
    }
    return {name: _cdf(v) for name, v in values.items()}


def _cdf(values_s: np.ndarray) -> pd.DataFrame:
    if not len(values_s):
        return pd.DataFrame({"ms": [], "share": []})
    shares = np.linspace(0.0, 1.0, CDF_POINTS)
    return pd.DataFrame({"ms": np.quantile(values_s, shares) * 1000.0, "share": shares})


def queue_over_time(requests: pd.DataFrame) -> pd.DataFrame:
    """Requests waiting and running after each event: columns time_s, waiting, running (steps)."""
    started = requests[requests["first_token_s"].notna()]
    # A failed request has no first token: it waits until its end, then leaves.
    waiting_until = requests["first_token_s"].fillna(requests["done_s"].fillna(requests["finish_s"]))
    events = pd.concat([
        pd.DataFrame({"time_s": requests["sent_s"], "waiting": 1, "running": 0}),
        pd.DataFrame({"time_s": waiting_until, "waiting": -1, "running": 0}),
        pd.DataFrame({"time_s": started["first_token_s"], "waiting": 0, "running": 1}),
        pd.DataFrame({"time_s": started["finish_s"], "waiting": 0, "running": -1}),
    ]).dropna(subset=["time_s"]).sort_values("time_s", kind="stable")
    steps = events[["waiting", "running"]].cumsum()
    start = pd.DataFrame({"time_s": [0.0], "waiting": [0], "running": [0]})
    return pd.concat([start, pd.concat([events["time_s"], steps], axis=1)], ignore_index=True)


def throughput_over_time(requests: pd.DataFrame, bins: int = THROUGHPUT_BINS) -> pd.DataFrame:
    """Output tokens and finished requests per second in equal bins of virtual time: columns
    time_s (bin middle), output_tokens_per_s, requests_per_s. A chunk may carry several tokens, so
    each request's output tokens are spread evenly over its chunks."""
    done = requests[requests["first_token_s"].notna()]
    end = float(np.nanmax(done["finish_s"])) if len(done) else 0.0
    edges = np.linspace(0.0, max(end, 1e-3), bins + 1)
    chunk_times, chunk_tokens = [], []
    for chunks, tokens in zip(done["chunk_times"], done["output_tokens"]):
        if len(chunks):
            chunk_times.append(np.asarray(chunks, dtype=float))
            chunk_tokens.append(np.full(len(chunks), float(tokens or 1) / len(chunks)))
    tokens, _ = np.histogram(np.concatenate(chunk_times) if chunk_times else [], edges,
                             weights=np.concatenate(chunk_tokens) if chunk_tokens else None)
    finished, _ = np.histogram(done["finish_s"], edges)
    width = edges[1] - edges[0]
    return pd.DataFrame({"time_s": (edges[:-1] + edges[1:]) / 2,
                         "output_tokens_per_s": tokens / width, "requests_per_s": finished / width})
