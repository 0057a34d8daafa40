"""Normalizing-flow density model: -log p(x) as the per-modality anomaly score.

Why a flow: it gives an exact, normalised density on the preprocessed
embedding, so "how unlikely is this object under the population" is one number
per object, comparable within one embedding key (rank-based downstream).

Model (nflows, base distribution ``StandardNormal``)::

    log p(x) = log N(f(x); 0, I) + log |det df/dx|

* ``flow_type="coupling"`` (RealNVP): ``num_transforms`` affine coupling layers
  (nflows ``AffineCouplingTransform``: ``y_B = x_B * s + t`` with
  ``s = sigmoid(u + 2) + 1e-3``, ``(u, t) = MLP(x_A)``; ``x_A`` passes
  unchanged). The transformed half alternates (first half, second half, ...)
  so every feature is transformed once per pair of layers, and a seeded
  ``RandomPermutation`` precedes every pair so the halves are random subsets
  (PCA output is ordered by variance; fixed halves would always condition the
  leading components on the trailing ones). The MLP
  is ``Linear(|A|, h) -> ReLU -> Linear(h, h) -> ReLU -> Linear(h, 2|B|)`` with
  the last layer zero-initialised (the flow starts as a fixed affine map, as
  the reference's ``init_zeros=True``).
* ``flow_type="autoregressive"`` (MAF): ``num_transforms`` nflows
  ``MaskedAffineAutoregressiveTransform`` (MADE with two hidden layers of
  ``h`` units) with ``ReversePermutation`` between them. nflows evaluates the
  density in the one-pass direction (unlike the reference's normflows MAF).
* Both types end with one nflows ``ActNorm`` (per-dimension ``y = a x + b``),
  initialised from the training data's statistics. Why: nflows' affine scale
  ``sigmoid(u + 2) + 1e-3`` is at most ~1, so coupling/MAF layers can only
  contract; without a free scale the flow cannot widen tight clusters and its
  density is barely better than a Gaussian (held-out NLL 115.6 without vs
  100.7 with it, paper preset, synthetic 768-d embeddings through PCA-100). The reference has an ActNorm after every
  layer; one at the end was as good in our tests at a quarter of the cost.
* nflows ``NaiveLinear`` is never used (its inverse is broken on current torch).

Training: minimise ``-mean log p`` over shuffled mini-batches (a seeded
``torch.Generator`` draws one permutation per epoch; the last batch may be
smaller), AdamW (decoupled weight decay) with global-norm gradient clipping,
non-finite batches skipped, training stops early when an epoch's mean loss is
not finite or every batch was skipped (reference behaviour). For speed the
parameters live in one flat buffer so clipping and AdamW are a handful of
vector ops per step instead of a Python loop over tensors; the arithmetic is
that of ``torch.optim.AdamW`` + ``clip_grad_norm_``.

Determinism: with the same seed, inputs, device and thread count, ``fit`` and
``score_samples`` give bit-identical results on CPU. Global RNG state is not
changed (initialisation runs inside ``torch.random.fork_rng``); no numpy global
state is used.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from nflows.distributions import StandardNormal
from nflows.flows import Flow
from nflows.transforms import (
    ActNorm,
    AffineCouplingTransform,
    CompositeTransform,
    MaskedAffineAutoregressiveTransform,
    RandomPermutation,
    ReversePermutation,
)
from torch import nn

from fmb_engine.detect.params import FLOW_TYPES, PRESETS
from fmb_engine.devices import resolve_device
from fmb_engine.errors import ConfigError
from fmb_engine.detect.preprocess import Preprocessor, check_matrix
from fmb_engine.detect.tables import anomaly_table

__all__ = [
    "FlowDensity",
    "anomaly_table",
    "build_flow",
    "fit_flows",
    "score_out_of_fold",
    "split_preset",
]

_PREPROCESS_KEYS = ("pca_components", "clip_sigma", "standardize")


def split_preset(name: str, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(preprocessor_kwargs, flow_kwargs)`` for preset ``name`` with ``overrides`` applied.

    ``seed`` goes to both. Unknown override keys raise ValueError.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown flow preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    allowed = set(_PREPROCESS_KEYS) | set(FlowDensity.PARAMS)
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown preset override(s): {', '.join(sorted(unknown))}")
    merged = {**PRESETS[name], **overrides}
    pre = {k: merged[k] for k in _PREPROCESS_KEYS if k in merged}
    flow = {k: v for k, v in merged.items() if k not in _PREPROCESS_KEYS}
    if "seed" in merged:
        pre["seed"] = merged["seed"]
    return pre, flow


# ---------------------------------------------------------------- building
class _ConditionerMLP(nn.Module):
    """Linear-ReLU-Linear-ReLU-Linear; last layer zero-initialised. Accepts (and ignores) ``context``."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int):
        super().__init__()
        self.l1 = nn.Linear(in_features, hidden_features)
        self.l2 = nn.Linear(hidden_features, hidden_features)
        self.l3 = nn.Linear(hidden_features, out_features)
        nn.init.zeros_(self.l3.weight)
        nn.init.zeros_(self.l3.bias)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.l3(torch.relu(self.l2(torch.relu(self.l1(inputs)))))


class _HalfAffineCoupling(AffineCouplingTransform):
    """nflows affine coupling whose transformed features are one contiguous half.

    Same parameters, mask buffers and arithmetic as ``AffineCouplingTransform``
    (the base class's ``_coupling_transform_forward/inverse`` do the maths); it
    only replaces the generic gather/scatter by slicing + ``cat``, which is
    ~2x cheaper per step for small batches and gives identical outputs.
    """

    def __init__(self, features: int, transform_first: bool, hidden_features: int):
        split = features // 2
        mask = torch.zeros(features, dtype=torch.int64)
        if transform_first:
            mask[:split] = 1
        else:
            mask[split:] = 1
        super().__init__(mask, lambda i, o: _ConditionerMLP(i, o, hidden_features))
        self._split = split
        self._transform_first = transform_first

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # one split (one backward node) instead of two slices
        a, b = torch.split(x, [self._split, x.shape[1] - self._split], dim=1)
        return (a, b) if self._transform_first else (b, a)  # (transform, identity)

    def _join(self, transformed: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        parts = (transformed, identity) if self._transform_first else (identity, transformed)
        return torch.cat(parts, dim=1)

    def forward(self, inputs, context=None):
        transform_split, identity_split = self._halves(inputs)
        params = self.transform_net(identity_split, context)
        out, logabsdet = self._coupling_transform_forward(transform_split, params)
        return self._join(out, identity_split), logabsdet

    def inverse(self, inputs, context=None):
        transform_split, identity_split = self._halves(inputs)
        params = self.transform_net(identity_split, context)
        out, logabsdet = self._coupling_transform_inverse(transform_split, params)
        return self._join(out, identity_split), logabsdet


class _ActNorm(ActNorm):
    """nflows ``ActNorm`` (same parameters, buffers, inverse) with a leaner 2-D forward.

    ``y = exp(log_scale) * x + shift``, ``log|det| = sum(log_scale)`` per row --
    the same values as the base class in 4 ops instead of 8. Initialised by
    :func:`_init_actnorm`, never from the first mini-batch.
    """

    def forward(self, inputs, context=None):
        if inputs.dim() != 2:
            return super().forward(inputs, context)
        outputs = torch.addcmul(self.shift, inputs, torch.exp(self.log_scale))
        return outputs, self.log_scale.sum().expand(inputs.shape[0])


def build_flow(n_features: int, flow_type: str, num_transforms: int, hidden_features: int, seed: int) -> Flow:
    """Build the nflows ``Flow`` described in the module docstring (CPU, float32).

    Initialisation uses ``seed`` inside ``fork_rng`` so global torch RNG state is untouched.
    """
    if flow_type not in FLOW_TYPES:
        raise ValueError(f"flow_type must be one of {FLOW_TYPES}, got {flow_type!r}")
    if flow_type == "coupling" and n_features < 2:
        raise ValueError("a coupling flow needs at least 2 features")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i in range(num_transforms):
            if flow_type == "coupling":
                if i % 2 == 0:
                    layers.append(RandomPermutation(n_features))
                layers.append(_HalfAffineCoupling(n_features, transform_first=(i % 2 == 0), hidden_features=hidden_features))
            else:
                if i > 0:
                    layers.append(ReversePermutation(n_features))
                layers.append(
                    MaskedAffineAutoregressiveTransform(
                        features=n_features,
                        hidden_features=hidden_features,
                        num_blocks=2,
                        use_residual_blocks=False,
                    )
                )
        layers.append(_ActNorm(n_features))
        return Flow(CompositeTransform(layers), StandardNormal([n_features]))


def _init_actnorm(flow: Flow, data: torch.Tensor, chunk: int = 8192) -> None:
    """Data-dependent init of the final ``ActNorm`` from *all* training rows.

    ``y = exp(log_scale) * x + shift`` with ``log_scale = -log(max(std, 1e-3))``
    and ``shift = -mean * exp(log_scale)`` of the ActNorm's input at
    initialisation, so the flow starts with standardised outputs. nflows would
    initialise from the first mini-batch instead, which is noisy for small
    batches and gives ``inf`` for a batch of one or a constant column.
    """
    transforms = flow._transform._transforms
    act = transforms[-1]
    assert isinstance(act, ActNorm)
    with torch.no_grad():
        total = torch.zeros(data.shape[1], dtype=torch.float64, device=data.device)
        total_sq = torch.zeros_like(total)
        for start in range(0, data.shape[0], chunk):
            z = data[start : start + chunk]
            for t in transforms[:-1]:
                z, _ = t(z)
            z = z.double()
            total += z.sum(0)
            total_sq += (z * z).sum(0)
        n = data.shape[0]
        mean = total / n
        std = ((total_sq / n - mean * mean).clamp_min(0.0) * n / max(n - 1, 1)).sqrt().clamp_min(1e-3)
        act.log_scale.copy_((-std.log()).to(act.log_scale.dtype))
        act.shift.copy_((-mean / std).to(act.shift.dtype))
        act.initialized.fill_(True)


# ---------------------------------------------------------------- training
class _FlatAdamW:
    """AdamW + global-norm gradient clipping on one flat buffer holding every parameter.

    Each parameter's ``.data`` and ``.grad`` become views into two flat tensors
    (autograd accumulates into an existing ``.grad`` in place), so one step is:

    * ``g <- g * min(1, c / (||g||_2 + 1e-6))``            (clip_grad_norm_)
    * ``theta <- theta * (1 - lr * wd)``                     (decoupled decay)
    * ``m <- b1 m + (1 - b1) g``;  ``v <- b2 v + (1 - b2) g^2``
    * ``theta <- theta - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``

    exactly as ``torch.optim.AdamW`` (amsgrad off) after ``clip_grad_norm_``.
    """

    def __init__(self, params, lr: float, weight_decay: float, grad_clip: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        n = sum(p.numel() for p in self.params)
        ref = self.params[0]
        self.flat = torch.empty(n, dtype=ref.dtype, device=ref.device)
        self.grad = torch.zeros(n, dtype=ref.dtype, device=ref.device)
        offset = 0
        for p in self.params:
            k = p.numel()
            self.flat[offset : offset + k].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset : offset + k].view_as(p)
            p.grad = self.grad[offset : offset + k].view_as(p)
            offset += k
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        self._checked = False

    def zero_grad(self) -> None:
        self.grad.zero_()

    def _check_views(self) -> None:
        for p in self.params:
            g = p.grad
            if g is None or g.untyped_storage().data_ptr() != self.grad.untyped_storage().data_ptr():
                raise RuntimeError("internal error: autograd replaced a gradient view; flat optimiser unusable")
        self._checked = True

    def step(self) -> bool:
        """Clip and update; returns False (no update) when the gradient norm is not finite."""
        if not self._checked:
            self._check_views()
        norm = torch.linalg.vector_norm(self.grad)
        if not math.isfinite(norm.item()):
            return False
        if self.grad_clip > 0:
            self.grad.mul_(torch.clamp(self.grad_clip / (norm + 1e-6), max=1.0))
        self.t += 1
        if self.weight_decay:
            self.flat.mul_(1.0 - self.lr * self.weight_decay)
        self.m.lerp_(self.grad, 1.0 - self.b1)
        self.v.mul_(self.b2).addcmul_(self.grad, self.grad, value=1.0 - self.b2)
        bc1 = 1.0 - self.b1**self.t
        bc2 = 1.0 - self.b2**self.t
        denom = (self.v.sqrt() / math.sqrt(bc2)).add_(self.eps)
        self.flat.addcdiv_(self.m, denom, value=-self.lr / bc1)
        return True


def _device(device: str) -> torch.device:
    """:func:`fmb_engine.devices.resolve_device` as a torch device; its errors as ValueError (a bad argument)."""
    try:
        return torch.device(resolve_device(device))
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None = leave as is)."""
    if threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


class FlowDensity:
    """A normalizing-flow density on preprocessed embeddings (see module docstring).

    ``fit(X)`` trains on the rows of ``X`` (float, finite, shape (N, D));
    ``score_samples(X)`` returns ``log p(x)`` per row as float64 (higher = more
    typical; the anomaly score is ``-log p``).
    """

    PARAMS: tuple[str, ...] = (
        "flow_type", "num_transforms", "hidden_features", "epochs", "batch_size", "lr",
        "weight_decay", "grad_clip", "seed", "device", "threads", "score_batch_size",
    )

    def __init__(
        self,
        flow_type: str = "coupling",
        num_transforms: int = 4,
        hidden_features: int = 16,
        epochs: int = 5,
        batch_size: int = 24,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        grad_clip: float = 5.0,
        seed: int = 42,
        device: str = "auto",
        threads: int | None = None,
        score_batch_size: int = 4096,
    ):
        if flow_type not in FLOW_TYPES:
            raise ValueError(f"flow_type must be one of {FLOW_TYPES}, got {flow_type!r}")
        for name, value in (("num_transforms", num_transforms), ("hidden_features", hidden_features),
                            ("epochs", epochs), ("batch_size", batch_size),
                            ("score_batch_size", score_batch_size)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not _is_real(lr) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        for name, value in (("weight_decay", weight_decay), ("grad_clip", grad_clip)):
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0 (0 = off), got {value!r}")
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if threads is not None and (not _is_int(threads) or threads < 1):
            raise ValueError(f"threads must be None (torch default) or an int >= 1, got {threads!r}")
        if not isinstance(device, str):
            raise ValueError(f"device must be a string, got {device!r}")
        _device(device)  # validate early
        self.flow_type = flow_type
        self.num_transforms = int(num_transforms)
        self.hidden_features = int(hidden_features)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.grad_clip = float(grad_clip)
        self.seed = int(seed)
        self.device = device
        self.threads = None if threads is None else int(threads)
        self.score_batch_size = int(score_batch_size)
        self.flow_: Flow | None = None

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.PARAMS}

    # -------------------------------------------------------------- fit
    def fit(self, X: np.ndarray) -> FlowDensity:
        """Train on ``X``; sets ``history_`` (mean loss per epoch), ``n_skipped_batches_``, ``stopped_early_``."""
        X = check_matrix(X, "FlowDensity.fit")
        n, d = X.shape
        if n < 2:
            raise ValueError(f"FlowDensity.fit needs at least 2 rows, got {n}")
        device = _device(self.device)
        with _torch_threads(self.threads):
            flow = build_flow(d, self.flow_type, self.num_transforms, self.hidden_features, self.seed).to(device)
            flow.train()
            data = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
            _init_actnorm(flow, data)
            opt = _FlatAdamW(flow.parameters(), self.lr, self.weight_decay, self.grad_clip)
            gen = torch.Generator().manual_seed(self.seed)
            batch = min(self.batch_size, n)
            history: list[float] = []
            skipped = 0
            stopped = False
            for _ in range(self.epochs):
                perm = torch.randperm(n, generator=gen).to(device)
                shuffled = data[perm]
                total, used = 0.0, 0
                for start in range(0, n, batch):
                    xb = shuffled[start : start + batch]
                    loss = -flow.log_prob(xb).mean()
                    value = loss.item()
                    if not math.isfinite(value):
                        skipped += 1
                        continue
                    opt.zero_grad()
                    loss.backward()
                    if not opt.step():
                        skipped += 1
                        continue
                    total += value
                    used += 1
                epoch_loss = total / used if used else float("nan")
                history.append(epoch_loss)
                if not math.isfinite(epoch_loss):
                    stopped = True
                    warnings.warn(
                        "FlowDensity: training stopped early (non-finite epoch loss or every batch skipped)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    break
            flow.eval()
        self.flow_ = flow
        self.n_features_in_ = d
        self.n_rows_fit_ = n
        self.history_ = history
        self.n_skipped_batches_ = skipped
        self.stopped_early_ = stopped
        return self

    # ------------------------------------------------------------ score
    def score_samples(self, X: np.ndarray, before: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
        """``log p(x)`` per row (float64), batched under ``torch.inference_mode``.

        ``before`` maps each batch on the flow's device first (:meth:`Preprocessor.device_map`):
        ``X`` then holds raw rows, checked by ``before``."""
        flow = self._require_fitted()
        if before is None:
            X = check_matrix(X, "FlowDensity.score_samples", self.n_features_in_)
        else:
            X = check_matrix(X, "FlowDensity.score_samples", finite=False)
        device = self.device_
        out = np.empty(X.shape[0], dtype=np.float64)
        with _torch_threads(self.threads), torch.inference_mode():
            for start in range(0, X.shape[0], self.score_batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(X[start : start + self.score_batch_size], dtype=np.float32))
                xb = xb.to(device)
                out[start : start + xb.shape[0]] = flow.log_prob(xb if before is None else before(xb)).double().cpu().numpy()
        return out

    @property
    def device_(self) -> torch.device:
        """The device the fitted flow's weights are on."""
        return next(self._require_fitted().parameters()).device

    def _require_fitted(self) -> Flow:
        if self.flow_ is None:
            raise RuntimeError("FlowDensity is not fitted; call fit(X) or load_state_dict(state) first")
        return self.flow_

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Hyper-parameters, training record and weights as numpy arrays (keys ``param.*``, ``fit.*``, ``flow.*``)."""
        flow = self._require_fitted()
        state: dict[str, np.ndarray] = {}
        for k, v in self.get_params().items():
            state[f"param.{k}"] = np.asarray("" if v is None else v)
        state["fit.n_features_in"] = np.asarray(self.n_features_in_, dtype=np.int64)
        state["fit.n_rows_fit"] = np.asarray(getattr(self, "n_rows_fit_", -1), dtype=np.int64)
        state["fit.history"] = np.asarray(getattr(self, "history_", []), dtype=np.float64)
        state["fit.n_skipped_batches"] = np.asarray(getattr(self, "n_skipped_batches_", 0), dtype=np.int64)
        state["fit.stopped_early"] = np.asarray(getattr(self, "stopped_early_", False), dtype=bool)
        for name, tensor in flow.state_dict().items():
            state[f"flow.{name}"] = tensor.detach().cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> FlowDensity:
        """Restore a fitted model from :meth:`state_dict` (architecture and weights; device stays this object's)."""
        try:
            arch = {
                "flow_type": str(state["param.flow_type"]),
                "num_transforms": int(state["param.num_transforms"]),
                "hidden_features": int(state["param.hidden_features"]),
            }
            d = int(state["fit.n_features_in"])
        except KeyError as exc:
            raise ValueError(f"FlowDensity state is missing key {exc.args[0]!r}") from None
        for k in ("epochs", "batch_size", "seed", "score_batch_size"):
            if f"param.{k}" in state:
                setattr(self, k, int(state[f"param.{k}"]))
        for k in ("lr", "weight_decay", "grad_clip"):
            if f"param.{k}" in state:
                setattr(self, k, float(state[f"param.{k}"]))
        self.flow_type, self.num_transforms, self.hidden_features = (
            arch["flow_type"], arch["num_transforms"], arch["hidden_features"],
        )
        flow = build_flow(d, seed=self.seed, **arch)
        weights = {k[len("flow."):]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("flow.")}
        flow.load_state_dict(weights, strict=True)
        flow.to(_device(self.device)).eval()
        self.flow_ = flow
        self.n_features_in_ = d
        self.n_rows_fit_ = int(state.get("fit.n_rows_fit", -1))
        self.history_ = [float(x) for x in np.asarray(state.get("fit.history", []))]
        self.n_skipped_batches_ = int(state.get("fit.n_skipped_batches", 0))
        self.stopped_early_ = bool(state.get("fit.stopped_early", False))
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray], device: str = "auto",
                        threads: int | None = None) -> FlowDensity:
        """New fitted object from :meth:`state_dict` output."""
        return cls(device=device, threads=threads).load_state_dict(state)


def score_out_of_fold(
    X: np.ndarray,
    k_folds: int = 5,
    seed: int = 42,
    preprocess: dict[str, Any] | None = None,
    **flow_params: Any,
) -> np.ndarray:
    """``log p`` for every row from a flow that never saw that row (K-fold cross-fitting).

    Rows are split into ``k_folds`` folds by a ``numpy.random.default_rng(seed)``
    permutation; fold ``i`` is scored by a :class:`FlowDensity` (``flow_params``;
    its ``seed`` defaults to ``seed``) trained on the other folds. With
    ``preprocess`` (Preprocessor kwargs) the preprocessing is also fitted on the
    training folds only; otherwise ``X`` is taken as already preprocessed.

    Note: the K models differ slightly, so log-probs of different folds are not
    on exactly one scale; use ranks, and compare with in-sample scoring.
    """
    X = check_matrix(X, "score_out_of_fold")
    n = X.shape[0]
    if not _is_int(k_folds) or k_folds < 2:
        raise ValueError(f"k_folds must be an int >= 2, got {k_folds!r}")
    if n < 2 * k_folds:
        raise ValueError(f"score_out_of_fold needs at least 2 rows per fold: {n} rows for {k_folds} folds")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    flow_params = {"seed": seed, **flow_params}
    FlowDensity(**flow_params)  # validate once, before any training
    if preprocess is not None:
        Preprocessor(**preprocess)
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k_folds)
    out = np.empty(n, dtype=np.float64)
    for i, test_idx in enumerate(folds):
        train_idx = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != i]))
        test_idx = np.sort(test_idx)
        X_train, X_test = X[train_idx], X[test_idx]
        if preprocess is not None:
            pre = Preprocessor(**preprocess).fit(X_train)
            X_train, X_test = pre.transform(X_train), pre.transform(X_test)
        model = FlowDensity(**flow_params).fit(X_train)
        out[test_idx] = model.score_samples(X_test)
    return out


def _fit_state(X: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Worker entry point for :func:`fit_flows` (top level so it pickles)."""
    return FlowDensity(**params).fit(X).state_dict()


def fit_flows(datasets: Mapping[str, np.ndarray], n_jobs: int = 1, **flow_params: Any) -> dict[str, FlowDensity]:
    """Fit one :class:`FlowDensity` per key (e.g. image / spectrum / joint), optionally in parallel.

    Why: the flows of different embedding keys are independent and training at
    small batch sizes is bound by per-step overhead on one core, so on a
    multi-core CPU the keys are best trained side by side in worker processes.

    ``n_jobs=1`` fits in this process, one key after the other. ``n_jobs > 1``
    uses that many ``spawn``-ed worker processes; each worker uses
    ``threads`` torch threads (default 1 in that case, to avoid
    oversubscription) and sends back its :meth:`FlowDensity.state_dict`, so the
    result is bit-identical to a sequential fit with the same ``threads``.
    """
    if not _is_int(n_jobs) or n_jobs < 1:
        raise ValueError(f"n_jobs must be an int >= 1, got {n_jobs!r}")
    params = dict(flow_params)
    FlowDensity(**params)  # validate before starting anything
    arrays = {k: check_matrix(X, f"fit_flows[{k!r}]") for k, X in datasets.items()}
    if n_jobs == 1 or len(arrays) <= 1:
        return {k: FlowDensity(**params).fit(X) for k, X in arrays.items()}
    if params.get("threads") is None:
        params["threads"] = 1
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(n_jobs, len(arrays)), mp_context=ctx) as pool:
        futures = {k: pool.submit(_fit_state, np.ascontiguousarray(X, dtype=np.float32), params)
                   for k, X in arrays.items()}
        states = {k: f.result() for k, f in futures.items()}
    return {
        k: FlowDensity.from_state_dict(state, device=params.get("device", "auto"), threads=params["threads"])
        for k, state in states.items()
    }
