"""retrain aion-adapter: the Euclid<->HSC U-Nets trained around a tiny real (frozen) AION image codec."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("aion")
pytest.importorskip("safetensors")

from aion.modalities import HSCImage  # noqa: E402

from fmb_engine.config import Resolved  # noqa: E402
from fmb_engine.embed.aion import HSC_BANDS, AIONEmbedder, load_codec  # noqa: E402
from fmb_engine.embed.config import AIONConfig  # noqa: E402
from fmb_engine.errors import ConfigError  # noqa: E402
from fmb_engine.retrain import run  # noqa: E402
from fmb_engine.retrain.aion_adapter import codec_roundtrip, prepare_codec  # noqa: E402
from fmb_engine.retrain.config import AIONAdapterConfig as Config, config_model  # noqa: E402
from fmb_engine.retrain.loop import Checkpoints  # noqa: E402
from fmb_engine.workspace import Workspace  # noqa: E402

from ..aion_tiny import build_tiny_aion  # noqa: E402
from ..embed.fake import make_batch  # noqa: E402

STEPS = 30


def _config(tiny, **kw) -> Config:
    base = dict(weights=str(tiny["snap"]), image_size=32, hidden=4, steps=STEPS, lr=3e-3, eval_every=10,
                eval_batches=2, checkpoint_every=10, keep_checkpoints=2, device="cpu", threads=1, seed=1)
    return Config(**(base | kw))


def _resolved(cfg: Config) -> Resolved:
    return Resolved("retrain.aion_adapter", cfg, {})


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_aion(tmp_path_factory.mktemp("aion"))


@pytest.fixture(scope="module")
def trained(tiny, small_survey, tmp_path_factory):
    """One run through run.retrain (STE), with the built task captured to inspect its modules."""
    ws = Workspace.init(tmp_path_factory.mktemp("retrain") / "ws")
    captured = {}
    real_build = run.build_task

    def build(task, config):
        built = real_build(task, config)
        captured.update(task=built, e2h=_state(built.e2h), h2e=_state(built.h2e))
        return built

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run, "build_task", build)
        result = run.retrain(ws, small_survey, "aion-adapter", _resolved(_config(tiny)))
    return {"ws": ws, "result": result, **captured}


def test_registered_section_and_defaults():
    assert config_model("aion-adapter") is Config
    cfg = Config()
    assert (cfg.hidden, cfg.image_size, cfg.max_abs, cfg.codec_grad) == (16, 96, 100.0, "ste")
    assert (cfg.lr, cfg.weight_decay, cfg.grad_clip, cfg.batch_size, cfg.schedule) == (1e-4, 0.0, 1.0, 8, "constant")
    with pytest.raises(ValueError):
        Config(codec_grad="sometimes")


def test_loss_falls_and_outputs_written(trained):
    result = trained["result"]
    folder = result.folder
    assert result.steps == STEPS and len(result.history) == STEPS
    train_loss = [row["train_loss"] for row in result.history]
    assert np.mean(train_loss[-5:]) < 0.5 * np.mean(train_loss[:5])
    val = [row["val_loss"] for row in result.history if "val_loss" in row]
    assert len(val) == STEPS // 10 and val[-1] < val[0]
    history = pd.read_csv(folder / "history.csv")
    assert {"train_codec_mse", "val_codec_mse"} <= set(history.columns)
    assert np.isfinite(history["train_codec_mse"]).all()
    for name in ("history.png", "adapters_final.pt", "sample_grid.png", "best/adapters_final.pt"):
        assert (folder / name).is_file(), name
    ckpts = Checkpoints(folder / "checkpoints", 2).all()
    assert [p.name for p in ckpts] == ["step_0000020.pt", "step_0000030.pt"]
    state = Checkpoints.load(ckpts[-1])
    assert state["task"] == "aion-adapter" and set(state["modules"]) == {"euclid_to_hsc", "hsc_to_euclid"}
    assert result.manifest is not None and result.manifest.is_file()
    assert set(result.outputs) >= {"final_adapters", "final_sample_grid", "history_csv", "history_png"}


def test_export_loads_through_the_embedder(trained, tiny):
    task, folder = trained["task"], trained["result"].folder
    ckpt = torch.load(folder / "adapters_final.pt", map_location="cpu", weights_only=True)
    assert set(ckpt) == {"euclid_to_hsc", "hsc_to_euclid", "args"}
    assert ckpt["args"] == {"hidden": 4, "image_size": 32, "max_abs": 100.0, "codec_grad": "ste"}
    for key, module in (("euclid_to_hsc", task.e2h), ("hsc_to_euclid", task.h2e)):
        assert all(torch.equal(ckpt[key][k], v.cpu()) for k, v in module.state_dict().items())
    # the tiny AION, like the real one, wants 576 image tokens (96 px); the U-Net is size-agnostic
    emb = AIONEmbedder(AIONConfig(weights=str(tiny["snap"]), adapter=str(folder), image_size=96,
                                  device="cpu", batch_size=2))
    out = emb.embed(make_batch(3, size=32))
    assert all(v.shape == (3, 32) and np.isfinite(v).all() for v in out.values())
    loaded = emb.load()["adapter"].state_dict()
    assert all(torch.equal(loaded[k], v.cpu()) for k, v in task.e2h.state_dict().items())
    # the embedder clamps as in training: a different configured max_abs gives way to the adapter's
    other = AIONEmbedder(AIONConfig(weights=str(tiny["snap"]), adapter=str(folder), image_size=96, max_abs=5.0,
                                    device="cpu", batch_size=2))
    other.load()
    assert other.config.max_abs == 100.0


def test_ste_trains_the_adapters_and_leaves_the_codec_frozen(trained, tiny):
    task = trained["task"]
    assert not task.codec.training and not any(p.requires_grad for p in task.codec.parameters())
    fresh = load_codec(tiny["snap"], HSCImage).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in task.codec.state_dict().items())
    for key, module in (("e2h", task.e2h), ("h2e", task.h2e)):
        changed = [not torch.equal(trained[key][k], v) for k, v in module.state_dict().items() if v.is_floating_point()]
        assert all(changed), key  # every weight, bias and BatchNorm statistic moved
    assert trained["result"].manifest.read_text().count("image_codec")  # described, not trained


def test_gradients_ste_versus_full(tiny):
    """Both bridges see the same round-trip value; STE's E2H gradient skips the codec, full's goes through it."""
    batch = make_batch(4, size=32, seed=3)
    grads, losses = {}, {}
    for mode in ("ste", "full"):
        task = run.build_task("aion-adapter", _config(tiny, codec_grad=mode))
        task.train(True)
        loss, metrics = task.loss(batch)
        loss.backward()
        assert metrics["codec_mse"] > 0
        assert all(p.grad is None for p in task.codec.parameters())
        grads[mode] = torch.cat([p.grad.flatten() for p in task.e2h.parameters()])
        losses[mode] = float(loss.detach())
        assert grads[mode].abs().sum() > 0
    assert losses["ste"] == pytest.approx(losses["full"], rel=1e-6)
    assert not torch.allclose(grads["ste"], grads["full"])
    # without the bridge the integer tokens would cut the gradient: E2H would get none
    task = run.build_task("aion-adapter", _config(tiny))
    hsc = task.e2h(torch.ones(2, 4, 32, 32))
    assert not codec_roundtrip(task.codec, hsc, differentiable=False).requires_grad


def test_codec_fixes_keep_upstream_values(tiny):
    """The instance fixes: tokens as the stock codec, input untouched, HSC decode undoes the zero-point scaling."""
    codec = prepare_codec(load_codec(tiny["snap"], HSCImage))
    stock = tiny["img_codec"]
    x = torch.randn(2, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 300  # hits the clamps
    before = x.clone()
    with torch.no_grad():
        tokens = codec.encode(HSCImage(flux=x, bands=list(HSC_BANDS)))
        assert torch.equal(x, before)
        assert torch.equal(tokens, stock.encode(HSCImage(flux=x.clone(), bands=list(HSC_BANDS))))
        decoded = codec_roundtrip(codec, x, differentiable=False)
        unscaled = stock.decode(tokens, bands=["DES-G", *HSC_BANDS]).flux[:, 1:]  # DES first: no rescaling
    assert torch.allclose(decoded, unscaled * 10 ** ((27 - 22.5) / 2.5), rtol=1e-5)
    assert torch.allclose(codec_roundtrip(codec, x, differentiable=True), decoded, rtol=1e-5, atol=1e-5)


def test_resumed_run_matches_the_uninterrupted_one(trained, tiny, small_survey):
    """20 steps, then resumed to 30 (constant rate: same schedule) == the 30-step run, bit for bit."""
    ws, out = trained["ws"], str(trained["ws"].root / "resumed")
    run.retrain(ws, small_survey, "aion-adapter", _resolved(_config(tiny, steps=20, output=out)))
    again = run.retrain(ws, small_survey, "aion-adapter", _resolved(_config(tiny, output=out)))

    def strip(history):
        return [{k: v for k, v in row.items() if k != "time_s"} for row in history]

    assert strip(again.history) == strip(trained["result"].history)
    a = torch.load(again.folder / "adapters_final.pt", weights_only=True)
    b = torch.load(trained["result"].folder / "adapters_final.pt", weights_only=True)
    assert all(torch.equal(a[m][k], v) for m in ("euclid_to_hsc", "hsc_to_euclid") for k, v in b[m].items())


def test_init_from_a_checkpoint(trained, tiny):
    folder = trained["result"].folder
    task = run.build_task("aion-adapter", _config(tiny, init=str(folder)))
    for module, ref in ((task.e2h, trained["task"].e2h), (task.h2e, trained["task"].h2e)):
        assert all(torch.equal(ref.state_dict()[k], v) for k, v in module.state_dict().items())
    with pytest.raises(ConfigError, match="hidden=4"):
        run.build_task("aion-adapter", _config(tiny, init=str(folder / "adapters_final.pt"), hidden=8))
    with pytest.raises(ConfigError, match="hsc_to_euclid"):  # the embedder-only checkpoint has no inverse
        run.build_task("aion-adapter", _config(tiny, init=str(tiny["adapters"])))


def test_missing_snapshot_and_wrong_size(tiny, small_survey, tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    nowhere = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as err:
        run.retrain(ws, small_survey, "aion-adapter", _resolved(_config(tiny, weights=str(nowhere))))
    msg = str(err.value)
    assert "AION weights not found" in msg and "codecs/image/model.safetensors" in msg and str(nowhere) in msg
    snap = tmp_path / "snap"
    shutil.copytree(tiny["snap"], snap)
    (snap / "codecs" / "image" / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as err:
        run.retrain(ws, small_survey, "aion-adapter", _resolved(_config(tiny, weights=str(snap))))
    assert "codecs/image/model.safetensors" in str(err.value) and str(snap) in str(err.value)
    assert not (ws.folder("checkpoints") / "aion-adapter" / "adapters_final.pt").exists()
    with pytest.raises(ConfigError, match="init"):
        run.build_task("aion-adapter", _config(tiny, init=str(tmp_path / "no_adapters")))
    task = run.build_task("aion-adapter", _config(tiny, image_size=48))  # the codec crops 48 px to 24
    with pytest.raises(ConfigError, match="image_size"):
        task.loss(make_batch(2, size=32))
