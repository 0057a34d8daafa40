"""retrain astroclip-heads: CLIP fine-tune of AstroCLIP's projection heads on a tiny model and the mock survey."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fmb_engine.embed.astroclip import (
    AstroCLIP,
    AstroCLIPEmbedder,
    read_checkpoint,
    save_checkpoint,
)
from fmb_engine.errors import ConfigError
from fmb_engine.retrain import run
from fmb_engine.retrain.astroclip_heads import FINETUNED_FILE, Task, clip_loss
from fmb_engine.retrain.config import AstroCLIPHeadsConfig as Config
from fmb_engine.retrain.loop import BatchSource, usable_rows
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace

from ..astroclip_tiny import TINY, published_keys, tiny_model
from .spy import retrain_keeping_task

CKPT = "astroclip_fmb.pt"
SPEC_LEN = 2000  # 199 SpecFormer tokens: fast, and still a real window layout
BASE = dict(checkpoint=CKPT, image_size=24, spectrum_length=SPEC_LEN, device="cpu", threads=1, seed=3)


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("astroclip_base")
    save_checkpoint(d / CKPT, published_keys(tiny_model()), architecture=TINY.to_dict())
    return d


def _config(base: Path, **kw) -> Config:
    return Config(**{**BASE, "weights": str(base), **kw})


def _retrain(ws: Workspace, survey, config: Config):
    return retrain_keeping_task(ws, survey, "astroclip-heads", config)


def _embedder(weights: Path) -> AstroCLIPEmbedder:
    return AstroCLIPEmbedder(dict(weights=str(weights), checkpoint=CKPT, image_size=24,
                                  spectrum_length=SPEC_LEN, device="cpu", batch_size=16))


def _batch(survey: Path, n: int = 12):
    with SurveyReader(survey) as reader:
        return reader.read_rows(reader.rows_of_split("test")[:n], ("images", "rgb", "spectra"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_survey, base_ckpt):
    """Default settings (heads of both towers, backbones frozen, fixed scale), 40 steps."""
    ws = Workspace.init(tmp_path_factory.mktemp("astroclip_heads") / "ws")
    cfg = _config(base_ckpt, lr=3e-3, batch_size=16, steps=40, eval_every=10, eval_batches=2,
                  checkpoint_every=40, patience=0)
    return (*_retrain(ws, small_survey, cfg), cfg)


# --------------------------------------------------------------------------- config + loss


def test_config_defaults_and_missing_weights(tmp_path):
    cfg = Config()
    assert (cfg.weight_decay, cfg.grad_clip, cfg.patience, cfg.min_delta) == (5e-4, 1.0, 3, 1e-4)
    assert (cfg.finetune_spectrum, cfg.unfreeze_backbone_blocks, cfg.learnable_scale) == (True, 0, False)
    assert cfg.logit_scale == 15.5 and cfg.image_size == 144 and cfg.spectrum_length == 7781
    assert cfg.warmup_steps is None and cfg.warmup() == 100  # 10 % of the steps
    assert Config(steps=50).warmup() == 5
    assert Config(warmup_steps=7).warmup() == 7
    assert Config(warmup_fraction=0).warmup() == 0
    with pytest.raises(ConfigError) as err:
        run.build_task("astroclip-heads", Config(weights=str(tmp_path), device="cpu"))
    assert "astroclip.ckpt" in str(err.value) and str(tmp_path) in str(err.value)


def test_clip_loss_by_hand():
    rng = np.random.default_rng(0)
    img, spec = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    a = img / np.linalg.norm(img, axis=1, keepdims=True)
    b = spec / np.linalg.norm(spec, axis=1, keepdims=True)
    logits = 15.5 * a @ b.T

    def xent(z):  # mean over rows of -log softmax(z)[i, i]
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - np.diag(z)))

    expect = (xent(logits) + xent(logits.T)) / 2
    loss, cosine = clip_loss(torch.tensor(img), torch.tensor(spec), 15.5)
    assert float(loss) == pytest.approx(expect, rel=1e-9)
    assert float(cosine) == pytest.approx(np.mean(np.sum(a * b, axis=1)), rel=1e-9)
    # the log scale (what reference bug L4 fed) is a different, much flatter loss
    assert float(clip_loss(torch.tensor(img), torch.tensor(spec), math.log(15.5))[0]) != pytest.approx(expect)
    # normalisation floor 1e-3 (upstream): a tiny vector is not blown up to unit length
    tiny = 1e-5 * torch.eye(2, 4)  # unit rows would give log(1 + e^-1) = 0.31, floored rows ~log(2)
    assert float(clip_loss(tiny, tiny, 1.0)[0]) == pytest.approx(math.log(2.0), abs=1e-3)


def test_learnable_scale_is_stored_as_log_and_used_as_exp(base_ckpt, small_survey):
    task = run.build_task("astroclip-heads", _config(base_ckpt, learnable_scale=True))
    p = task.scale.log_scale
    assert p.requires_grad and float(p.detach()) == pytest.approx(math.log(15.5))
    group = next(g for g in task.parameter_groups() if any(q is p for q in g["params"]))
    assert group["weight_decay"] == 0.0
    batch = _batch(small_survey, 6)
    task.train(False)
    loss, metrics = task.loss(batch)
    img, spec = task.encode(batch)
    assert metrics["scale"] == pytest.approx(15.5, rel=1e-6)
    assert float(loss.detach()) == pytest.approx(float(clip_loss(img, spec, 15.5)[0].detach()), rel=1e-5)
    loss.backward()
    assert p.grad is not None and float(p.grad) != 0.0
    fixed = run.build_task("astroclip-heads", _config(base_ckpt))
    assert not fixed.scale.log_scale.requires_grad and len(fixed.parameter_groups()) == 1


# --------------------------------------------------------------------------- a real run


def _val_metrics(task: Task, survey: Path, cfg: Config) -> tuple[float, float]:
    """(loss, cosine) over the loop's validation batches (the same objects every evaluation)."""
    with SurveyReader(survey) as reader:
        rows = usable_rows(reader, cfg.val_split, task.needs, cfg.max_objects)
        source = BatchSource(reader, rows, cfg.batch_size, cfg.seed, task.fields)
        task.train(False)
        with torch.no_grad():
            out = [(float(loss), m["cosine"], len(b.object_ids))
                   for b in source.fixed(cfg.eval_batches) for loss, m in [task.loss(b)]]
    n = sum(k for *_, k in out)
    return sum(l * k for l, _, k in out) / n, sum(c * k for _, c, k in out) / n


def test_loss_falls_cosine_rises_history_written(trained, small_survey):
    result, task, cfg = trained
    assert result.steps == cfg.steps and not result.stopped_early
    hist = pd.read_csv(result.folder / "history.csv")
    assert (result.folder / "history.png").is_file()
    assert {"train_loss", "train_cosine", "train_scale", "val_loss", "val_cosine", "lr"} <= set(hist.columns)
    assert hist["train_loss"].iloc[:5].mean() > hist["train_loss"].iloc[-5:].mean() + 0.1
    assert hist["train_cosine"].iloc[:5].mean() < hist["train_cosine"].iloc[-5:].mean()
    val = hist.dropna(subset=["val_loss"])
    assert len(val) == 4 and val["val_loss"].iloc[-1] < val["val_loss"].iloc[0]
    # the held-out objects of the validation, before (base model) and after training
    base = run.build_task("astroclip-heads", cfg)
    before, after = _val_metrics(base, small_survey, cfg), _val_metrics(task, small_survey, cfg)
    assert after[0] == pytest.approx(val["val_loss"].iloc[-1], rel=1e-5)
    assert after[0] < before[0] - 0.5 and after[1] > before[1] + 0.05
    assert np.allclose(hist["train_scale"], 15.5)
    assert task.config.warmup() == 4 and hist["lr"].iloc[0] == pytest.approx(3e-3 / 4)  # 10 % of 40 steps


def test_export_loads_in_the_embedder(trained, base_ckpt, small_survey):
    result, task, _ = trained
    folder = result.folder
    assert result.outputs["final_checkpoint"] == folder / CKPT
    assert result.outputs["final_finetuned"] == folder / FINETUNED_FILE
    batch = _batch(small_survey)
    tuned = _embedder(folder).embed(batch)
    base = _embedder(base_ckpt).embed(batch)
    assert np.abs(tuned["image"] - base["image"]).max() > 1e-2
    assert np.abs(tuned["spectrum"] - base["spectrum"]).max() > 1e-2
    task.train(False)
    with torch.no_grad():
        img, spec = task.encode(batch)
    assert np.allclose(tuned["image"], F.normalize(img, dim=1).numpy(), atol=1e-6)
    assert np.allclose(tuned["spectrum"], F.normalize(spec, dim=1).numpy(), atol=1e-6)
    # the file itself works as 'weights' too, and best/ holds the same format
    assert np.array_equal(_embedder(folder / CKPT).embed(batch)["image"], tuned["image"])
    _embedder(folder / "best").load()
    state, arch = read_checkpoint(folder / CKPT)
    assert arch == TINY.to_dict() and float(state["logit_scale"]) == pytest.approx(math.log(15.5))

    ref = torch.load(folder / FINETUNED_FILE, map_location="cpu", weights_only=True)
    assert set(ref) == {"image_encoder", "spectrum_encoder", "logit_scale"}
    assert float(ref["logit_scale"]) == pytest.approx(math.log(15.5))
    model = AstroCLIP(TINY).eval()
    model.image_encoder.load_state_dict(ref["image_encoder"], strict=True)
    model.spectrum_encoder.load_state_dict(ref["spectrum_encoder"], strict=True)
    assert all(v.device.type == "cpu" for v in ref["image_encoder"].values())
    with torch.no_grad():
        assert torch.allclose(model.image_encoder(task.embedder.images(batch)), img, atol=1e-6)


def test_backbones_frozen_by_default(trained):
    _, task, _ = trained
    base = tiny_model().state_dict()
    now = {f"{prefix}.{k}": v for prefix, m in (("image_encoder", task.model.image_encoder),
                                                  ("spectrum_encoder", task.model.spectrum_encoder))
           for k, v in m.state_dict().items()}
    for key, value in now.items():
        same = torch.equal(value, base[key])
        assert same == (".backbone." in key), key  # backbones untouched, every head tensor moved
    task.train(True)
    image, spectrum = task.model.image_encoder, task.model.spectrum_encoder
    assert not image.backbone.training and not spectrum.backbone.training
    assert all(not m.training for m in image.backbone.modules())
    assert image.cross_attention.training and image.mlp.training and spectrum.mlp.training
    assert not any(p.requires_grad for p in image.backbone.parameters())
    assert not any(p.requires_grad for p in spectrum.backbone.parameters())
    task.train(False)
    assert not image.cross_attention.training


def test_unfrozen_block_learnable_scale_image_head_only(tmp_path, small_survey, base_ckpt):
    ws = Workspace.init(tmp_path / "ws")
    cfg = _config(base_ckpt, unfreeze_backbone_blocks=1, learnable_scale=True, finetune_spectrum=False,
                  lr=1e-2, backbone_lr_scale=1.0, batch_size=16, max_objects=32, steps=4, eval_every=4,
                  eval_batches=1)
    result, task = _retrain(ws, small_survey, cfg)
    base = tiny_model()
    bb, bb0 = task.model.image_encoder.backbone, base.image_encoder.backbone
    last = len(bb.blocks) - 1
    for i in range(len(bb.blocks)):
        changed = any(not torch.equal(a, b) for a, b in zip(bb.blocks[i].parameters(), bb0.blocks[i].parameters()))
        assert changed == (i == last), i
    assert not torch.equal(bb.norm.weight, bb0.norm.weight)
    assert torch.equal(bb.patch_embed.proj.weight, bb0.patch_embed.proj.weight)
    spec, spec0 = task.model.spectrum_encoder.state_dict(), base.spectrum_encoder.state_dict()
    assert all(torch.equal(v, spec0[k]) for k, v in spec.items())  # finetune_spectrum False
    task.train(True)
    assert bb.blocks[last].training and not bb.blocks[0].training
    hist = pd.read_csv(result.folder / "history.csv")
    assert hist["train_scale"].iloc[0] == pytest.approx(15.5, rel=1e-6)
    assert hist["train_scale"].iloc[-1] != pytest.approx(15.5, rel=1e-4)
    ref = torch.load(result.folder / FINETUNED_FILE, weights_only=True)
    assert float(ref["logit_scale"]) == pytest.approx(float(task.scale.log_scale.detach()))
    with pytest.raises(ConfigError, match="exceeds"):
        run.build_task("astroclip-heads", _config(base_ckpt, unfreeze_backbone_blocks=5))


def test_early_stopping(tmp_path, small_survey, base_ckpt):
    ws = Workspace.init(tmp_path / "ws")
    cfg = _config(base_ckpt, lr=1e-9, patience=1, min_delta=10.0, steps=30, eval_every=1, eval_batches=1,
                  batch_size=8, max_objects=16)
    result, _ = _retrain(ws, small_survey, cfg)
    assert result.stopped_early and result.steps == 2  # first evaluation sets the best, the second does not beat it
    assert (result.folder / "best" / CKPT).is_file() and (result.folder / CKPT).is_file()


def test_resume_holds_only_the_trainable_parts(tmp_path, small_survey, base_ckpt):
    kw = dict(unfreeze_backbone_blocks=1, learnable_scale=True, lr=1e-2, schedule="constant", batch_size=16,
              max_objects=32, eval_every=4, eval_batches=1)
    ws = Workspace.init(tmp_path / "a")
    first, _ = _retrain(ws, small_survey, _config(base_ckpt, steps=4, **kw))
    step = torch.load(first.folder / "checkpoints" / "step_0000004.pt", weights_only=True)
    assert set(step["modules"]) == {"image_head", "spectrum_head", "logit_scale", "image_backbone_top"}
    top = list(step["modules"]["image_backbone_top"])
    assert top and all(k.startswith(("blocks.3.", "norm.")) for k in top)  # the last of 4 blocks only
    resumed, task = _retrain(ws, small_survey, _config(base_ckpt, steps=6, **kw))
    assert json.loads(resumed.manifest.read_text())["resumed_from"]["step"] == 4
    whole, ref = _retrain(Workspace.init(tmp_path / "b"), small_survey, _config(base_ckpt, steps=6, **kw))
    assert resumed.steps == whole.steps == 6
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    for a, b in zip(task.model.state_dict().values(), ref.model.state_dict().values()):
        assert torch.equal(a, b)
