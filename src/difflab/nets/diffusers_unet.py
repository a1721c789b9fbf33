"""A diffusers ``UNet2DModel`` with its scheduler config, as a difflab network ``net(z, lam, cond)``.

diffusers calls ``unet(sample, timestep, class_labels).sample`` with a timestep ``k`` in ``[0, N)``
whose noise level the scheduler config fixes; difflab calls ``net(z, lam, cond)`` with the log-SNR
``lam`` (docs/math.md section 0). :class:`DiffusersUNet` maps one to the other:

- noise levels: the scheduler's betas are the difflab schedule ``net.schedule()``, a
  :class:`~difflab.diffusion.DiffusersSchedule`; ``z`` is diffusers' noisy sample as it is (both are
  variance preserving), so difflab's samplers, guidance and distillation apply unchanged;
- timesteps: ``k = N t - 1`` with ``t = schedule.t_of_lam(lam)``, the inverse of the schedule's own
  interpolation (``log alpha_bar`` linear in t between table entries). A grid point that is a
  diffusers timestep (e.g. every point of ``schedule.lams(n)`` when n divides N) reaches the UNet as
  that integer (snapped within 1e-3, against float32 roundoff of lam); points in between become
  fractional timesteps, which the sinusoidal embedding takes as they are (a ``learned`` embedding
  gets the nearest integer). ``k`` is clamped to [0, N - 1]: a lam cleaner than timestep 0 is 0;
- output: the UNet's, unchanged, in the parameterization of ``prediction_type`` (epsilon -> "eps",
  v_prediction -> "v", sample -> "x"): ``net.parameterization``;
- classes: ``cond["class"]`` (B,) long goes to ``class_labels`` (``num_class_embeds`` with
  ``class_embed_type`` None). diffusers has no null class; with ``null_class=True`` the last row of the
  class table is one, as in difflab's own U-Net (``num_classes = num_class_embeds - 1``), and
  ``cond["class_drop"]`` (:func:`difflab.nets.null_cond`, classifier-free guidance) selects it.

Folders load offline (``local_files_only``): a pipeline folder (``unet/`` with ``config.json`` and
weights, ``scheduler/scheduler_config.json``, optionally ``model_index.json``) or a bare UNet folder
with ``scheduler_config.json`` beside its ``config.json``. An optional ``difflab.yaml`` holds, as
run-config sections, what diffusers has no place for: ``data`` (what ``difflab eval`` and ``difflab
distill`` use), ``sample`` defaults and ``model: {null_class: true}``::

    stage = load_diffusers_unet("models/ddpm-digits")    # or difflab.load(...): a LoadedStage
    x = stage.sample(16, sampler="dpmpp_2m", steps=20)
    save_diffusers(stage, "out/ddpm-digits-copy")         # back to diffusers' pipeline layout
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

MODEL_KEY = "diffusers_unet"  # model configs with this key hold a wrapped UNet2DModel
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x"}
SCHEDULE_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}
# data.name of a folder without difflab.yaml: the error of any command that needs data says what to do
NO_DATA = "none (add data: {name: ...} to the diffusers folder's difflab.yaml)"
RUN_FILE = "difflab.yaml"


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError:
        raise ImportError("a diffusers model needs the diffusers package: pip install diffusers") from None
    return diffusers


def is_diffusers_config(model_config: Any) -> bool:
    """Whether a model config (``format.json``'s ``model_config``, a run's ``model``) wraps a UNet2DModel."""
    return isinstance(model_config, dict) and MODEL_KEY in model_config


def parameterization_of(scheduler_config: dict[str, Any]) -> str:
    """difflab's name for a scheduler config's ``prediction_type``; a ValueError names the valid ones."""
    p = scheduler_config.get("prediction_type", "epsilon")
    if p not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {p!r} is not supported; valid: {', '.join(PREDICTION_TYPES)}")
    return PREDICTION_TYPES[p]


def schedule_options(scheduler_config: dict[str, Any]) -> dict[str, Any]:
    """The ``diffusion.schedule_options`` of ``schedule: diffusers`` for a scheduler config."""
    if scheduler_config.get("rescale_betas_zero_snr"):
        raise ValueError("rescale_betas_zero_snr makes the last noise level infinite, which difflab does not support")
    opts = {k: scheduler_config.get(k, v) for k, v in SCHEDULE_DEFAULTS.items()}
    if scheduler_config.get("trained_betas") is not None:
        opts["trained_betas"] = [float(b) for b in scheduler_config["trained_betas"]]
    return opts


def check_unet_config(config: dict[str, Any], null_class: bool = False) -> None:
    """One-line ValueErrors for UNet2DModel configs the wrapper cannot serve."""
    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise ValueError(f"a {name}, but difflab wraps diffusers' UNet2DModel only")
    if config.get("time_embedding_type", "positional") == "fourier":
        raise ValueError("time_embedding_type 'fourier' is a variance-exploding (score SDE) model, not a DDPM one")
    if config.get("class_embed_type") is not None:
        raise ValueError(f"class_embed_type {config['class_embed_type']!r} is not supported (only None: class labels)")
    if config.get("out_channels", 3) != config.get("in_channels", 3):
        raise ValueError("out_channels differs from in_channels (a learned variance?): difflab needs one prediction")
    if null_class and int(config.get("num_class_embeds") or 0) < 2:
        raise ValueError("null_class needs num_class_embeds >= 2 (the classes, then the null class)")


@dataclass(frozen=True)
class DiffusersUNetInfo:
    """What difflab's sampling reads from ``net.config``: the class count and the droppable conditions."""

    num_classes: int
    droppable: tuple[str, ...]
    guidance_embed: bool = False


class DiffusersUNet(nn.Module):
    """``net(z, lam, cond)`` for a diffusers ``UNet2DModel`` and its scheduler config (module doc).

    ``net.parameterization`` names what it outputs, ``net.schedule()`` is the difflab schedule of
    the scheduler's betas, ``net.model_config`` rebuilds it (:meth:`from_model_config`), and its
    weights are the UNet's under ``unet.``.
    """

    def __init__(self, unet: nn.Module, scheduler_config: dict[str, Any], null_class: bool = False) -> None:
        super().__init__()
        check_unet_config(dict(unet.config), null_class)
        self.unet = unet
        self.scheduler_config = dict(scheduler_config)
        self.parameterization = parameterization_of(self.scheduler_config)
        self._schedule = self.schedule()
        self.null_class = bool(null_class)
        embeds = int(unet.config.num_class_embeds or 0)
        self.config = DiffusersUNetInfo(embeds - self.null_class if embeds else 0, ("class",) if null_class else ())

    @classmethod
    def from_model_config(cls, model_config: dict[str, Any]) -> DiffusersUNet:
        """A freshly initialised network from ``model_config`` (:attr:`model_config`'s layout)."""
        null_class = bool(model_config.get("null_class", False))
        check_unet_config(model_config[MODEL_KEY], null_class)
        unet = _diffusers().UNet2DModel.from_config(model_config[MODEL_KEY])
        return cls(unet, model_config["scheduler"], null_class)

    @property
    def model_config(self) -> dict[str, Any]:
        """``{"diffusers_unet": UNet config, "scheduler": scheduler config, "null_class": bool}``."""
        unet = json.loads(self.unet.to_json_string())
        return {MODEL_KEY: unet, "scheduler": dict(self.scheduler_config), "null_class": self.null_class}

    def schedule(self) -> Any:
        """The difflab schedule of the scheduler's betas (``schedule.lams(n)`` is diffusers' trailing spacing)."""
        from ..diffusion import DiffusersSchedule

        return DiffusersSchedule(**schedule_options(self.scheduler_config))

    def timestep(self, lam: Tensor) -> Tensor:
        """diffusers' (float32) timestep of each log-SNR, on ``lam``'s device (module doc)."""
        s = self._schedule
        lam64 = lam.detach().to("cpu", torch.float64).clamp(min=s.lam_min)
        k = (s.t_of_lam(lam64) * s.n - 1).clamp(0, s.n - 1)
        near = k.round()
        learned = self.unet.config.time_embedding_type == "learned"
        k = near if learned else torch.where((k - near).abs() < 1e-3, near, k)
        return k.to(device=lam.device, dtype=torch.float32)

    def class_labels(self, cond: dict[str, Any], batch: int, device: torch.device) -> Tensor | None:
        """``class_labels`` for the UNet: ``cond["class"]``, the null class where ``cond["class_drop"]``."""
        embeds = int(self.unet.config.num_class_embeds or 0)
        labels, drop = cond.get("class"), cond.get("class_drop")
        if not embeds:
            if labels is not None:
                raise ValueError("cond['class'] given but this UNet2DModel has no class embedding (num_class_embeds)")
            return None
        null = torch.full((batch,), embeds - 1, dtype=torch.long, device=device)
        if labels is None and not self.null_class:
            raise ValueError("this UNet2DModel is class-conditional: pass cond['class'] (B,) long")
        if drop is not None and not self.null_class and bool(drop.any()):
            raise ValueError("cond['class_drop'] needs a null class: set model: {null_class: true} in difflab.yaml")
        if labels is None:
            return null
        labels = labels.to(device=device, dtype=torch.long)
        return torch.where(drop.to(device).bool(), null, labels) if drop is not None else labels

    def forward(self, z: Tensor, lam: Tensor, cond: dict[str, Any] | None = None) -> Tensor:
        """The UNet's output at log-SNR ``lam`` (B,), in :attr:`parameterization`."""
        cond = dict(cond or {})
        unknown = sorted(set(cond) - {"class", "class_drop"})
        if unknown:
            raise ValueError(f"cond key(s) {unknown} are not supported: a UNet2DModel takes class labels only")
        labels = self.class_labels(cond, z.shape[0], z.device)
        return self.unet(z, self.timestep(lam), class_labels=labels).sample


def diffusers_student_config(
    model_config: dict[str, Any], parameterization: str, guidance: float | None, guidance_range: Any
) -> dict[str, Any]:
    """The model config of a progressive-distillation student of a wrapped UNet2DModel: the teacher's
    (the student starts as a copy of it, Salimans & Ho 2022). Its output head is the teacher's
    ``prediction_type``, and it has no input for the guidance weight; one-line errors say so."""
    own = parameterization_of(model_config["scheduler"])
    if parameterization != own:
        raise ValueError(
            f"a diffusers UNet2DModel student keeps its teacher's parameterization ({own!r}, from its "
            f"prediction_type), not {parameterization!r}"
        )
    if guidance_range is not None:
        raise ValueError("guidance_range needs a student that takes w as input; a UNet2DModel cannot: use guidance")
    if guidance is not None and not model_config.get("null_class"):
        raise ValueError("guided distillation needs a class-conditional UNet2DModel with a null class (null_class)")
    return dict(model_config)


# -- folders ------------------------------------------------------------------------------------
def find_parts(path: str | Path) -> tuple[Path, Path] | None:
    """``(unet folder, scheduler config file)`` of a diffusers folder; None when ``path`` is not one."""
    p = Path(path)
    if not p.is_dir() or (p / "format.json").exists() or (p / "checkpoint" / "format.json").exists():
        return None
    if (p / "model_index.json").is_file() or (p / "unet" / "config.json").is_file():
        return p / "unet", p / "scheduler" / "scheduler_config.json"
    try:
        bare = json.loads((p / "config.json").read_text()).get("_class_name") == "UNet2DModel"
    except (OSError, ValueError, AttributeError):
        bare = False
    return (p, p / "scheduler_config.json") if bare else None


def is_diffusers_folder(path: str | Path) -> bool:
    """Whether ``path`` is a diffusers pipeline or UNet2DModel folder (reads JSON only)."""
    return find_parts(path) is not None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found ({what})")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def stage_parts(path: str | Path, run: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any], Path]:
    """``(RunConfig, format.json-style metadata, unet folder)`` of a diffusers folder, from its JSON
    files only (no weights, no diffusers import). ``run`` (default: the folder's ``difflab.yaml``)
    sets the ``data`` and ``sample`` sections and ``model.null_class``; every problem is one line."""
    from ..config import load_yaml
    from ..train.config import RunConfig

    folder = Path(path)
    parts = find_parts(folder)
    if parts is None:
        raise ValueError(f"{folder}: not a diffusers folder (model_index.json, unet/config.json or a UNet2DModel)")
    unet_dir, sched_file = parts
    unet_cfg = _read_json(unet_dir / "config.json", "the UNet2DModel config")
    sched_cfg = _read_json(sched_file, "the scheduler config that fixes the UNet's noise levels")
    if run is None:
        run = load_yaml(folder / RUN_FILE) if (folder / RUN_FILE).is_file() else {}
    extra = sorted(set(run) - {"data", "sample", "model"}) + [f"model.{k}" for k in run.get("model") or {}]
    extra = [k for k in extra if k != "model.null_class"]
    if extra:
        raise ValueError(f"{folder / RUN_FILE}: {', '.join(extra)} cannot be set; only data, sample, model.null_class")
    null_class = bool((run.get("model") or {}).get("null_class", False))
    try:
        check_unet_config(unet_cfg, null_class)
        p = parameterization_of(sched_cfg)
        opts = schedule_options(sched_cfg)
    except ValueError as e:
        raise ValueError(f"{unet_dir}: {e}") from None
    size = unet_cfg.get("sample_size")
    if size is None:
        raise ValueError(f"{unet_dir / 'config.json'}: no sample_size, so the image size is unknown")
    h, w = (size, size) if isinstance(size, int) else size
    embeds = int(unet_cfg.get("num_class_embeds") or 0)
    num_classes = embeds - null_class if embeds else 0
    model = {MODEL_KEY: unet_cfg, "scheduler": sched_cfg, "null_class": null_class}
    clip = sched_cfg.get("clip_sample") and sched_cfg.get("clip_sample_range", 1.0) == 1.0  # difflab's static
    sample: dict[str, Any] = {"threshold": "static" if clip else "none"}
    if sched_cfg.get("thresholding"):
        sample.update(threshold="dynamic", threshold_quantile=sched_cfg.get("dynamic_thresholding_ratio", 0.995))
    sections = {
        "name": folder.name, "out_dir": str(folder.parent), "method": "diffusion", "model": model,
        "data": {"name": NO_DATA, "conditions": ["class"] if num_classes else [], **(run.get("data") or {})},
        "diffusion": {
            "schedule": "diffusers", "schedule_options": opts, "parameterization": p,
            "time_sampling": "discrete", "n_discrete": opts["num_train_timesteps"],
        },
        "sample": {**sample, **(run.get("sample") or {})},
    }  # fmt: skip
    try:
        cfg = RunConfig.from_dict(sections)
    except ValueError as e:  # a bad data or sample section of difflab.yaml
        raise ValueError(f"{folder / RUN_FILE}: {e}") from None
    meta = {
        "method": "diffusion", "model_config": model, "image_shape": [int(unet_cfg.get("in_channels", 3)), h, w],
        "num_classes": num_classes, "conditions": list(cfg.data.conditions), "dataset": cfg.data.name,
        "parameterization": p, "diffusers": str(folder),
    }  # fmt: skip
    return cfg, meta, unet_dir


def load_diffusers_unet(path: str | Path, device: Any = "cpu", run: dict[str, Any] | None = None) -> Any:
    """A diffusers folder (module doc) as a :class:`~difflab.train.stage.LoadedStage`: ``stage.sample(n,
    sampler=..., steps=...)``, and ``difflab sample`` / ``eval`` / ``distill`` accept the folder.
    ``run`` as for :func:`stage_parts`. The network is a :class:`DiffusersUNet` in eval mode."""
    from ..train.checkpoint import CheckpointError
    from ..train.stage import LoadedStage

    cfg, meta, unet_dir = stage_parts(path, run)
    model = meta["model_config"]
    try:
        unet = _diffusers().UNet2DModel.from_pretrained(
            unet_dir, local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False
        )
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{unet_dir}: cannot load the UNet2DModel ({_first_line(e)})") from None
    net = DiffusersUNet(unet, model["scheduler"], model["null_class"])
    return LoadedStage(cfg, net.to(device).eval(), meta, Path(path))


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def save_diffusers(stage: Any, folder: str | Path) -> Path:
    """Write a stage whose network is a :class:`DiffusersUNet` (a loaded folder, or a ``difflab
    distill`` student of one) as a diffusers pipeline folder: ``unet/``, ``scheduler/`` (with
    ``timestep_spacing: trailing``, difflab's grid, so diffusers' DDIM with ``steps`` steps visits the
    timesteps difflab's ``ddim`` does when ``steps`` divides N), ``model_index.json`` and a
    ``difflab.yaml`` with the stage's data, sample settings and null class."""
    from ..config import dump_yaml

    net, out = stage.net, Path(folder)
    if not isinstance(net, DiffusersUNet):
        raise ValueError(f"save_diffusers needs a stage with a diffusers UNet2DModel, not a {type(net).__name__}")
    net.unet.save_pretrained(out / "unet")
    sched = {"_class_name": "DDIMScheduler", **net.scheduler_config, "timestep_spacing": "trailing"}
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=1))
    index = {"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"]}
    index["scheduler"] = ["diffusers", sched["_class_name"]]
    (out / "model_index.json").write_text(json.dumps(index, indent=1))
    c = stage.config.to_dict()
    run = {"data": c["data"], "sample": c["sample"], "model": {"null_class": net.null_class}}
    (out / RUN_FILE).write_text(dump_yaml(run))
    return out
