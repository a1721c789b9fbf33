"""Test-suite settings.

The tests run many small tensor operations; on a 2-core machine shared with other work,
torch's intra-op thread pool then spends more time waiting for a busy core than computing
(measured: one small mixture-denoiser call took 200 ms with 2 threads under load, 2 ms with
1). One thread keeps the suite's run time steady.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: a seeded fuzz test of about a minute (deselect with -m 'not fuzz')")


@pytest.fixture(scope="module")
def bench(request):
    """The benchmark script ``benchmarks/NAME.py`` named by the test module's ``BENCHMARK``, loaded as a
    module; ``benchmarks/`` stays importable while the module's tests run (the scripts import their
    siblings, ``common`` and ``report``, some of them only when called)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    name = request.module.BENCHMARK
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_bench", folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(folder))
