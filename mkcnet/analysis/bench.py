"""`mkcnet bench`: methods × data sets × seeds under one budget, and the paper's Table 2 from it.

Layout of the output folder:
    runs/DATASET/METHOD/seedS/          an ordinary run directory (mkcnet train)
    runs/DATASET/METHOD/seedS/eval-SPLIT/   its results pack (mkcnet evaluate, best checkpoint)
    runs.csv                            one row per run: diagnosis metrics on all / HQ / LQ images
    summary.csv                         mean, std and count over seeds per data set (and "average")
    table.md, table{,_hq,_lq}.csv       the Table 2 layout: methods × (data set, AUC/ACC/F1)
    grads-DATASET.html                  gradient cosines over epochs, mean over seeds per method

A run is finished when its history reaches the last epoch and its results pack exists; finished
runs are skipped, interrupted ones resume from their last epoch, so the command can be re-run
after a crash, with more seeds, or with more methods.

Many devices and machines: `devices` trains one cell per device at a time, each in a worker
process of its own; `shard=(i, n)` keeps every n-th cell of the grid from the i-th, so n
machines given the same command and shards 1/n … n/n split the grid with no overlap, and
`collect` merges their output folders into the one table (docs/distributed.md).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mkcnet.config import RunConfig
from mkcnet.data.dataset import ImageSet, find_split, read_split
from mkcnet.errors import UserError
from mkcnet.files import read_jsonl
from mkcnet.inference.evaluate import evaluate_split
from mkcnet.inference.results import ResultsPack
from mkcnet.methods import METHODS
from mkcnet.presets import DATASETS, DatasetPreset, build_run_config, dataset_from_file
from mkcnet.training.trainer import Trainer

GROUPS = {"all": "", "HQ": "HQ.", "LQ": "LQ."}
METRICS = {"AUC": "auc", "AUC(hard)": "auc_hard", "ACC": "acc", "F1": "f1"}


@dataclass(frozen=True)
class DatasetSpec:
    """A data set of the grid: its preset (a name or a JSON data-set config), its root folder and,
    where it differs from the grid's, the split it is evaluated on."""

    preset: DatasetPreset
    root: Path
    split: str | None = None

    @property
    def name(self) -> str:
        return self.preset.name

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """`NAME=ROOT`, NAME a data-set preset or a .json data-set config file."""
        name, sep, root = text.partition("=")
        if not sep or not root:
            raise UserError(f"--data wants NAME=ROOT (e.g. ct-iqad=../data/ct-iqad), got {text!r}")
        if name.endswith(".json"):
            preset = dataset_from_file(name)
        elif name in DATASETS:
            preset = DATASETS[name]
        else:
            raise UserError(f"unknown data-set preset {name!r}; choose from {', '.join(DATASETS)} or give a .json config")
        if not Path(root).is_dir():
            raise UserError(f"data-set root not found: {root}")
        return cls(preset, Path(root))


def parse_splits(datasets: Sequence[DatasetSpec], entries: Sequence[str], default: str = "test"
                 ) -> tuple[list[DatasetSpec], str]:
    """`--split` entries: `SPLIT` for every data set, `NAME=SPLIT` for one (the last of each wins)."""
    names = {d.name for d in datasets}
    per_dataset = {}
    for entry in entries:
        name, sep, split = entry.partition("=")
        if not sep:
            default = entry
        elif name in names and split:
            per_dataset[name] = split
        else:
            raise UserError(f"--split {entry!r}: want SPLIT or NAME=SPLIT with NAME one of {', '.join(sorted(names))}")
    return [dataclasses.replace(d, split=per_dataset.get(d.name, d.split)) for d in datasets], default


@dataclass(frozen=True)
class Budget:
    """How big every run of the grid is: a training preset and its overrides."""

    preset: str = "cpu"
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    train_lq_ratio: float | None = None
    device: str = "auto"

    def config(self, dataset: DatasetSpec, method: str, seed: int) -> RunConfig:
        return build_run_config(dataset.preset, self.preset, method, root=str(dataset.root), seed=seed,
                                epochs=self.epochs, image_size=self.image_size, batch_size=self.batch_size,
                                train_lq_ratio=self.train_lq_ratio, device=self.device)


@dataclass
class BenchRun:
    dataset: DatasetSpec
    method: str
    seed: int
    run_dir: Path
    pack_dir: Path

    def epochs_done(self) -> int:
        log = self.run_dir / "history.jsonl"
        records = read_jsonl(log) if log.is_file() else []
        return records[-1]["epoch"] if records else 0

    def finished(self, epochs: int) -> bool:
        return self.epochs_done() >= epochs and (self.pack_dir / "predictions.csv").is_file()


@dataclass
class Bench:
    datasets: Sequence[DatasetSpec]
    methods: Sequence[str]
    seeds: Sequence[int]
    out: Path
    budget: Budget = field(default_factory=Budget)
    split: str = "test"
    log: Callable[[str], None] = print
    shard: tuple[int, int] = (1, 1)  # (i, n): this machine's share of the grid, every n-th cell from the i-th
    devices: Sequence[str] = ()  # train one cell per device concurrently (empty: one at a time on budget.device)
    _images: dict = field(default_factory=dict, repr=False)  # decoded splits, shared by the runs

    def share(self) -> list[BenchRun]:
        """The cells this machine runs: the whole grid, or its shard."""
        i, n = self.shard
        return self.runs()[i - 1::n]

    def runs(self) -> list[BenchRun]:
        """Every cell of the grid, in one fixed order (data sets, then methods, then seeds)."""
        def run(dataset: DatasetSpec, method: str, seed: int) -> BenchRun:
            run_dir = self.out / "runs" / dataset.name / method / f"seed{seed}"
            return BenchRun(dataset, method, seed, run_dir, run_dir / f"eval-{Path(self.split_of(dataset)).stem}")

        return [run(d, m, s) for d in self.datasets for m in self.methods for s in self.seeds]

    def split_of(self, dataset: DatasetSpec) -> str:
        return dataset.split or self.split

    def describe_splits(self) -> str:
        splits = {d.name: self.split_of(d) for d in self.datasets}
        if len(set(splits.values())) == 1:
            return f"`{next(iter(splits.values()))}` split"
        return "splits " + ", ".join(f"`{split}` ({name})" for name, split in splits.items())

    def _load(self, config: RunConfig, split: str) -> ImageSet:
        mc, root = config.model, Path(config.data.root)
        key = (str(root), split, mc.input)
        if key not in self._images:
            table = read_split(root / split, root, config.data.diagnosis_map, mc.num_diagnosis, mc.num_quality,
                                   quality_map=config.data.quality_map)
            self._images[key] = ImageSet.load(table, mc.input, progress=False)
        return self._images[key]

    def run_one(self, run: BenchRun) -> ResultsPack:
        config = self.budget.config(run.dataset, run.method, run.seed)
        epochs = config.train.epochs
        if run.finished(epochs):
            return ResultsPack.load(run.pack_dir)
        done = run.epochs_done()
        if done < epochs:
            val_split = config.data.val_split
            val = self._load(config, val_split) if val_split and (run.dataset.root / val_split).is_file() else None
            resume = done > 0 and (run.run_dir / "state.safetensors").is_file()
            Trainer(config, run.run_dir, progress=False).fit(self._load(config, config.data.train_split), val,
                                                            resume=resume)
        split = find_split(run.dataset.root, self.split_of(run.dataset))
        return evaluate_split(run.run_dir, split, run.dataset.root, run.pack_dir, device=self.budget.device,
                              progress=False)

    def run(self, dry_run: bool = False) -> pd.DataFrame:
        """Train and evaluate what is not finished in this share of the grid; return runs.csv's table."""
        runs = self.share()
        for d in self.datasets:
            find_split(d.root, self.split_of(d))  # fail before hours of training, not after
        labels = {id(run): f"[{i}/{len(runs)}] {run.dataset.name} / {run.method} / seed {run.seed}"
                  for i, run in enumerate(runs, 1)}
        epochs = {id(run): self.budget.config(run.dataset, run.method, run.seed).train.epochs for run in runs}
        if dry_run:
            for run in runs:
                state = "finished" if run.finished(epochs[id(run)]) else f"{run.epochs_done()}/{epochs[id(run)]} epochs"
                self.log(f"{labels[id(run)]}: {state}")
            return pd.DataFrame()
        packs: dict[int, ResultsPack] = {}

        def report(run: BenchRun, skipped: bool, minutes: float, device: str = "") -> None:
            pack = packs[id(run)] = ResultsPack.load(run.pack_dir)
            m = pack.header["metrics"]
            on = f" on {device}" if device else ""
            self.log(f"{labels[id(run)]}: {'finished before, skipped' if skipped else f'{minutes:.1f} min{on}'}"
                     f"  AUC {m.get('diagnosis.auc', float('nan')):.4f}  ACC {m.get('diagnosis.acc', float('nan')):.4f}"
                     f"  F1 {m.get('diagnosis.f1', float('nan')):.4f}")

        todo = [run for run in runs if not run.finished(epochs[id(run)])]
        for run in runs:
            if run not in todo:
                report(run, True, 0.0)
        if len(self.devices) > 1:
            self._run_on_devices(todo, report, labels)
        else:
            for run in todo:
                start = time.perf_counter()
                self.run_one(run)
                report(run, False, (time.perf_counter() - start) / 60)
        return pd.DataFrame([run_row(run.dataset.name, run.method, run.seed, run.run_dir, packs[id(run)])
                             for run in runs])

    def _run_on_devices(self, runs: list[BenchRun], report, labels: dict[int, str]) -> None:
        """One worker process per device, each training one cell at a time; a failed cell is
        reported and the others go on (re-running the command retries it)."""
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        free = context.Queue()
        for device in self.devices:
            free.put(device)
        worker = dataclasses.replace(self, log=print, _images={})
        failed = []
        with ProcessPoolExecutor(len(self.devices), mp_context=context, initializer=_claim_device,
                                 initargs=(free, len(self.devices))) as pool:
            futures = {pool.submit(_train_cell, worker, run): run for run in runs}
            for future in as_completed(futures):
                run = futures[future]
                try:
                    device, minutes = future.result()
                except Exception as err:  # noqa: BLE001 - one cell's failure must not stop the others
                    failed.append(run)
                    self.log(f"{labels[id(run)]}: FAILED ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
                    continue
                report(run, False, minutes, device)
        if failed:
            raise UserError(f"{len(failed)} of {len(runs)} run(s) failed (listed above); run the same command again "
                            "to retry them (finished runs are kept)")


# -- worker processes of `--devices` --------------------------------------------------------------
_WORKER: dict = {}  # per worker process: its device and its Bench (whose decoded images it reuses)


def _claim_device(free, workers: int) -> None:
    _WORKER["device"] = device = free.get()
    if device.startswith("cpu"):  # the CPU workers share the cores
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _train_cell(bench: Bench, run: BenchRun) -> tuple[str, float]:
    device = _WORKER["device"]
    if "bench" not in _WORKER:  # a worker serves one Bench.run: keep its decoded splits between cells
        _WORKER["bench"] = dataclasses.replace(bench, budget=dataclasses.replace(bench.budget, device=device))
    start = time.perf_counter()
    _WORKER["bench"].run_one(run)
    return device, (time.perf_counter() - start) / 60


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n`, 1 ≤ i ≤ n: the i-th of n disjoint shares of the grid."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise UserError(f"--shard wants i/n with 1 ≤ i ≤ n (e.g. 2/8), got {text!r}")
    return int(match[1]), int(match[2])


def collect(folders: Sequence[Path], split: str | None = None) -> tuple[pd.DataFrame, dict[str, list[tuple[str, Path]]]]:
    """The finished runs of several bench output folders (the shards of one grid): runs.csv's
    table, sorted by data set, method (in METHODS order) and seed, and per data set the
    (method, run directory) pairs. Unfinished runs are counted and left out; a cell found in
    two folders is refused (shards are disjoint)."""
    rows, found, seen, unfinished = [], {}, {}, 0
    for folder in folders:
        if not (folder / "runs").is_dir():
            raise UserError(f"{folder} holds no bench runs (no runs/ folder)")
        for run_dir in sorted((folder / "runs").glob("*/*/seed*")):
            dataset, method, seed = run_dir.parts[-3], run_dir.parts[-2], run_dir.name[len("seed"):]
            if not seed.isdigit():
                continue
            packs = sorted(p for p in run_dir.glob("eval-*") if (p / "predictions.csv").is_file())
            if split:
                packs = [p for p in packs if p.name == f"eval-{Path(split).stem}"]
            if not packs:
                unfinished += 1
                continue
            if len(packs) > 1:
                raise UserError(f"{dataset}/{method}/seed{seed} in {folder} was evaluated on several splits "
                                f"({', '.join(p.name[5:] for p in packs)}); choose one with --split")
            key = (dataset, method, int(seed))
            if key in seen:
                raise UserError(f"{dataset}/{method}/seed{seed} is in both {seen[key]} and {folder}; "
                                "the folders must be disjoint shards of one grid")
            seen[key] = folder
            rows.append(run_row(dataset, method, int(seed), run_dir, ResultsPack.load(packs[0])))
            found.setdefault(dataset, []).append((method, run_dir))
    if not rows:
        raise UserError(f"no finished runs in {', '.join(map(str, folders))}")
    if unfinished:
        print(f"left out {unfinished} unfinished run(s)")
    order = {m: i for i, m in enumerate(METHODS)}
    table = pd.DataFrame(rows)
    table = table.sort_values(["dataset", "method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c,
                              kind="stable").reset_index(drop=True)
    return table, found


def run_row(dataset: str, method: str, seed: int, run_dir: Path, pack: ResultsPack) -> dict:
    m = pack.header["metrics"]
    best, last = (json.loads((run_dir / f"{name}.json").read_text())["info"] for name in ("best", "last"))
    row = {"dataset": dataset, "method": method, "seed": seed, "best_epoch": best["epoch"],
           "train_minutes": last["minutes"]}
    for group, prefix in GROUPS.items():
        row[f"{group}.n"] = m.get(f"diagnosis.{prefix}n")
        for label, key in METRICS.items():
            row[f"{group}.{label}"] = m.get(f"diagnosis.{prefix}{key}")
    # What the Meta Learner's labels carry at the chosen epoch (NaN for methods without one).
    history = pd.read_csv(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else pd.DataFrame()
    chosen = history[history["epoch"] == best["epoch"]] if "epoch" in history else history
    for key in ("val.aux_mi", "meta_updates"):
        row[key.removeprefix("val.")] = float(chosen[key].iloc[0]) if key in chosen and len(chosen) else float("nan")
    return row


def paired_differences(runs: pd.DataFrame, method: str, baselines: Sequence[str]) -> pd.DataFrame:
    """Per data set, group and metric: `method` − each baseline, seed by seed (the same seed trains
    both from the same initial draw of shared parts and the same batches), with mean, std and the
    per-seed values."""
    value_cols = [f"{g}.{m}" for g in GROUPS for m in METRICS]
    rows = []
    for dataset, part in runs.groupby("dataset", sort=False):
        own = part[part["method"] == method].set_index("seed")
        for baseline in baselines:
            other = part[part["method"] == baseline].set_index("seed")
            seeds = sorted(set(own.index) & set(other.index))
            if not seeds:
                continue
            for col in value_cols:
                diffs = [float(own.at[s, col] - other.at[s, col]) for s in seeds]
                group, metric = col.split(".", 1)
                rows.append({"dataset": dataset, "comparison": f"{method} − {baseline}", "group": group,
                             "metric": metric, "mean": pd.Series(diffs).mean(), "std": pd.Series(diffs).std(),
                             "per_seed": " ".join(f"{d:+.4f}" for d in diffs), "seeds": len(seeds)})
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: dataset (plus "average" over data sets, per seed), method, group, metric, mean, std, seeds."""
    value_cols = [f"{g}.{m}" for g in GROUPS for m in METRICS]
    long = runs.melt(id_vars=["dataset", "method", "seed"], value_vars=value_cols, var_name="key")
    if runs["dataset"].nunique() > 1:
        average = long.groupby(["method", "seed", "key"], as_index=False)["value"].mean().assign(dataset="average")
        long = pd.concat([long, average], ignore_index=True)
    long[["group", "metric"]] = long["key"].str.split(".", n=1, expand=True)
    out = long.groupby(["dataset", "method", "group", "metric"], sort=False)["value"].agg(
        mean="mean", std="std", seeds="count").reset_index()
    return out


def wide_table(summary: pd.DataFrame, group: str, methods: Sequence[str]) -> pd.DataFrame:
    """Rows: methods in the given order; columns: (data set, AUC/ACC/F1) → "mean ± std"."""
    part = summary[summary["group"] == group].copy()
    part["cell"] = [f"{m:.4f}" if pd.isna(s) else f"{m:.4f} ± {s:.4f}" for m, s in zip(part["mean"], part["std"])]
    table = part.pivot(index="method", columns=["dataset", "metric"], values="cell")
    datasets = list(dict.fromkeys(part["dataset"]))
    table = table.reindex(index=[m for m in methods if m in table.index],
                          columns=pd.MultiIndex.from_product([datasets, list(METRICS)]))
    return table


def write_tables(runs: pd.DataFrame, out: Path, methods: Sequence[str], title: str) -> list[Path]:
    summary = summarise(runs)
    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    written = [out / "runs.csv", out / "summary.csv"]
    sections = [title, ""]
    for group, suffix, caption in (("all", "", "All evaluation images"), ("HQ", "_hq", "HQ images only"),
                                   ("LQ", "_lq", "LQ images only")):
        table = wide_table(summary, group, methods)
        flat = table.set_axis([f"{d} {m}" for d, m in table.columns], axis=1)
        flat.to_csv(out / f"table{suffix}.csv")
        written.append(out / f"table{suffix}.csv")
        sections += [f"## {caption}", "", flat.to_markdown(), ""]
    present = set(runs["method"])
    with_meta = [m for m in methods if m in present and METHODS[m].meta_learner]
    baselines = [b for b in ("vanilla", "multitask") if b in present]
    paired = pd.concat([paired_differences(runs, m, baselines) for m in with_meta], ignore_index=True) \
        if with_meta and baselines else pd.DataFrame()
    if not paired.empty:  # no seed that both methods ran: nothing to pair
        paired.to_csv(out / "paired.csv", index=False)
        written.append(out / "paired.csv")
        paired["cell"] = [f"{m:+.4f} ± {sd:.4f} ({seeds})" for m, sd, seeds in
                          zip(paired["mean"], paired["std"].fillna(0), paired["per_seed"])]
        wide = paired.pivot_table(index=["dataset", "comparison", "group"], columns="metric", values="cell",
                                  aggfunc="first", sort=False)[list(METRICS)]
        labels = runs[runs["method"].isin(with_meta)][["dataset", "method", "seed", "best_epoch", "aux_mi"]]
        sections += ["## Paired differences, seed by seed", "",
                     "mean ± std over seeds (each seed's difference); positive: the first method is ahead.", "",
                     wide.to_markdown(), "", "## What the Meta Learner's labels carry at the chosen epoch", "",
                     "`aux_mi`: nats of information between the image and its auxiliary sub-class inside its "
                     "(diagnosis, quality) block, on the validation images (0: uninformative; log ψ at most).", "",
                     labels.to_markdown(index=False, floatfmt=".4f"), ""]
    (out / "table.md").write_text("\n".join(sections))
    return [*written, out / "table.md"]
