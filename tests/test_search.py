"""The study driver on configurations refused before launch (fast: no deployment starts), so the
bookkeeping is tested in seconds: budget, infeasible trials with their reasons, resume, recovery
of trials a killed driver left running. Real Optuna study in SQLite, real report."""
import optuna
import pytest

from autotune import config, study as studies
from autotune.plan import cheapest
from autotune.search import search

FLAGSHIP = "conf/llama70b_h100.yaml"


def _load(tmp_path, *overrides):
    # Llama-3.1-70B cannot fit one H100 (141 GB of weights): tensor_parallel_size=1 is refused.
    return config.load(FLAGSHIP, ["search.space.tensor_parallel_size=[1]", f"out={tmp_path}", *overrides])


def _trials(cfg):
    return optuna.load_study(study_name=cfg.study_name, storage=cfg.storage).get_trials()


def test_infeasible_trials_are_recorded_with_reasons_and_the_report_is_written(tmp_path):
    cfg = _load(tmp_path, "search.trials=3")
    report = search(cfg)
    trials = _trials(cfg)
    assert len(trials) == 3
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs["outcome"] == "infeasible"
        assert "at least 2 GPUs" in trial.user_attrs["reason"]
        assert trial.values == [0.0, float(trial.user_attrs["gpus"])]
        assert trial.system_attrs["constraints:slo_attainment"] == 0.9      # violated by the whole target
        assert trial.user_attrs["command"].startswith(f"revati-tune run {FLAGSHIP} ")
        assert "engine.tensor_parallel_size=1" in trial.user_attrs["command"]
        assert trial.user_attrs["deploy_command"].startswith("vllm serve meta-llama/Llama-3.1-70B-Instruct ")
        assert not (tmp_path / "trials").exists() or not any((tmp_path / "trials").iterdir())   # nothing launched
    assert report == tmp_path / "report.html" and "at least 2 GPUs" in report.read_text()
    assert (tmp_path / "trials.csv").is_file()


def test_the_gpu_budget_is_a_constraint(tmp_path):
    cfg = _load(tmp_path, "search.trials=1", "search.space.tensor_parallel_size=[8]",
                "search.space.data_parallel_size=[2]", "search.max_gpus=8")
    search(cfg)
    (trial,) = _trials(cfg)
    assert trial.user_attrs["outcome"] == "infeasible" and "over the budget search.max_gpus=8" in trial.user_attrs["reason"]
    assert trial.values == [0.0, 16.0]


def test_a_rerun_resumes_the_study_and_runs_only_what_the_budget_has_left(tmp_path):
    search(_load(tmp_path, "search.trials=2"))
    cfg = _load(tmp_path, "search.trials=3")
    search(cfg)
    assert [t.number for t in _trials(cfg)] == [0, 1, 2]
    search(cfg)
    assert len(_trials(cfg)) == 3


def test_trials_left_running_by_a_killed_driver_are_failed_as_interrupted_and_run_again(tmp_path):
    cfg = _load(tmp_path, "search.trials=1")
    study = studies.open_study(cfg)
    orphan = study.ask()            # the driver "died" with this trial running
    orphan.suggest_categorical("max_num_seqs", [64, 256])
    orphan.set_user_attr("run_dir", str(tmp_path / "trials" / "0000"))
    search(cfg)
    first, second = _trials(cfg)
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["outcome"] == "interrupted"
    assert second.user_attrs["outcome"] == "infeasible"           # the budget of 1 is the re-run
    assert second.params["max_num_seqs"] == first.params["max_num_seqs"]


def test_a_configuration_proposed_again_takes_the_earlier_result_without_a_run(tmp_path):
    single = [f"search.space.{knob}=[{value}]" for knob, value in
              (("data_parallel_size", 1), ("max_num_seqs", 64), ("max_num_batched_tokens", 2048))]
    cfg = _load(tmp_path, "search.trials=2", *single)
    search(cfg)
    first, second = _trials(cfg)
    assert first.params == second.params
    assert "same_as_trial" not in first.user_attrs and second.user_attrs["same_as_trial"] == 0
    assert second.values == first.values and second.user_attrs["reason"] == first.user_attrs["reason"]


def test_plan_answers_per_rate_and_says_when_no_configuration_holds(tmp_path):
    from autotune.plan import plan
    text = plan(FLAGSHIP, ["search.space.tensor_parallel_size=[1]", "search.trials=1", f"out={tmp_path}"], [2.0, 8.0])
    for rate in ("2", "8"):
        cfg = config.load(FLAGSHIP, ["search.space.tensor_parallel_size=[1]", f"out={tmp_path}",
                                     f"search.study_name=llama70b_h100-rate{rate}",
                                     f"search.storage=sqlite:///{tmp_path.resolve()}/study.db"])
        (trial,) = _trials(cfg)
        assert trial.user_attrs["outcome"] == "infeasible"
        assert f"workload.rate={float(rate)}" in trial.user_attrs["command"]
    assert text.count("none holds the SLO") == 2
    assert "none holds the SLO" in (tmp_path / "report.html").read_text()


def test_a_grid_study_runs_every_configuration_once_and_resumes_without_repeats(tmp_path):
    grid = ["search.sampler=grid", "search.space.max_num_seqs=[64,256]", "search.space.max_num_batched_tokens=[2048,8192]",
            "search.space.data_parallel_size=[1,2]"]
    cfg = _load(tmp_path, *grid)
    assert cfg.search["trials"] == 8            # 2 x 2 x 2, whatever search.trials said
    search(cfg)
    search(_load(tmp_path, *grid))
    params = [t.params for t in _trials(cfg)]
    assert len(params) == 8 and len({tuple(sorted(p.items())) for p in params}) == 8
    assert {p["max_num_seqs"] for p in params} == {64, 256} and {p["data_parallel_size"] for p in params} == {1, 2}


def test_a_grid_respects_conditional_knobs():
    from emulator.engines import registry
    space = registry.space("vllm").narrowed({"tensor_parallel_size": [1], "pipeline_parallel_size": [1],
                                     "data_parallel_size": [1], "max_num_seqs": [64],
                                     "enable_chunked_prefill": [True, False], "max_num_batched_tokens": [2048, 8192]})
    assert space.configurations() == [{"enable_chunked_prefill": False},
                                      {"enable_chunked_prefill": True, "max_num_batched_tokens": 2048},
                                      {"enable_chunked_prefill": True, "max_num_batched_tokens": 8192}]


def test_a_study_over_gpu_types_scores_per_dollar_and_keeps_its_prices(tmp_path):
    single = [f"search.space.{knob}=[{value}]" for knob, value in
              (("data_parallel_size", 1), ("max_num_seqs", 64), ("max_num_batched_tokens", 2048))]
    cfg = _load(tmp_path, "search.skus=[h100,h200]", "search.sampler=grid", *single)
    report = search(cfg)
    trials = _trials(cfg)
    assert sorted(t.params["sku"] for t in trials) == ["h100", "h200"]
    study = optuna.load_study(study_name=cfg.study_name, storage=cfg.storage)
    assert study.metric_names == studies.OBJECTIVES_PER_DOLLAR
    for trial in trials:
        sku = trial.params["sku"]
        assert trial.user_attrs["sku"] == sku and trial.user_attrs["price_per_gpu_hour"] == cfg.prices[sku]
        # Refused on either type (141 GB of weights on one GPU): no goodput, one GPU's price an hour.
        assert trial.user_attrs["outcome"] == "infeasible" and trial.values == [0.0, cfg.prices[sku]]
        assert ("hardware=h200" in trial.user_attrs["command"]) == (sku == "h200")
    assert "GPU types compared" in report.read_text()
    # Its trials were scored at these prices: other prices would mix two scales in one study.
    with pytest.raises(config.ConfigError, match="search.price_per_gpu_hour"):
        search(_load(tmp_path, "search.skus=[h100,h200]", "search.sampler=grid", "search.price_per_gpu_hour={h200: 1}",
                     *single))
    # ... and so would scoring it per GPU again.
    with pytest.raises(config.ConfigError, match="goodput_per_dollar"):
        search(_load(tmp_path, "search.trials=1", *single))


def test_a_plan_answers_the_cheapest_deployment_holding_the_slo_and_its_type():
    study = optuna.create_study(directions=studies.DIRECTIONS)

    def ran(gpus, sku, price, goodput, attainment=0.95):
        study.add_trial(optuna.trial.create_trial(values=[goodput, gpus], user_attrs={
            "outcome": "ok", "gpus": gpus, "sku": sku, "price_per_gpu_hour": price, "knobs": {"max_num_seqs": gpus},
            "slo_attainment": attainment, "goodput_per_gpu": goodput}))
    ran(2, "h100", 3.0, 3.0)
    ran(1, "h200", 4.0, 2.0)
    ran(1, "h100", 3.0, 9.0, attainment=0.5)      # cheapest, but misses the SLO
    # One H200 ($4 an hour) against two H100s ($6).
    assert cheapest(study, 0.9) | {"knobs": None} == {
        "gpus": 1, "sku": "h200", "dollars_per_hour": 4.0, "slo_attainment": 0.95, "goodput_per_gpu": 2.0,
        "knobs": None}
    ran(1, "h100", 3.0, 2.0)
    assert cheapest(study, 0.9)["sku"] == "h100"
    assert cheapest(study, 0.99) == {"gpus": None}
