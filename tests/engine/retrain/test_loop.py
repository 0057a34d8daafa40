"""The shared training loop, exercised with a small regression task (redshift from the spectrum).

The task is real (a linear probe trained by the loop on the mock survey), so these tests
check what every adaptation task relies on: the schedule, falling loss, resumable
checkpoints that continue exactly, early stopping, history files and dropped-row counts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fmb_engine.errors import DataError
from fmb_engine.retrain.config import TrainConfig
from fmb_engine.retrain.loop import Checkpoints, TrainingError, TrainTask, file_fingerprint, lr_at, train
from fmb_engine.workspace import atomic_path


class ProbeTask(TrainTask):
    """Redshift from 32 coarse spectrum bins, through a small MLP with dropout."""

    name = "probe"
    fields = ("spectra",)
    needs = ("spectrum",)

    def __init__(self, config, device="cpu", interrupt_at: int | None = None, poison: bool = False):
        super().__init__(config, device)
        torch.manual_seed(config.seed)
        self.net = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))
        self.calls, self.interrupt_at, self.poison = 0, interrupt_at, poison

    def modules(self):
        return {"net": self.net}

    def parameter_groups(self):
        return [{"params": list(self.net.parameters())}]

    def loss(self, batch):
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        flux = torch.as_tensor(np.nan_to_num(batch.flux), dtype=torch.float32)
        x = flux[:, : 32 * (flux.shape[1] // 32)].reshape(len(flux), 32, -1).mean(-1)
        x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)
        z = torch.as_tensor(batch.redshift, dtype=torch.float32)
        loss = ((self.net(x).squeeze(1) - z) ** 2).mean()
        if self.poison:
            loss = loss * float("nan")
        return loss, {"abs_err": float((self.net(x).squeeze(1) - z).abs().mean().detach())}

    def export(self, folder: Path):
        path = folder / "probe.pt"
        with atomic_path(path) as tmp:
            torch.save(self.net.state_dict(), tmp)
        return {"probe": path}


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=24, batch_size=16, lr=3e-3, warmup_steps=3, eval_every=6, eval_batches=2,
                checkpoint_every=5, keep_checkpoints=2, device="cpu", seed=3)
    return TrainConfig(**(base | kw))


def _strip(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half way down the cosine
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    assert lr_at(50, cfg.model_copy(update={"schedule": "constant"})) == 1e-3
    by_fraction = TrainConfig(steps=100, lr=1e-3, warmup_fraction=0.2)
    assert by_fraction.warmup() == 20 and lr_at(9, by_fraction) == pytest.approx(5e-4)
    assert TrainConfig(steps=100, warmup_fraction=0.2, warmup_steps=0).warmup() == 0  # explicit wins
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)


def test_loss_falls_and_everything_is_written(workspace, small_survey):
    folder = workspace.folder("checkpoints") / "probe"
    result = train(ProbeTask(_cfg()), workspace, small_survey, folder)
    hist = pd.read_csv(folder / "history.csv")
    assert list(hist["step"]) == list(range(1, 25))
    assert hist["train_loss"].tail(5).mean() < hist["train_loss"].head(5).mean()
    val = hist["val_loss"].dropna()
    assert len(val) == 4 and val.iloc[-1] < val.iloc[0]
    assert {"lr", "grad_norm", "train_abs_err", "val_abs_err", "epoch"} <= set(hist.columns)
    assert hist["lr"].iloc[2] == pytest.approx(3e-3) and hist["lr"].iloc[-1] < 1e-4
    assert (folder / "history.png").stat().st_size > 1000
    assert (folder / "probe.pt").is_file() and (folder / "best" / "probe.pt").is_file()
    assert [p.name for p in Checkpoints(folder / "checkpoints", 2).all()] == ["step_0000020.pt", "step_0000024.pt"]
    manifest = json.loads(result.manifest.read_text())
    assert manifest["counts"]["steps"] == 24 and manifest["counts"]["train_objects"] > 0
    assert manifest["modules"]["net"]["trainable"] == 32 * 16 + 16 + 16 + 1
    assert manifest["outputs"]["history_csv"].endswith("history.csv")


def test_same_seed_same_losses(tmp_path, small_survey):
    a = train(ProbeTask(_cfg(steps=8)), None, small_survey, tmp_path / "a")
    b = train(ProbeTask(_cfg(steps=8)), None, small_survey, tmp_path / "b")
    assert _strip(a.history) == _strip(b.history)


# loss calls: steps 1-6 take two micro-batches each (calls 1-12), then validation (calls 13-14)
@pytest.mark.parametrize(("interrupt_at", "kept_step"), [(12, 5), (13, 6), (15, 6)])
def test_interrupted_run_resumes_exactly(tmp_path, small_survey, interrupt_at, kept_step):
    """Ctrl-C inside a step's accumulation, inside validation, or at the next step's first batch."""
    cfg = _cfg(steps=12, accum_steps=2, checkpoint_every=100)
    whole = ProbeTask(cfg)
    ref = train(whole, None, small_survey, tmp_path / "whole")

    folder = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(ProbeTask(cfg, interrupt_at=interrupt_at), None, small_survey, folder)
    saved = Checkpoints(folder / "checkpoints", 3).latest()
    assert saved is not None and saved.name == f"step_{kept_step:07d}.pt"
    resumed_task = ProbeTask(cfg)
    resumed = train(resumed_task, None, small_survey, folder)
    assert _strip(resumed.history) == _strip(ref.history)
    for p, q in zip(whole.net.parameters(), resumed_task.net.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fresh_start_discards_checkpoints(tmp_path, small_survey):
    folder = tmp_path / "run"
    train(ProbeTask(_cfg(steps=5)), None, small_survey, folder)
    again = train(ProbeTask(_cfg(steps=5)), None, small_survey, folder)  # complete: nothing left to do
    assert len(again.history) == 5 and again.steps == 5
    fresh = train(ProbeTask(_cfg(steps=4)), None, small_survey, folder, resume=False)
    assert fresh.steps == 4 and len(fresh.history) == 4


def test_early_stopping(tmp_path, small_survey):
    cfg = _cfg(steps=60, lr=1e-9, warmup_steps=None, eval_every=2, patience=2, min_delta=1.0)
    result = train(ProbeTask(cfg), None, small_survey, tmp_path / "es")
    assert result.stopped_early and result.steps == 6  # best at step 2, then two evaluations without improvement


def test_non_finite_loss_names_step_and_objects(tmp_path, small_survey):
    with pytest.raises(TrainingError, match=r"non-finite loss .* step 1 on objects"):
        train(ProbeTask(_cfg(), poison=True), None, small_survey, tmp_path / "nan")


def test_foreign_checkpoint_refused(tmp_path, small_survey):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    torch.save({"format": "something else"}, folder / "checkpoints" / "step_0000003.pt")
    with pytest.raises(DataError, match="not an FMB retrain checkpoint"):
        train(ProbeTask(_cfg()), None, small_survey, folder)


def test_objects_without_spectrum_are_counted(workspace, small_survey, tmp_path):
    from fmb_engine.survey.store import SurveyReader, SurveyWriter

    with SurveyReader(small_survey) as src:
        n = src.n_objects
        b = src.read_rows(np.arange(n), ("images", "spectra"))
        table, wave = src.table(), src.wavelength
    cols = {c: table[c].to_numpy() for c in table.columns}
    cols["has_spectrum"] = np.arange(n) % 10 != 0  # every tenth object has no spectrum
    flux = np.where(cols["has_spectrum"][:, None], b.flux, 0.0).astype(np.float32)
    gappy = tmp_path / "gappy.h5"
    with SurveyWriter(gappy, image_size=32, wavelength=wave, rgb=False, generator="test", params={}) as w:
        w.append(cols, b.images, flux, b.ivar, b.mask)
    result = train(ProbeTask(_cfg(steps=2)), workspace, gappy, tmp_path / "run")
    manifest = json.loads(result.manifest.read_text())
    dropped = manifest["dropped"]
    assert sum(dropped.values()) == n // 10 and set(dropped) == {"train: missing spectrum", "test: missing spectrum"}
    assert manifest["counts"]["train_objects"] + manifest["counts"]["val_objects"] + n // 10 == n
    assert math.isfinite(result.history[-1]["train_loss"])


def test_changed_starting_files_are_refused_on_resume(tmp_path, small_survey):
    """A task whose checkpoints do not hold everything (a frozen backbone) must find it unchanged."""
    base = tmp_path / "frozen.bin"
    base.write_bytes(b"weights v1")

    class Frozen(ProbeTask):
        def fingerprint(self):
            return file_fingerprint(base)

    folder = tmp_path / "run"
    train(Frozen(_cfg(steps=4)), None, small_survey, folder)
    base.write_bytes(b"weights v2, longer")
    with pytest.raises(DataError, match="other starting files.*--fresh"):
        train(Frozen(_cfg(steps=8)), None, small_survey, folder)
    assert train(Frozen(_cfg(steps=4)), None, small_survey, folder, resume=False).steps == 4

