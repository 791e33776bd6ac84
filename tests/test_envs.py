"""Managed engine envs: the vllm recipe's requirement list, paths, the marker and idempotent setup.

No env is built here: building vllm's takes minutes and ~10 GB. The setup logic runs for real
against a stand-in env whose python is this interpreter and whose recipe verifies `yaml`.
"""
import json
import platform
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from emulator.engines import envs
from emulator.engines.envs import EngineEnvError, WheelRecipe

FAKE_METADATA = """\
Metadata-Version: 2.4
Name: vllm
Version: 0.33.0
Requires-Dist: regex
Requires-Dist: requests>=2.33.0
Requires-Dist: certifi>=2026.10.19
Requires-Dist: fastapi[standard]<0.137.0,>=0.133.0
Requires-Dist: protobuf>=5.29.6; platform_machine != "no-such-machine"
Requires-Dist: protobuf==7.36.1; platform_machine == "no-such-machine"
Requires-Dist: six>=1.16.0; python_version < "3"
Requires-Dist: torch==2.14.0
Requires-Dist: zentorch==2.14.0.1; extra == "zen"
Requires-Dist: scipy; extra == "bench" or extra == "audio"
Requires-Dist: helion==1.4.0; python_version >= "3.11" and extra == "helion"

A long description that mentions Requires-Dist: not-a-requirement.
"""


def test_vllm_recipe_requirements():
    assert envs.RECIPES["vllm"].requirements(FAKE_METADATA) == [
        "regex",
        "requests>=2.33.0",
        "certifi",  # the pin the registry cannot satisfy, relaxed
        "fastapi[standard]<0.137.0,>=0.133.0",
        "protobuf>=5.29.6",
        "torch==2.14.0",
    ]


def test_replacements_match_normalized_names():
    recipe = WheelRecipe(package="x", version="1",
                         replacements={"typing-extensions": "typing_extensions"}, verify={})
    metadata = "Name: x\nRequires-Dist: Typing_Extensions>=99\n"
    assert recipe.requirements(metadata) == ["typing_extensions"]


def test_wheel_metadata(tmp_path):
    wheel = tmp_path / "vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("vllm/__init__.py", "")
        archive.writestr("vllm-0.33.0.dist-info/METADATA", FAKE_METADATA)
    assert envs.wheel_metadata(wheel) == FAKE_METADATA


def test_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("REVATI_HOME", str(tmp_path))
    assert envs.env_path("vllm") == tmp_path / "envs" / "vllm"
    assert envs.env_python("vllm") == tmp_path / "envs" / "vllm" / "bin" / "python"
    monkeypatch.delenv("REVATI_HOME")
    assert envs.env_path("vllm") == Path.home() / ".local/share/revati-tune/envs/vllm"


def test_unknown_engine():
    with pytest.raises(ValueError, match="unknown engine 'tgi': known engines are sglang, vllm"):
        envs.env_path("tgi")


def make_stand_in_env(env: Path) -> None:
    """An env whose python is this interpreter, so `yaml` imports in it."""
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(sys.executable)


class StandInRecipe(WheelRecipe):
    def install(self, env, cache, echo):
        make_stand_in_env(env)


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    monkeypatch.setenv("REVATI_HOME", str(tmp_path))
    recipe = StandInRecipe(package="standin", version="1.0", replacements={},
                           verify={"yaml": yaml.__version__})
    monkeypatch.setitem(envs.RECIPES, "standin", recipe)
    return tmp_path / "envs" / "standin"


def test_setup_builds_marks_and_then_does_nothing(stand_in):
    said = []
    assert not envs.is_ready("standin")
    assert envs.setup("standin", echo=said.append) == stand_in
    assert envs.is_ready("standin")
    marker = json.loads((stand_in / envs.MARKER).read_text())
    assert marker["versions"] == {"yaml": yaml.__version__}
    assert marker["python"] == platform.python_version()
    assert any("standin env is ready" in line for line in said)

    said.clear()
    envs.setup("standin", echo=said.append)
    assert any("already set up" in line and "nothing to do" in line for line in said)
    assert said[-1].startswith(f"disk use of {stand_in}: ")


def test_setup_adopts_an_unmarked_working_env(stand_in):
    make_stand_in_env(stand_in)
    said = []
    envs.setup("standin", echo=said.append)
    assert any("found an unmarked standin env" in line for line in said)
    assert envs.is_ready("standin")


def test_setup_force_rebuilds(stand_in):
    envs.setup("standin", echo=lambda line: None)
    (stand_in / "leftover").write_text("from the old env")
    said = []
    envs.setup("standin", force=True, echo=said.append)
    assert said[0] == f"--force: removing {stand_in}"
    assert not (stand_in / "leftover").exists()
    assert envs.is_ready("standin")


def test_setup_refuses_a_broken_env_without_force(stand_in, monkeypatch):
    make_stand_in_env(stand_in)
    monkeypatch.setitem(envs.RECIPES, "standin", StandInRecipe(
        package="standin", version="1.0", replacements={}, verify={"no_such_module_here": "1"}))
    with pytest.raises(EngineEnvError, match=r"(?s)not a working standin env.*"
                                             r"revati-tune setup standin --force"):
        envs.setup("standin", echo=lambda line: None)
    assert stand_in.exists()
    assert not (stand_in / envs.MARKER).exists()


def test_setup_refuses_wrong_versions(stand_in, monkeypatch):
    make_stand_in_env(stand_in)
    monkeypatch.setitem(envs.RECIPES, "standin", StandInRecipe(
        package="standin", version="1.0", replacements={}, verify={"yaml": "0.0.1"}))
    with pytest.raises(EngineEnvError, match=f"has yaml {yaml.__version__}, the recipe wants "
                                             f"yaml 0.0.1"):
        envs.setup("standin", echo=lambda line: None)


def test_is_ready_trusts_only_a_matching_marker(stand_in):
    envs.setup("standin", echo=lambda line: None)
    marker = stand_in / envs.MARKER
    marker.write_text(json.dumps({"versions": {"yaml": "0.0.1"}}))
    assert not envs.is_ready("standin")
    marker.write_text("not json")
    assert not envs.is_ready("standin")


def test_disk_usage_and_human_size(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    (tmp_path / "b").hardlink_to(tmp_path / "a")
    (tmp_path / "c").symlink_to("/usr")
    assert 100_000 <= envs.disk_usage(tmp_path) < 200_000
    assert envs.human_size(0) == "0 B"
    assert envs.human_size(1536) == "1.5 KiB"
    assert envs.human_size(9.4 * 2**30) == "9.4 GiB"
    assert envs.human_size(3 * 2**40) == "3.0 TiB"
