"""Methods built from the shared parts: progressive distillation, ARDMs (+ lossless codec), WaveGrad.

Each submodule composes :mod:`difflab.diffusion`, :mod:`difflab.nets`, :mod:`difflab.data` and the
one trainer of :mod:`difflab.train`; import them directly (``from difflab.methods import distill``).
"""
