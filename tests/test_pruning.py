"""The study's early-stopping rule (autotune/pruning.py) on streamed records."""
import json

from autotune import pruning

SLOS = {"ttft": 500.0, "tpot": 50.0}


def request(number, ttft_s, ok=True):
    return {"request_id": number, "sent_s": 0.0, "first_token_s": ttft_s if ok else None, "finish_s": ttft_s + 1.0,
            "output_tokens": 41, "chunk_times": [], "error": None if ok else "boom"}


def write(path, planned, records, torn=False):
    lines = [json.dumps({"planned_requests": planned})] + [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + ("\n" + '{"request_id": 99, "se' if torn else "\n"))


def test_a_trial_stops_only_once_the_target_is_out_of_reach(tmp_path):
    path = tmp_path / "requests.jsonl"
    # 20 planned at 90%: two may miss. Two slow first tokens (0.8 s > 500 ms) still leave 90% possible.
    write(path, 20, [request(0, 0.1), request(1, 0.8), request(2, 0.9)], torn=True)
    assert pruning.reason_to_stop(path, SLOS, 0.9) is None
    # A third miss, a failed request (never good), makes 90% impossible.
    write(path, 20, [request(0, 0.1), request(1, 0.8), request(2, 0.9), request(3, 0.1, ok=False)])
    reason = pruning.reason_to_stop(path, SLOS, 0.9)
    assert reason == ("pruned after 4 of 20 requests: 3 missed the SLOs (ttft 500 ms, tpot 50 ms), so at most 85% "
                      "can meet them, below slo.attainment 90%")


def test_nothing_to_judge_is_no_reason(tmp_path):
    path = tmp_path / "requests.jsonl"
    assert pruning.reason_to_stop(path, SLOS, 0.9) is None                 # not written yet
    path.write_text('{"request_id": 0')                                     # torn, no plan line
    assert pruning.reason_to_stop(path, SLOS, 0.9) is None
    write(path, 4, [request(0, 0.9)])
    assert pruning.reason_to_stop(path, {}, 0.9) is None                   # no SLOs: nothing to miss
    assert pruning.reason_to_stop(path, SLOS, 1.0) is not None             # 100%: the first miss decides
