#!/usr/bin/env python3
"""Measure NCCL collectives for revati-tune's predictor: all-reduce, all-gather, reduce-scatter and
send/recv (bf16) over the bytes that tensor- and pipeline-parallel serving of 8B-72B models moves.

    torchrun --standalone --nproc-per-node N emulator/profiler/profile_collectives.py \\
        --out DIR [--ranks 2,4,8] [--ops all_reduce,all_gather,reduce_scatter,send_recv] \\
        [--repeats 100] [--warmup 10] [--min-bytes 4096] [--max-bytes 536870912] [--backend nccl|gloo]

One process per GPU. Every group size in --ranks (default: 2, 4, 8, ... up to N) is measured on the
first that many ranks (a sub-group of the N processes); send/recv is one message from rank 0 to
rank 1 and is recorded with ranks 2 whatever the group size, since one message between two GPUs
costs the same in any communicator. Rank 0 writes, under --out:

  collectives.csv        op,ranks,bytes,dtype,backend,seconds,p10,p90,bus_gbps,repeats,split
  meta_collectives.json  GPU, driver, NCCL, torch, date, the exact command, the environment's NCCL
                         variables, the topology (nvidia-smi topo -m), what each run measured
  collectives.log        progress lines

The names are those of emulator/predictor/data/<sku>/, where the two files go (README.md beside
this file). If --out already holds a table, the rows of the (backend, op, ranks) measured now
replace its rows of the same key and the others are kept, so runs on machines of different sizes
add up; `--merge SRC` does the same with another run's directory, without torch.distributed.

`bytes` is the whole buffer, as in nccl-tests: the all-reduce buffer, the gathered output of
all-gather, the input of reduce-scatter, the message of send/recv. `seconds` is the median over
--repeats of the slowest rank's time, `p10`/`p90` the 10th and 90th percentiles; `bus_gbps` is
nccl-tests' bus bandwidth (bytes x factor / seconds). Rows at sizes off the fitting grid (token
counts that are not powers of two) are `split` holdout.

How one repeat is timed (NCCL): a ~100 us sleep kernel, then a one-element all-reduce in the
group (a barrier on the GPUs: every rank leaves it within about a microsecond), then CUDA events
around the operation, all on the current stream (torch >= 2.7 runs synchronous collectives on
it). The sleep lets every host enqueue the operation before the barrier releases the GPUs, so no
rank's time includes waiting for a late rank. Inputs are random bf16 (refilled for every row),
rotated over views of a --pool-mib pool. With --backend gloo (CPU, for testing the whole path:
its tables are never data) a repeat is a host barrier and a host clock around the operation.

NVLink multicast (NVLS) stays off: the script sets NCCL_NVLS_ENABLE=0,
TORCH_SYMM_MEM_DISABLE_MULTICAST=1 and NVSHMEM_DISABLE_NVLS=1 itself before anything is initialised,
whatever the environment says (on the lent machines it can put shared GPUs out of service).
"""
from __future__ import annotations

# Before torch and NCCL are loaded: multicast off, whatever the caller's environment says.
import os

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                "NVSHMEM_DISABLE_NVLS": "1"}
os.environ.update(NO_MULTICAST)

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

# Run as a file (torchrun emulator/profiler/profile_collectives.py, no install): import this
# checkout's emulator package.
if __package__ in (None, ""):
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from emulator.profiler.shapes import PROFILED_MODELS, model_shape  # noqa: E402

OPS = ("all_reduce", "all_gather", "reduce_scatter", "send_recv")
COLUMNS = ["op", "ranks", "bytes", "dtype", "backend", "seconds", "p10", "p90", "bus_gbps",
           "repeats", "split"]
TABLE = "collectives.csv"
META = "meta_collectives.json"
LOG = "collectives.log"
KiB, MiB = 1 << 10, 1 << 20

# What tensor parallelism moves per layer: hidden states of T tokens (all-reduce after attention
# and MLP; all-gather / reduce-scatter under sequence parallelism; send/recv between pipeline
# stages), 2 bytes an element. Hidden sizes: those of the models profile_gpu.py covers, from
# conf/model/ (4096: Llama-3.1-8B, Mixtral-8x7B; 8192: Llama-3.1-70B, Qwen2.5-72B). Token counts:
# decode batches to long prefill chunks.
HIDDEN_SIZES = tuple(sorted({model_shape(name).hidden for name in PROFILED_MODELS}))
FIT_TOKENS = tuple(2 ** i for i in range(15))                    # 1 .. 16384
HOLDOUT_TOKENS = (3, 24, 96, 200, 768, 3000, 12000)              # off the powers of two
SWEEP_PER_OCTAVE = 2                                             # log-spaced fitting sweep
ELEMENT_BYTES = 2                                                # bf16
# Cycles per second torch.cuda._sleep is converted with: the H200's top SM clock; a slower clock
# only makes the sleep longer, which is harmless.
SLEEP_CLOCK_HZ = 1.98e9


def bus_factor(op: str, ranks: int) -> float:
    """nccl-tests' bus bandwidth factor (models.collective_factor)."""
    if op == "all_reduce":
        return 2.0 * (ranks - 1) / ranks
    if op in ("all_gather", "reduce_scatter"):
        return (ranks - 1) / ranks
    return 1.0


def size_grid(min_bytes: int, max_bytes: int) -> list[tuple[int, str]]:
    """(bytes, split) ascending: the log-spaced sweep and the model sizes at power-of-two token
    counts (which fall on the sweep) to fit on, model sizes at other token counts held out."""
    fit = {int(round(2 ** (k / SWEEP_PER_OCTAVE) / 256)) * 256
           for k in range(SWEEP_PER_OCTAVE * 8, SWEEP_PER_OCTAVE * 40 + 1)}
    fit |= {h * t * ELEMENT_BYTES for h in HIDDEN_SIZES for t in FIT_TOKENS}
    holdout = {h * t * ELEMENT_BYTES for h in HIDDEN_SIZES for t in HOLDOUT_TOKENS} - fit
    rows = [(b, "fit") for b in fit] + [(b, "holdout") for b in holdout]
    return sorted((b, s) for b, s in rows if min_bytes <= b <= max_bytes)


def aligned(nbytes: int, op: str, ranks: int) -> int:
    """Bytes rounded up so every rank's share is a whole number of elements."""
    unit = ELEMENT_BYTES * (ranks if op in ("all_gather", "reduce_scatter") else 1)
    return -(-nbytes // unit) * unit


# ---- writing and merging tables (no torch needed) ----------------------------------------------

def read_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            raise SystemExit(f"{path}: columns {reader.fieldnames} are not {COLUMNS}")
        return list(reader)


def _fmt(value):
    return f"{value:.6e}" if isinstance(value, float) else str(value)


def merge_into(out: str, rows: list[dict], run_meta: dict | None) -> int:
    """Write `rows` into out/collectives.csv, replacing earlier rows of the same (backend, op,
    ranks); add `run_meta` to out/meta_collectives.json's runs. Returns the table's row count."""
    os.makedirs(out, exist_ok=True)
    keys = {(r["backend"], r["op"], str(r["ranks"])) for r in rows}
    kept = [r for r in read_rows(os.path.join(out, TABLE))
            if (r["backend"], r["op"], str(r["ranks"])) not in keys]
    table = kept + [{c: _fmt(r[c]) for c in COLUMNS} for r in rows]
    table.sort(key=lambda r: (r["backend"], r["op"], int(r["ranks"]), int(r["bytes"])))
    temporary = os.path.join(out, TABLE + ".tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([r[c] for c in COLUMNS] for r in table)
    os.replace(temporary, os.path.join(out, TABLE))
    if run_meta is not None:
        meta_path = os.path.join(out, META)
        meta = json.load(open(meta_path)) if os.path.isfile(meta_path) else {"runs": []}
        runs = [r for r in meta.get("runs", []) if r.get("run_id") != run_meta.get("run_id")]
        runs.append(run_meta)
        # The latest run's machine at the top level (what accuracy.py and a reader look at first).
        latest = {k: run_meta[k] for k in ("date_utc", "gpu_name", "driver_version", "torch", "nccl",
                                           "backend") if k in run_meta}
        meta = dict(latest, runs=runs,
                    note="one entry in runs per profile_collectives.py run whose rows are in "
                         "collectives.csv (a later run's rows replace an earlier run's of the "
                         "same backend, op and ranks)")
        with open(meta_path + ".tmp", "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(meta_path + ".tmp", meta_path)
    return len(table)


def merge_directory(source: str, out: str) -> None:
    rows = read_rows(os.path.join(source, TABLE))
    if not rows:
        raise SystemExit(f"{source}: no {TABLE}")
    meta_path = os.path.join(source, META)
    runs = json.load(open(meta_path)).get("runs", []) if os.path.isfile(meta_path) else []
    merge_into(out, rows, None)
    for run in runs:
        merge_into(out, [], run)
    print(f"merged {len(rows)} rows of {source} into {os.path.join(out, TABLE)}")


# ---- measuring ---------------------------------------------------------------------------------

def _percentile(sorted_xs, q):
    position = (len(sorted_xs) - 1) * q
    lo, hi = math.floor(position), math.ceil(position)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (position - lo)


def _run(cmd: list[str]) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (result.stdout.strip() or result.stderr.strip())
    except Exception as e:  # noqa: BLE001 - optional information
        return f"unavailable: {type(e).__name__}"


def _launcher_command() -> list[str] | None:
    """The torchrun command line (the elastic agent is this worker's parent process)."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return [part.decode() for part in f.read().split(b"\0") if part]
    except OSError:
        return None


class Profiler:
    def __init__(self, args):
        import torch
        import torch.distributed as dist
        self.torch, self.dist, self.args = torch, dist, args
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.cuda = args.backend == "nccl"
        if self.cuda:
            if not torch.cuda.is_available():
                raise SystemExit("--backend nccl needs CUDA GPUs; use --backend gloo on the CPU")
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
            dist.init_process_group("nccl", device_id=self.device,
                                    timeout=datetime.timedelta(minutes=30))
        else:
            self.device = torch.device("cpu")
            dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
        self.dtype = torch.bfloat16
        self.started = time.monotonic()
        self.log_file = None
        if self.rank == 0:
            os.makedirs(args.out, exist_ok=True)
            self.log_file = open(os.path.join(args.out, LOG), "a", encoding="utf-8")
        self.generator = torch.Generator(device=self.device).manual_seed(1234 + self.rank)

    def log(self, message: str) -> None:
        if self.rank != 0:
            return
        line = f"[{time.monotonic() - self.started:7.1f} s] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def random(self, elements: int):
        return self.torch.randn(elements, generator=self.generator, device=self.device,
                                dtype=self.torch.float32).to(self.dtype)

    def describe(self) -> dict:
        torch = self.torch
        args = self.args
        info = {
            "run_id": f"{datetime.datetime.now(datetime.timezone.utc).isoformat()}-{socket.gethostname()}",
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "hostname": socket.gethostname(),
            "command": [sys.executable] + sys.argv,
            "launcher_command": _launcher_command(),
            "torchrun": {k: os.environ.get(k) for k in ("WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                                         "NNODES", "MASTER_ADDR")},
            "script_sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "backend": args.backend,
            "world_size": self.world,
            "ranks": args.ranks,
            "ops": args.ops,
            "dtype": "bf16",
            "repeats": args.repeats,
            "warmup": args.warmup,
            "pool_mib": args.pool_mib,
            "environment": {k: v for k, v in sorted(os.environ.items())
                            if k.startswith(("NCCL_", "TORCH_NCCL", "NVSHMEM_", "TORCH_SYMM_MEM",
                                             "CUDA_VISIBLE_DEVICES"))},
            "timing": ("nccl: sleep kernel, one-element all-reduce in the group as a GPU barrier, "
                       "CUDA events around the op on the current stream; per repeat the slowest "
                       "rank's time; median, p10, p90 over repeats"
                       if self.cuda else
                       "gloo: host barrier, host clock around the op; per repeat the slowest "
                       "rank's time; median, p10, p90 over repeats (CPU, a test of the code path: "
                       "not GPU data)"),
        }
        if self.cuda:
            props = torch.cuda.get_device_properties(self.device)
            info.update(cuda_runtime=torch.version.cuda,
                        nccl=".".join(map(str, torch.cuda.nccl.version())),
                        gpu_name=torch.cuda.get_device_name(self.device),
                        gpu_count=torch.cuda.device_count(),
                        memory_bytes=props.total_memory,
                        capability=f"{props.major}.{props.minor}",
                        driver_version=_run(["nvidia-smi", "--query-gpu=driver_version",
                                             "--format=csv,noheader"]).splitlines()[0],
                        topology=_run(["nvidia-smi", "topo", "-m"]),
                        nvlink_status=_run(["nvidia-smi", "nvlink", "--status", "-i", "0"]))
        else:
            info.update(gpu_name="cpu (gloo)", cpu=platform.processor() or platform.machine())
        return info

    # -- one row --------------------------------------------------------------------------------

    def buffers(self, op: str, ranks: int, nbytes: int):
        """(inputs, outputs): lists of equal-sized views rotated over by repeat."""
        elements = nbytes // ELEMENT_BYTES
        in_elements = elements // ranks if op == "all_gather" else elements
        out_elements = {"all_gather": elements, "reduce_scatter": elements // ranks}.get(op, 0)
        pool = max(self.args.pool_mib * MiB, 2 * nbytes)
        count = max(2, min(self.args.max_rotations, pool // max(nbytes, 1)))
        if op == "all_reduce":
            # In place: each reduction multiplies a buffer's values by up to `ranks`; enough
            # buffers that none passes 2^120 (bf16 overflows past 2^127).
            reductions = self.args.warmup + self.args.repeats
            count = max(count, math.ceil(reductions * math.log2(ranks) / 120))
        inputs = self.random(count * in_elements).view(count, in_elements)
        outputs = (self.torch.empty(count, out_elements, dtype=self.dtype, device=self.device)
                   if out_elements else None)
        return inputs, outputs

    def operation(self, op: str, group, inputs, outputs, ranks: int):
        dist = self.dist
        if op == "all_reduce":
            return lambda i: dist.all_reduce(inputs[i % len(inputs)], group=group)
        if op == "all_gather":
            return lambda i: dist.all_gather_into_tensor(outputs[i % len(outputs)],
                                                         inputs[i % len(inputs)], group=group)
        if op == "reduce_scatter":
            return lambda i: dist.reduce_scatter_tensor(outputs[i % len(outputs)],
                                                        inputs[i % len(inputs)], group=group)
        if op == "send_recv":
            if self.rank == 0:
                return lambda i: dist.send(inputs[i % len(inputs)], dst=1, group=group)
            return lambda i: dist.recv(inputs[i % len(inputs)], src=0, group=group)
        raise ValueError(op)

    def time_op(self, fn, group) -> list[float]:
        """Seconds of each repeat on this rank."""
        torch, dist, args = self.torch, self.dist, self.args
        if not self.cuda:
            times = []
            for i in range(args.warmup + args.repeats):
                dist.barrier(group=group)
                start = time.perf_counter()
                fn(i)
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
            return times
        flag = torch.ones(1, dtype=torch.float32, device=self.device)
        cycles = int(args.sleep_us * 1e-6 * SLEEP_CLOCK_HZ)
        events = []
        torch.cuda.synchronize()
        dist.barrier(group=group, device_ids=[self.local_rank])
        for i in range(args.warmup + args.repeats):
            torch.cuda._sleep(cycles)
            dist.all_reduce(flag, group=group)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            if i >= args.warmup:
                events.append((start, end))
        torch.cuda.synchronize()
        return [s.elapsed_time(e) * 1e-3 for s, e in events]

    def slowest(self, times: list[float], group, members: int) -> list[float]:
        """Per repeat, the largest time over the group's ranks (gathered on every member)."""
        torch = self.torch
        mine = torch.tensor(times, dtype=torch.float64, device=self.device)
        every = torch.empty(members * len(times), dtype=torch.float64, device=self.device)
        self.dist.all_gather_into_tensor(every, mine, group=group)
        return every.view(members, len(times)).max(dim=0).values.cpu().tolist()

    def measure_row(self, op: str, ranks: int, nbytes: int, group) -> dict:
        inputs, outputs = self.buffers(op, ranks, nbytes)
        fn = self.operation(op, group, inputs, outputs, ranks)
        times = self.slowest(self.time_op(fn, group), group, ranks)
        del inputs, outputs
        ordered = sorted(times)
        median = _percentile(ordered, 0.5)
        return {"seconds": median, "p10": _percentile(ordered, 0.1), "p90": _percentile(ordered, 0.9),
                "bus_gbps": nbytes * bus_factor(op, ranks) / median / 1e9, "repeats": len(times)}

    # -- the sweep ------------------------------------------------------------------------------

    def agree(self, group, stop: bool) -> bool:
        """Rank 0's decision (to stop starting rows), known to the whole group."""
        flag = self.torch.tensor([1.0 if stop else 0.0], device=self.device)
        self.dist.broadcast(flag, src=0, group=group)
        return bool(flag.item())

    def run(self) -> None:
        args, dist = self.args, self.dist
        meta = self.describe() if self.rank == 0 else {}
        self.log(f"profile_collectives: backend {args.backend}, world {self.world}, ranks "
                 f"{args.ranks}, ops {args.ops}, {meta.get('gpu_name', '')} nccl {meta.get('nccl', '-')}, "
                 f"env {NO_MULTICAST}")
        grid = size_grid(args.min_bytes, args.max_bytes)
        deadline = time.monotonic() + args.max_seconds
        plan = [(op, r) for r in args.ranks for op in args.ops if op != "send_recv"]
        if "send_recv" in args.ops:
            plan.append(("send_recv", 2))
        groups = {r: dist.new_group(list(range(r))) for r in sorted({r for _, r in plan})}
        counts, skipped = {}, 0
        for op, ranks in plan:
            group = groups[ranks]
            rows = []
            if self.rank < ranks:
                for nbytes, split in grid:
                    if self.agree(group, time.monotonic() > deadline):
                        skipped += 1
                        continue
                    nbytes = aligned(nbytes, op, ranks)
                    row = self.measure_row(op, ranks, nbytes, group)
                    row.update(op=op, ranks=ranks, bytes=nbytes, dtype="bf16", backend=args.backend,
                               split=split)
                    rows.append(row)
                    self.log(f"{op} x{ranks} {nbytes:>10d} B {split:7s} {row['seconds'] * 1e6:9.1f} us "
                             f"(p10 {row['p10'] * 1e6:.1f}, p90 {row['p90'] * 1e6:.1f}) "
                             f"bus {row['bus_gbps']:.1f} GB/s")
            if self.cuda:
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()
            if self.rank == 0:
                counts[f"{op} x{ranks}"] = len(rows)
                merge_into(args.out, rows, None)
        if self.rank == 0:
            meta.update(rows=counts, skipped_rows=skipped,
                        wall_s=time.monotonic() - self.started)
            total = merge_into(args.out, [], meta)
            self.log(f"done: {sum(counts.values())} rows measured, {skipped} skipped "
                     f"(--max-seconds), {total} rows in {os.path.join(args.out, TABLE)}")
        dist.destroy_process_group()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (rank 0 writes it)")
    parser.add_argument("--backend", choices=("nccl", "gloo"), default="nccl",
                        help="nccl on GPUs (the data); gloo on the CPU (a test of the code path)")
    parser.add_argument("--ranks", default="",
                        help="group sizes to measure, comma-separated (default: 2, 4, 8, ... up to "
                             "the world size)")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min-bytes", type=int, default=4 * KiB)
    parser.add_argument("--max-bytes", type=int, default=512 * MiB)
    parser.add_argument("--pool-mib", type=int, default=256,
                        help="inputs rotate over views of a pool this large (per rank)")
    parser.add_argument("--max-rotations", type=int, default=64)
    parser.add_argument("--sleep-us", type=float, default=100.0,
                        help="GPU sleep before each repeat's barrier (NCCL)")
    parser.add_argument("--max-seconds", type=float, default=480,
                        help="stop starting rows after this long (default 480)")
    parser.add_argument("--merge", metavar="SRC",
                        help="merge another run's directory into --out and exit (no torch)")
    args = parser.parse_args(argv)
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = set(args.ops) - set(OPS)
    if unknown:
        parser.error(f"unknown ops {sorted(unknown)}; known: {', '.join(OPS)}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.ranks:
        args.ranks = sorted({int(r) for r in args.ranks.split(",")})
    else:
        args.ranks = [2 ** i for i in range(1, 12) if 2 ** i <= world]
    if not args.merge and (not args.ranks or min(args.ranks) < 2 or max(args.ranks) > world):
        parser.error(f"--ranks {args.ranks}: each must be 2..{world} (the world size; launch with "
                     f"torchrun --nproc-per-node N)")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        merge_directory(args.merge, args.out)
        return
    Profiler(args).run()


if __name__ == "__main__":
    main()
