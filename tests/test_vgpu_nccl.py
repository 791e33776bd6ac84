"""NCCL on the vGPU library (emulator/vgpu/api/nccl.c).

A collective is one launch of kind `collective` on its stream, carrying the bytes of this rank's
send buffer and the communicator's size, charged what the predictor says. The ranks of one
communicator agree on its id and number its collectives alike, so that a timekeeper can match
them across processes: REVATI_VGPU_LOG=1 prints `nccl: <name> comm <id> seq <n> rank <r>/<n>
bytes <b>` per operation, which these tests read for that.

  - a C program (fast tier): tests/vgpu_programs/nccl_collectives.c, 2 and 4 ranks in one process,
    exact bytes, ranks and event timing under the fixed predictor, single-rank data, splits;
  - torch.distributed on the NCCL backend in 2 and 4 processes, also vLLM's way of making groups
    (split_group, i.e. ncclCommSplit across processes);
  - vLLM's pynccl (NCCLLibrary, PyNcclCommunicator) through VLLM_NCCL_SO_PATH.
"""
from __future__ import annotations

import re
import socket
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from emulator.engines.envs import env_python, is_ready
from emulator.vgpu_environment import vgpu_environment
from vgpu_fixtures import PROGRAMS, libdir, parse_trace, run_on_vgpu  # noqa: F401 (libdir is a fixture)

# The fixed predictor's charges for the C program; the all-to-all keeps each stream busy past
# "now" so that the timed sections start exactly at their start events.
RULES = """\
collective ncclAllReduce 0.001
collective ncclAllGather 0.002
collective ncclBroadcast 0.003
collective ncclReduceScatter 0.004
collective ncclSend 0.0005
collective ncclRecv 0.0005
collective ncclAlltoAll 1
"""
SECONDS = {line.split()[1]: float(line.split()[2]) for line in RULES.splitlines()}
TORCH_RULES = "collective * 0.0025\n"
OP_LOG = re.compile(r"nccl: (nccl\w+) comm ([0-9a-f]{16}) seq (\d+) rank (\d+)/(\d+) bytes (\d+)")
P2P = ("ncclSend", "ncclRecv")


def operations(stderr: str) -> list[dict]:
    return [dict(name=m[1], comm=m[2], seq=int(m[3]), rank=int(m[4]), nranks=int(m[5]), bytes=int(m[6]))
            for m in OP_LOG.finditer(stderr)]


def assert_ranks_agree(ops: list[dict]) -> None:
    """Every collective, keyed by (comm, seq), was issued by each of its communicator's ranks
    once, under one name and size; each rank numbers a communicator's collectives 0, 1, 2, ..."""
    issued = defaultdict(list)
    numbered = defaultdict(list)
    for op in ops:
        if op["name"] not in P2P:
            issued[op["comm"], op["seq"]].append(op)
            numbered[op["comm"], op["rank"]].append(op["seq"])
    assert issued
    for (comm, seq), group in issued.items():
        assert sorted(op["rank"] for op in group) == list(range(group[0]["nranks"])), (comm, seq, group)
        assert len({(op["name"], op["bytes"], op["nranks"]) for op in group}) == 1, group
    for seqs in numbered.values():
        assert seqs == list(range(len(seqs)))


# ---- a C program, one process (fast tier) -----------------------------------------------------

@pytest.fixture(scope="module")
def program(libdir, tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("nccl") / "nccl_collectives"
    cmd = ["cc", "-Wall", "-Wextra", "-Werror", str(PROGRAMS / "nccl_collectives.c"), "-o", str(binary),
           f"-L{libdir}", "-l:libcudart.so.13", f"-Wl,-rpath,{libdir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return binary


def test_collectives_from_one_process(program):
    proc, trace = run_on_vgpu([program], gpus=4, predictor_rules=RULES, env={"REVATI_VGPU_LOG": "1"},
                              check=True)
    assert proc.stdout.strip() == "ok"
    assert "not implemented" not in proc.stderr
    rows = [r for r in trace if r["kind"] == "collective"]

    def pair(name, size):       # one launch per rank of a 2-rank communicator, devices 0 and 1
        return [(name, 0, size, 2), (name, 1, size, 2)]

    assert [(r["name"], r["device"], r["bytes"], r["nranks"]) for r in rows] == [
        *pair("ncclAlltoAll", 2),                       # 1 int8 per rank, 2 ranks
        *pair("ncclAllReduce", 4096),                   # 1024 float32
        *pair("ncclAlltoAll", 2),
        *pair("ncclAllGather", 512),                    # 256 float16 sent by each rank
        *pair("ncclBroadcast", 800),                    # 100 int64
        *pair("ncclAlltoAll", 2),
        *pair("ncclReduceScatter", 80),                 # 10 float32 received, 20 sent
        ("ncclSend", 0, 256, 2), ("ncclRecv", 1, 256, 2),
        *pair("ncclAllReduce", 2048),                   # the pair from one id, NULL streams
        ("ncclAllReduce", 0, 256, 1),                   # one rank: 64 int32
        ("ncclAllGather", 0, 256, 1),
        ("ncclBroadcast", 0, 256, 1),
        ("ncclAllReduce", 1, 32, 2), ("ncclAllReduce", 3, 32, 2),   # a split half: ranks on 1, 3
        ("ncclAllReduce", 0, 256, 1),                   # a pre-multiplied sum, 64 float32
        *pair("ncclAllGather", 16),                     # the communicator made from two ids
    ]
    for r in rows:
        assert r["seconds"] == pytest.approx(SECONDS[r["name"]], abs=1e-9)
    # Behind each all-to-all, a stream's timed operations run back to back: event timing (checked
    # in the program) equals the charged durations.
    for device in (0, 1):
        mine = [r for r in rows if r["device"] == device][:8]     # the three timed sections
        for before, after in zip(mine, mine[1:]):
            if after["name"] != "ncclAlltoAll":
                assert after["start"] == pytest.approx(before["start"] + before["seconds"], abs=2e-9)

    ops = operations(proc.stderr)
    assert len(ops) == len(rows)
    assert_ranks_agree(ops)
    # Four communicators of two ranks (InitAll, the pair, a split half, the one from two ids) and
    # two of one rank: all distinct. Point-to-point is numbered per peer, apart from collectives.
    assert len({op["comm"] for op in ops}) == 6
    assert [(op["name"], op["seq"]) for op in ops if op["name"] in P2P] == [("ncclSend", 0), ("ncclRecv", 0)]


# ---- torch.distributed and vLLM, several processes (the vllm engine env) ----------------------

@pytest.fixture(scope="module")
def engine_python(libdir) -> str:
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    return str(env_python("vllm"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(engine_python: str, args: list[str], world: int, tmp_path: Path) -> list[dict]:
    """Start `world` processes (rank r on device r) and wait for all; each must exit 0.
    Returns per rank: its stdout, stderr and collective launches."""
    env = vgpu_environment(world, "h100", engine="vllm", workdir=tmp_path)
    (tmp_path / "rules").write_text(TORCH_RULES)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world),
               STORE_FILE=str(tmp_path / "store"),
               REVATI_VGPU_LOG="1", REVATI_PREDICTOR=f"fixed:{tmp_path / 'rules'}")
    procs = []
    try:
        for r in range(world):
            out, err = (open(tmp_path / f"rank{r}.{stream}", "w") for stream in ("out", "err"))
            with out, err:
                procs.append(subprocess.Popen(
                    [engine_python, *args], stdout=out, stderr=err,
                    env={**env, "RANK": str(r), "LOCAL_RANK": str(r),
                         "REVATI_VGPU_TRACE": str(tmp_path / f"trace{r}.csv")}))
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ranks = [dict(stdout=(tmp_path / f"rank{r}.out").read_text(), stderr=(tmp_path / f"rank{r}.err").read_text(),
                  launches=[row for row in parse_trace(tmp_path / f"trace{r}.csv") if row["kind"] == "collective"])
             for r in range(world)]
    for r, code in enumerate(codes):
        assert code == 0, f"rank {r} exited {code}:\n{ranks[r]['stderr'][-3000:]}"
    for rank in ranks:
        assert "not implemented" not in rank["stderr"]
    return ranks


# What tests/vgpu_programs/nccl_torch_ranks.py issues, as torch 2.14 calls NCCL for it: all_reduce,
# all_gather_into_tensor, all_gather (a list), broadcast (ncclBcast), reduce_scatter_tensor, each
# on 1024 float32 per rank.
TORCH_COLLECTIVES = ["ncclAllReduce", "ncclAllGather", "ncclAllGather", "ncclBcast", "ncclReduceScatter"]


@pytest.mark.parametrize("world,mode", [(2, "nccl"), (4, "nccl"), (4, "split")])
def test_torch_distributed(engine_python, tmp_path, world, mode):
    ranks = run_ranks(engine_python, [str(PROGRAMS / "nccl_torch_ranks.py"), mode], world, tmp_path)
    size = 2 if mode == "split" else world
    for r, rank in enumerate(ranks):
        assert rank["stdout"].strip().endswith(f"rank {r} ok")
        assert [(x["name"], x["device"], x["bytes"], x["nranks"]) for x in rank["launches"]] == \
            [(name, r, 4096, size) for name in TORCH_COLLECTIVES]
        assert all(x["seconds"] == pytest.approx(0.0025) for x in rank["launches"])
    ops = [op for rank in ranks for op in operations(rank["stderr"])]
    assert_ranks_agree(ops)
    # One communicator for the world, or one per pair split from it.
    assert len({op["comm"] for op in ops}) == (world // 2 if mode == "split" else 1)
    if mode == "split":
        assert len({op["comm"] for op in ops if op["rank"] == 0}) == world // 2


def test_pynccl_library_on_one_rank(engine_python, tmp_path):
    (rank,) = run_ranks(engine_python, [str(PROGRAMS / "nccl_pynccl_ranks.py"), "single"], 1, tmp_path)
    assert rank["stdout"].strip().endswith("ok")
    assert [(x["name"], x["bytes"], x["nranks"]) for x in rank["launches"]] == [("ncclAllReduce", 64, 1)]


def test_pynccl_communicator_on_two_ranks(engine_python, tmp_path):
    ranks = run_ranks(engine_python, [str(PROGRAMS / "nccl_pynccl_ranks.py"), "ranks"], 2, tmp_path)
    for r, rank in enumerate(ranks):
        assert rank["stdout"].strip().endswith("ok")
        # The communicator's warm-up all_reduce of one float32, then the program's operations.
        assert [(x["name"], x["device"], x["bytes"], x["nranks"]) for x in rank["launches"]] == [
            ("ncclAllReduce", r, 4, 2), ("ncclAllReduce", r, 4096, 2), ("ncclAllGather", r, 4096, 2),
            ("ncclReduceScatter", r, 4096, 2), ("ncclBroadcast", r, 4096, 2), ("ncclSend", r, 4096, 2),
            ("ncclRecv", r, 4096, 2)]
    ops = [op for rank in ranks for op in operations(rank["stderr"])]
    assert_ranks_agree(ops)
    assert len({op["comm"] for op in ops}) == 1
