"""profile_gpu.py's kernel families, one module each: gemm, attention, elementwise, copies.

Each has COLUMNS (its CSV's header) and cases(run), the rows of run.grid to measure as
harness.Case objects; profile_gpu.py times them (harness.Run.measure) into <family>.csv.
"""
