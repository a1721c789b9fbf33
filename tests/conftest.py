"""Test-suite settings.

The tests run many small tensor operations; on a 2-core machine shared with other work,
torch's intra-op thread pool then spends more time waiting for a busy core than computing
(measured: one small mixture-denoiser call took 200 ms with 2 threads under load, 2 ms with
1). One thread keeps the suite's run time steady.
"""

import torch

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: a seeded fuzz test of about a minute (deselect with -m 'not fuzz')")
