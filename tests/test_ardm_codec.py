"""The ARDM lossless codec: exact round trips, size against the NLL, bad input (difflab.methods.ardm.codec)."""

import numpy as np
import pytest
import torch

from difflab.methods.ardm.codec import (
    CodecError,
    _pack,
    _rice_decode,
    _rice_encode,
    _unpack,
    compress,
    decompress,
    order_nll,
    payload_bits,
    read_header,
)
from difflab.methods.ardm.model import ImageARDM
from difflab.methods.ardm.parallel import make_plans


def model(shape=(1, 6, 6), levels=17, branching=0, head="softmax", seed=0):
    torch.manual_seed(seed)
    cfg = {
        "kind": "image", "shape": list(shape), "levels": levels, "branching": branching, "head": head,
        "mixtures": 3, "unet": {"channels": 8, "channel_mult": [1], "num_blocks": 1, "norm_groups": 4},
    }  # fmt: skip
    m = ImageARDM(cfg)
    torch.nn.init.normal_(m.net.out.weight, std=0.3)
    torch.nn.init.normal_(m.net.out.bias, std=0.3)
    return m.eval()


def images(n, shape=(1, 6, 6), levels=17, seed=0, extremes=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (n, *shape), generator=g)
    if extremes:
        x[0] = 0  # an all-black and an all-white image
        x[1] = levels - 1
    return x.to(torch.uint8)


@pytest.mark.parametrize(
    "branching,head,plan,budget",
    [(0, "softmax", "full", None), (0, "logistic", "full", None), (2, "softmax", "full", None),
     (4, "logistic", "uniform", 5), (0, "softmax", "dp", 7)],
)  # fmt: skip
def test_round_trip_is_exact_on_every_image(branching, head, plan, budget):
    m = model(branching=branching, head=head)
    if plan == "dp":
        m.step_losses = [list(torch.linspace(3, 1, m.D).tolist())]
    x = images(5)
    data = compress(m, x, plan=plan, budget=budget, seed=11, group=2)  # groups of 2: batches of 2, 2, 1
    y = decompress(m, data)
    assert y.dtype == torch.uint8 and torch.equal(y, x)
    hd = read_header(data)
    assert hd["count"] == 5 and hd["seed"] == 11 and hd["plan"] == plan and hd["height"] == 6


@pytest.mark.parametrize(
    "values", [[], [0], [0, 0, 0], [5, 0, 300, 17], [2**20, 1, 0], list(range(0, 4000, 7)), [1] * 9]
)
def test_rice_length_table_round_trips_and_is_short(values):
    raw = b"junk" + _rice_encode(values) + b"tail"
    got, pos = _rice_decode(raw, 4, len(values))
    assert got == values and raw[pos:] == b"tail"
    # never longer than the best Rice parameter (brute force) plus the k byte and byte padding
    best = min(sum((v >> k) + 1 + k for v in values) for k in range(25)) if values else 0
    assert len(raw) - 8 == 1 + (best + 7) // 8
    with pytest.raises(CodecError, match="length table"):  # asks for more lengths than the table holds
        _rice_decode(raw[:pos], 4, len(values) + 50)


def test_length_table_costs_about_a_byte_per_image_for_typical_payloads():
    g = np.random.default_rng(0)
    lengths = (290 + 60 * g.standard_normal(1000)).round().astype(int).tolist()
    table = _rice_encode([n - min(lengths) for n in lengths])
    assert 8 * len(table) / 1000 < 9.5  # a LEB128 varint would spend 16 bits on each


def test_coded_size_matches_the_nll_of_the_order():
    m = model(shape=(1, 12, 12), levels=256, head="logistic")
    x = images(4, shape=(1, 12, 12), levels=256, seed=1, extremes=False)
    data = compress(m, x, seed=3, group=4)
    nll = order_nll(m, x, seed=3, group=4)
    bits = torch.tensor(payload_bits(data), dtype=torch.float64)
    # the rANS state flush (about 16 bits) and the rounding to whole bytes; whole 32-bit words
    # (format version 1) cost about 16 bits more per image
    assert torch.all(bits >= nll - 1) and torch.all(bits <= nll + 40)
    assert float(bits.sum()) <= 1.05 * float(nll.sum())
    assert torch.equal(decompress(m, data), x)


def test_parallel_budget_codes_fewer_calls_at_a_higher_but_exact_cost():
    m = model()
    m.step_losses = [torch.linspace(3, 1, m.D).tolist()]
    x = images(3, extremes=False)
    plans = make_plans("dp", 6, m.D, m.step_losses, 1)
    data = compress(m, x, plan="dp", budget=6)
    assert torch.equal(decompress(m, data), x)
    nll_k = order_nll(m, x, plans=plans)
    bits = torch.tensor(payload_bits(data), dtype=torch.float64)
    assert torch.all(bits >= nll_k - 1) and torch.all(bits <= nll_k + 40)


def test_corrupt_truncated_and_foreign_files_are_rejected():
    m = model()
    x = images(3)
    data = compress(m, x)
    for pos in (2, 30, len(data) // 2, len(data) - 9):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(CodecError):
            decompress(m, bytes(bad))
    for cut in (10, 60, len(data) - 1):
        with pytest.raises(CodecError, match="truncated|corrupt|magic"):
            decompress(m, data[:cut])
    with pytest.raises(CodecError, match="different model"):
        decompress(model(seed=1), data)
    m.step_losses = [[1.0] * m.D]  # per-step losses are part of the fingerprint (they decide DP plans)
    with pytest.raises(CodecError, match="different model"):
        decompress(m, data)
    with pytest.raises(CodecError, match="magic"):
        decompress(m, b"PNG" + data)


def test_same_fingerprint_other_weights_never_gives_wrong_pixels():
    m, other = model(), model(seed=1)
    data = compress(m, images(3))
    other.__class__ = type("Impostor", (ImageARDM,), {"fingerprint": property(lambda self: m.fingerprint)})
    with pytest.raises(CodecError, match="checksum|cannot be decoded"):
        decompress(other, data)


def test_wrong_image_shape_or_values_is_a_one_line_error():
    m = model()
    for bad in (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 3, 6, 6, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="does not match the model") as e:
            compress(m, bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="levels 0..16"):
        compress(m, torch.full((1, 1, 6, 6), 17, dtype=torch.uint8))


@pytest.mark.parametrize("top", [0, 1, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000, 0xFFFFFFFF])
def test_payload_packing_drops_only_the_top_words_zero_bytes(top):
    words = np.array([7, 0, top], dtype=np.uint32)
    raw = _pack(words)
    assert np.array_equal(_unpack(raw), words)
    top_bytes = (int(top).bit_length() + 7) // 8 if top else 4  # a zero top word is kept whole
    assert len(raw) == 8 + top_bytes
    assert np.array_equal(_unpack(_pack(words[:0])), words[:0])
