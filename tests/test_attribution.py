"""Where virtual GPU time went, by kernel family (emulator/predictor/attribution.py)."""
import subprocess
import time

import pytest

from emulator.predictor.attribution import by_family, catch_ups, family, host_work, read_stats
from vgpu_fixtures import cuda_programs, vgpu_env  # noqa: F401 (fixture)


@pytest.mark.parametrize("kind,name,expected", [
    ("gemm", "cublasGemmEx", "gemm"),
    ("kernel", "void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<x>>>(y)", "attention"),
    ("kernel", "void pytorch_flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128>>(Flash_fwd_params)",
     "attention"),
    ("kernel", "kernel_unified_attention_2d", "attention"),
    ("kernel", "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT", "gemm"),
    ("kernel", "void vllm::rms_norm_kernel<c10::BFloat16, 8, 3>(x)", "norm"),
    ("kernel", "void vllm::reshape_and_cache_flash_kernel<x>(y)", "kv_cache"),
    ("kernel", "void vllm::act_and_mul_kernel<x>(y)", "activation"),
    ("kernel", "void at::native::vectorized_elementwise_kernel<8, x>(y)", "elementwise"),
    ("kernel", "some_kernel_nobody_named", "other_kernel"),
    ("copy", "memcpy", "copy"),
])
def test_families(kind, name, expected):
    assert family(kind, name) == expected


def test_by_family_sums_processes_and_shares(tmp_path):
    (tmp_path / "a.csv").write_text('kind,name,count,seconds\ngemm,"cublasGemmEx",10,0.6\n'
                                    'kernel,"void vllm::rms_norm_kernel<a, b>(c)",5,0.1\n')
    (tmp_path / "b.csv").write_text('kind,name,count,seconds\ngemm,"cublasLtMatmul",2,0.2\ncopy,"memcpy",1,0.1\n')
    table = by_family(read_stats([tmp_path / "a.csv", tmp_path / "b.csv"]))
    rows = {r.family: (r.launches, r.seconds, r.share) for r in table.itertuples()}
    assert rows["gemm"] == (12, pytest.approx(0.8), pytest.approx(0.8))
    assert rows["norm"] == (5, pytest.approx(0.1), pytest.approx(0.1))
    assert list(table["family"])[0] == "gemm"


def test_host_work_and_catch_ups_are_told_apart_from_gpu_time(tmp_path):
    (tmp_path / "a.csv").write_text('kind,name,count,seconds\ngemm,"cublasGemmEx",10,0.6\n'
                                    'host_work,"cudnn_attention_graph",3,0.15\ncatch_up,unseen_sleep,7,2.5\n')
    (tmp_path / "b.csv").write_text('kind,name,count,seconds\ncatch_up,unseen_sleep,1,0.5\n'
                                    'catch_up,unnamed_channel,2,0.25\n')
    stats = read_stats([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert by_family(stats)[["family", "launches"]].values.tolist() == [["gemm", 10]]
    assert host_work(stats).values.tolist() == [["cudnn_attention_graph", 3, 0.15]]
    assert sorted(catch_ups(stats).values.tolist()) == [["unnamed_channel", 2, 0.25], ["unseen_sleep", 8, 3.0]]


def test_stats_not_written_by_the_library_are_refused(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not written by the vGPU library"):
        read_stats([tmp_path / "x.csv"])


def test_a_process_killed_outright_has_its_stats_written_while_it_ran(cuda_programs, tmp_path):
    """vLLM SIGKILLs workers slow to shut down; no exit handler runs, so the library also writes
    its totals every few seconds while launching."""
    program = cuda_programs("launch_loop")
    stats = tmp_path / "stats.csv"
    env = vgpu_env(1, "h100", workdir=tmp_path / "vgpu")
    env["REVATI_VGPU_STATS"] = str(stats)
    process = subprocess.Popen([str(program.binary)], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "launching\n"
    deadline = time.monotonic() + 30
    while not stats.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    process.kill()
    process.wait()
    (row,) = [r for r in read_stats([stats]).itertuples() if "busy_kernel" in r.name]
    assert row.count > 1000 and row.seconds > 0
