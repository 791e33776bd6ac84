"""`revati-tune search`: open (or resume) the study, run the trials left in its budget with the
chosen runner, and write the report."""
from __future__ import annotations

from pathlib import Path

from autotune import study as studies
from autotune.config import StudyConfig


def search(config: StudyConfig) -> Path:
    study = studies.open_study(config)
    recovered = studies.recover_interrupted(study)
    if recovered:
        print(f"resuming: {recovered} trial(s) of a stopped driver will run again")
    if config.search["runner"] == "ray":
        from autotune import ray_runner
        ray_runner.run_trials(config, study)
    else:
        from autotune import local_runner
        local_runner.run_trials(config, study)
    from reports.report import write_report
    return write_report(study, config.out)
