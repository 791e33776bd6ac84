"""The project's layers, checked from the code itself: no Python module imports a layer above its
own, and no modules import each other in a circle (imports inside functions count: they are how a
circle hides). The layers are the README's "Architecture" section; this table is its source."""
from __future__ import annotations

import ast
from pathlib import Path

from dependency_graphs import circles

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("emulator", "autotune", "search_spaces")

# Lowest first. A module belongs to the entry with the longest matching prefix.
LAYERS = (
    # Leaves that run inside engine and load-generator interpreters too; the wire format between the
    # vGPU library and the Timekeeper.
    ("leaves", ("emulator.paths", "emulator.process_groups", "emulator.leftovers", "emulator.endpoints",
                "emulator.metrics", "emulator.host_cpu",
                "emulator.loadgen", "emulator.vgpu.protocol")),
    ("hardware", ("emulator.hardware",)),
    ("vgpu", ("emulator.vgpu",)),
    ("timekeeper", ("emulator.timekeeper",)),
    ("predictor", ("emulator.predictor",)),
    ("search spaces", ("search_spaces",)),
    ("engines", ("emulator.engines",)),
    ("environment", ("emulator.vgpu_environment", "emulator.feasibility")),
    ("deployment and device tools", ("emulator.deployment", "emulator.profiler")),
    ("autotune", ("autotune",)),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `path` imports anywhere in its body."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b`: the module a.b where there is one, else a (a name defined in it).
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            names |= submodules if len(submodules) == len(node.names) else {node.module, *submodules}
    # `import a.b.c` also runs a and a.b; only what the code names is a dependency.
    return {name for name in names if name in modules}


def _layer(module: str) -> int:
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and the README's Architecture section)"
    return best


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_module_is_in_a_layer_and_imports_only_its_own_or_lower_ones():
    upward = [f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
              for module, targets in sorted(_graph().items()) for target in sorted(targets)
              if _layer(target) > _layer(module)]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    assert circles(_graph()) == []

