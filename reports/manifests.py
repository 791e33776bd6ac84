"""Deployable output for the configurations a report recommends: per trial on the Pareto front,
the exact engine command (deploy/trial-N.sh) and a Kubernetes manifest (deploy/trial-N.yaml),
written next to report.html and linked from it.

A manifest holds one Deployment and one Service per role of the layout; an aggregated deployment
(one engine serving prefill and decode) has the one role `server`; a disaggregated one has its
prefill and decode instances (NixlConnector; each advertises its pod's address for KV pulls) and
`proxy`, revati-tune's P/D proxy (emulator/engines/vllm/pd_proxy.py, aiohttp only) run from a
ConfigMap in the engine's image, with no GPU. The pod runs the engine's
released image at the version the study emulated, with the trial's command (its --host and
--port added, as the engines bind where a Service reaches them only when told: SGLang defaults to
127.0.0.1), the trial's GPUs as `nvidia.com/gpu` on nodes of its GPU type (the
`nvidia.com/gpu.product` label NVIDIA's GPU Feature Discovery gives nodes), a memory-backed /dev/shm (tensor-parallel ranks
exchange through shared memory, and a container's default 64 MiB is too small for it), an
optional Hugging Face token from the Secret `hf-token`, and a readiness probe on /health. Engines
without a released image (the transformers reference server) get the command only.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from emulator.engines.envs import RECIPES
from emulator.hardware import load_sku


@dataclass(frozen=True)
class EngineImage:
    repository: str
    port: int           # the port the manifest has the engine serve on

    def image(self, engine: str) -> str:
        return f"{self.repository}:v{RECIPES[engine].version}"


ENGINE_IMAGES = {"vllm": EngineImage("vllm/vllm-openai", 8000), "sglang": EngineImage("lmsysorg/sglang", 30000)}
PROXY_SOURCE = Path(__file__).resolve().parents[1] / "emulator" / "engines" / "vllm" / "pd_proxy.py"
# Kubernetes object names: DNS-1123 labels (lower-case letters, digits, '-'), at most 63 characters.
NAME_LIMIT = 63


def write_deploy_files(front: pd.DataFrame, out_dir: Path, study_name: str) -> dict[int, dict[str, str]]:
    """deploy/trial-N.sh (and deploy/trial-N.yaml where the engine has an image) for each trial of
    `front`; returns, per trial number, the written files' paths relative to out_dir by kind."""
    deploy = out_dir / "deploy"
    for earlier in deploy.glob("trial-*"):       # a report written again: its front may have changed
        earlier.unlink()
    written = {}
    for _, trial in front.iterrows():
        number, engine, command = int(trial["number"]), str(trial["engine"]), trial["deploy_command"]
        if not isinstance(command, str) or not command:
            continue
        deploy.mkdir(parents=True, exist_ok=True)
        files = {}
        script = deploy / f"trial-{number}.sh"
        script.write_text(f"#!/bin/sh\n# revati-tune study {study_name}, trial {number}: {int(trial['gpus'])} GPUs\n"
                          f"exec {command}\n")
        files["command"] = str(script.relative_to(out_dir))
        if engine in ENGINE_IMAGES:
            manifest = deploy / f"trial-{number}.yaml"
            layout = trial.get("deploy_roles")
            roles = ({name: (shlex.split(cmd), gpus) for name, (cmd, gpus) in json.loads(layout).items()}
                     if isinstance(layout, str) and layout else {"server": (shlex.split(command), int(trial["gpus"]))})
            product = gpu_product(str(trial["sku"])) if isinstance(trial.get("sku"), str) else None
            manifest.write_text(yaml.safe_dump_all(manifests(study_name, number, engine, roles, product),
                                                   sort_keys=False))
            files["manifest"] = str(manifest.relative_to(out_dir))
        written[number] = files
    return written


def gpu_product(sku: str) -> str:
    """The SKU's GPU as GPU Feature Discovery labels its nodes: the CUDA device name, spaces as '-'."""
    return load_sku(sku).name.replace(" ", "-")


def manifests(study_name: str, number: int, engine: str, roles: dict[str, tuple[list[str], int]],
              gpu_product: str | None = None) -> list[dict]:
    """A Deployment and a Service per role: role -> (the engine command, its GPUs); on nodes
    labelled with `gpu_product` where one is given. Roles named prefill-N and decode-N make a
    disaggregated layout, which gets its proxy."""
    spec = ENGINE_IMAGES[engine]
    objects = []
    disaggregated = any(role.startswith(("prefill-", "decode-")) for role in roles)
    for role, (command, gpus) in roles.items():
        container = {
            "name": engine,
            "image": spec.image(engine),
            "command": [*command, "--host", "0.0.0.0", "--port", str(spec.port)],
            "ports": [{"name": "http", "containerPort": spec.port}],
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token",
                                                                         "optional": True}}}],
            "resources": {"limits": {"nvidia.com/gpu": gpus}},
            "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
        }
        if disaggregated:
            # Decode instances pull KV from the prefill pods' own addresses (NIXL's side channel).
            container["env"].append({"name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                                     "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        objects += _served(study_name, number, role, spec.port, container,
                           volumes=[{"name": "shm", "emptyDir": {"medium": "Memory"}}],
                           node_selector={"nvidia.com/gpu.product": gpu_product} if gpu_product else None)
    if disaggregated:
        # The P/D proxy: the engine's image (Python with aiohttp), its script from a ConfigMap, no GPU.
        proxy = object_name(study_name, number, "proxy")
        urls = {kind: [f"http://{object_name(study_name, number, role)}:{spec.port}" for role in roles
                       if role.startswith(kind)] for kind in ("prefill", "decode")}
        container = {"name": "proxy", "image": spec.image(engine),
                     "command": ["python3", "/proxy/pd_proxy.py", "--host", "0.0.0.0", "--port", str(spec.port),
                                 "--prefill", *urls["prefill"], "--decode", *urls["decode"]],
                     "ports": [{"name": "http", "containerPort": spec.port}],
                     "volumeMounts": [{"name": "proxy", "mountPath": "/proxy"}]}
        objects = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": proxy},
                    "data": {"pd_proxy.py": PROXY_SOURCE.read_text()}}, *objects,
                   *_served(study_name, number, "proxy", spec.port, container,
                            volumes=[{"name": "proxy", "configMap": {"name": proxy}}])]
    return objects


def _served(study_name: str, number: int, role: str, port: int, container: dict, volumes: list[dict],
            node_selector: dict | None = None) -> list[dict]:
    """A role's Deployment (one pod running `container`, ready once it answers /health) and the
    Service in front of its port."""
    name = object_name(study_name, number, role)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": object_name(study_name, number, ""),
              "app.kubernetes.io/component": role, "app.kubernetes.io/managed-by": "revati-tune"}
    container = {**container, "readinessProbe": {"httpGet": {"path": "/health", "port": "http"},
                                                 "periodSeconds": 10, "failureThreshold": 90}}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": name, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                  "template": {"metadata": {"labels": labels},
                               "spec": {**({"nodeSelector": node_selector} if node_selector else {}),
                                        "containers": [container], "volumes": volumes}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "labels": labels},
         "spec": {"selector": {"app.kubernetes.io/name": name},
                  "ports": [{"name": "http", "port": port, "targetPort": "http"}]}},
    ]


def object_name(study_name: str, number: int, role: str) -> str:
    """`<study>-t<N>[-<role>]` as a DNS-1123 label: the study's name shortened, never the suffix."""
    suffix = f"-t{number}" + (f"-{role}" if role else "")
    study = re.sub(r"[^a-z0-9]+", "-", study_name.lower()).strip("-") or "study"
    return study[:NAME_LIMIT - len(suffix)].rstrip("-") + suffix
