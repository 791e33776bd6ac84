"""Managed engine environments: one virtualenv per serving engine, under $REVATI_HOME/envs/<engine>.

Serving engines pin heavy, conflicting stacks (torch, flashinfer, triton...), so each lives in its
own venv, apart from revati-tune's. An engine's recipe says how to build its venv; adding an
engine is adding an entry to RECIPES. A finished venv carries a marker file with the versions it
was verified with, so `setup` is idempotent and `is_ready` is cheap.
"""
from __future__ import annotations

import datetime
import email.parser
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from emulator.paths import revati_home

MARKER = ".revati-ready.json"


class EngineEnvError(RuntimeError):
    """An engine environment is missing, broken or could not be built; the message says the fix."""


@dataclass(frozen=True)
class WheelRecipe:
    """An engine installed from its released wheel, with its requirements resolved by us.

    pip is not asked to resolve the engine itself: a wheel may pin a release that the registry
    here lacks (vllm 0.33.0 requires certifi>=2026.10.19, which is absent), and pip would give up.
    So we read the wheel's Requires-Dist, swap the pins in `replacements`, install that list, and
    then install the wheel with --no-deps.
    """
    package: str
    version: str
    # canonical requirement name -> requirement to install instead
    replacements: dict[str, str]
    # module -> the version (without local suffix such as +cu130) a working env must import
    verify: dict[str, str]

    def requirements(self, metadata: str) -> list[str]:
        """The requirements to install for a wheel's METADATA text, in its order."""
        headers = email.parser.Parser().parsestr(metadata, headersonly=True)
        result = []
        for line in headers.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            # Markers are evaluated for this interpreter, which is the one the venv is made from;
            # extra="" means no extras are asked for, so `extra == "..."` lines drop out.
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name in self.replacements:
                result.append(self.replacements[name])
                continue
            requirement.marker = None
            result.append(str(requirement))
        return result

    def install(self, env: Path, cache: Path, echo: Callable[[str], None]) -> None:
        """Build the venv at `env` (which must not exist), keeping downloaded wheels in `cache`."""
        _run([sys.executable, "-m", "venv", env], echo)
        python = env / "bin" / "python"
        wheels = cache / f"{self.package}-{self.version}"
        _run([python, "-m", "pip", "download", "--no-deps", "--dest", wheels,
              f"{self.package}=={self.version}"], echo)
        wheel = _single_wheel(wheels, self.package, self.version)
        requirements_file = env / "revati-requirements.txt"
        requirements_file.write_text("\n".join(self.requirements(wheel_metadata(wheel))) + "\n")
        echo(f"installing the requirements of {wheel.name} (list: {requirements_file})")
        _run([python, "-m", "pip", "install", "-r", requirements_file], echo)
        _run([python, "-m", "pip", "install", "--no-deps", wheel], echo)


RECIPES: dict[str, WheelRecipe] = {
    "vllm": WheelRecipe(
        package="vllm",
        version="0.33.0",
        # vllm 0.33.0 pins certifi>=2026.10.19, a release absent from the registry here.
        replacements={"certifi": "certifi"},
        verify={"vllm": "0.33.0", "torch": "2.14.0"},
    ),
    # SGLang 0.5.23 pins torch 2.14.1 (vLLM 0.33 pins 2.14.0), sglang-kernel 0.4.10 and flashinfer
    # 0.7.2: an env of its own. Every pin resolves from the registry here (pip --dry-run, 76
    # requirements), so nothing is replaced.
    "sglang": WheelRecipe(
        package="sglang",
        version="0.5.23",
        replacements={},
        verify={"sglang": "0.5.23", "torch": "2.14.1"},
    ),
}


def env_path(engine: str) -> Path:
    _recipe(engine)
    return revati_home() / "envs" / engine


def env_python(engine: str) -> Path:
    return env_path(engine) / "bin" / "python"


def is_managed(engine: str) -> bool:
    """Whether revati-tune builds the engine's env (`revati-tune setup ENGINE`), rather than the
    engine finding its own interpreter (transformers: emulator/engines/transformers/adapter.py)."""
    return engine in RECIPES


def is_ready(engine: str) -> bool:
    """Whether the engine's env was set up and verified (trusts the marker; `setup` re-checks)."""
    recipe = _recipe(engine)
    try:
        marker = json.loads((env_path(engine) / MARKER).read_text())
        versions = marker["versions"]
        return env_python(engine).exists() and all(
            Version(versions[module]).public == expected
            for module, expected in recipe.verify.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def setup(engine: str, force: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Make the engine's env ready: build it if absent, verify and mark it if unmarked, else
    nothing. `force` deletes and rebuilds it. Returns the env's path."""
    recipe = _recipe(engine)
    path = env_path(engine)
    if force and path.exists():
        echo(f"--force: removing {path}")
        shutil.rmtree(path)
    if not path.exists():
        echo(f"building the {engine} env at {path}")
        try:
            recipe.install(path, revati_home() / "cache" / "wheels", echo)
        except subprocess.CalledProcessError as error:
            command = shlex.join(map(str, error.cmd))
            raise EngineEnvError(f"building the {engine} env failed: `{command}` exited with "
                                 f"{error.returncode}; fix the cause above, then rebuild with "
                                 f"`revati-tune setup {engine} --force`") from error
        python_version, versions = _verified_versions(engine, recipe)
        _write_marker(engine, recipe, python_version, versions)
        echo(f"{engine} env is ready at {path} ({_describe(versions)})")
    elif (path / MARKER).is_file():
        _, versions = _verified_versions(engine, recipe)
        echo(f"{engine} env is already set up at {path} ({_describe(versions)}); nothing to do "
             f"(--force rebuilds it)")
    else:
        # An env built by hand (or by an older revati-tune) with the same recipe is adopted
        # rather than rebuilt: rebuilding costs minutes and ~10 GB of downloads.
        python_version, versions = _verified_versions(engine, recipe)
        _write_marker(engine, recipe, python_version, versions)
        echo(f"found an unmarked {engine} env at {path}; verified it ({_describe(versions)}) and "
             f"marked it ready")
    echo(f"disk use of {path}: {human_size(disk_usage(path))}")
    return path


def wheel_metadata(wheel: Path) -> str:
    """The METADATA text of a wheel file."""
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist()
                 if name.count("/") == 1 and name.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise EngineEnvError(f"{wheel}: expected one *.dist-info/METADATA, found {names}")
        return archive.read(names[0]).decode()


def disk_usage(path: Path) -> int:
    """Bytes on disk under path, like `du -s` (hard links counted once, symlinks not followed)."""
    seen = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            stat = os.lstat(os.path.join(root, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def _recipe(engine: str) -> WheelRecipe:
    if engine not in RECIPES:
        raise ValueError(f"unknown engine {engine!r}: known engines are "
                         f"{', '.join(sorted(RECIPES))}")
    return RECIPES[engine]


def _run(command: list, echo: Callable[[str], None]) -> None:
    # Output is not captured, so pip's own progress shows as it goes.
    command = [str(part) for part in command]
    echo(f"$ {shlex.join(command)}")
    subprocess.run(command, check=True)


def _single_wheel(folder: Path, package: str, version: str) -> Path:
    # Wheel file names spell the project name with underscores (PEP 427).
    wheels = sorted(folder.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if len(wheels) != 1:
        raise EngineEnvError(f"expected one {package} {version} wheel in {folder}, found "
                             f"{[w.name for w in wheels]}; remove the folder and run setup again")
    return wheels[0]


def _verified_versions(engine: str, recipe: WheelRecipe) -> tuple[str, dict[str, str]]:
    """Import the recipe's modules in the env's python: its python version and the modules'
    versions, or an error that says the fix."""
    fix = f"rebuild it with `revati-tune setup {engine} --force`"
    python = env_python(engine)
    if not python.exists():
        raise EngineEnvError(f"{env_path(engine)} exists but has no {python}; {fix}")
    code = ("import importlib, json, platform, sys; print(json.dumps([platform.python_version(), "
            "{m: importlib.import_module(m).__version__ for m in sys.argv[1:]}]))")
    result = subprocess.run([str(python), "-c", code, *recipe.verify],
                            capture_output=True, text=True)
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise EngineEnvError(f"{env_path(engine)} is not a working {engine} env: importing "
                             f"{', '.join(recipe.verify)} failed ({last_line}); {fix}")
    python_version, versions = json.loads(result.stdout.strip().splitlines()[-1])
    wrong = {m: v for m, v in versions.items() if Version(v).public != recipe.verify[m]}
    if wrong:
        expected = _describe({m: recipe.verify[m] for m in wrong})
        raise EngineEnvError(f"{env_path(engine)} has {_describe(wrong)}, the recipe wants "
                             f"{expected}; {fix}")
    return python_version, versions


def _write_marker(engine: str, recipe: WheelRecipe, python_version: str,
                  versions: dict[str, str]) -> None:
    marker = {
        "engine": engine,
        "package": recipe.package,
        "version": recipe.version,
        "versions": versions,
        "python": python_version,
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (env_path(engine) / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _describe(versions: dict[str, str]) -> str:
    return ", ".join(f"{module} {version}" for module, version in versions.items())
