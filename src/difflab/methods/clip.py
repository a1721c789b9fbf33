"""Contrastive image-text training (CLIP, Radford et al. 2021): the ``clip`` method of the one trainer.

:class:`CLIPMethod` is a :class:`difflab.train.Method`: captioned data (``data.name``, e.g.
``scenes``, with the ``caption`` condition), the :class:`difflab.nets.clip.CLIP` network of the
recipe's ``model:`` section (:class:`~difflab.nets.clip.CLIPConfig`; ``image_size`` and ``channels``
come from the data), and the symmetric cross-entropy over each batch's image-text similarity
matrix (:func:`~difflab.nets.clip.clip_loss`). Everything else (AdamW, EMA, precision, DDP, exact
resume, signals, checkpoints) is the shared loop::

    difflab train configs/clip-scenes.yaml --out runs/clip-scenes
    clip = difflab.load("runs/clip-scenes")                  # a CLIP (EMA weights, eval mode)
    clip = difflab.load("models/clip-vit-b32")               # or a Hugging Face CLIP folder (HFCLIP, frozen)
    zero_shot_accuracy(clip, "test")                         # {"item": ..., "colour": ..., "position": ...}
    retrieval_recall_at_1(clip, "paraphrase", 1000)

A scratch text tower is also written, with the EMA weights, to ``RUN/text_encoder.safetensors`` at
every checkpoint and at the end of every session, for
``get_text_encoder({"kind": "clip", "path": "RUN/text_encoder.safetensors"})`` (frozen): the
text encoder of a later text-to-image stage. Every ``train.sample_every`` updates the EMA model is
scored on the first 256 test scenes (zero-shot accuracy and recall@1, ``RUN/samples/step_N.json``).

Evaluation on the captioned scenes (:mod:`difflab.data.scenes`):

- :func:`zero_shot_accuracy`: for the one-item scenes of a split, classify the item (20 kinds),
  colour (8) or position (4) by the caption that scores highest among those that vary that
  attribute and keep the other two at the truth ("a red sneaker at the top left" against "a
  green sneaker at the top left", ...); prompts are the split's canonical captions (training
  words, or the paraphrase words for the paraphrase split).
- :func:`retrieval_recall_at_1`: each of the first ``n`` scenes' own caption retrieves one of
  the ``n`` images; the fraction that retrieve their own scene.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..nets.clip import CLIP, CLIPConfig, clip_loss
from ..nets.hf_clip import HFCLIP, hf_model_type
from ..train.checkpoint import load_network
from ..train.config import RunConfig
from ..train.method import Method

TEXT_TOWER_FILE = "text_encoder.safetensors"
ATTRIBUTES = ("item", "colour", "position")
GRID_SCENES = 256  # test scenes scored at every sample_every


class CLIPMethod(Method):
    """A CLIP trained contrastively on captioned images (see the module doc)."""

    name = "clip"
    model_config_class = CLIPConfig
    sections = ()  # no diffusion, sampling or text section: the text tower is part of ``model:``

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        d = cfg.data
        if set(d.conditions) - {"caption"}:
            raise ValueError(
                f"invalid run config: method 'clip' trains on captions; data.conditions must be [caption], "
                f"got {list(d.conditions)}"
            )
        if d.shrink != 1 or d.lowres_factor:
            raise ValueError(
                "invalid run config: method 'clip' takes no data.shrink / data.lowres_factor; "
                "set the image size in data.options (e.g. size: 32)"
            )
        d.conditions = ("caption",)
        self._trainer: Any = None
        self._tower_step = -1

    # -- hooks ---------------------------------------------------------------------------------------------
    def dataset(self, split: str = "train") -> Any:
        from ..data import get_dataset

        d = self.cfg.data
        data = get_dataset(d.name, split, **d.options)
        if "caption" not in getattr(data, "cond_keys", ()):
            raise ValueError(
                f"method 'clip' needs captioned data (e.g. data.name: scenes); data set {d.name!r} has no captions"
            )
        return data

    def resolve_model_config(self, dataset: Any) -> dict[str, Any]:
        model = dict(self.cfg.model)
        shape = tuple(int(v) for v in dataset[0][0].shape)
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"method 'clip' needs square images (C, S, S), got items of shape {shape}")
        for key, value in (("channels", shape[0]), ("image_size", shape[1])):
            if key in model and model[key] != value:
                raise ValueError(
                    f"invalid run config: model.{key}={model[key]!r}, but the data's images have {key} {value}"
                )
            model[key] = value
        return CLIPConfig.from_dict(model).to_dict()

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        return CLIP(model_config)

    def loss(self, net: Any, x: Tensor, cond: dict[str, Any], generator: torch.Generator) -> Tensor:
        clip = getattr(net, "module", net)  # net may be DDP-wrapped
        ids, mask = clip.tokenizer(cond["caption"])
        return clip_loss(net(x, ids.to(x.device), mask.to(x.device)))

    def attach(self, trainer: Any) -> None:
        self._trainer = trainer

    def after_update(self, trainer: Any) -> str | None:
        trainer.net.clamp_logit_scale_()  # CLIP clamps the parameter at log(100) after each step
        t = self.cfg.train
        if trainer.dist.is_main and ((t.ckpt_every and trainer.step % t.ckpt_every == 0) or trainer.step >= t.steps):
            self.write_text_tower(trainer)
        return None

    def summary(self) -> dict[str, Any]:
        """Write the text tower of the last step (a session may end by signal or time limit)."""
        trainer = self._trainer
        if trainer is None or not trainer.dist.is_main:
            return {}
        path = self.write_text_tower(trainer) if self._tower_step != trainer.step else trainer.run_dir / TEXT_TOWER_FILE
        return {"text_encoder": path.name} if path is not None else {}

    def write_text_tower(self, trainer: Any) -> Path | None:
        """``RUN/text_encoder.safetensors``: the EMA model's scratch text tower (atomically); None for MiniLM."""
        path = write_text_tower(trainer.ema.module, trainer.run_dir)
        self._tower_step = trainer.step
        return path

    def sample_grid(self, trainer: Any, monitor: Any = None) -> Path | None:
        """Score the EMA model on the first 256 test scenes; ``samples/step_N.json`` (scenes data only)."""
        if self.cfg.data.name != "scenes":
            return None
        clip = trainer.ema.module
        opts = {k: v for k, v in self.cfg.data.options.items() if k in ("seed", "root")}
        scores = {
            "step": trainer.step,
            **{f"zero_shot_{k}": v for k, v in zero_shot_accuracy(clip, "test", GRID_SCENES, **opts).items()},
            "recall_at_1": retrieval_recall_at_1(clip, "test", GRID_SCENES, **opts),
            "logit_scale": round(float(clip.scale()), 3),
        }
        path = trainer.run_dir / "samples" / f"step_{trainer.step:07d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(scores, indent=1))
        if monitor is not None:
            monitor.write(f"clip eval on {GRID_SCENES} test scenes: {json.dumps(scores)}")
        return path

    @classmethod
    def load(cls, path: str | Path, weights: str = "ema", device: Any = "cpu") -> CLIP:
        return load_clip(path, weights=weights, device=device)


def load_clip(path: str | Path, *, weights: str = "ema", device: Any = "cpu") -> CLIP | HFCLIP:
    """A trained :class:`CLIP` (float32, eval mode) from a run, checkpoint or exported folder, or a
    frozen :class:`~difflab.nets.hf_clip.HFCLIP` from a Hugging Face CLIP folder (``config.json`` with
    ``model_type: clip``; ``weights`` does not apply: it holds one set); ``pretrained:NAME`` names a
    shipped one."""
    from ..pretrained import resolve

    path = resolve(path)
    if hf_model_type(path) is not None:
        if weights not in ("ema", "model"):
            raise ValueError(f"unknown weights {weights!r}; valid: ema, model")
        return HFCLIP(path).to(device)
    net, _, ckpt_dir = load_network(path, CLIP, weights, method=CLIPMethod.name)
    net.source = ckpt_dir
    return net.to(device).eval()


def write_text_tower(clip: CLIP, folder: str | Path) -> Path | None:
    """Write a CLIP's scratch text tower to ``folder/text_encoder.safetensors`` (atomically) with
    :func:`difflab.nets.save_text_encoder`; a frozen MiniLM tower is not written (None)."""
    from ..nets.text import ScratchTextEncoder, save_text_encoder

    tower = clip.text_tower
    if not isinstance(tower, ScratchTextEncoder):
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / TEXT_TOWER_FILE
    tmp = folder / f".{TEXT_TOWER_FILE}.tmp"
    save_text_encoder(tower, tmp)
    os.replace(tmp, target)
    return target


# -- evaluation on the captioned scenes -----------------------------------------------------------------------
def _scenes(clip: Any, split: str, n: int | None, options: dict[str, Any]) -> Any:
    """The scenes of ``split`` at the model's image size, or at 64 when that size is not one of the
    scenes' (a power of two <= 64): :func:`image_embeddings` then resizes them."""
    from ..data.scenes import CANVAS, CaptionedScenes

    if clip.config.channels != 3:
        raise ValueError(f"the scenes are RGB; this CLIP takes {clip.config.channels} channel(s)")
    size = int(clip.config.image_size)
    data = CaptionedScenes(split, size=size if 1 <= size <= CANVAS and CANVAS % size == 0 else CANVAS, **options)
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        n = min(n, len(data))
    return data, len(data) if n is None else n


def clip_input(clip: Any, x: Tensor) -> Tensor:
    """Images (B, C, S, S) in [-1, 1] at the CLIP model's input size (:func:`difflab.data.resize_images`)."""
    from ..data import resize_images

    c = clip.config
    if x.ndim != 4 or x.shape[1] != c.channels:
        raise ValueError(
            f"this CLIP model takes images of {c.channels} channel(s), got a batch of shape {tuple(x.shape)}"
        )
    return resize_images(x, (c.image_size, c.image_size))


@torch.no_grad()
def image_embeddings(clip: Any, images: Tensor | Sequence[Tensor], batch_size: int = 256) -> Tensor:
    """(N, embed_dim) float32 unit-norm CLIP embeddings of images (N, C, S, S) in [-1, 1], on the CPU
    (in eval mode, in batches of ``batch_size``)."""
    images = images if isinstance(images, Tensor) else torch.stack(list(images))
    was_training = clip.training
    clip.eval()
    try:
        out = [
            clip.encode_image(clip_input(clip, images[s : s + batch_size].float().to(clip.device))).float().cpu()
            for s in range(0, len(images), batch_size)
        ]
    finally:
        clip.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, clip.config.embed_dim)


def prompt_table(clip: Any, split: str = "test") -> Tensor:
    """(items, colours, positions, embed_dim) text embeddings of the canonical one-item captions of
    every (item, colour, position) in the style of ``split`` (paraphrase words for "paraphrase")."""
    from ..data.scenes import COLOURS, ITEMS, POSITIONS, _caption, _lexicon

    lex = _lexicon(split)
    labels = np.full((2, 3), -1, dtype=np.int64)
    captions = []
    for i in range(len(ITEMS)):
        for c in range(len(COLOURS)):
            for p in range(len(POSITIONS)):
                labels[0] = (i, c, p)
                captions.append(_caption(lex, labels, None))
    with torch.no_grad():
        emb = clip.encode_captions(captions)
    return emb.view(len(ITEMS), len(COLOURS), len(POSITIONS), -1)


def zero_shot_accuracy(
    clip: Any, split: str = "test", n: int | None = None, *, batch_size: int = 256, **options: Any
) -> dict[str, float]:
    """Zero-shot item / colour / position accuracy on the one-item scenes among the first ``n`` (all
    by default) of a scenes split (see the module doc); ``options`` go to the data set (seed, root).
    Returns ``{"item", "colour", "position"}`` accuracies and ``"scenes"``, the number scored
    (chance: 1/20, 1/8, 1/4)."""
    was_training = clip.training
    clip.eval()
    try:
        data, n = _scenes(clip, split, n, options)
        images, labels = [], []
        for idx in range(n):
            x, cond = data[idx]
            if int(cond["labels"][1, 0]) < 0:
                images.append(x)
                labels.append(cond["labels"][0])
        if not images:
            raise ValueError(f"no one-item scenes among the first {n} of split {split!r}")
        img = image_embeddings(clip, images, batch_size)  # (N, D)
        table = prompt_table(clip, split)  # (I, C, P, D)
        lab = torch.stack(labels).to(img.device)  # (N, 3)
        i, c, p = lab.unbind(1)
        scores = {
            "item": torch.einsum("nd,nid->ni", img, table[:, c, p].transpose(0, 1)),
            "colour": torch.einsum("nd,ncd->nc", img, table[i, :, p]),
            "position": torch.einsum("nd,npd->np", img, table[i, c]),
        }
        out = {k: round(float((s.argmax(1) == lab[:, j]).float().mean()), 4) for j, (k, s) in enumerate(scores.items())}
        return {**out, "scenes": len(images)}
    finally:
        clip.train(was_training)


def retrieval_recall_at_1(
    clip: Any, split: str = "test", n: int = 1000, *, batch_size: int = 256, **options: Any
) -> float:
    """Text -> image recall@1 among the first ``n`` scenes of a split: the fraction of their captions
    whose most similar image (of the ``n``) is their own scene; ``options`` go to the data set."""
    was_training = clip.training
    clip.eval()
    try:
        data, n = _scenes(clip, split, n, options)
        items = [data[i] for i in range(n)]
        img = image_embeddings(clip, [x for x, _ in items], batch_size)
        with torch.no_grad():
            txt = clip.encode_captions([cond["caption"] for _, cond in items])
        hits = (txt @ img.T).argmax(1) == torch.arange(n, device=img.device)
        return round(float(hits.float().mean()), 4)
    finally:
        clip.train(was_training)


def _pair_targets(labels: Tensor, colours: int) -> Tensor:
    """(N, items * colours) multi-hot of the (item, colour) pairs in scene labels (N, 2, 3)."""
    from ..data.scenes import ITEMS

    target = torch.zeros(len(labels), len(ITEMS) * colours)
    for slot in range(labels.shape[1]):
        present = labels[:, slot, 0] >= 0
        pair = labels[present, slot, 0] * colours + labels[present, slot, 1]
        target[present.nonzero().squeeze(1), pair] = 1.0
    return target


def embedding_probe(clip: Any, train_n: int = 20000, test_n: int = 1000, **options: Any) -> dict[str, float]:
    """How much of a scene a linear read-out recovers from its CLIP image embedding: a logistic
    regression from the standardised embedding to the multi-hot set of (item, colour) pairs, fitted
    (L-BFGS, no penalty: the embeddings are unit vectors and the read-out needs large weights) on
    the first ``train_n`` training scenes and scored on the first ``test_n`` test scenes. Returns
    ``"pairs"``: the share of test scenes whose ``k`` highest-scoring pairs (``k`` = the number of
    items) are exactly their own, i.e. every item in its colour, the criterion of unCLIP's variation
    consistency; ``"one_item"`` and ``"two_items"``: the same split by item count. A decoder
    conditioned only on the embedding can hardly keep what this read-out cannot find."""
    from ..data.scenes import COLOURS

    def embedded(split: str, n: int) -> tuple[Tensor, Tensor]:
        data, n = _scenes(clip, split, n, options)
        items = [data[i] for i in range(n)]
        emb = image_embeddings(clip, [x for x, _ in items])
        return emb, torch.stack([torch.as_tensor(cond["labels"]) for _, cond in items])

    x_train, lab_train = embedded("train", train_n)
    x_test, lab_test = embedded("test", test_n)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train = _pair_targets(lab_train, len(COLOURS))
    head = torch.nn.Linear(x_train.shape[1], y_train.shape[1])
    opt = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x_train), y_train)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        scores = head(x_test)
    y_test = _pair_targets(lab_test, len(COLOURS))
    count = y_test.sum(1).long()
    ranked = scores.argsort(1, descending=True)
    exact = torch.stack([y_test[r, ranked[r, : count[r]]].all() for r in range(len(y_test))])
    return {
        "pairs": round(float(exact.float().mean()), 4),
        "one_item": round(float(exact[count == 1].float().mean()), 4) if (count == 1).any() else float("nan"),
        "two_items": round(float(exact[count == 2].float().mean()), 4) if (count == 2).any() else float("nan"),
        "train_scenes": len(x_train),
        "test_scenes": len(x_test),
    }
