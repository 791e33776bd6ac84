"""The `report` and `compare` subcommands, for autotune/cli.py to add with `register(commands)`:

    revati-tune report STUDY [--study-name NAME] [--out DIR] [--price SKU=USD ...]
                    report.html, trials.csv and trials.parquet of a study; prints the HTML's path
    revati-tune compare OLD NEW [--out DIR]
                    what moved between two studies, as markdown (and compare.md/.html in DIR)

STUDY, OLD and NEW are out dirs holding study.db, study files or Optuna storage URLs. The
report's libraries (plotly, optuna) are imported when a subcommand runs, not when the CLI starts.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser("report", help="a study's HTML report (Pareto front, drill-down, deploy "
                                                  "commands) with trials.csv and trials.parquet")
    report.add_argument("study", help="an out dir with study.db, a study file or an Optuna storage URL")
    report.add_argument("--study-name", help="which study, when the storage holds several")
    report.add_argument("--out", type=Path, help="folder to write to (default: the study's out dir)")
    report.add_argument("--price", action="append", default=[], type=_price, metavar="SKU=USD",
                        help="re-price a GPU type (USD per GPU-hour) instead of the study's price: goodput per "
                             "dollar, the front and the pick follow; nothing runs again")
    report.set_defaults(run=_report)

    compare = subparsers.add_parser("compare", help="what moved between two studies (Pareto fronts, best "
                                                    "goodput per GPU, changed configurations)")
    compare.add_argument("old", help="the earlier study: out dir, study file or storage URL")
    compare.add_argument("new", help="the later study")
    compare.add_argument("--out", type=Path, help="also write compare.md and compare.html here")
    compare.set_defaults(run=_compare)


def _report(args: argparse.Namespace) -> int:
    from reports.report import write_report

    out = args.out or _study_folder(args.study)
    print(write_report(args.study, out, study_name=args.study_name, prices=dict(args.price)))
    return 0


def _price(text: str) -> tuple[str, float]:
    from emulator.hardware import load_sku

    name, _, usd = text.partition("=")
    try:
        sku, price = load_sku(name).sku, float(usd)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SKU=USD with a known SKU and a price > 0 ({error})")
    if not price > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the price must be a positive number of USD per GPU-hour")
    return sku, price


def _study_folder(source: str) -> Path:
    """Where a report goes by default: beside the study."""
    if "://" in source:
        raise ValueError("a study named by a storage URL needs --out for its report")
    path = Path(source)
    return path if path.is_dir() else path.parent


def _compare(args: argparse.Namespace) -> int:
    from reports.compare import compare

    comparison = compare(args.old, args.new)
    markdown = comparison.markdown()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text(markdown)
        (args.out / "compare.html").write_text(comparison.html())
    print(markdown, end="")
    return 0
