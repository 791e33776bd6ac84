"""Deployable output (reports/manifests.py): each recommended configuration's engine command and
Kubernetes manifest, checked against Kubernetes' own API schemas (kubernetes-validate, strict:
unknown fields are errors too)."""
import json
import re
import shlex

import kubernetes_validate
import pandas as pd
import pytest
import yaml

from autotune import config
from emulator.engines import registry
from emulator.engines.envs import RECIPES
from reports import manifests

KUBERNETES = "1.33.0"
FLAGSHIP = "conf/llama70b_h100.yaml"


def _front(study, configurations) -> pd.DataFrame:
    rows = []
    for number, args in enumerate(configurations):
        args = dict(args)
        engine = args.pop("engine", study.engine)
        run = study.run_config(args, engine)
        rows.append({"number": number, "engine": engine, "sku": study.sku, "gpus": run.knobs.gpus, "deploy_command": shlex.join(
            registry.adapter(engine).deploy_command(study.hf_id, run.knobs))})
    return pd.DataFrame(rows)


def test_every_configuration_of_the_flagship_deploys_as_valid_kubernetes_objects(tmp_path):
    study = config.load(FLAGSHIP)
    configurations = study.space().configurations()
    written = manifests.write_deploy_files(_front(study, configurations), tmp_path, study.study_name)
    assert len(written) == len(configurations) > 1
    for number, files in written.items():
        documents = list(yaml.safe_load_all((tmp_path / files["manifest"]).read_text()))
        assert [d["kind"] for d in documents] == ["Deployment", "Service"]
        for document in documents:
            kubernetes_validate.validate(document, KUBERNETES, strict=True)
        deployment, service = documents
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        args = configurations[number]
        # The trial's command as it ran, told to serve where the Service sends traffic, on its GPUs.
        assert container["command"][:3] == ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
        assert container["command"][-4:] == ["--host", "0.0.0.0", "--port", "8000"]
        flag = container["command"].index("--tensor-parallel-size")
        assert container["command"][flag + 1] == str(args["tensor_parallel_size"])
        assert container["resources"]["limits"]["nvidia.com/gpu"] == study.run_config(dict(args)).knobs.gpus
        # ... of the GPU type it was emulated on, as GPU Feature Discovery labels nodes.
        assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert container["image"] == f"vllm/vllm-openai:v{RECIPES['vllm'].version}"
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        script = (tmp_path / files["command"]).read_text()
        assert script.splitlines()[-1] == "exec " + _front(study, [args])["deploy_command"][0]


def test_an_sglang_server_binds_every_interface_and_an_engine_without_an_image_gets_its_command(tmp_path):
    front = pd.DataFrame([
        {"number": 3, "engine": "sglang", "gpus": 2, "deploy_command": "sglang serve --model-path m --tp-size 2"},
        {"number": 4, "engine": "transformers", "gpus": 1, "deploy_command": "python -m x --model-dir m"},
        {"number": 5, "engine": "vllm", "gpus": 1, "deploy_command": None}])
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "trial-9.yaml").write_text("stale")
    written = manifests.write_deploy_files(front, tmp_path, "My Study_2026!")
    assert written == {3: {"command": "deploy/trial-3.sh", "manifest": "deploy/trial-3.yaml"},
                       4: {"command": "deploy/trial-4.sh"}}
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["trial-3.sh", "trial-3.yaml", "trial-4.sh"]
    deployment, service = yaml.safe_load_all((tmp_path / "deploy" / "trial-3.yaml").read_text())
    kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    assert deployment["metadata"]["name"] == "my-study-2026-t3-server"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][-4:] == ["--host", "0.0.0.0", "--port", "30000"]
    assert service["spec"]["ports"][0]["port"] == 30000


def test_a_disaggregated_layout_deploys_each_instance_on_its_gpus_behind_its_proxy(tmp_path):
    from autotune.trial import _deploy_roles
    study = config.load("conf/llama8b_disagg_h100.yaml", [f"out={tmp_path}"])
    knobs = study.run_config({"prefill_instances": 2, "decode_instances": 1}).knobs
    front = pd.DataFrame([{"number": 4, "engine": "vllm", "sku": "h100", "gpus": knobs.gpus,
                           "deploy_command": shlex.join(registry.adapter("vllm").deploy_command(study.hf_id, knobs)),
                           "deploy_roles": _deploy_roles("vllm", study.hf_id, knobs)}])
    files = manifests.write_deploy_files(front, tmp_path, study.study_name)[4]
    documents = list(yaml.safe_load_all((tmp_path / files["manifest"]).read_text()))
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    names = [(d["kind"], d["metadata"]["name"].rsplit("-t4-", 1)[1]) for d in documents]
    assert names == [("ConfigMap", "proxy"), ("Deployment", "prefill-0"), ("Service", "prefill-0"),
                     ("Deployment", "prefill-1"), ("Service", "prefill-1"), ("Deployment", "decode-0"),
                     ("Service", "decode-0"), ("Deployment", "proxy"), ("Service", "proxy")]
    deployments = {name: d for (kind, name), d in zip(names, documents) if kind == "Deployment"}
    for role, kv_role in (("prefill-0", "kv_producer"), ("decode-0", "kv_consumer")):
        [container] = deployments[role]["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        assert json.loads(command[command.index("--kv-transfer-config") + 1]) == {
            "kv_connector": "NixlConnector", "kv_role": kv_role}
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    [proxy] = deployments["proxy"]["spec"]["template"]["spec"]["containers"]
    assert "resources" not in proxy and proxy["command"][:2] == ["python3", "/proxy/pd_proxy.py"]
    service = documents[1]["metadata"]["name"].rsplit("-prefill-0", 1)[0]
    assert proxy["command"][proxy["command"].index("--prefill"):] == [
        "--prefill", f"http://{service}-prefill-0:8000", f"http://{service}-prefill-1:8000",
        "--decode", f"http://{service}-decode-0:8000"]
    assert "aiohttp" in documents[0]["data"]["pd_proxy.py"]
    script = (tmp_path / files["command"]).read_text()
    assert "CUDA_VISIBLE_DEVICES=2 " in script and "exec python3 -m emulator.engines.vllm.pd_proxy" in script


@pytest.mark.parametrize("study_name", ["x" * 80, "---", "Llama 70B / H100"])
def test_object_names_are_dns_labels_that_keep_the_trial_and_role(study_name):
    name = manifests.object_name(study_name, 123, "server")
    assert len(name) <= 63 and name.endswith("-t123-server")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
