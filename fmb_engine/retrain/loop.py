"""One training loop for every adaptation task: schedule, accumulation, AMP, clipping,
validation, early stopping, resumable checkpoints, loss history (CSV + plot) and a manifest.

A task (:class:`TrainTask`) only says which modules it trains, how a batch becomes a loss
and how to write its weights in the format the embedders load. Everything that makes a
run trustworthy -- same seed gives the same losses, an interrupted run resumes exactly
where it stopped, nothing is written half -- lives here once.

Learning rate at optimiser step ``s`` (0-based) with peak ``lr``, warm-up ``W`` (``warmup_steps``, else
``warmup_fraction * S``) and ``S``
steps in total::

    s < W:          lr * (s + 1) / W
    cosine:         min_lr + (lr - min_lr) * (1 + cos(pi * (s - W) / (S - W))) / 2
    constant:       lr
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fmb_engine.errors import ConfigError, DataError, FMBError
from fmb_engine.manifest import RunManifest
from fmb_engine.progress import Reporter, Silent
from fmb_engine.retrain.config import TrainConfig
from fmb_engine.stage_run import stage_run
from fmb_engine.survey.batch import SurveyBatch
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace, atomic_path, make_dirs

CHECKPOINT_FORMAT = "fmb-retrain-1"
_CKPT = re.compile(r"^step_(\d{7})\.pt$")


class TrainingError(FMBError):
    """The optimisation itself failed (a non-finite loss, say)."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (see the module docstring)."""
    warmup = cfg.warmup()
    if warmup and step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(cfg.steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- the task interface


class TrainTask(ABC):
    """What one adaptation loop trains; see the module docstring."""

    #: Task name as typed after ``fmb-engine retrain`` (also the output sub-folder).
    name: ClassVar[str]
    #: Survey fields each batch needs (``images``, ``spectra``, ``rgb``).
    fields: ClassVar[tuple[str, ...]] = ("images", "spectra")
    #: Objects lacking these are left out (and counted): ``bands`` and/or ``spectrum``.
    needs: ClassVar[tuple[str, ...]] = ("bands", "spectrum")

    def __init__(self, config: TrainConfig, device: str):
        self.config = config
        self.device = device

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state a checkpoint must hold (trained or not), by name."""

    @abstractmethod
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups (only trainable parameters); ``lr_scale`` multiplies the schedule."""

    @abstractmethod
    def loss(self, batch: SurveyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of one micro-batch (mean over its objects) and extra metrics to log."""

    @abstractmethod
    def export(self, folder: Path) -> dict[str, Path]:
        """Write the trained weights into ``folder`` in the format the embedders load."""

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        groups = self.parameter_groups()
        if not any(p.requires_grad for g in groups for p in g["params"]):
            raise ConfigError(f"retrain {self.name}: nothing to train (no parameter requires a gradient)")
        for g in groups:
            g.setdefault("weight_decay", cfg.weight_decay)
        return torch.optim.AdamW(groups, lr=cfg.lr)

    def train(self, mode: bool = True) -> None:
        """Train mode for the trained modules; frozen ones stay in eval mode (no dropout, fixed BN)."""
        for module in self.modules().values():
            trainable = any(p.requires_grad for p in module.parameters())
            module.train(mode and trainable)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must find unchanged besides its checkpoint (e.g. the frozen starting
        weights a checkpoint does not hold): plain values, compared on resume."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Facts for the manifest: parameter counts per module."""
        out = {}
        for key, module in self.modules().items():
            params = list(module.parameters())
            out[key] = {"parameters": sum(p.numel() for p in params),
                        "trainable": sum(p.numel() for p in params if p.requires_grad)}
        return out


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Path, size and modification time of a (possibly multi-GB) weights file: cheap, and enough
    to notice that it was replaced."""
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


# --------------------------------------------------------------------------- data


def usable_rows(reader: SurveyReader, split: str, needs: tuple[str, ...], limit: int,
                manifest: RunManifest | None = None) -> np.ndarray:
    """Rows of ``split`` that have what the task needs; the others are counted as dropped."""
    rows = reader.rows_of_split(split)
    keep = np.ones(rows.size, bool)
    if "bands" in needs:
        has_bands = np.asarray(reader.column("has_bands"), bool)[rows].all(axis=1)
        if manifest is not None and (~has_bands).sum():
            manifest.dropped(f"{split}: missing band", int((~has_bands).sum()))
        keep &= has_bands
    if "spectrum" in needs:
        has_spec = np.asarray(reader.column("has_spectrum"), bool)[rows]
        if manifest is not None and (~has_spec & keep).sum():
            manifest.dropped(f"{split}: missing spectrum", int((~has_spec & keep).sum()))
        keep &= has_spec
    rows = rows[keep]
    if limit:
        rows = rows[:limit]
    if rows.size == 0:
        raise DataError(f"{reader.path}: split {split!r} has no object with {' and '.join(needs)} to train on")
    return rows


class BatchSource:
    """Seeded, resumable stream of micro-batches: a new permutation of the rows every epoch.

    Epoch ``e`` uses ``default_rng([seed, e]).permutation``; the position in the stream is
    ``(epoch, pos)``, which is all a checkpoint needs to continue with the same batches.
    """

    def __init__(self, reader: SurveyReader, rows: np.ndarray, batch_size: int, seed: int,
                 fields: tuple[str, ...]):
        self.reader, self.rows, self.seed, self.fields = reader, np.asarray(rows), seed, fields
        self.batch_size = min(batch_size, self.rows.size)
        self.epoch, self.pos = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return self.rows[np.random.default_rng([self.seed, epoch]).permutation(self.rows.size)]

    def next(self) -> SurveyBatch:
        if self.pos + self.batch_size > self._order.size:  # drop the incomplete tail: equal batches
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        rows = self._order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.reader.read_rows(rows, self.fields)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation(self.epoch)

    def fixed(self, n_batches: int) -> Iterator[SurveyBatch]:
        """The first ``n_batches`` batches in row order: the same objects at every evaluation."""
        for i in range(min(n_batches, math.ceil(self.rows.size / self.batch_size))):
            yield self.reader.read_rows(self.rows[i * self.batch_size : (i + 1) * self.batch_size], self.fields)


# --------------------------------------------------------------------------- checkpoints + history


class Checkpoints:
    """``step_NNNNNNN.pt`` files in ``folder``: written atomically, the newest ``keep`` kept."""

    def __init__(self, folder: Path, keep: int):
        self.folder, self.keep = folder, keep

    def all(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if _CKPT.match(p.name))

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        path = self.folder / f"step_{step:07d}.pt"
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        for old in self.all()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise DataError(f"{path}: not a readable retrain checkpoint ({str(exc).splitlines()[0]})") from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise DataError(f"{path}: not an FMB retrain checkpoint (expected format {CHECKPOINT_FORMAT!r})")
        return payload


def write_history(rows: list[dict[str, Any]], folder: Path, title: str) -> dict[str, Path]:
    """``history.csv`` (one row per step; validation columns filled at evaluations) and ``history.png``."""
    import pandas as pd

    from fmb_engine.csv_tables import write_csv
    from fmb_engine.figures.style import fmb_style, pyplot, save

    frame = pd.DataFrame(rows)
    csv = folder / "history.csv"
    write_csv(frame, csv)
    plt = pyplot()
    with fmb_style():
        fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True, height_ratios=(3, 1))
        ax.plot(frame["step"], frame["train_loss"], lw=0.8, alpha=0.6, label="train (per step)")
        if len(frame) >= 10:
            smooth = frame["train_loss"].rolling(max(len(frame) // 20, 2), min_periods=1).mean()
            ax.plot(frame["step"], smooth, lw=1.5, label="train (running mean)")
        if "val_loss" in frame and frame["val_loss"].notna().any():
            val = frame.dropna(subset=["val_loss"])
            ax.plot(val["step"], val["val_loss"], "o-", ms=3, label="validation")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.legend()
        ax_lr.plot(frame["step"], frame["lr"], lw=1.0, color="0.3")
        ax_lr.set_ylabel("learning rate")
        ax_lr.set_xlabel("optimiser step")
        png = save(fig, folder / "history", formats=("png",))[0]
    return {"history_csv": csv, "history_png": png}


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    folder: Path
    steps: int
    stopped_early: bool
    history: list[dict[str, Any]]
    outputs: dict[str, Path] = field(default_factory=dict)
    manifest: Path | None = None


def _finite_or_raise(loss: torch.Tensor, step: int, batch: SurveyBatch, task: str) -> None:
    if not torch.isfinite(loss):
        ids = ", ".join(map(str, batch.object_ids[:5]))
        raise TrainingError(
            f"retrain {task}: non-finite loss ({float(loss)}) at step {step + 1} on objects {ids}...; "
            "lower lr, enable grad_clip, or check these objects' data"
        )


class _Run:
    """The mutable state of one training run and the operations on it (see :func:`train`)."""

    def __init__(self, task: TrainTask, source: BatchSource, val_source: BatchSource, ckpts: Checkpoints,
                 folder: Path, reporter: Reporter):
        self.task, self.cfg, self.source, self.val_source = task, task.config, source, val_source
        self.ckpts, self.folder, self.reporter = ckpts, folder, reporter
        self.optimizer = task.make_optimizer()
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.on_cuda = str(task.device).startswith("cuda")
        amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.cfg.amp)
        self.amp_dtype = amp if self.on_cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.step, self.best, self.bad, self.stopped = 0, math.inf, 0, False
        self.history: list[dict[str, Any]] = []
        #: stream position + random state where the step in progress began, until it is applied
        self.pending: tuple[dict[str, int], dict[str, Any]] | None = None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def rng_state(self) -> dict[str, Any]:
        return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if self.on_cuda else []}

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, position: tuple[dict[str, int], dict[str, Any]] | None = None) -> Path:
        """Everything needed to continue after the last completed step; ``position`` is the
        batch stream and random state as they were when that step ended (default: now)."""
        where, rng = position or (self.source.state(), self.rng_state())
        return self.ckpts.save(self.step, {
            "format": CHECKPOINT_FORMAT, "task": self.task.name, "step": self.step, "best": self.best,
            "bad": self.bad, "stopped": self.stopped, "history": self.history, "source": where, "rng": rng,
            "modules": {k: m.state_dict() for k, m in self.task.modules().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "config": self.cfg.model_dump(), "fingerprint": self.task.fingerprint(),
        })

    def restore(self, path: Path) -> None:
        state = Checkpoints.load(path)
        if state["task"] != self.task.name:
            raise DataError(f"{path}: a checkpoint of retrain {state['task']!r}, not {self.task.name!r}")
        now = self.task.fingerprint()
        if state.get("fingerprint", {}) != now:
            raise DataError(f"{path} was written from other starting files ({state.get('fingerprint')}, now {now}); "
                            "resuming would mix them: start over with --fresh, or restore those files")
        for key, module in self.task.modules().items():
            module.load_state_dict(state["modules"][key])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.source.load_state(state["source"])
        torch.set_rng_state(state["rng"]["cpu"])
        if self.on_cuda and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step, self.best, self.bad = int(state["step"]), float(state["best"]), int(state["bad"])
        self.history, self.stopped = list(state["history"]), bool(state.get("stopped", False))
        if self.history and self._eval_due(self.step) and "val_loss" not in self.history[-1]:
            self.validate(self.history[-1])  # interrupted while validating: finish that first

    def interrupted(self) -> Path | None:
        """Ctrl-C: keep the last completed step. Before the optimiser step the weights are still
        those of that step and the stream rewinds to where the interrupted step began."""
        self.optimizer.zero_grad(set_to_none=True)
        if not self.step:
            return None
        return self.checkpoint(self.pending)

    # -- one step ----------------------------------------------------------------------------
    def _eval_due(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0 or step == self.cfg.steps

    def run_step(self) -> dict[str, Any]:
        cfg, task = self.cfg, self.task
        t0 = time.perf_counter()
        self.pending = (self.source.state(), self.rng_state())
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        task.train(True)
        sums: dict[str, float] = {}
        for _ in range(cfg.accum_steps):
            batch = self.source.next()
            with self.autocast():
                loss, metrics = task.loss(batch)
            _finite_or_raise(loss.detach(), self.step, batch, task.name)
            self.scaler.scale(loss / cfg.accum_steps).backward()
            for key, value in {"loss": float(loss.detach()), **metrics}.items():
                sums[key] = sums.get(key, 0.0) + value / cfg.accum_steps
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step, self.pending = self.step + 1, None
        row: dict[str, Any] = {"step": self.step, "epoch": self.source.epoch, "lr": lr,
                               "train_loss": sums.pop("loss"), "grad_norm": float(grad_norm),
                               **{f"train_{k}": v for k, v in sums.items()}}
        self.history.append(row)
        if self._eval_due(self.step):
            self.validate(row)
        row["time_s"] = round(time.perf_counter() - t0, 4)
        if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or self.stopped:
            self.checkpoint()
        return row

    def validate(self, row: dict[str, Any]) -> None:
        """Validation losses into ``row``; export ``best/`` on improvement; early stopping."""
        task, cfg = self.task, self.cfg
        task.train(False)
        sums: dict[str, float] = {}
        n = 0
        with torch.no_grad():
            for batch in self.val_source.fixed(cfg.eval_batches):
                with self.autocast():
                    loss, metrics = task.loss(batch)
                k = len(batch.object_ids)
                n += k
                for key, value in {"loss": float(loss), **metrics}.items():
                    sums[key] = sums.get(key, 0.0) + value * k
        row.update({f"val_{k}": v / max(n, 1) for k, v in sums.items()})
        if row["val_loss"] < self.best - cfg.min_delta:
            self.best, self.bad = row["val_loss"], 0
            task.export(self.folder / "best")
        else:
            self.bad += 1
            self.stopped = bool(cfg.patience) and self.bad >= cfg.patience
        note = " (best)" if self.bad == 0 else f" ({self.bad} without improvement)"
        self.reporter.log(f"step {self.step}: train {row['train_loss']:.4g}, val {row['val_loss']:.4g}{note}")


def train(task: TrainTask, ws: Workspace | None, survey: Path, folder: Path, *, resume: bool = True,
          reporter: Reporter | None = None, config_record: dict[str, Any] | None = None) -> TrainResult:
    """Run (or continue) ``task`` on ``survey``, writing into ``folder``; see the module docstring.

    With ``resume`` the newest checkpoint in ``folder/checkpoints`` is continued (its batches,
    optimiser moments, learning-rate position and random state), so an interrupted run ends
    with the same weights and history as an uninterrupted one. Ctrl-C writes a checkpoint of
    the last completed step before stopping. Without ``resume`` earlier checkpoints are deleted.
    """
    reporter = reporter or Silent()
    cfg = task.config
    record = config_record or {"values": cfg.model_dump()}
    with stage_run(ws, f"retrain-{task.name}", record, seed=cfg.seed) as manifest, SurveyReader(survey) as reader:
        make_dirs(folder)
        ckpts = Checkpoints(folder / "checkpoints", cfg.keep_checkpoints)
        manifest.input("survey", survey, digest=reader.digest)  # the store's own digest: no re-hash of GBs
        train_rows = usable_rows(reader, cfg.train_split, task.needs, cfg.max_objects, manifest)
        val_rows = usable_rows(reader, cfg.val_split, task.needs, cfg.max_objects, manifest)
        manifest.count("train_objects", int(train_rows.size))
        manifest.count("val_objects", int(val_rows.size))
        run = _Run(task, BatchSource(reader, train_rows, cfg.batch_size, cfg.seed, task.fields),
                   BatchSource(reader, val_rows, cfg.batch_size, cfg.seed, task.fields), ckpts, folder, reporter)
        latest = ckpts.latest() if resume else None
        if latest is not None:
            run.restore(latest)
            manifest.record("resumed_from", {"checkpoint": str(latest), "step": run.step})
            reporter.log(f"resuming retrain {task.name} at step {run.step} from {latest}")
        elif not resume:
            for old in ckpts.all():
                old.unlink()
        manifest.record("modules", task.describe())

        t_start, first = time.perf_counter(), run.step
        try:
            with manifest.phase("train"), reporter.task(f"retrain {task.name}", total=cfg.steps) as bar:
                bar.advance(run.step)
                while run.step < cfg.steps and not run.stopped:
                    run.run_step()
                    bar.advance(1)
        except KeyboardInterrupt:
            saved = run.interrupted()
            if saved is not None:
                manifest.output("checkpoint", saved)
            raise

        outputs = {**{f"final_{k}": v for k, v in task.export(folder).items()},
                   **write_history(run.history, folder, f"retrain {task.name}")}
        if (folder / "best").is_dir():
            outputs["best"] = folder / "best"
        for key, path in outputs.items():
            manifest.output(key, path)
        early = run.stopped and run.step < cfg.steps
        manifest.count("steps", run.step)
        manifest.count("steps_per_s", round((run.step - first) / max(time.perf_counter() - t_start, 1e-9), 3))
        manifest.record("stopped_early", early)
        manifest.record("best_val_loss", run.best if math.isfinite(run.best) else None)
    return TrainResult(folder, run.step, early, run.history, outputs, manifest.path)
