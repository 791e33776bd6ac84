"""The fit behind the host_cost records (models.fit_host_costs) on a cudnn_graphs table made from
known costs, and the records the model file carries."""
import json
import shutil

import pandas as pd
import pytest

from emulator.hardware import load_sku
from emulator.predictor import modelfile, models, tables


def graphs_table(first=0.2, build=0.03, hit=0.0001, first_warm=0.05):
    """probe_cudnn_graphs.py's rows for two variants: every build is followed by a cached call of
    the same shape; the second variant's builds cost twice the first's. first_warm None: a table
    from before the probe timed the first call in a second process."""
    rows = []
    for scale, variant in ((1, "packed_masked_d64"), (2, "decode_d128")):
        rows += [(variant, 16, 4800, "first", hit + scale * first, "fit"), (variant, 16, 4800, "hit", hit, "fit")]
        if first_warm is not None:
            rows += [(variant, 16, 4800, "first_warm", hit + scale * first_warm, "fit"),
                     (variant, 16, 4800, "hit", hit, "fit")]
        for i in range(1, 6):
            rows += [(variant, 16 + i, 4800 + i, "miss", hit + scale * build, "fit"),
                     (variant, 16 + i, 4800 + i, "hit", hit, "fit")]
        rows.append((variant, 40, 9000, "step", 16 * hit + scale * build, "holdout"))
    return pd.DataFrame(rows, columns=["variant", "queries", "keys", "call", "seconds", "split"])


def test_graph_builds_cost_what_they_take_beyond_a_cached_call_median_over_variants():
    costs = models.fit_host_costs(graphs_table())
    # Median over the two variants (1x and 2x): 1.5x. The first build is the warm one (a second
    # process): the cold compilation (first rows, 0.3) is paid once per machine, not charged.
    assert costs == {"cudnn_attention_graph_first": pytest.approx((0.075, 0.0)),
                     "cudnn_attention_graph": pytest.approx((0.045, 0.0))}


def test_a_table_without_warm_first_builds_charges_a_first_build_as_a_new_shape():
    costs = models.fit_host_costs(graphs_table(first_warm=None))
    assert costs["cudnn_attention_graph_first"] == costs["cudnn_attention_graph"] == pytest.approx((0.045, 0.0))


def test_builds_measured_on_a_slow_host_are_brought_to_the_skus_host_speed():
    # The second variant was probed while the host ran 1.6x slower (its builds took 2x, not 1.25x):
    # at the SKU's figure (40 ms a round) the two agree.
    table = graphs_table()
    table["host_cpu_s"] = table["variant"].map({"packed_masked_d64": 0.040, "decode_d128": 0.064})
    costs = models.fit_host_costs(table, host_cpu_s=0.040)
    assert costs["cudnn_attention_graph"] == pytest.approx(((0.03 + 0.03 * 2 / 1.6) / 2, 0.0))
    # Without the SKU's figure, or rows without theirs, nothing is scaled.
    assert models.fit_host_costs(table) == models.fit_host_costs(graphs_table())
    assert models.fit_host_costs(graphs_table(), host_cpu_s=0.040) == models.fit_host_costs(graphs_table())


def test_builds_probed_at_two_host_speeds_give_a_fixed_part_and_a_part_that_scales():
    # Every variant probed on a fast day (40 ms a round) and a slow one (80 ms): a build takes
    # 20 ms + 0.5 x the host's round (+ 20 ms for the second variant), not twice as long when slow.
    days = []
    for host_s in (0.040, 0.080):
        table = graphs_table(build=0.0)
        builds = table["call"] == "miss"
        table.loc[builds, "seconds"] += 0.020 + 0.5 * host_s + 0.020 * (table.loc[builds, "variant"] == "decode_d128")
        days.append(table.assign(host_cpu_s=host_s))
    costs = models.fit_host_costs(pd.concat(days), host_cpu_s=0.040)
    # Median over the variants' levels (20 and 40 ms: 30) plus 0.5 x 40 ms at the SKU's speed.
    assert costs["cudnn_attention_graph"] == pytest.approx((0.050, 0.030))


def test_a_build_without_its_cached_call_is_refused():
    table = graphs_table()
    table = table[~((table["call"] == "hit") & (table["queries"] == 17))]
    with pytest.raises(ValueError, match=r"no hit row after the build of \('\w+', 17, 4801\)"):
        models.fit_host_costs(table)


def test_the_model_file_carries_host_costs_and_a_carried_sku_keeps_them():
    h100 = models.fit(tables.load("h100"), load_sku("h100"))
    fitted = models.FittedModels(**{**h100.__dict__, "host_costs": models.fit_host_costs(graphs_table())})
    text = modelfile.render(fitted)
    assert "host_cost cudnn_attention_graph 0.045\n" in text           # no fixed part: all of it scales
    assert "host_cost cudnn_attention_graph_first 0.075\n" in text
    carried = models.transfer(fitted, load_sku("h100"), load_sku("a100"))
    assert carried.host_costs == fitted.host_costs


def test_a_launch_costs_the_runtime_calls_mean_less_the_profilers_own_time():
    calls = pd.DataFrame([("cudaLaunchKernel", 300, 6e-6), ("cuLaunchKernelEx", 100, 10e-6),
                          ("cudaStreamIsCapturing", 50, 1e-6), ("cudaStreamGetPriority", 50, 0.8e-6),
                          ("cudaStreamSynchronize", 10, 40e-6)], columns=["call", "calls", "seconds"])
    # Weighted mean of the launch calls, 7 µs; the do-nothing calls' median, 0.9 µs, is the profiler's.
    assert models.fit_launch_cost(calls) == pytest.approx(6.1e-6)
    with pytest.raises(ValueError, match="no launch call"):
        models.fit_launch_cost(calls[~calls["call"].isin(["cudaLaunchKernel", "cuLaunchKernelEx"])])


def test_tables_refuse_a_host_figure_of_another_workload(tmp_path, monkeypatch):
    """Host costs are brought to the SKU's host speed: a figure of another version of the host
    benchmark would scale them by a different workload's speed."""
    shutil.copytree(tables.DATA_DIR / "h100", tmp_path / "h100")
    (tmp_path / "h100" / tables.HOST_CPU_FILE).write_text(json.dumps({"seconds": 0.038, "workload_version": 0}))
    monkeypatch.setattr(tables, "DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"h100/host_cpu.json: not a host_cpu measurement of workload version"):
        tables.load("h100")
