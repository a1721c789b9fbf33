"""Feature networks for Frechet distance and precision/recall: small CNN classifiers trained by difflab.

No Inception weights exist offline, so FID-style metrics here use a small classifier per data set,
trained by ``scripts/train_feature_nets.py`` and shipped as safetensors plus a JSON metadata file
(architecture config, test accuracy, training command, date, sha256 of the weights) in
``difflab/eval/weights``. Loading never unpickles: the JSON rebuilds the module, safetensors fills it.

The network: ``len(widths)`` stages, stage ``i`` of ``depths[i]`` [3x3 conv, BatchNorm, ReLU] blocks
of ``widths[i]`` channels, a 2x2 max-pool between stages, global average pooling, a ``feature_dim``
linear layer with ReLU (the *feature* vector: the penultimate layer, as Inception's pool3 in FID),
dropout, and a linear classifier.
Inputs are images in [-1, 1], the convention of every difflab data set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FORMAT_VERSION = 1
FEATURE_NETS = ("digits", "fashion-mnist")


@dataclass(frozen=True)
class FeatureNetConfig:
    """Architecture of a feature network (stored in its JSON metadata)."""

    in_channels: int = 1
    image_size: int = 28
    widths: tuple[int, ...] = (16, 32, 64)
    depths: tuple[int, ...] = (1, 2, 2)
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.3

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if len(self.depths) != len(self.widths) or not self.widths:
            raise ValueError(
                f"widths and depths must be non-empty and of equal length, got {self.widths}, {self.depths}"
            )
        if self.in_channels < 1 or self.image_size < 1 or min(self.depths) < 1 or min(self.widths) < 1:
            raise ValueError(f"invalid feature net config {self}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureNetConfig:
        """Build from a dict; an unknown key is a ValueError naming the valid keys."""
        return checked_config(cls, d, "feature net")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``widths`` as a list)."""
        d = asdict(self)
        d["widths"], d["depths"] = list(self.widths), list(self.depths)
        return d


# one 3x3 conv + BatchNorm + ReLU stage step; the video classifier builds its frame encoder from it too
def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class FeatureNet(nn.Module):
    """Small CNN classifier; ``features(x)`` is the penultimate layer, ``forward(x)`` the class logits."""

    def __init__(self, config: FeatureNetConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c, size = config.in_channels, config.image_size
        for i, (w, depth) in enumerate(zip(config.widths, config.depths, strict=True)):
            if i > 0 and size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            for _ in range(depth):
                layers += conv_block(c, w)
                c = w
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(c, config.feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError unless ``x`` is a batch (N, C, H, W) of the size this network was trained on."""
        c, s = self.config.in_channels, self.config.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"feature net expects images of shape (N, {c}, {s}, {s}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"feature net expects float images in [-1, 1], got {x.dtype} (use from_levels first)")

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (N, feature_dim) of images ``x`` in [-1, 1]."""
        h = self.trunk(x).mean(dim=(2, 3))
        return self.embed(h)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, num_classes)."""
        return self.head(self.dropout(self.features(x)))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weight_paths(name: str, weights_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """(safetensors path, JSON metadata path) of feature net ``name`` in ``weights_dir`` (default: shipped)."""
    folder = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def save_feature_net(
    net: FeatureNet, name: str, weights_dir: str | os.PathLike[str] | None = None, **metadata: Any
) -> tuple[Path, Path]:
    """Write ``net`` as ``NAME.safetensors`` and ``NAME.json`` (config, sha256, ``metadata``); atomic renames."""
    from safetensors.torch import save_file

    w_path, j_path = weight_paths(name, weights_dir)
    w_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = w_path.with_name(w_path.name + ".tmp")
    # one metadata key: safetensors writes a hash map, so several keys come out in varying order
    save_file(state, str(tmp), metadata={"difflab_feature_net": f"{name} v{FORMAT_VERSION}"})
    os.chmod(tmp, 0o644)  # safetensors creates the file private; shipped weights must be world-readable
    os.replace(tmp, w_path)
    meta = {
        "name": name,
        "format_version": FORMAT_VERSION,
        "config": net.config.to_dict(),
        "num_parameters": sum(p.numel() for p in net.parameters()),
        **metadata,
        "weights_file": w_path.name,
        "sha256": sha256_file(w_path),
    }
    tmp = j_path.with_name(j_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, j_path)
    return w_path, j_path


def read_weights_metadata(
    name: str, weights_dir: str | os.PathLike[str] | None, what: str, script: str
) -> dict[str, Any]:
    """The JSON metadata of the shipped network ``name`` (``what``, e.g. "feature net", names it in
    errors; ``script`` is the command that retrains it): missing files, unreadable JSON and
    metadata without ``config`` / ``sha256`` are one-line errors naming the file."""
    w_path, j_path = weight_paths(name, weights_dir)
    for p in (j_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{what} file {p} is missing: reinstall difflab, or run `python {script}`")
    try:
        meta = json.loads(j_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"corrupt {what} metadata {j_path}: {e}; reinstall difflab") from None
    if not isinstance(meta, dict) or "config" not in meta or "sha256" not in meta:
        raise ValueError(f"corrupt {what} metadata {j_path}: 'config' or 'sha256' missing; reinstall difflab")
    return meta


def load_checked_weights(
    net: nn.Module, name: str, weights_dir: str | os.PathLike[str] | None, meta: dict[str, Any], what: str, script: str
) -> nn.Module:
    """Fill ``net`` with the weights of ``name`` after checking their sha256 against ``meta``; eval mode."""
    w_path, _ = weight_paths(name, weights_dir)
    digest = sha256_file(w_path)
    if digest != meta["sha256"]:
        raise ValueError(
            f"corrupt {what} weights {w_path}: sha256 {digest[:12]}... does not match the recorded "
            f"{str(meta['sha256'])[:12]}...; reinstall difflab or rerun {script}"
        )
    from safetensors.torch import load_file

    try:
        state = load_file(str(w_path))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"corrupt {what} weights {w_path}: {e}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what} weights {w_path} do not fit its config: {e}") from None
    return net.eval()


def checked_config(cls: type, d: dict[str, Any], what: str) -> Any:
    """``cls(**d)`` for a config dataclass; an unknown key is a ValueError naming the valid keys."""
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} config key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    return cls(**d)


class ShippedNet:
    """Loader of one shipped network: its metadata, and the network built from it and checked, cached per
    (weights folder, device). ``build(config dict)`` makes the bare network; ``what`` names it in errors
    and ``script`` retrains it. The scene and video classifiers are loaded through one each."""

    def __init__(self, name: str, build: Callable[[dict[str, Any]], nn.Module], what: str, script: str) -> None:
        self.name, self.build, self.what, self.script = name, build, what, script
        self._cached = functools.cache(self._load)

    def metadata(self, weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        return read_weights_metadata(self.name, weights_dir, self.what, self.script)

    def _load(self, weights_dir: str | None, device: str) -> nn.Module:
        meta = self.metadata(weights_dir)
        net = self.build(meta["config"])
        load_checked_weights(net, self.name, weights_dir, meta, self.what, self.script)
        return net.to(device)

    def load(
        self, weights_dir: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", cache: bool = True
    ) -> nn.Module:
        """The network in eval mode after its sha256 check; ``cache=False`` loads a fresh copy."""
        key = None if weights_dir is None else os.fspath(Path(weights_dir).resolve())
        return self._cached(key, str(device)) if cache else self._load(key, str(device))

    def clear(self) -> None:
        self._cached.cache_clear()


def feature_net_metadata(name: str, weights_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON metadata of feature net ``name`` (config, test accuracy, training command, date, sha256)."""
    if weights_dir is None and name not in FEATURE_NETS:
        raise ValueError(f"unknown feature net {name!r}; valid names: {', '.join(FEATURE_NETS)}")
    return read_weights_metadata(name, weights_dir, "feature net", "scripts/train_feature_nets.py")


def load_feature_net(
    name: str, weights_dir: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> FeatureNet:
    """Load feature net ``name`` ("digits" or "fashion-mnist") in eval mode, after checking its sha256.

    ``weights_dir`` overrides the shipped folder. A missing file is a FileNotFoundError, a
    corrupt one (sha256 mismatch, unreadable tensors) a ValueError; both name the file.
    """
    meta = feature_net_metadata(name, weights_dir)
    net = FeatureNet(FeatureNetConfig.from_dict(meta["config"]))
    load_checked_weights(net, name, weights_dir, meta, "feature net", "scripts/train_feature_nets.py")
    return net.to(device)


@torch.no_grad()
def _run(net: FeatureNet, images: Tensor, batch_size: int, fn: str) -> Tensor:
    net.check_input(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    out = []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(device=device, dtype=torch.float32)
            out.append((net.features(x) if fn == "features" else net(x)).float().cpu())
    finally:
        net.train(was_training)
    if not out:
        width = net.config.feature_dim if fn == "features" else net.config.num_classes
        return torch.zeros(0, width)
    return torch.cat(out)


def features(net: FeatureNet, images: Tensor, batch_size: int = 500) -> Tensor:
    """Penultimate-layer features (N, feature_dim), float32 on CPU, of images (N, C, H, W) in [-1, 1]."""
    return _run(net, images, batch_size, "features")


def class_logits(net: FeatureNet, images: Tensor, batch_size: int = 500) -> Tensor:
    """Class logits (N, num_classes), float32 on CPU."""
    return _run(net, images, batch_size, "logits")


def class_predictions(net: FeatureNet, images: Tensor, batch_size: int = 500) -> Tensor:
    """Predicted class index (N,) int64 of each image."""
    return class_logits(net, images, batch_size).argmax(dim=1)


def class_accuracy(net: FeatureNet, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of ``images`` the network classifies as ``labels`` (e.g. class-conditional samples)."""
    labels = torch.as_tensor(labels).reshape(-1).to(torch.int64)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel() == 0:
        raise ValueError("class_accuracy needs at least one image")
    return float((class_predictions(net, images, batch_size) == labels).double().mean())
