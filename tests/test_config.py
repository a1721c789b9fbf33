"""difflab.config and the run config: typos name the valid keys, values are type-checked, overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from difflab.config import apply_overrides, dump_yaml, from_dict, load_yaml, parse_value, to_dict
from difflab.train.config import RunConfig, TrainConfig, load_run_config


@dataclass
class Inner:
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    count: int = 1
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[float, float] = (0.0, 1.0)
    inner: Inner = field(default_factory=Inner)
    extra: dict = field(default_factory=dict)
    maybe: int | None = None


def test_unknown_top_level_key_names_valid_keys_and_closest():
    with pytest.raises(ValueError) as e:
        from_dict(Outer, {"nmae": "y"})
    msg = str(e.value)
    assert "'nmae'" in msg and "did you mean 'name'" in msg
    for key in ("count", "inner", "name", "sizes"):
        assert key in msg


def test_unknown_nested_key_names_its_section():
    with pytest.raises(ValueError, match=r"'inner\.rat'.*did you mean 'rate'.*valid keys of inner: mode, rate"):
        from_dict(Outer, {"inner": {"rat": 1.0}})


def test_run_config_typos_name_valid_keys():
    with pytest.raises(ValueError, match=r"'train\.lrr'.*did you mean 'lr'"):
        RunConfig.from_dict({"train": {"lrr": 1.0}})
    with pytest.raises(ValueError, match=r"'traim'.*did you mean 'train'.*data, diffusion, method, model"):
        RunConfig.from_dict({"traim": {}})
    with pytest.raises(ValueError, match=r"data\.batchsize.*batch_size"):
        RunConfig.from_dict({"data": {"batchsize": 4}})


def test_values_are_checked_and_converted():
    o = from_dict(Outer, {"count": 3, "sizes": [4, 5], "pair": [1, 2], "inner": {"rate": "1e-4"}, "maybe": None})
    assert o.sizes == (4, 5) and o.pair == (1.0, 2.0) and isinstance(o.pair[0], float)
    assert o.inner.rate == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string
    with pytest.raises(ValueError, match=r"count: expected an integer, got 'three'"):
        from_dict(Outer, {"count": "three"})
    with pytest.raises(ValueError, match=r"count: expected an integer, got True"):
        from_dict(Outer, {"count": True})
    with pytest.raises(ValueError, match=r"inner\.mode: expected one of 'a', 'b', got 'c'"):
        from_dict(Outer, {"inner": {"mode": "c"}})
    with pytest.raises(ValueError, match=r"pair: expected a list of 2 values"):
        from_dict(Outer, {"pair": [1.0]})
    with pytest.raises(ValueError, match=r"inner: expected a mapping"):
        from_dict(Outer, {"inner": 3})


def test_run_config_ranges_and_choices():
    with pytest.raises(ValueError, match="train.decay: expected one of 'none', 'linear', 'cosine'"):
        RunConfig.from_dict({"train": {"decay": "exp"}})
    with pytest.raises(ValueError, match="train.grad_accum must be >= 1"):
        RunConfig.from_dict({"train": {"grad_accum": 0}})
    with pytest.raises(ValueError, match="train.precision: expected one of 'fp32', 'bf16', 'fp16'"):
        RunConfig.from_dict({"train": {"precision": "fp8"}})
    with pytest.raises(ValueError, match="sample.sampler"):
        RunConfig.from_dict({"sample": {"sampler": "euler"}})
    assert TrainConfig(lr=1e-3).betas == (0.9, 0.999)


def test_round_trip_through_yaml(tmp_path):
    cfg = RunConfig.from_dict({"name": "r", "model": {"channels": 8}, "train": {"betas": [0.8, 0.9], "steps": 7}})
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg.to_dict()))
    again = RunConfig.from_dict(load_yaml(path))
    assert again == cfg and again.train.betas == (0.8, 0.9)
    assert to_dict(again)["train"]["betas"] == [0.8, 0.9]


def test_overrides_parse_yaml_values_and_nest():
    d = apply_overrides({"train": {"lr": 1.0}}, ["train.lr=3e-4", "train.steps=10", "model.channel_mult=[1,2]", "a=b"])
    assert d == {"train": {"lr": 3e-4, "steps": 10}, "model": {"channel_mult": [1, 2]}, "a": "b"}
    assert parse_value("true") is True and parse_value("null") is None
    with pytest.raises(ValueError, match="must look like key.sub=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ValueError, match=r"config key train.lr: expected a mapping \(section\), got 1.0"):
        apply_overrides({"train": {"lr": 1.0}}, ["train.lr.x=1"])


def test_load_run_config_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_run_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match=f"{bad}: not valid YAML"):
        load_run_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  stpes: 3\n")
    with pytest.raises(ValueError, match=rf"{typo}: unknown config key 'train.stpes' \(did you mean 'steps'\?\)"):
        load_run_config(typo)
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  steps: 3\n")
    assert load_run_config(good, ["train.steps=5"]).train.steps == 5


@pytest.mark.parametrize("name", ["digits.yaml", "fashion-mnist-cfg.yaml"])
def test_shipped_recipes_are_valid(name):
    from pathlib import Path

    from difflab.nets import UNet
    from difflab.train import resolve_model_config

    cfg = load_run_config(Path(__file__).parent.parent / "configs" / name)
    model = resolve_model_config(cfg, 1, 10)
    assert UNet(model).num_parameters() < 2_000_000
    assert cfg.name == name.removesuffix(".yaml") and model["num_classes"] == (
        10 if "class" in cfg.data.conditions else 0
    )


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_recipe_is_accepted_by_its_method(path):
    from difflab.config import from_dict
    from difflab.methods import get_method
    from difflab.train import resolve_model_config

    cfg = load_run_config(path)
    method = get_method(cfg.method)(cfg)  # checks the sections the method does not read
    if method.model_config_class is not None:
        from_dict(method.model_config_class, cfg.model, "model")
    else:
        text = method.text_encoder() if "caption" in cfg.data.conditions else None
        vector = 128 if "vector" in cfg.data.conditions else 0  # an unCLIP decoder: a CLIP embedding's size
        resolve_model_config(cfg, 3, 10, 3, text, vector)
    assert cfg.method == method.name


def test_a_recipe_section_its_method_does_not_use_is_refused():
    from difflab.methods import get_method

    cfg = RunConfig.from_dict({"method": "ardm", "diffusion": {"parameterization": "eps"}})
    with pytest.raises(ValueError, match="method 'ardm' does not use the 'diffusion' section"):
        get_method("ardm")(cfg)
    with pytest.raises(ValueError, match="unknown method 'ardn'; this difflab knows diffusion, ardm, wavegrad"):
        get_method("ardn")


def test_config_errors_name_the_key_the_type_and_where_the_value_came_from(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: '32'\n")  # quoted: a string in YAML
    with pytest.raises(ValueError, match=rf"^{path}: config key train.steps: expected an integer, got '32'$"):
        load_run_config(path)
    with pytest.raises(ValueError, match=r"^override 'train.lr=abc': config key train.lr: expected a number"):
        load_run_config(path, ["train.steps=3", "train.lr=abc"])
    with pytest.raises(ValueError, match=r"^override 'train=\{lrr: 1\}': unknown config key 'train.lrr'"):
        load_run_config(path, ["train={lrr: 1}"])
    # a file whose section is not a mapping: blamed on the file, not on an override below it
    path.write_text("train: 5\n")
    with pytest.raises(ValueError, match=rf"^{path}: config key train: expected a mapping \(section\), got 5$"):
        load_run_config(path, ["train.progress=false"])
    path.write_text("train: {}\n")
    with pytest.raises(ValueError, match=r"^override 'train=5': config key train: expected a mapping"):
        load_run_config(path, ["train=5", "train.progress=false"])
