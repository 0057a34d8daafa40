"""Retrain task ``astropt``: a tiny real upstream GPT trained by the shared loop on the mock survey.

One short run (module fixture) is shared: it checks the falling loss, the schedule, the
per-modality losses against upstream's weighted total, the exported checkpoint through
the real embedder loader, and continuing from that checkpoint.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

astropt_model = pytest.importorskip("astropt.model")

from fmb_engine.embed.astropt import AstroPTEmbedder, load_model_safe  # noqa: E402
from fmb_engine.embed.config import AstroPTConfig  # noqa: E402
from fmb_engine.errors import ConfigError  # noqa: E402
from fmb_engine.retrain import run  # noqa: E402
from fmb_engine.retrain.astropt import Task  # noqa: E402
from fmb_engine.retrain.config import AstroPTTrainConfig as Config, token_counts  # noqa: E402
from fmb_engine.retrain.loop import BatchSource, lr_at, usable_rows  # noqa: E402
from fmb_engine.survey.store import SurveyReader  # noqa: E402
from fmb_engine.workspace import Workspace  # noqa: E402

from ..embed.fake import make_batch  # noqa: E402
from .spy import retrain_keeping_task  # noqa: E402

#: 16 image tokens (32 px, patch 8) + 20 spectrum tokens (200 bins, patch 10).
TINY = dict(
    n_layer=2, n_head=2, n_embd=32, block_size=64, image_size=32, image_patch_size=8, spectrum_length=200,
    spectrum_patch_size=10, device="cpu", threads=1, batch_size=8, accum_steps=1, eval_every=10, eval_batches=2,
    checkpoint_every=100, lr=3e-3, min_lr=3e-4, warmup_steps=5,
)
STEPS = 40
W_IMG, W_SPEC = 20 / 16, 16 / 20


def _retrain(ws: Workspace, survey, config: Config):
    return retrain_keeping_task(ws, survey, "astropt", config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_survey):
    ws = Workspace.init(tmp_path_factory.mktemp("astropt_retrain") / "ws")
    cfg = Config(**TINY, steps=STEPS)
    result, task = _retrain(ws, small_survey, cfg)
    return ws, cfg, result, task


def _batch(survey, n=6):
    reader = SurveyReader(survey)
    try:
        return reader.read_rows(reader.rows_of_split("test")[:n], ("images", "spectra", "rgb"))
    finally:
        reader.close()


def test_loss_falls_history_and_schedule(trained):
    ws, cfg, result, _ = trained
    folder = result.folder
    assert result.steps == STEPS and not result.stopped_early
    for name in ("ckpt_final.pt", "best/ckpt_final.pt", "history.csv", "history.png"):
        assert (folder / name).is_file(), name
    hist = pd.read_csv(folder / "history.csv")
    assert len(hist) == STEPS
    loss = hist["train_loss"].to_numpy()
    assert np.isfinite(loss).all()
    assert loss[-10:].mean() < 0.7 * loss[:10].mean()
    val = hist["val_loss"].dropna().to_numpy()
    assert len(val) == STEPS // cfg.eval_every and val[-1] < val[0]
    # warm-up then cosine, exactly the loop's schedule (row "step" counts completed steps)
    for step in (1, 3, 5, 6, 20, STEPS):
        assert hist.loc[hist.step == step, "lr"].item() == pytest.approx(lr_at(step - 1, cfg), rel=1e-12)
    assert hist["lr"].iloc[:5].is_monotonic_increasing and hist["lr"].iloc[5:].is_monotonic_decreasing
    # per-modality Huber losses, reported separately, recombine to upstream's weighted mean
    for split in ("train", "val"):
        rows = hist.dropna(subset=[f"{split}_loss"])
        total = (W_IMG * rows[f"{split}_loss_images"] + W_SPEC * rows[f"{split}_loss_spectra"]) / 2
        assert np.allclose(total, rows[f"{split}_loss"], rtol=1e-5)
    assert hist["train_loss_images"].iloc[-10:].mean() < hist["train_loss_images"].iloc[:10].mean()
    assert hist["train_loss_spectra"].iloc[-10:].mean() < hist["train_loss_spectra"].iloc[:10].mean()
    manifest = json.loads(result.manifest.read_text())
    assert manifest["status"] == "completed" and manifest["counts"]["steps"] == STEPS


def test_export_format_loads_in_embedder(trained, small_survey):
    _, cfg, result, task = trained
    path = result.folder / "ckpt_final.pt"
    with torch.serialization.safe_globals([astropt_model.ModalityRegistry, astropt_model.ModalityConfig]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "model_args", "modality_registry", "iter_num", "best_val_loss", "config"} <= set(ckpt)
    assert ckpt["iter_num"] == STEPS
    assert ckpt["model_args"]["n_layer"] == 2 and ckpt["model_args"]["n_embd"] == 32
    manifest = json.loads(result.manifest.read_text())
    assert ckpt["best_val_loss"] == pytest.approx(manifest["best_val_loss"])
    reg = ckpt["modality_registry"]
    assert reg.get_config("images").loss_weight == pytest.approx(W_IMG)
    assert reg.get_config("spectra").loss_weight == pytest.approx(W_SPEC)
    assert ckpt["preprocess"]["image_size"] == 32 and ckpt["preprocess"]["patch_order"] == "channel_first"
    best = torch.load(result.folder / "best" / "ckpt_final.pt", map_location="cpu", weights_only=False)
    assert best["best_val_loss"] == pytest.approx(manifest["best_val_loss"])

    # the real embedder (safe loader) gives the trained model's own middle-layer means
    emb_cfg = dict(weights=str(result.folder), checkpoint="ckpt_final.pt", layout="fmb", image_size=32,
                   spectrum_length=200, device="cpu", batch_size=16)
    emb = AstroPTEmbedder(emb_cfg)
    batch = _batch(small_survey)
    out = emb.embed(batch)
    task.train(False)
    with torch.no_grad():
        own = task.model.generate_embeddings(task.embedder.inputs(batch))
    assert np.allclose(out["image"], own["images"].numpy(), atol=1e-6)
    assert np.allclose(out["spectrum"], own["spectra"].numpy(), atol=1e-6)
    assert all(np.array_equal(out[k], emb.embed(batch)[k]) for k in out)  # deterministic
    # with the embedder's defaults (upstream layout, 256 px, 7781 bins) the checkpoint's own
    # preprocessing is adopted: a model is never fed inputs prepared differently from training
    plain = AstroPTEmbedder(dict(weights=str(result.folder), checkpoint="ckpt_final.pt", device="cpu", batch_size=16))
    assert np.array_equal(plain.embed(batch)["joint"], out["joint"])
    assert plain.config.layout == "fmb" and plain.config.image_size == 32 and plain.config.spectrum_length == 200
    fresh = run.build_task("astropt", Config(**TINY, steps=STEPS))  # same seed, untrained
    with torch.no_grad():
        untrained = fresh.model.generate_embeddings(fresh.embedder.inputs(batch))
    assert not np.allclose(out["image"], untrained["images"].numpy(), atol=1e-3)
    # the trusted upstream loader reads it too
    up = AstroPTEmbedder({**emb_cfg, "loader": "upstream"}).embed(batch)
    assert np.array_equal(up["spectrum"], out["spectrum"])


def test_continue_from_exported_weights(trained, small_survey, tmp_path):
    _, cfg, result, task = trained
    cont_cfg = Config(**TINY, steps=3, weights=str(result.folder))  # folder: picks ckpt_final.pt
    cont = run.build_task("astropt", cont_cfg)
    trained_state = task.model.state_dict()
    assert all(torch.equal(v, trained_state[k]) for k, v in cont.model.state_dict().items())
    assert cont.model.modality_registry.get_config("images").loss_weight == pytest.approx(W_IMG)

    # the loss the trained weights give on the run's first batch (same seed: same batch order)
    reader = SurveyReader(small_survey)
    try:
        rows = usable_rows(reader, "train", Task.needs, 0)
        first = BatchSource(reader, rows, cfg.batch_size, cfg.seed, Task.fields).next()
    finally:
        reader.close()
    task.train(True)
    with torch.no_grad():
        expected, _ = task.loss(first)

    ws = Workspace.init(tmp_path / "ws")
    res, _ = _retrain(ws, small_survey, cont_cfg)
    hist = pd.read_csv(res.folder / "history.csv")
    fresh_first = pd.read_csv(result.folder / "history.csv")["train_loss"].iloc[0]
    assert hist["train_loss"].iloc[0] == pytest.approx(float(expected), rel=1e-5)
    assert hist["train_loss"].iloc[0] < 0.9 * fresh_first  # same batch, same seed, untrained weights
    first_val = pd.read_csv(result.folder / "history.csv")["val_loss"].dropna()
    assert hist["val_loss"].iloc[-1] < 0.75 * first_val.iloc[0]  # the trained level, not a fresh start
    ckpt = torch.load(res.folder / "ckpt_final.pt", map_location="cpu", weights_only=False)
    assert ckpt["iter_num"] == 3 and ckpt["init_from"] == str(result.folder / "ckpt_final.pt")

    # architecture comes from the checkpoint: an explicit, different value is refused
    with pytest.raises(ConfigError, match="n_layer"):
        run.build_task("astropt", Config(**{**TINY, "n_layer": 3}, steps=3, weights=str(result.folder)))


def test_weight_decay_only_on_matrices():
    task = run.build_task("astropt", Config(**{**TINY, "bias": True}, steps=10, weight_decay=0.1))
    opt = task.make_optimizer()
    assert isinstance(opt, torch.optim.AdamW)
    by_decay = {g["weight_decay"]: g["params"] for g in opt.param_groups}
    assert set(by_decay) == {0.1, 0.0}
    assert by_decay[0.1] and all(p.dim() >= 2 for p in by_decay[0.1])
    assert by_decay[0.0] and all(p.dim() < 2 for p in by_decay[0.0])
    every = {id(p) for p in task.model.parameters()}
    assert {id(p) for ps in by_decay.values() for p in ps} == every
    assert all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    ours = {g["weight_decay"]: {id(p) for p in g["params"]} for g in task.parameter_groups()}
    assert ours == {k: {id(p) for p in v} for k, v in by_decay.items()}


def test_targets_are_upstream_next_patch():
    """Image targets are the inputs shifted by one patch; spectra are predicted from the last image token on."""
    task = run.build_task("astropt", Config(**TINY, steps=10))
    inputs, targets = task.inputs_and_targets(make_batch(3))
    assert torch.equal(targets["images"], inputs["images"][:, 1:])
    assert torch.equal(targets["spectra"], inputs["spectra"])
    task.train(False)
    with torch.no_grad():
        outputs, loss = task.model(inputs, targets=targets)
        # hidden state t predicts token t + 1 of the joint sequence (images then spectra)
        x = task.model.transformer
        h = torch.cat([x.wte["images"](inputs["images"]), x.wte["spectra"](inputs["spectra"])], 1)
        h = h + torch.cat([x.wpe["images"](inputs["images_positions"]),
                           x.wpe["spectra"](inputs["spectra_positions"])], 1)
        for blk in x.h:
            h = blk(h)
        h = x.ln_f(h)
        pred_spec = task.model.lm_head["spectra"](h[:, 15:35])
    assert torch.allclose(outputs["spectra"], pred_spec, atol=1e-6)
    huber = torch.nn.functional.huber_loss
    manual = (W_IMG * huber(outputs["images"], inputs["images"][:, 1:])
              + W_SPEC * huber(pred_spec, inputs["spectra"])) / 2
    assert torch.allclose(loss, manual, atol=1e-6)


def test_config_defaults_and_checks():
    cfg = Config()
    assert (cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.betas) == (6e-4, 6e-5, 0.1, (0.9, 0.95))
    assert (cfg.batch_size, cfg.accum_steps, cfg.grad_clip, cfg.amp) == (8, 4, 1.0, "bfloat16")
    arch = (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.bias, cfg.dropout)
    assert arch == (12, 12, 768, 1024, False, 0.0)
    assert cfg.steps == 3000 and cfg.warmup() == 200 and cfg.image_size_resolved() == 224
    assert Config(steps=150).warmup() == 10 and Config(steps=150, warmup_steps=7).warmup() == 7
    assert token_counts(224, 16, 7781, 10) == (196, 779)
    # reference sizes give the reference loss weights (tiny width, so building is cheap)
    small = run.build_task("astropt", Config(n_layer=1, n_head=2, n_embd=16, device="cpu", steps=10))
    reg = small.model.modality_registry
    assert reg.get_config("images").loss_weight == pytest.approx(779 / 196)
    assert reg.get_config("spectra").loss_weight == pytest.approx(196 / 779)
    with pytest.raises(ValueError, match="block_size"):
        Config(**{**TINY, "spectrum_length": 7781})
    with pytest.raises(ValueError, match="multiple"):
        Config(**{**TINY, "image_size": 36})
    with pytest.raises(ConfigError, match="ckpt_final.pt"):
        Task(Config(**TINY, steps=10, weights="/nonexistent/folder"), "cpu")


def test_loads_with_embedder_safe_loader_directly(trained):
    _, _, result, task = trained
    model = load_model_safe(result.folder / "ckpt_final.pt", AstroPTConfig())
    assert all(torch.equal(v, task.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_resume_keeps_iterations_and_best(trained, small_survey):
    """A finished run resumed from its last loop checkpoint re-exports the same weights and bookkeeping."""
    ws, cfg, result, task = trained
    before = torch.load(result.folder / "ckpt_final.pt", map_location="cpu", weights_only=False)
    again, resumed = _retrain(ws, small_survey, cfg)  # resumes at step STEPS: nothing left to train
    assert again.steps == STEPS and resumed is not task
    after = torch.load(result.folder / "ckpt_final.pt", map_location="cpu", weights_only=False)
    assert after["iter_num"] == STEPS and after["best_val_loss"] == before["best_val_loss"] is not None
    assert all(torch.equal(v, before["model"][k]) for k, v in after["model"].items())
