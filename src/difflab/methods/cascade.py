"""Cascades: a base stage, then super-resolution stages, each conditioned on the previous output.

Ho et al. 2022 ("Cascaded Diffusion Models"), Saharia et al. 2022 (Imagen). A super-resolution stage
is an ordinary diffusion run with ``data.conditions`` holding ``lowres`` (``data.lowres_factor`` > 1);
its network up-samples ``cond["lowres"]`` and concatenates it to the input. Noise-conditioning
augmentation (``diffusion.lowres_aug`` in training, ``aug`` at sampling) noises that input and gives
the network the level (``aug_lam``). ::

    cascade = Cascade.load(["runs/fmnist-14", "runs/fmnist-sr28"])
    images = cascade.sample(16, labels=torch.arange(16) % 10, aug=0.2)[-1]   # (16, 1, 28, 28)
    t2i = Cascade.from_runs(["runs/t2i-base", "runs/t2i-sr"])
    images = t2i(["a red bag at the top left"], n=4, guidance=[5, 3], threshold="dynamic")

Before any sampling, :meth:`Cascade.check` refuses stages that do not chain (resolutions,
channels, conditions), naming the stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ..train.stage import LoadedStage


class Cascade:
    """Stages, base first; stage ``i > 0`` is a super-resolution stage of stage ``i - 1``."""

    def __init__(self, stages: Sequence[LoadedStage]) -> None:
        self.stages = list(stages)
        self.check()

    @classmethod
    def load(cls, paths: Sequence[str | Path], weights: str = "ema", device: Any = "cpu") -> Cascade:
        """The stages in ``paths`` (run or checkpoint folders of diffusion runs), base first."""
        from . import load

        return load(list(paths), weights, device)

    from_runs = load  # Cascade.from_runs(["runs/t2i-base", "runs/t2i-sr"])("a red bag at the top left")

    def __call__(self, prompts: str | Sequence[str], n: int = 1, **options: Any) -> Tensor:
        """Text to image: ``n`` final images per prompt (prompt-major, (len(prompts) * n, C, H, W));
        ``options`` as for :meth:`sample` (guidance, threshold, steps, aug, seed ...)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if n < 1 or not prompts:
            raise ValueError("give at least one prompt and n >= 1 images per prompt")
        every = [p for p in prompts for _ in range(n)]
        return self.sample(len(every), prompts=every, **options)[-1]

    def check(self) -> None:
        """A ValueError naming the stages when they do not chain."""
        if not self.stages:
            raise ValueError("a cascade needs at least one stage")
        base = self.stages[0]
        if "lowres" in base.conditions:
            raise ValueError(
                f"cascade stage 1 ({base.path}) is a super-resolution stage: the first must be a base stage"
            )
        classes = int(base.meta.get("num_classes") or 0)
        for i, (prev, stage) in enumerate(zip(self.stages, self.stages[1:], strict=False), start=2):
            where = f"cascade stage {i} ({stage.path}) after stage {i - 1} ({prev.path})"
            if "lowres" not in stage.conditions:
                raise ValueError(f"{where}: stage {i} takes no low-resolution input (data.conditions lacks lowres)")
            want = [int(v) for v in stage.meta.get("lowres_shape") or []]
            have = list(prev.image_shape)
            if want != have:
                raise ValueError(f"{where}: stage {i} up-samples {want} images, stage {i - 1} makes {have}")
            if "class" in stage.conditions and int(stage.meta.get("num_classes") or 0) != classes:
                raise ValueError(
                    f"{where}: stage {i} is conditioned on {stage.meta.get('num_classes')} classes, "
                    f"the base stage on {classes or 'none'}"
                )

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.stages[-1].image_shape

    def sample(
        self,
        n: int,
        *,
        labels: Tensor | None = None,
        prompts: Sequence[str] | None = None,
        aug: float | None = None,
        seed: int = 0,
        sampler: Sequence[str | None] | str | None = None,
        steps: Sequence[int | None] | int | None = None,
        guidance: Sequence[float | None] | float | None = None,
        threshold: Sequence[str | None] | str | None = None,
        cond: dict[str, Tensor] | None = None,
        noise: Tensor | None = None,
        **options: Any,
    ) -> list[Tensor]:
        """The output of every stage (float32, CPU), base first. ``labels`` go to every class-conditional
        stage (default: ``arange(n) % classes``, as :func:`difflab.train.generate` draws them) and
        ``prompts`` (one per sample) to every caption-conditioned stage; ``aug``
        is the sampling level of noise-conditioning augmentation (a fraction of t; None: each stage's
        ``sample.lowres_aug``); ``sampler``, ``steps``, ``guidance`` and ``threshold`` one value for all
        stages or a list with one per stage (None: the stage's own ``sample`` setting; the shipped
        super-resolution recipe samples ancestrally, ``ddpm``, the base DDIM); ``cond`` (per-sample
        tensors, e.g. an unCLIP decoder's ``vector``) and ``noise`` (its starting noise) go to the base
        stage only; other ``options`` as for :func:`difflab.train.generate`."""
        if prompts is not None and not any("caption" in st.conditions for st in self.stages):
            raise ValueError("prompts were given but no stage of this cascade is caption-conditioned")
        chosen = {"sampler": sampler, "steps": steps, "guidance": guidance, "threshold": threshold}
        per_stage = {k: self._per_stage(k, v) for k, v in chosen.items()}
        outputs: list[Tensor] = []
        for i, stage in enumerate(self.stages):
            stage_cond = {"lowres": outputs[-1].clamp(-1.0, 1.0)} if outputs else cond
            outputs.append(
                stage.sample(
                    n,
                    noise=None if outputs else noise,
                    labels=labels if "class" in stage.conditions else None,
                    prompts=list(prompts) if prompts is not None and "caption" in stage.conditions else None,
                    cond=stage_cond,
                    aug=aug,
                    seed=seed + i,
                    **{k: v[i] for k, v in per_stage.items()},
                    **options,
                )  # fmt: skip
            )
        return outputs

    def _per_stage(self, name: str, value: Any) -> list[Any]:
        values = list(value) if isinstance(value, (list, tuple)) else [value] * len(self.stages)
        if len(values) != len(self.stages):
            raise ValueError(f"{name}: {len(values)} values for {len(self.stages)} stages")
        return values
