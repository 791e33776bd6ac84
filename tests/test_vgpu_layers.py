"""The vGPU library's C files are in layers by concern (emulator/vgpu/build.py's FOLDERS, lowest
first: base, predict, time, gpu, api): no file calls into a folder above its own, and no files
call each other in a circle.

Measured from the object files, as the linker sees them: each emulator/vgpu/<folder>/*.c is compiled
on its own, and a file depends on the file that defines a symbol it leaves undefined (`nm`: U). Calls that
reach another file through libc's names count too: a file that calls clock_gettime depends on
interpose_time.c, which defines it for the whole process. A circle means no file of it can be read,
tested or changed without the others; where a lower file must reach a higher one, the higher one
registers a function with it, or what both need moves to a file below them both (host.c, launch.c).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections import deque
from pathlib import Path

import pytest

from dependency_graphs import circles
from emulator.vgpu.build import FOLDERS, SOURCE_DIR, cuda_include_dir, library_sources
from emulator.vgpu.protocol import c_header

# nm's types of symbols a file defines for others (lowercase ones are its own: static) and of those
# it takes from elsewhere ("w": a weak reference).
DEFINED = set("BCDGRSTVWi")
UNDEFINED = set("Uw")


def _compile(out: Path) -> list[Path]:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (install gcc or set CC)"
    (out / "tk_protocol.h").write_text(c_header())
    flags = ["-O0", "-fPIC", f"-I{cuda_include_dir()}", f"-I{SOURCE_DIR}", f"-I{out}"]
    objects = []
    for source in library_sources():
        obj = out / f"{source.stem}.o"
        proc = subprocess.run([cc, *flags, "-c", str(source), "-o", str(obj)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{source.name} does not compile:\n{proc.stderr[-4000:]}"
        objects.append(obj)
    return objects


def _symbols(obj: Path) -> tuple[set[str], set[str]]:
    """The global symbols obj defines and those it uses from other files."""
    out = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] in DEFINED:
            defined.add(fields[2])
        elif len(fields) == 2 and fields[0] in UNDEFINED:
            undefined.add(fields[1])
    return defined, undefined


def file_graph(objects: list[Path]) -> dict[str, dict[str, set[str]]]:
    """file -> {file it calls: the symbols it takes from there}, by file stem."""
    symbols = {obj.stem: _symbols(obj) for obj in objects}
    definers: dict[str, set[str]] = {}
    for stem, (defined, _) in symbols.items():
        for name in defined:
            definers.setdefault(name, set()).add(stem)
    graph: dict[str, dict[str, set[str]]] = {stem: {} for stem in symbols}
    for stem, (_, undefined) in symbols.items():
        for name in undefined:
            for target in definers.get(name, ()):
                if target != stem:
                    graph[stem].setdefault(target, set()).add(name)
    return graph


def _loop(graph: dict[str, dict[str, set[str]]], component: list[str]) -> str:
    """One circle through the component's first file, each call with the symbols it takes:
    the shortest way back (breadth first, inside the component)."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target not in members or target in came_from:
                continue
            came_from[target] = node
            if target == start:
                queue.clear()
                break
            queue.append(target)
    path = [start]
    while len(path) == 1 or path[-1] != start:
        path.append(came_from[path[-1]])
    path.reverse()
    steps = [f"{a}.c -> {b}.c ({', '.join(sorted(graph[a][b])[:6])}{', ...' if len(graph[a][b]) > 6 else ''})"
             for a, b in zip(path, path[1:])]
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]
    return (f"circle among {', '.join(f'{m}.c' for m in component)}:\n    " + "\n    ".join(steps) +
            f"\n  all its calls: {'; '.join(edges)}")


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> dict[str, dict[str, set[str]]]:
    return file_graph(_compile(tmp_path_factory.mktemp("vgpu_objects")))


def test_the_library_files_call_each_other_without_circles(graph):
    found = circles(graph)
    assert not found, "the vGPU library's files call each other in a circle:\n" + "\n".join(
        _loop(graph, component) for component in found)


def test_no_file_calls_into_a_folder_above_its_own(graph):
    folder = {source.stem: source.parent.name for source in library_sources()}
    upward = [f"{folder[a]}/{a}.c calls {folder[b]}/{b}.c ({', '.join(sorted(names)[:4])})"
              for a, targets in sorted(graph.items()) for b, names in sorted(targets.items())
              if FOLDERS.index(folder[b]) > FOLDERS.index(folder[a])]
    assert not upward, "\n".join(upward)


def test_the_graph_is_read_from_the_objects(graph):
    """Calls that certainly exist are found: an empty graph would have no circles either."""
    assert "vgpu_stream_create" in graph["runtime"]["stream"]
    assert "vgpu_now_ns" in graph["timekeeper"]["clock"]
    assert "vgpu_driver_entry_point" in graph["runtime"]["driver"]
    assert set(graph) == {source.stem for source in library_sources()}


def test_the_circle_finder_finds_and_shows_a_circle():
    calls = {"a": {"b": {"f"}}, "b": {"c": {"g"}}, "c": {"a": {"h"}, "d": {"i"}}, "d": {}}
    assert circles(calls) == [["a", "b", "c"]]
    assert circles({"a": {"b": {"f"}}, "b": {}}) == []
    assert "a.c -> b.c (f)\n    b.c -> c.c (g)\n    c.c -> a.c (h)" in _loop(calls, ["a", "b", "c"])
