"""AstroPT embedder: a causal multimodal GPT over image patches and spectrum patches.

Uses the upstream ``astropt`` package (2.0.9, AGPL-3.0; optional extra ``fmb[astropt]``).

Embeddings
    One joint forward pass over image tokens followed by spectrum tokens; each
    modality's vector is the **mean over its own tokens of the hidden states after
    block ``n_layer // 2``** (the middle layer, no final LayerNorm), i.e. upstream
    ``GPT.generate_embeddings(inputs, reduction="mean")``.

    Attention is causal and upstream orders modalities by **sorted name**
    ("images" before "spectra"). So the ``spectrum`` vector has also seen every image
    token, while the ``image`` vector has not seen the spectrum. This is how the model
    was trained and how FMB extracted embeddings; a spectrum-only pass is not offered.
    ``joint`` = normalise(normalise(image) + normalise(spectrum)).

    ``aligned`` is False: the two vectors are pooled from different token sets of one
    autoregressive model, no objective puts them in a common space.

Inputs (configurable, because checkpoints differ)
    ``layout="upstream"`` (default): AstroPT v2 image models. RGB in [0, 1] at 256 px,
    16x16 patches flattened channel-last ``(p1 p2 c)``, each patch z-scored on its
    own, patches in spiral order (centre first).
    ``layout="fmb"``: FMB's retrained multimodal model. RGB at 224 px, patches
    flattened channel-first ``(c p1 p2)``, no per-patch z-score, raster order.
    Any of ``image_size``, ``patch_order``, ``patch_norm``, ``spiral`` overrides the layout.
    Spectra: pad/trim to ``spectrum_length``, divide by their std (FMB), pad to a
    multiple of the patch size; positions ``arange`` (or wavelengths when the
    checkpoint's spectra modality has ``embed_pos=False``).

Loading
    ``loader="safe"`` (default): ``torch.load(weights_only=True)`` with only
    AstroPT's two plain dataclasses (``ModalityRegistry``, ``ModalityConfig``) allowed;
    the registry is then rebuilt field by field (or from this config when the
    checkpoint has none, as FMB checkpoints do) and the weights are loaded strictly.
    Use it for any checkpoint, in particular user-supplied ones.
    ``loader="upstream"``: ``astropt.model_utils.load_astropt(repo_id=None, path=dir + "/")``
    exactly as upstream does. It unpickles with ``weights_only=False``, which can run
    arbitrary code: use it only for checkpoints from trusted upstream sources.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fmb_engine.embed import preprocess as pp
from fmb_engine.devices import resolve_device
from fmb_engine.embed.base import Embedder
from fmb_engine.embed.config import ASTROPT_LAYOUTS, AstroPTConfig
from fmb_engine.embed.weights import import_optional, load_strict
from fmb_engine.errors import ConfigError
from fmb_engine.survey.batch import SurveyBatch

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps astropt==2.0.9 && pip install loralib einops huggingface_hub"

# --------------------------------------------------------------------------- patching


def spiral_order(n: int) -> list[int]:
    """Raster indices of an n x n patch grid from the centre outwards (AstroPT's spiral).

    It is the clockwise spiral that starts at the top-left corner and winds inwards,
    read backwards.
    """
    order: list[int] = []
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        order += [top * n + c for c in range(left, right + 1)]
        order += [r * n + right for r in range(top + 1, bottom + 1)]
        if top < bottom:
            order += [bottom * n + c for c in range(right - 1, left - 1, -1)]
        if left < right:
            order += [r * n + left for r in range(bottom - 1, top, -1)]
        top, left, bottom, right = top + 1, left + 1, bottom - 1, right - 1
    return order[::-1]


def patchify(images, patch: int, order: str):
    """(B, C, H, W) -> (B, (H/p)(W/p), p*p*C), raster order, flattened per ``order``."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ConfigError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    if order == "channel_last":
        x = x.permute(0, 2, 4, 3, 5, 1)  # b, gh, gw, p1, p2, c
    elif order == "channel_first":
        x = x.permute(0, 2, 4, 1, 3, 5)  # b, gh, gw, c, p1, p2
    else:
        raise ConfigError(f"unknown patch order {order!r}")
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def zscore_patches(patches, eps: float = 1e-8):
    """Each patch minus its mean, over its (unbiased) std + eps."""
    import torch

    std, mean = torch.std_mean(patches, dim=-1, keepdim=True)
    return (patches - mean) / (std + eps)


# --------------------------------------------------------------------------- loading


def _registry_from_fields(m, modalities) -> Any:
    """A fresh ModalityRegistry from ModalityConfig-like objects (plain field copy)."""
    fields = ("name", "input_size", "pos_input_size", "patch_size", "embed_pos", "loss_weight")
    configs = []
    for mc in modalities:
        get = mc.get if isinstance(mc, dict) else lambda k, mc=mc: getattr(mc, k)
        values = {k: get(k) for k in fields if get(k) is not None}
        configs.append(
            m.ModalityConfig(
                name=str(values["name"]),
                input_size=int(values["input_size"]),
                pos_input_size=int(values["pos_input_size"]),
                patch_size=int(values["patch_size"]),
                embed_pos=bool(values["embed_pos"]),
                loss_weight=float(values.get("loss_weight", 1.0)),
            )
        )
    return m.ModalityRegistry(configs)


def default_registry(m, cfg: AstroPTConfig) -> Any:
    """Registry of FMB's multimodal model (images: RGB patches, spectra: flux patches), from this config."""
    p, s = cfg.image_patch_size, cfg.spectrum_patch_size
    return m.ModalityRegistry(
        [m.ModalityConfig("images", p * p * 3, 1, p, True), m.ModalityConfig("spectra", s, 1, s, True)]
    )


def _strip_prefix(state: dict) -> dict:
    prefix = "_orig_mod."
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_model_safe(path: Path, cfg: AstroPTConfig):
    """Build the GPT from a checkpoint read with ``weights_only=True``; strict weights."""
    return build_model(read_checkpoint_safe(path), cfg, path)


def read_checkpoint_safe(path: Path) -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True`` (AstroPT's registry classes allowed)."""
    import torch

    m = import_optional("astropt.model", "astropt", INSTALL_HINT)
    try:
        with torch.serialization.safe_globals([m.ModalityRegistry, m.ModalityConfig]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{path} holds pickled objects other than AstroPT's registry, so it cannot be read with "
            f"weights_only=True ({str(exc).splitlines()[0]}). If the file comes from a trusted source, "
            "set loader: upstream."
        ) from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise ConfigError(f"{path} is not an AstroPT checkpoint (needs the keys 'model' and 'model_args')")
    return ckpt


def build_model(ckpt: dict[str, Any], cfg: AstroPTConfig, path: Path):
    """The GPT of a checkpoint dict (registry rebuilt from plain fields), weights loaded strictly."""
    m = import_optional("astropt.model", "astropt", INSTALL_HINT)
    model_args = dict(ckpt["model_args"])
    registry_src = ckpt.get("modality_registry")
    if registry_src is not None:
        mods = registry_src.modalities.values() if hasattr(registry_src, "modalities") else registry_src
        registry = _registry_from_fields(m, mods)
    elif model_args.get("modalities"):
        registry = _registry_from_fields(m, model_args["modalities"])
    else:
        registry = default_registry(m, cfg)
    model_args.pop("modalities", None)
    try:
        gpt_config = m.GPTConfig(**model_args)
    except TypeError as exc:
        raise ConfigError(f"{path}: model_args do not fit astropt's GPTConfig: {exc}") from exc
    with contextlib.redirect_stdout(io.StringIO()):
        model = m.GPT(gpt_config, registry)
    load_strict(model, _strip_prefix(ckpt["model"]), path)
    return model.eval()


def load_model_upstream(path: Path):
    """``astropt.model_utils.load_astropt`` on a local file, as upstream does (trusted files only)."""
    import_optional("astropt.model", "astropt", INSTALL_HINT)
    mu = import_optional("astropt.model_utils", "astropt", INSTALL_HINT)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = mu.load_astropt(repo_id=None, path=str(path.parent) + "/", weights_filename=path.name)
    except KeyError as exc:
        raise ConfigError(
            f"{path} lacks {exc} (FMB-trained checkpoints have no pickled registry): use loader: safe"
        ) from exc
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not match the model: {exc}") from exc
    return model.eval()


# --------------------------------------------------------------------------- embedder


class AstroPTEmbedder(Embedder):
    """AstroPT middle-layer mean embeddings; see the module docstring."""

    name: ClassVar[str] = "astropt"

    def __init__(self, config: AstroPTConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self._model = None
        self._device: str | None = None

    # -- loading
    def attach(self, model, source: str = "<given model>"):
        """Use ``model`` (a loaded one, or one being trained) on the configured device, checked as
        a loaded checkpoint is; returns it."""
        self._check(model, Path(source))
        self._device = resolve_device(self.config.device)
        self._model = model.to(self._device)
        return self._model

    def load(self):
        """Load (once) and return the GPT on the configured device."""
        if self._model is None:
            cfg: AstroPTConfig = self.config
            path = self.config.checkpoint_path()
            if cfg.loader == "upstream":
                model = load_model_upstream(path)
            else:
                ckpt = read_checkpoint_safe(path)
                self._adopt_preprocess(ckpt.get("preprocess"), path)
                model = build_model(ckpt, self.config, path)
            self.attach(model, str(path))
            log.info("AstroPT loaded from %s", path)
        return self._model

    def _adopt_preprocess(self, trained: dict[str, Any] | None, path: Path) -> None:
        """An FMB-trained checkpoint records the preprocessing it was trained with; embedding must
        use the same (as the reference takes image size and spectrum length from the checkpoint).
        Settings that differ from this embedder's config are replaced and logged."""
        if not trained:
            return
        layout_keys = ASTROPT_LAYOUTS[self.config.layout]

        def current(key: str) -> Any:
            return self.config.resolved(key) if key in layout_keys else getattr(self.config, key)

        changed = {k: v for k, v in trained.items() if k in AstroPTConfig.model_fields and current(k) != v}
        if changed:
            log.warning("%s was trained with %s; using those instead of the configured %s", path, changed,
                        {k: getattr(self.config, k) for k in changed})
            self.config = self.config.model_copy(update=changed)

    def _check(self, model, path: Path) -> None:
        names = model.modality_registry.names()
        if "images" not in names or "spectra" not in names:
            raise ConfigError(
                f"{path}: AstroPT checkpoint has modalities {names}; FMB needs both 'images' and 'spectra' "
                "(a multimodal checkpoint such as FMB's retrained AstroPT)"
            )
        extra = [n for n in names if n not in ("images", "spectra")]
        if extra:
            raise ConfigError(f"{path}: modalities {extra} are not provided by FMB")
        img = model.modality_registry.get_config("images")
        if not img.embed_pos:
            raise ConfigError(f"{path}: image positions must be embedded (embed_pos=True)")
        if img.input_size != img.patch_size**2 * 3:
            raise ConfigError(
                f"{path}: image input_size {img.input_size} != 3 x {img.patch_size}^2; FMB feeds RGB patches"
            )
        spec = model.modality_registry.get_config("spectra")
        if spec.input_size != spec.patch_size:
            raise ConfigError(f"{path}: spectra input_size {spec.input_size} != patch size {spec.patch_size}")
        size = self.config.resolved("image_size")
        if size % img.patch_size:
            raise ConfigError(f"image_size {size} is not a multiple of the checkpoint's patch size {img.patch_size}")
        n_img = (size // img.patch_size) ** 2
        n_spec = -(-self.config.spectrum_length // spec.patch_size)
        if n_img + n_spec > model.config.block_size:
            raise ConfigError(
                f"{n_img} image + {n_spec} spectrum tokens exceed the checkpoint's block size "
                f"{model.config.block_size}; lower image_size or spectrum_length"
            )

    # -- inputs
    def inputs(self, batch: SurveyBatch) -> dict[str, Any]:
        """The model inputs for ``batch`` (tokens and positions per modality)."""
        import torch

        model = self.load()
        cfg: AstroPTConfig = self.config
        reg = model.modality_registry
        img_cfg, spec_cfg = reg.get_config("images"), reg.get_config("spectra")
        dev = self._device
        b = len(batch)

        rgb = pp.batch_rgb(batch, cfg.resolved("image_size"), source=cfg.image_source, antialias=True, device=dev)
        patches = patchify(rgb, img_cfg.patch_size, cfg.resolved("patch_order"))
        if cfg.resolved("patch_norm") == "zscore":
            patches = zscore_patches(patches)
        if cfg.resolved("spiral"):
            side = int(round(patches.shape[1] ** 0.5))
            patches = patches[:, torch.tensor(spiral_order(side), device=dev)]
        n_img = patches.shape[1]

        flux = pp.pad_or_trim(pp.batch_spectra(batch, dev), cfg.spectrum_length)
        flux = pp.normalise_spectra(flux, cfg.spectrum_norm)
        ps = spec_cfg.patch_size
        n_spec = -(-flux.shape[1] // ps)
        pad = n_spec * ps - flux.shape[1]
        flux = torch.nn.functional.pad(flux, (0, pad))
        spectra = flux.reshape(b, n_spec, ps)

        inputs = {
            "images": patches,
            "images_positions": torch.arange(n_img, device=dev).expand(b, -1),
            "spectra": spectra,
        }
        if spec_cfg.embed_pos:
            inputs["spectra_positions"] = torch.arange(n_spec, device=dev).expand(b, -1)
        else:
            # wavelength of every (padded) bin; the grid is extended linearly past its end
            grid = np.asarray(batch.wavelength, dtype=np.float64)
            step = grid[-1] - grid[-2] if grid.size > 1 else 1.0
            n_total = n_spec * ps
            wave = np.concatenate([grid[:n_total], grid[-1] + step * np.arange(1, max(n_total - grid.size, 0) + 1)])
            wave = torch.as_tensor((wave - 3000.0) / 7000.0, dtype=torch.float32, device=dev).reshape(1, n_spec, ps)
            if spec_cfg.pos_input_size == ps:
                pos = wave
            elif spec_cfg.pos_input_size == 1:
                pos = wave.mean(dim=-1, keepdim=True)
            else:
                raise ConfigError(
                    f"spectra pos_input_size {spec_cfg.pos_input_size} is neither 1 nor the patch size {ps}"
                )
            inputs["spectra_positions"] = pos.expand(b, -1, -1)
        return inputs

    # -- embeddings
    def embed(self, batch: SurveyBatch) -> dict[str, np.ndarray]:
        import torch

        model = self.load()
        cfg: AstroPTConfig = self.config
        parts: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        for chunk in pp.iter_chunks(batch, cfg.batch_size):
            inputs = self.inputs(chunk)
            with torch.no_grad(), pp.autocast(self._device, cfg.amp):
                out = model.generate_embeddings(inputs, reduction=cfg.reduction)
            img, spec = out["images"].float(), out["spectra"].float()
            joint = pp.joint_of(img, spec)
            for key, val in (("image", img), ("spectrum", spec), ("joint", joint)):
                parts[key].append(val.cpu().numpy().astype(np.float32))
        dim = model.config.n_embd
        return {k: np.concatenate(v, axis=0) if v else np.zeros((0, dim), np.float32) for k, v in parts.items()}
