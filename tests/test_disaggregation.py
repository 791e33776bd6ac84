"""Disaggregated prefill/decode layouts (fast tier): what a layout means and refuses, the commands it
becomes, the search space's layout knobs, the proxy's protocol (against stand-in instances), and
which KV heads each rank pulls. The layout served by vLLM on virtual GPUs is in
tests/test_search_vllm.py (end-to-end tier)."""
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import Request, urlopen

import pytest

from autotune import config
from emulator import paths
from emulator.engines.adapter import ServingKnobs
from emulator.engines.envs import env_python, is_ready
from emulator.engines.registry import adapter
from emulator.engines.vllm.adapter import PLUGIN_DIR
from emulator.engines.vllm.space import SPACE


def test_a_layout_counts_its_instances_gpus_and_names_its_roles():
    knobs = ServingKnobs(prefill_instances=2, prefill_tensor_parallel=1, decode_instances=1, tensor_parallel=4)
    assert knobs.disaggregated and knobs.layout == "disaggregated" and knobs.gpus == 2 * 1 + 4
    roles = knobs.roles()
    assert [(r.name, r.kind, r.knobs.tensor_parallel) for r in roles] == [
        ("prefill-0", "prefill", 1), ("prefill-1", "prefill", 1), ("decode-0", "decode", 4)]
    assert not any(r.knobs.disaggregated for r in roles)      # each instance is an aggregated one's knobs
    plain = ServingKnobs(tensor_parallel=2, data_parallel=2)
    assert plain.layout == "aggregated" and [(r.name, r.kind, r.knobs) for r in plain.roles()] == [
        ("server", "both", plain)]
    assert ServingKnobs(prefill_instances=1).prefill_tp == 1 and ServingKnobs(prefill_instances=1).gpus == 2


@pytest.mark.parametrize("values, field", [
    ({"decode_instances": 2}, "decode_instances"),
    ({"prefill_tensor_parallel": 2}, "prefill_tensor_parallel"),
    ({"prefill_instances": 1, "decode_instances": 0}, "decode_instances"),
    ({"prefill_instances": 1, "pipeline_parallel": 2}, "pipeline_parallel"),
    ({"prefill_instances": 1, "data_parallel": 2}, "data_parallel"),
    ({"prefill_instances": -1}, "prefill_instances"),
    ({"prefill_instances": 1, "prefill_tensor_parallel": 0}, "prefill_tensor_parallel"),
])
def test_a_layout_that_means_nothing_is_refused_naming_the_knob(values, field):
    with pytest.raises(ValueError, match=field):
        ServingKnobs(**values)


def test_vllm_instances_get_their_kv_role_and_the_deploy_script_gives_each_its_own_gpus():
    vllm = adapter("vllm")
    knobs = ServingKnobs(prefill_instances=1, prefill_tensor_parallel=1, decode_instances=2, tensor_parallel=2,
                         max_num_seqs=64)
    prefill, decode, _ = knobs.roles()
    config_of = lambda args: json.loads(args[args.index("--kv-transfer-config") + 1])     # noqa: E731
    assert config_of(vllm.role_arguments(prefill, 7000)) == {
        "kv_connector": "NcclConnector", "kv_connector_module_path": "revati_nccl_connector",
        "kv_role": "kv_producer", "kv_connector_extra_config": {"side_channel_port": 7000}}
    assert config_of(vllm.role_arguments(decode, 7100))["kv_role"] == "kv_consumer"
    assert vllm.role_arguments(ServingKnobs().roles()[0], 7000) == []
    shell, flag, script = vllm.deploy_command("meta-llama/Llama-3.1-8B", knobs)
    assert (shell, flag) == ("sh", "-c")
    lines = script.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1,2",
                                                        "CUDA_VISIBLE_DEVICES=3,4"]
    assert all('"kv_connector": "NixlConnector"' in line and "--max-num-seqs 64" in line for line in lines[:3])
    assert lines[3].startswith("exec python3 -m emulator.engines.vllm.pd_proxy --host 0.0.0.0 --port 8000 "
                               "--prefill http://127.0.0.1:8100 --decode http://127.0.0.1:8101 http://127.0.0.1:8102")
    assert vllm.deploy_command("m", ServingKnobs())[:2] == ["vllm", "serve"]


@pytest.mark.parametrize("engine", ["sglang", "transformers"])
def test_engines_without_a_kv_transfer_path_refuse_layouts(engine):
    with pytest.raises(ValueError, match="prefill_instances: .* aggregated layouts only"):
        adapter(engine).deploy_command("m", ServingKnobs(prefill_instances=1))


def test_the_space_asks_for_decode_instances_only_in_a_disaggregated_layout_and_for_pp_dp_only_aggregated():
    space = SPACE.narrowed({"prefill_instances": [0, 1], "decode_instances": [1, 2], "tensor_parallel_size": [1],
                            "prefill_tensor_parallel_size": [1], "pipeline_parallel_size": [1, 2],
                            "data_parallel_size": [1], "max_num_seqs": [64], "max_num_batched_tokens": [2048]})
    layouts = sorted(json.dumps(c, sort_keys=True) for c in space.configurations())
    assert layouts == sorted(json.dumps(c, sort_keys=True) for c in [
        {"prefill_instances": 0, "pipeline_parallel_size": 1}, {"prefill_instances": 0, "pipeline_parallel_size": 2},
        {"prefill_instances": 1, "decode_instances": 1}, {"prefill_instances": 1, "decode_instances": 2}])


def test_a_study_of_layouts_loads_and_budgets_every_instance(tmp_path):
    cfg = config.load("conf/llama8b_disagg_h100.yaml", [f"out={tmp_path}"])
    assert cfg.search["trials"] == 7            # grid: aggregated, and six prefill x decode counts
    over = cfg.run_config({"prefill_instances": 2, "decode_instances": 3})
    assert over.knobs.gpus == 5 and "5 GPUs (all its instances), over the budget" in config.refusal(cfg, over)
    with pytest.raises(config.ConfigError, match="search.space.decode_instances"):
        config.load("conf/llama8b_disagg_h100.yaml", [f"out={tmp_path}", "search.space.decode_instances=[0]"])


# ---- the proxy and the connector's head mapping, in vLLM's Python ------------------------------

@pytest.fixture(scope="module")
def vllm_python():
    if not is_ready("vllm"):
        pytest.skip("the vLLM env is not set up (revati-tune setup vllm)")
    return str(env_python("vllm"))


class _Instance(ThreadingHTTPServer):
    """A stand-in for one vLLM instance: records what it was sent, answers as vLLM would."""

    def __init__(self, answer):
        self.bodies, self.answer = [], answer
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.end_headers()

            def do_POST(self):
                server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status, content_type, body = server.answer(server.bodies[-1])
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_the_proxy_prefills_on_one_instance_then_streams_the_decode_of_the_least_busy(vllm_python, tmp_path):
    params = {"do_remote_prefill": True, "remote_block_ids": [3, 4], "remote_engine_id": "p0"}
    prefill = _Instance(lambda body: (200, "application/json", json.dumps(
        {"choices": [{"text": "x"}], "kv_transfer_params": params}).encode()))
    stream = b'data: {"choices": [{"text": "a"}]}\n\ndata: [DONE]\n\n'
    decodes = [_Instance(lambda body: (200, "text/event-stream", stream)) for _ in range(2)]
    port = _free_port()
    proxy = subprocess.Popen([vllm_python, "-m", "emulator.engines.vllm.pd_proxy", "--port", str(port),
                              "--prefill", prefill.url, "--decode", *(d.url for d in decodes)],
                             cwd=paths.REPO, stderr=subprocess.PIPE)
    try:
        _wait_healthy(port, proxy)
        request = {"model": "m", "prompt": [1, 2, 3], "max_tokens": 50, "stream": True,
                   "stream_options": {"include_usage": True}}
        for _ in range(2):
            answer = urlopen(Request(f"http://127.0.0.1:{port}/v1/completions", json.dumps(request).encode(),
                                     {"Content-Type": "application/json"}), timeout=30).read()
            assert answer == stream
        assert prefill.bodies[0] == {"model": "m", "prompt": [1, 2, 3], "max_tokens": 1, "stream": False,
                                     "kv_transfer_params": {"do_remote_decode": True}}
        # Neither decode instance was busy when asked, so they took turns; each got where the KV lies.
        assert [len(d.bodies) for d in decodes] == [1, 1]
        assert decodes[0].bodies[0] == {**request, "kv_transfer_params": params}
    finally:
        proxy.terminate()
        proxy.wait(10)
        for instance in (prefill, *decodes):
            instance.shutdown()


def test_each_decode_rank_pulls_the_heads_it_holds_from_the_prefill_ranks_that_hold_them(vllm_python):
    program = ("import json, revati_nccl_connector as c\n"
               "print(json.dumps({f'{tp}<-{remote}': [[(r, h.start, h.stop) for r, h in c.sources(rank, tp, remote, 8)]"
               " for rank in range(tp)] for tp, remote in ((1, 2), (2, 1), (4, 4), (2, 8))}))")
    result = subprocess.run([vllm_python, "-c", program], cwd=PLUGIN_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    pulls = json.loads(result.stdout.splitlines()[-1])
    assert pulls["1<-2"] == [[[0, 0, 4], [1, 4, 8]]]                  # one decode rank, both prefill halves
    assert pulls["2<-1"] == [[[0, 0, 4]], [[0, 4, 8]]]                # two decode ranks, one prefill rank
    assert pulls["4<-4"] == [[[r, 2 * r, 2 * r + 2]] for r in range(4)]
    assert pulls["2<-8"] == [[[r, r, r + 1] for r in range(4)], [[r, r, r + 1] for r in range(4, 8)]]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proxy: subprocess.Popen) -> None:
    import time
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proxy.poll() is None, proxy.stderr.read().decode()[-2000:]
        try:
            if urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200:
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail("the proxy never answered /health")


def test_a_layout_whose_ranks_would_replicate_kv_heads_is_refused_before_launch(tmp_path):
    cfg = config.load("conf/smoke_disagg.yaml", [f"out={tmp_path}", "search.max_gpus=8"])    # tiny_llama: 2 KV heads
    refused = cfg.run_config({"prefill_instances": 1, "decode_instances": 1, "tensor_parallel_size": 4})
    assert "KV is pulled by heads, so it must divide the model's 2 KV heads (use one of [1, 2])" in \
        config.refusal(cfg, refused)
    assert config.refusal(cfg, cfg.run_config({"prefill_instances": 1, "decode_instances": 1})) is None


def test_a_trials_progress_line_names_its_layout_only_when_disaggregated():
    from autotune.progress import describe
    from autotune.trial import TrialResult
    base = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "data_parallel_size": 1, "max_num_seqs": 128}
    layout = TrialResult("ok", 3, goodput_per_gpu=3.3, slo_attainment=1.0, user_attrs={
        "engine": "vllm", "sku": "h100", "knobs": {**base, "prefill_instances": 1, "decode_instances": 2,
                                                   "prefill_tensor_parallel_size": None}})
    assert describe(layout).startswith("vllm: tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1, "
                                       "max_num_seqs=128, prefill_instances=1, decode_instances=2: 3.300 good req/s")
    aggregated = TrialResult("pruned", 1, reason="pruned after 3", user_attrs={
        "engine": "vllm", "knobs": {**base, "prefill_instances": 0, "decode_instances": 1}})
    assert describe(aggregated) == ("vllm: tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1, "
                                    "max_num_seqs=128: pruned after 3")
