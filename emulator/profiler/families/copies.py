"""Copies by bytes: H2D and D2H (pinned and pageable), D2D and memset (copy.csv; README.md beside
profile_gpu.py gives its columns)."""

from __future__ import annotations

import functools

import torch

from emulator.profiler.harness import Case, Run, random_tensor

COLUMNS = ["direction", "bytes", "pinned", "seconds", "p10", "p90", "split"]


def cases(run: Run):
    grid = run.grid
    sizes = [(b, "fit") for b in grid.copy_sizes] + [(b, "holdout") for b in grid.copy_sizes_holdout]
    largest = max(b for b, _ in sizes)
    src = random_tensor((largest // 4 + 1,), torch.float32, run.device).view(torch.uint8)[:largest]
    dst = torch.empty_like(src)
    pageable = src.cpu()  # the same random bytes
    pinned = torch.empty(largest, dtype=torch.uint8, pin_memory=run.cuda).copy_(pageable)
    memset = lambda t, n: t[:n].fill_(0x5A)  # noqa: E731
    run.meta["memset_impl"] = "torch fill_ (a kernel, not cudaMemset)"
    if run.driver is None:
        run.reports["copy"].notes.append("memset by torch fill_: no libcuda")
    else:
        try:
            run.driver.memset(dst, 4096)
            run.bench.sync()
            memset = run.driver.memset
            run.meta["memset_impl"] = "cuMemsetD8Async"
        except Exception as e:  # noqa: BLE001 - fall back to the fill kernel
            run.reports["copy"].notes.append(f"memset by torch fill_: {type(e).__name__}: {str(e)[:200]}")

    def copy_calls(direction, nbytes):
        d, s, hp, hq = dst[:nbytes], src[:nbytes], pinned[:nbytes], pageable[:nbytes]
        return [{
            "H2D_pinned": lambda: d.copy_(hp, non_blocking=True),
            "H2D_pageable": lambda: d.copy_(hq, non_blocking=True),
            "D2H_pinned": lambda: hp.copy_(s, non_blocking=True),
            "D2H_pageable": lambda: hq.copy_(s),
            "D2D": lambda: d.copy_(s),
            "memset": lambda: memset(d, nbytes),
        }[direction]]

    cases = []
    for direction in ("H2D_pinned", "H2D_pageable", "D2H_pinned", "D2H_pageable", "D2D", "memset"):
        name, _, kind = direction.partition("_")
        for nbytes, split in sizes:
            fields = dict(direction=name, bytes=nbytes, pinned=int(kind == "pinned"))
            # Pageable copies synchronize with the host and cannot be captured, so they are timed
            # one at a time by the host's clock: back to back between two events, a 4 KiB one
            # measured 190 us on an H100 where alone it takes 12 us (probe_small_copies.py).
            # The others are timed eagerly with events.
            cases.append(Case(fields, split, functools.partial(copy_calls, direction, nbytes), graph=False,
                              host_wall=kind == "pageable"))
    run.log(f"[copy] {len(cases)} rows")
    return cases
