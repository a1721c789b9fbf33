"""The ARDM lossless codec: exact round trips, size against the NLL, bad input (difflab.methods.ardm.codec)."""

import re
import struct
import zlib

import numpy as np
import pytest
import torch

from difflab.methods.ardm.codec import (
    _FIELDS,
    _HEAD,
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


def _rewrite(data: bytes, **fields) -> bytes:
    """``data`` with header ``fields`` replaced and both checksums recomputed, so that they pass."""
    values = dict(zip(_FIELDS, _HEAD.unpack_from(data), strict=True))
    values.update(fields)
    return _with_checksums(_HEAD.pack(*values.values()) + data[_HEAD.size :])


def _with_checksums(data: bytes) -> bytes:
    """``data`` with the header checksum and the file checksum recomputed (if it is long enough to hold them)."""
    if len(data) < _HEAD.size + 8:
        return data
    head = data[: _HEAD.size] + struct.pack("<I", zlib.crc32(data[: _HEAD.size]))
    body = head + data[_HEAD.size + 4 : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_changed_header_fields_are_named_before_decoding():
    m = model()
    x = images(3)
    data = compress(m, x, seed=4, group=2)
    assert torch.equal(decompress(m, _rewrite(data)), x)  # the helper itself changes nothing
    cases = {
        "header field group is 0": {"group": 0},
        "header field plan is 7": {"plan": 7},
        "header field budget is 5: the full plan": {"budget": 5},
        "header field budget is 0: plan uniform": {"plan": 2},
        "header field bits is 3": {"bits": 3},
        "header field height is 7": {"height": 7},
        "header field levels is 16": {"levels": 16},
        "header field channels is 0": {"channels": 0},
        "header field count is 100000": {"count": 100_000},
        "plan dp and budget 3 give no plan": {"plan": 1, "budget": 3},  # no per-step losses in this model
        "different model": {"fingerprint": bytes(16)},
    }
    for needle, fields in cases.items():
        with pytest.raises(CodecError) as e:
            decompress(m, _rewrite(data, **fields))
        assert needle in str(e.value) and "device" not in str(e.value), (fields, str(e.value))
    # fields that only decoding can check: the message names them beside the device
    for fields in ({"seed": 5}, {"pixels_crc": 1}, {"count": 2}):
        with pytest.raises(CodecError, match="seed|unexpected bytes") as e:
            decompress(m, _rewrite(data, **fields))
        assert "\n" not in str(e.value)


def test_one_bit_images_keep_their_bits_and_other_depths_are_refused():
    m = model()
    x = images(3, levels=2)
    data = compress(m, x, bits=1)
    assert read_header(data)["bits"] == 1 and torch.equal(decompress(m, data), x)
    assert read_header(compress(m, x))["bits"] == 8
    with pytest.raises(ValueError, match="1-bit images hold levels 0 and 1 only, got 16"):
        compress(m, images(3), bits=1)
    with pytest.raises(ValueError, match="bits must be 1 or 8"):
        compress(m, x, bits=16)
    with pytest.raises(CodecError, match="header field bits is 1, but the images hold levels up to 16"):
        decompress(m, _rewrite(compress(m, images(3)), bits=1))
    rgb = model(shape=(3, 4, 4), levels=2)
    with pytest.raises(ValueError, match="1-bit images have one channel, the model codes 3"):
        compress(rgb, images(2, shape=(3, 4, 4), levels=2), bits=1)
    with pytest.raises(CodecError, match="header field bits is 1: 1-bit images have one channel, the header says 3"):
        decompress(rgb, _rewrite(compress(rgb, images(2, shape=(3, 4, 4), levels=2)), bits=1))


@pytest.mark.parametrize(
    "kw,needle",
    [({"seed": 2**32}, "seed must be in 0..4294967295"), ({"seed": -1}, "seed must be"),
     ({"group": 0}, "group must be in 1..65535"), ({"group": 2**16}, "group must be"),
     ({"plan": "uniform", "budget": 2**32}, "budget must be in 1..")],
)  # fmt: skip
def test_values_that_do_not_fit_the_header_are_one_line_errors(kw, needle):
    with pytest.raises(ValueError, match=needle):
        compress(model(), images(2), **kw)


N_FUZZ = 1200  # about a minute on the 2-core dev machine under load


@pytest.mark.fuzz
def test_fuzzed_files_are_rejected_or_decode_exactly():
    """Over a thousand seeded mutations of a small file (bit flips, truncations, insertions and deletions,
    half of them behind recomputed checksums; header fields and payload bytes changed, all behind
    recomputed checksums): every one either decodes to the original pixels or is a one-line
    CodecError, never another exception and never other pixels."""
    m = model(shape=(1, 4, 4))
    x = images(3, shape=(1, 4, 4))
    data = compress(m, x, seed=9, group=2)
    rng = np.random.default_rng(2024)
    originals = dict(zip(_FIELDS, _HEAD.unpack_from(data), strict=True))
    widths = {"version": 8, "plan": 8, "budget": 32, "channels": 8, "height": 16, "width": 16, "levels": 16,
              "bits": 8, "seed": 32, "group": 16, "count": 32, "pixels_crc": 32}  # fmt: skip

    def mutate() -> tuple[str, bytes]:
        buf = bytearray(data)
        kind = rng.choice(["flip", "truncate", "insert", "delete", "field", "field", "body"])
        if kind == "flip":
            for pos in rng.integers(0, len(buf), rng.integers(1, 4)):
                buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == "truncate":
            buf = buf[: int(rng.integers(0, len(buf)))]
        elif kind == "insert":
            pos = int(rng.integers(0, len(buf) + 1))
            buf[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif kind == "delete":
            pos = int(rng.integers(0, len(buf)))
            del buf[pos : pos + int(rng.integers(1, 9))]
        elif kind == "body":  # the length table and payloads, behind valid checksums
            pos = int(rng.integers(_HEAD.size + 4, len(buf) - 4))
            if rng.random() < 0.5:
                buf[pos] = int(rng.integers(0, 256))
            else:  # zero bytes, e.g. a whole rANS word
                end = min(pos + int(rng.integers(1, 5)), len(buf) - 4)
                buf[pos:end] = bytes(end - pos)
            return kind, _with_checksums(bytes(buf))
        else:
            name = str(rng.choice([*widths, "fingerprint"]))
            if name == "fingerprint":
                value = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
            else:
                top = 2 ** widths[name] - 1
                value = int(rng.choice([0, 1, 2, 3, top, originals[name] + 1, max(originals[name] - 1, 0)]))
                value = min(value, top) if rng.random() < 0.7 else int(rng.integers(0, top + 1))
            return f"{kind} {name}={value!r}", _rewrite(data, **{name: value})
        out = bytes(buf)
        return kind, _with_checksums(out) if rng.random() < 0.5 else out

    failures, outcomes, fields = [], {"decoded": 0, "rejected": 0}, set()
    for _ in range(N_FUZZ):
        what, bad = mutate()
        try:
            y = decompress(m, bad)
        except CodecError as e:
            outcomes["rejected"] += 1
            fields.update(re.findall(r"header field (\w+)", str(e)))
            if not str(e) or "\n" in str(e):
                failures.append(f"{what}: CodecError without a one-line message: {e!r}")
        except Exception as e:  # noqa: BLE001 (any other exception is the failure this test looks for)
            failures.append(f"{what}: {type(e).__name__}: {e}")
        else:
            outcomes["decoded"] += 1
            if not torch.equal(y, x):
                failures.append(f"{what}: decoded into other pixels")
            if read_header(bad)["bits"] == 1:  # would be written as 1-bit PNGs
                failures.append(f"{what}: decoded as 1-bit images")
    assert not failures, f"{len(failures)} of {N_FUZZ} mutations: " + "; ".join(failures[:5])
    assert outcomes["rejected"] > 0.9 * N_FUZZ and outcomes["decoded"] >= 1, outcomes  # unchanged fields decode
    assert len(fields) >= 6, fields  # the header mutations reach the checks of many fields
