"""The ``difflab`` command: help, version, errors as one line with exit status 2, the demo."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import difflab
from difflab import cli


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("difflab: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_help_lists_the_demo(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: difflab" in out and "demo" in out


def test_demo_help_lists_its_options(capsys):
    assert cli.main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--out", "--n", "--seed", "--steps", "--samplers", "--progress", "--no-plot"):
        assert opt in out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"difflab {difflab.__version__}"


def test_console_script_and_python_m():
    for cmd in ([sys.executable, "-m", "difflab", "--help"], [sys.executable, "-m", "difflab", "nonsense"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if cmd[-1] == "--help":
            assert res.returncode == 0 and "demo" in res.stdout
        else:
            assert res.returncode == 2
            _one_error_line(res.stderr)


def test_cli_import_is_cheap():
    code = "import sys, difflab.cli; print(sorted(m for m in ('torch', 'matplotlib', 'tqdm') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["bogus"], "bogus"),
        ([], "a command is required"),
        (["demo", "--n", "3"], "--n"),
        (["demo", "--seed", "-1"], "--seed"),
        (["demo", "--steps", "2", "zero"], "--steps"),
        (["demo", "--steps", "0"], "--steps"),
        (["demo", "--bogus-option"], "--bogus-option"),
        (["demo", "--spacing", "log"], "--spacing"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, needle):
    assert cli.main(argv) == 2
    assert needle in _one_error_line(capsys.readouterr().err)


def test_bad_values_found_by_the_command_give_one_line(capsys, tmp_path):
    assert cli.main(["demo", "--samplers", "euler_maruyama", "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "euler_maruyama" in line and "ddim" in line  # names the valid choices
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert cli.main(["demo", "--out", str(a_file), "--n", "10", "--steps", "1", "--samplers", "ddim"]) == 2
    assert "not a directory" in _one_error_line(capsys.readouterr().err)


def test_errors_raised_by_a_command_are_reported_without_traceback(monkeypatch, capsys):
    def run(args: argparse.Namespace) -> int:
        raise ValueError(f"cannot read {args.path}:\n  bad header")

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("path")

    module = types.ModuleType("probe_commands")  # a command lives in a module as add_NAME / run_NAME
    module.add_probe, module.run_probe = add, run
    monkeypatch.setitem(sys.modules, "probe_commands", module)
    monkeypatch.setitem(cli.COMMANDS, "probe", cli.Command(help="test only", where="probe_commands:probe"))
    assert cli.main(["probe", "x.bin"]) == 2
    assert _one_error_line(capsys.readouterr().err) == "difflab: error: cannot read x.bin: bad header"


def test_default_steps_and_sampler_names_agree_with_the_library():
    from difflab import argtypes, commands, demo
    from difflab.diffusion import SAMPLERS

    assert tuple(commands.DEMO_STEPS) == tuple(demo.DEFAULT_STEPS)
    assert sorted(argtypes.SAMPLERS) == sorted(SAMPLERS)


def test_every_command_has_its_functions_and_no_method_module_imports_the_cli():
    for name, command in cli.COMMANDS.items():
        module = command.where.split(":")[0]
        assert module == "difflab.commands" or module.startswith(("difflab.methods.", "difflab.app.")), name
        assert callable(command._function("add")) and callable(command._function("run")), name
    for path in (Path(cli.__file__).parent / "methods").rglob("*.py"):  # lower layers never import the CLI
        imports = [line for line in path.read_text().splitlines() if line.strip().startswith(("from ", "import "))]
        assert not [line for line in imports if "difflab.cli" in line or "...cli import" in line], path


def test_demo_runs_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n", "50", "--steps", "2,4", "8", "--samplers", "ddim", "--no-plot"]
    argv += ["--spacing", "lam"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ddim" in printed and str(out / "metrics.json") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["steps"] == [2, 4, 8]
    assert metrics["config"]["grid"] == 'CosineSchedule().lams(steps, "lam")'
    assert [r["steps"] for r in metrics["runs"]] == [2, 4, 8]
    assert not (out / "demo.png").exists()


def test_help_imports_no_torch():
    """`difflab --help` builds every subcommand's parser; none may import torch (it costs seconds)."""
    code = "import sys; from difflab import cli; cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
