"""Study files through Hydra: composition, overrides, and errors that name the field and the fix."""
from pathlib import Path

import optuna
import pytest

from autotune import config
from autotune.cli import main
from autotune.trial import command
from emulator.engines import registry

FLAGSHIP = "conf/llama70b_h100.yaml"


def test_the_flagship_composes_with_overrides():
    study = config.load(FLAGSHIP, ["workload.rate=8", "search.trials=60", "engine.max_num_seqs=128"])
    assert (study.model, study.sku, study.engine) == ("llama3_70b", "h100", "vllm")
    assert study.hf_id == "meta-llama/Llama-3.1-70B-Instruct"
    assert study.workload["arrival"] == {"process": "poisson", "rate": 8, "burstiness": 1.0}
    assert study.search["trials"] == 60 and study.search["runner"] == "local"
    assert study.slos_ms == {"ttft": 500.0, "tpot": 50.0} and study.attainment == 0.9
    assert study.storage == f"sqlite:///{Path('studies/llama70b_h100/study.db').resolve()}"
    assert study.study_name == "llama70b_h100"
    run = study.run_config({"tensor_parallel_size": 4, "data_parallel_size": 2})
    assert (run.knobs.tensor_parallel, run.knobs.data_parallel, run.knobs.gpus) == (4, 2, 8)
    assert run.knobs.max_num_seqs == 128 and run.knobs.max_model_len == 8192


def test_a_study_file_outside_conf_finds_the_groups(tmp_path):
    study_file = tmp_path / "mine.yaml"
    study_file.write_text("defaults:\n  - model: llama3_8b\n  - hardware: h200\n  - workload: chat\n"
                          "  - slo: interactive\n  - engine: vllm\n  - search: default\n  - _self_\n"
                          f"out: {tmp_path}/out\n")
    study = config.load(study_file)
    assert (study.model, study.sku, study.study_name) == ("llama3_8b", "h200", "mine")


@pytest.mark.parametrize("overrides,words", [
    (["search.trialz=3"], ["search.trialz", "unknown", "trials, runner, parallel"]),
    (["model=llama3_9b"], ["model/llama3_9b", "llama3_70b", "tiny_llama"]),
    (["hardware=b300"], ["hardware/b300", "h100"]),
    (["workload.rate=-1"], ["workload.rate", "> 0"]),
    (["workload.prompt_len.kind=zipf"], ["workload.prompt_len.kind", "lognormal"]),
    (["search.runner=slurm"], ["search.runner", "local, ray"]),
    (["search.parallel=0"], ["search.parallel", "auto or an integer"]),
    (["slo.attainment=2"], ["slo.attainment", "(0, 1]"]),
    (["slo.ttft_ms=null", "slo.tpot_ms=null"], ["slo", "at least one of"]),
    (["engine.max_num_seqs=-4"], ["max_num_seqs", "positive integer"]),
    (["engine.name=tgi"], ["engine.name", "vllm"]),
    (["rate=3"], ["rate: unknown", "did you mean workload.rate?"]),
    (["nonsense"], ["KEY=VALUE"]),
    # A study file's own sections merge into the groups': a key no group has would be ignored.
    (["+model.hf_idd=x"], ["model.hf_idd: unknown", "allowed: name, hf_id"]),
    (["+hardware.skuu=h100"], ["hardware.skuu: unknown", "allowed: sku"]),
    (["+outt=x"], ["outt: unknown", "allowed: model, hardware"]),
    (["model.hf_id=[1]"], ["model.hf_id", "Hugging Face model id"]),
    # Every value of the space is one the engine takes; a TP size that can never run is named.
    (["search.space.max_num_seqs=[64,-1]"], ["search.space.max_num_seqs: max_num_seqs must be a positive integer"]),
    (["search.space.tensor_parallel_size=[2,3]"], ["search.space.tensor_parallel_size", "64 attention heads",
                                                    "leave 3 out"]),
    (["search.space.tensor_parallel_size=[16]"], ["search.space.tensor_parallel_size", "node of 8 GPUs"]),
    (["search.max_gpus=2"], ["search.space.tensor_parallel_size", "over the budget search.max_gpus=2", "leave 4 out"]),
    (["engine.enforce_eager=maybe"], ["engine.enforce_eager: must be true or false"]),
    (["engine.scheduling_policy=lifo"], ["engine.scheduling_policy: must be fcfs or priority"]),
])
def test_bad_configuration_names_the_field_and_what_it_accepts(overrides, words):
    with pytest.raises(config.ConfigError) as error:
        config.load(FLAGSHIP, overrides)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_a_missing_study_file_is_named(capsys):
    assert main(["search", "conf/no_such_study.yaml"]) == 2
    assert "conf/no_such_study.yaml not found" in capsys.readouterr().err


def test_a_bad_config_file_fails_the_cli_early_and_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  - model: llama3_8b\n  - hardware: h100\n  - workload: chat\n  - slo: interactive\n"
                   "  - engine: vllm\n  - search: default\n  - _self_\nsearch:\n  trials: many\nout: x\n")
    assert main(["search", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "search.trials: must be an integer >= 1, got 'many'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_a_search_space_is_narrowed_by_name_and_refuses_unknown_knobs():
    space = registry.space("vllm").narrowed({"tensor_parallel_size": [4, 8]})
    assert dict((k.name, k.domain) for k in space.knobs)["tensor_parallel_size"] == (4, 8)
    with pytest.raises(ValueError, match="search.space.tensor_paralel_size: not a knob"):
        registry.space("vllm").narrowed({"tensor_paralel_size": [4]})
    with pytest.raises(ValueError, match="search.space.max_num_seqs: must be a non-empty list"):
        registry.space("vllm").narrowed({"max_num_seqs": []})


def test_a_study_over_both_engines_makes_the_engine_a_knob(tmp_path):
    study = config.load("conf/smoke_engines.yaml", ["engine.max_num_seqs=64", f"out={tmp_path}"])
    assert list(study.engines) == ["vllm", "sglang"] and study.search["trials"] == 2     # grid: one per engine
    # Every other knob has one value here: the engine is all the grid branches on.
    assert study.space().configurations() == [{"engine": "vllm"}, {"engine": "sglang"}]
    args = study.space().suggest(optuna.trial.FixedTrial({"engine": "sglang"}))
    assert args == {"engine": "sglang", "tp_size": 1, "pp_size": 1, "dp_size": 1, "max_running_requests": 32,
                    "chunked_prefill_size": 2048, "disable_radix_cache": False, "schedule_policy": "fcfs",
                    "mem_fraction_static": None}
    sglang = study.engines["sglang"]
    assert sglang.args["context_length"] == 2048 and "max_model_len" not in sglang.args
    # Its trials run as the study file turned to SGLang: the vLLM-named setting removed.
    assert sglang.overrides == ("engine=sglang", "~engine.max_model_len", "engine.context_length=2048")

    cmd = command(study, "sglang", {"tp_size": 1, "max_running_requests": 32}, tmp_path / "t")
    assert "engine.max_num_seqs=64" not in cmd and cmd[-3:] == ["engine.tp_size=1", "engine.max_running_requests=32",
                                                               f"out={tmp_path / 't'}"]
    assert "engine.max_num_seqs=64" in command(study, "vllm", {}, tmp_path / "t")
    # The command composes to the SGLang deployment the trial is.
    reproduced = config.load(cmd[2], cmd[3:])
    assert reproduced.engine == "sglang" and reproduced.run_config().knobs.max_model_len == 2048
    assert reproduced.run_config().knobs.max_num_seqs == 32


@pytest.mark.parametrize("overrides,words", [
    (["search.engines=[sglang]"], ["search.engines", "must include the study's engine (vllm"]),
    (["search.engines=[tgi]"], ["search.engines", "vllm, sglang"]),
    (["+search.engine_args.sglang.max_num_seqs=4"], ["search.engine_args.sglang.max_num_seqs", "known: tp_size"]),
    (["+search.space.max_batch=[1]"], ["search.space.max_batch", "vllm or sglang"]),
])
def test_a_bad_engine_search_names_the_field(overrides, words):
    with pytest.raises(config.ConfigError) as error:
        config.load("conf/smoke_engines.yaml", overrides)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_a_study_over_gpu_types_makes_the_sku_a_knob_priced_per_gpu_hour(tmp_path):
    study = config.load("conf/smoke_skus.yaml", ["search.price_per_gpu_hour={h200: 2.5}", f"out={tmp_path}"])
    assert study.skus == ("h100", "h200") and study.per_dollar and study.search["trials"] == 2
    # h200's price given, h100's its conf/hardware default.
    assert study.prices == {"h100": 3.0, "h200": 2.5}
    assert study.space().configurations() == [{"sku": "h100"}, {"sku": "h200"}]
    assert study.space().suggest(optuna.trial.FixedTrial({"sku": "h200"}))["sku"] == "h200"
    # A trial on the other type runs as the study file with that hardware, and composes to it.
    cmd = command(study, "vllm", {"max_num_seqs": 32}, tmp_path / "t", "h200")
    assert "hardware=h200" in cmd and "hardware=h200" not in command(study, "vllm", {}, tmp_path / "t", "h100")
    assert config.load(cmd[2], cmd[3:], for_run=True).run_config().sku == "h200"
    # One type: scored per GPU, the type's price recorded (hardware.price_per_gpu_hour overrides it).
    single = config.load("conf/smoke.yaml", ["hardware.price_per_gpu_hour=5", f"out={tmp_path}"])
    assert single.skus == ("h200",) and not single.per_dollar and single.prices == {"h200": 5.0}


@pytest.mark.parametrize("overrides,words", [
    (["search.skus=[h200]"], ["search.skus", "must include the study's hardware (h100"]),
    (["search.skus=[h100,b300]"], ["search.skus", "unknown SKU 'b300'", "a100, h100, h200"]),
    (["search.skus=h200"], ["search.skus", "a list of SKUs"]),
    (["search.price_per_gpu_hour={a100: 1.2}"], ["search.price_per_gpu_hour.a100", "list it in search.skus"]),
    (["search.price_per_gpu_hour={h200: 0}"], ["search.price_per_gpu_hour.h200", "positive number of USD"]),
    (["hardware.price_per_gpu_hour=free"], ["hardware.price_per_gpu_hour", "positive number of USD"]),
])
def test_a_bad_gpu_type_search_names_the_field(overrides, words):
    with pytest.raises(config.ConfigError) as error:
        config.load("conf/smoke_skus.yaml", overrides)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_run_switches_the_engine_of_a_study_leaving_out_the_other_engines_settings():
    # The flagship's `engine:` section and search.space are in vLLM's names; `run` uses neither.
    study = config.load(FLAGSHIP, ["engine=sglang", "engine.tp_size=4"], for_run=True)
    assert study.engine == "sglang" and "max_model_len" not in study.engine_args
    assert study.run_config().knobs.tensor_parallel == 4
    assert study.notes == ("engine=sglang: the study's engine settings max_model_len are not sglang arguments "
                           "and are left out (set sglang's own as engine.KEY=VALUE)",)


def test_search_switches_the_engine_of_a_study_leaving_out_the_other_engines_knobs():
    study = config.load(FLAGSHIP, ["engine=sglang"])
    assert [knob.name for knob in study.space().knobs][:3] == ["tp_size", "pp_size", "dp_size"]
    assert "search.space's tensor_parallel_size, pipeline_parallel_size" in study.notes[1]
    assert config.load(FLAGSHIP).notes == ()


@pytest.mark.parametrize("overrides,words", [
    # What the command line sets is the user's own: checked against the engine run, not left out.
    (["engine=sglang", "engine.max_model_len=4096"], ["engine.max_model_len", "not a sglang argument"]),
    (["engine=sglang", "+engine.max_runing_requests=4"], ["engine.max_runing_requests", "known: tp_size"]),
    # A study file's setting that no engine knows is a typo, not another engine's.
    (["+engine.max_num_seq=4"], ["engine.max_num_seq", "known: tensor_parallel_size"]),
])
def test_a_switched_engine_still_refuses_what_was_typed(overrides, words):
    with pytest.raises(config.ConfigError) as error:
        config.load(FLAGSHIP, overrides, for_run=True)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_run_checks_only_what_one_deployment_uses():
    unused = ["engine.tensor_parallel_size=4", "search.trials=0", "+search.space.bogus=[1]", "search.engines=[sglang]"]
    assert config.load(FLAGSHIP, unused, for_run=True).engine == "vllm"
    with pytest.raises(config.ConfigError, match="search.trials"):
        config.load(FLAGSHIP, unused)
    with pytest.raises(config.ConfigError, match="search.trial_timeout_s"):
        config.load(FLAGSHIP, ["search.trial_timeout_s=0"], for_run=True)


@pytest.mark.parametrize("overrides,words", [
    (["engine.tensor_parallel_size=3"], ["engine.tensor_parallel_size: tensor_parallel_size=3 does not divide",
                                         "[1, 2, 4, 8]"]),
    ([], ["engine: the weights take 131.4 GiB per GPU at tensor_parallel_size=1", "at least 2 GPUs"]),
    (["engine=sglang", "engine.tp_size=16"], ["engine.tp_size: tp_size x pp_size = 16 GPUs", "at most 8"]),
    (["engine=sglang", "engine.tp_size=4", "engine.max_running_requests=0"],
     ["engine.max_running_requests: must be a positive integer"]),
    (["engine=sglang", "engine.tp_size=4", "engine.disable_cuda_graph=2"], ["engine.disable_cuda_graph: must be true or false"]),
    (["engine=sglang", "engine.tp_size=4", "engine.schedule_policy=priority"], ["engine.schedule_policy", "lpm"]),
])
def test_run_refuses_a_deployment_that_cannot_work_when_loading_it(overrides, words):
    with pytest.raises(config.ConfigError) as error:
        config.load(FLAGSHIP, overrides, for_run=True)
    for word in words:
        assert word in str(error.value), str(error.value)


def test_run_of_a_switched_study_is_refused_before_any_process_starts(tmp_path, capsys, monkeypatch):
    def no_process(*args, **kwargs):
        raise AssertionError("a process was started")
    monkeypatch.setattr("subprocess.Popen", no_process)
    assert main(["run", FLAGSHIP, "engine=sglang", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "revati-tune: engine: the weights take 131.4 GiB per GPU at tp_size=1 x pp_size=1" in err
    assert "\nnote: engine=sglang: the study's engine settings max_model_len" in err
    assert not (tmp_path / "run").exists()


def test_a_study_reads_its_trace_when_loaded(tmp_path):
    """The load generator reads the trace only once the engine is up: a bad one is refused before."""
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2,3,4\n1,3,4\n")
    use = [f"workload.trace={{path: {trace}, format: azure}}", "workload.num_requests=2"]
    with pytest.raises(config.ConfigError, match=rf"workload.trace.path: {trace} line 3: .*sort the trace by TIMESTAMP"):
        config.load(FLAGSHIP, use)
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1,3,4\n2,3,4\n")
    assert config.load(FLAGSHIP, use).workload["trace"]["path"] == str(trace)
    with pytest.raises(config.ConfigError, match="workload.num_requests: the trace has only 2 requests"):
        config.load(FLAGSHIP, [*use, "workload.num_requests=3"])
    with pytest.raises(config.ConfigError, match="workload.trace.path: cannot read /no/such.csv"):
        config.load(FLAGSHIP, ["workload.trace={path: /no/such.csv, format: azure}"], for_run=True)


@pytest.mark.parametrize("storage,words", [
    ("sqlite:////no/such/folder/study.db", ["unable to open database file"]),
    ("foo://bar", ["Can't load plugin: sqlalchemy.dialects:foo"]),
])
def test_a_storage_that_cannot_be_opened_is_refused_before_any_trial(storage, words, tmp_path, capsys, monkeypatch):
    def no_process(*args, **kwargs):
        raise AssertionError("a process was started")
    monkeypatch.setattr("subprocess.Popen", no_process)
    assert main(["search", FLAGSHIP, f"search.storage={storage}", f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"revati-tune: search.storage: cannot open {storage}" in err and "Traceback" not in err
    for word in words:
        assert word in err, err
