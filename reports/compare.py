"""What moved between two studies, for nightly capacity planning: each study's Pareto front
(GPUs -> best goodput per GPU), the best goodput per GPU old against new, and the configurations
on one front but not the other (matched by their knobs, nulls being the engine's defaults)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import optuna
import pandas as pd

from reports.loading import load_study, trials_frame
from reports.pareto import best_by_gpus, front

TEMPLATES = Path(__file__).parent / "templates"
FRONT_COLUMNS = ["number", "gpus", "goodput_per_gpu", "slo_attainment", "knobs"]


@dataclass(frozen=True)
class Comparison:
    old_name: str
    new_name: str
    fronts: pd.DataFrame            # columns gpus, old, new: best goodput per GPU (NaN: not on that front)
    only_old: pd.DataFrame          # front configurations of old that new's front lacks (FRONT_COLUMNS)
    only_new: pd.DataFrame

    @property
    def best_old(self) -> float | None:
        return _best(self.fronts["old"])

    @property
    def best_new(self) -> float | None:
        return _best(self.fronts["new"])

    def change(self) -> str:
        return _change(self.best_old, self.best_new)

    def markdown(self) -> str:
        lines = [f"# What moved: {self.old_name} → {self.new_name}", "",
                 f"Best goodput per GPU: {_number(self.best_old)} → {_number(self.best_new)} ({self.change()})", "",
                 "## Pareto fronts: best goodput per GPU (good req/s) at each GPU count", "",
                 "| GPUs | old | new | change |", "|---:|---:|---:|---:|"]
        lines += [f"| {row.gpus} | {_number(row.old)} | {_number(row.new)} | {_change(row.old, row.new)} |"
                  for row in self.front_rows()]
        lines += ["", "## Configurations that changed"]
        for title, rows in (("Only in old", self.only_old), ("Only in new", self.only_new)):
            lines += ["", f"### {title}", ""]
            lines += [f"- trial {r.number}: {r.gpus} GPUs, {_number(r.goodput_per_gpu)} good req/s per GPU, "
                      f"`{r.knobs}`" for r in rows.itertuples()] or ["- none"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
        return environment.get_template("compare.html.j2").render(
            comparison=self, number=_number, change=_change)

    def front_rows(self) -> list:
        return list(self.fronts.itertuples(index=False))


def compare(old: optuna.Study | str | Path, new: optuna.Study | str | Path) -> Comparison:
    """`old` and `new` are Studies, storage URLs, study files or out dirs (of one study each)."""
    studies = [load_study(source) for source in (old, new)]
    trials = [trials_frame(study) for study in studies]
    fronts = pd.concat([best_by_gpus(trials[0]).rename("old"), best_by_gpus(trials[1]).rename("new")], axis=1)
    fronts = fronts.sort_index().rename_axis("gpus").reset_index()
    old_front, new_front = (front(t)[FRONT_COLUMNS] for t in trials)
    return Comparison(
        old_name=_name(old, studies[0]), new_name=_name(new, studies[1]), fronts=fronts,
        only_old=old_front[~old_front["knobs"].isin(new_front["knobs"])],
        only_new=new_front[~new_front["knobs"].isin(old_front["knobs"])])


def _name(source, study: optuna.Study) -> str:
    return study.study_name if isinstance(source, optuna.Study) else f"{source} ({study.study_name})"


def _best(values: pd.Series) -> float | None:
    return None if values.isna().all() else float(values.max())


def _number(value) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.3g}"


def _change(old, new) -> str:
    if old is None or new is None or pd.isna(old) or pd.isna(new) or old == 0:
        return "—"
    return f"{(new - old) / old:+.1%}"
