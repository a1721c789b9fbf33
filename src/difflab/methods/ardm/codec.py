"""Lossless image compression with an ARDM and rANS (Hoogeboom et al. 2022, section 4.3).

With a fixed order, every variable's categorical is known to the encoder and to the decoder,
so an entropy coder codes each image on its own, with no bits-back overhead: the coded size is
the model's NLL for that order plus at most a few bits per image. The entropy coder is rANS from
the ``constriction`` package (``AnsCoder`` with a leaky quantized ``Categorical``: every symbol
keeps a non-zero probability, so no image is ever uncodable). The network runs in float32 and
the head in float64, with one thread and the same batch composition on both sides, so encoder
and decoder compute bit-identical probabilities.

File format (all integers little-endian)::

    magic  b"ARDM" | version u8 | plan u8 (0 full, 1 dp, 2 uniform) | budget u32
    fingerprint 16 bytes (sha256 of the model's weights, config and per-step losses)
    channels u8 | height u16 | width u16 | levels u16 | bits u8 (8, or 1: 1-bit images) | seed u32 |
        group u16 | count u32
    pixels crc32 u32 (of all images' uint8 pixels, in order) | header crc32 u32
    length table: the smallest payload length in bytes (LEB128 varint) | Rice parameter k u8 |
        every image's payload length minus the smallest, Rice-coded (quotient in unary, k
        remainder bits, most significant bit first), padded to a whole byte
    every image's payload (the rANS words as u32, with the top word's leading zero bytes left out)
    crc32 of everything before it u32

The order of stage ``s`` is ``numpy.random.default_rng([seed, s]).permutation(D)``; images are
coded in groups of ``group`` (one network call serves a group), and the decoder uses the same
groups. A file that is truncated, corrupted, made with another model, has a header field that
cannot be right (named in the message) or is decoded into pixels whose checksum differs is
rejected with a :class:`CodecError`.

The contract is lossless in pixel values: :func:`decompress` returns exactly the levels that
:func:`compress` got. ``bits`` only tells a caller how to write the images back: 8 for 8-bit
files (levels 0..K-1), 1 for 1-bit files (levels 0 and 1), so that ``difflab decompress`` writes a
1-bit PNG back as a 1-bit PNG.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .objective import orders_from_seed, walk
from .parallel import make_plans

MAGIC = b"ARDM"
VERSION = 4  # 4: bits field; 3: Rice-coded length table; 2: byte-trimmed payloads, varint lengths; 1: whole words
PLANS = {"full": 0, "dp": 1, "uniform": 2}
BITS = (1, 8)  # bits per pixel of the images a file holds (1: levels 0 and 1 only)
_HEAD = struct.Struct("<4sBBI16sBHHHBIHII")
_FIELDS = (
    "magic", "version", "plan", "budget", "fingerprint", "channels", "height", "width", "levels", "bits", "seed",
    "group", "count", "pixels_crc",
)  # fmt: skip


class CodecError(ValueError):
    """A compressed file that cannot be decoded (truncated, corrupt, other model, other format)."""


def _coder() -> Any:
    try:
        import constriction
    except ImportError:
        raise ImportError("the ARDM codec needs the constriction package: pip install 'difflab[ardm]'") from None
    return constriction


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise CodecError("truncated file (inside the length table)")
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos
        if shift > 35:
            raise CodecError("corrupt file (bad length table)")


def _rice_encode(values: Sequence[int]) -> bytes:
    """Non-negative integers -> Rice code with the parameter ``k`` that makes it shortest.

    The payload lengths of one file spread over a few hundred bytes, so a Rice code of their
    distances from the smallest one costs about 9 bits per image where a varint costs 16.
    Hand-written: a few lines, and no package offers a Rice code over Python integers.
    """
    if not values:
        return bytes([0])
    k = min(range(25), key=lambda j: sum((v >> j) + 1 + j for v in values))
    bits = "".join("1" * (v >> k) + "0" + (format(v & ((1 << k) - 1), f"0{k}b") if k else "") for v in values)
    bits += "0" * (-len(bits) % 8)
    return bytes([k]) + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _rice_decode(buf: bytes, pos: int, count: int) -> tuple[list[int], int]:
    """Inverse of :func:`_rice_encode`: ``count`` integers read from ``buf[pos:]``, and the position after them."""
    if pos >= len(buf):
        raise CodecError("truncated file (inside the length table)")
    k, pos = buf[pos], pos + 1
    if k > 24:
        raise CodecError("corrupt file (bad length table)")
    out, i, bits, nxt = [], 0, "", pos
    for _ in range(count):
        while (j := bits.find("0", i)) < 0 or j + 1 + k > len(bits):
            if nxt >= len(buf):
                raise CodecError("truncated or corrupt file (inside the length table)")
            bits += "".join(format(b, "08b") for b in buf[nxt : nxt + 4096])  # the table is read as needed
            nxt += 4096
        out.append(((j - i) << k) | (int(bits[j + 1 : j + 1 + k], 2) if k else 0))
        i = j + 1 + k
    return out, pos + (i + 7) // 8


def _pack(words: np.ndarray) -> bytes:
    """rANS words -> bytes, without the leading zero bytes of the top word (the last one).

    The top word holds the upper half of the coder's final state; its value is spread about
    evenly over its bit lengths, so whole words waste about 16 bits per image and bytes about 4.
    """
    raw = words.astype("<u4").tobytes()
    if len(words) and int(words[-1]):
        raw = raw[: len(raw) - (32 - int(words[-1]).bit_length()) // 8]
    return raw


def _unpack(raw: bytes) -> np.ndarray:
    """Inverse of :func:`_pack` (pads the top word back to 4 bytes with zeros)."""
    return np.frombuffer(raw + b"\0" * (-len(raw) % 4), dtype="<u4").astype(np.uint32)


def check_images(images: Tensor, model: Any) -> Tensor:
    """``images`` (N, C, H, W) integer levels of the model's shape -> (N, D) long; else a one-line error."""
    shape, k = tuple(model.shape), model.levels
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        got = tuple(images.shape[1:]) if images.ndim == 4 else tuple(images.shape)
        raise ValueError(
            f"image shape {got} does not match the model, which codes {shape[0]}-channel "
            f"{shape[1]}x{shape[2]} images (C, H, W)"
        )
    if images.is_floating_point() or int(images.min()) < 0 or int(images.max()) >= k:
        raise ValueError(f"images must hold integer levels 0..{k - 1}")
    return images.reshape(len(images), -1).long()


def _plans(model: Any, plan: str, budget: int | None) -> list[Any]:
    if plan == "full":
        return [None] * model.num_stages
    return make_plans(plan, budget, model.D, getattr(model, "step_losses", None), model.num_stages)


def _nll_bits(calls: list[tuple[Tensor, Tensor]], n: int) -> Tensor:
    """float64 bits (n,) of the true digits under the probabilities of :func:`_group_probs`."""
    bits = torch.zeros(n, dtype=torch.float64)
    for digits, probs in calls:
        bits -= torch.log2(probs.gather(-1, digits[..., None]).squeeze(-1)).sum(1)
    return bits


def _group_probs(model: Any, x: Tensor, orders: list[np.ndarray], plans: list[Any]) -> list[tuple[Tensor, Tensor]]:
    """(digits (B, n), float64 probs (B, n, b)) of every network call for the true images ``x``."""
    out = []
    for s, known, idx in walk(orders, plans, model.D):
        probs = model.digit_probs(x, known.expand(len(x), -1), s, idx)
        r_s, r_d = model.R[s], model.R[s + 1]
        digits = torch.div(x[:, idx] % r_s, r_d, rounding_mode="floor")
        out.append((digits, probs))
    return out


def compress(
    model: Any,
    images: Tensor,
    *,
    plan: str = "full",
    budget: int | None = None,
    seed: int = 0,
    group: int = 64,
    bits: int = 8,
    nll_bits: list[float] | None = None,
) -> bytes:
    """Code ``images`` (N, C, H, W) of integer levels, each image on its own, into one ``.ardm`` byte string.

    ``bits`` (stored in the header): 8, or 1 for 1-bit images (levels 0 and 1 only), which
    ``difflab decompress`` then writes back as 1-bit PNGs. ``nll_bits``, a list, receives each
    image's NLL in bits under the coding order and plan (the ideal code length, from the same
    float64 probabilities the coder quantizes).
    """
    c = _coder()
    x_all = check_images(images, model)
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}; valid: {', '.join(PLANS)}")
    if plan != "full" and budget is None:
        raise ValueError(f"plan {plan!r} needs a budget (number of network calls)")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in 0..{2**32 - 1} (a u32 of the header), got {seed}")
    if not 1 <= group < 2**16:
        raise ValueError(f"group must be in 1..{2**16 - 1} (a u16 of the header), got {group}")
    if plan != "full" and not 1 <= budget < 2**32:  # type: ignore[operator]
        raise ValueError(f"budget must be in 1..{2**32 - 1} (a u32 of the header), got {budget}")
    if bits not in BITS:
        raise ValueError(f"bits must be 1 or 8, got {bits}")
    if bits == 1 and len(x_all) and int(x_all.max()) > 1:
        raise ValueError(f"1-bit images hold levels 0 and 1 only, got {int(x_all.max())}")
    if bits == 1 and model.shape[0] != 1:
        raise ValueError(f"1-bit images have one channel, the model codes {model.shape[0]}")
    if len(x_all) >= 2**32:
        raise ValueError(f"at most {2**32 - 1} images per file, got {len(x_all)}")
    plans = _plans(model, plan, budget)
    orders = orders_from_seed(seed, model.D, model.num_stages)
    ch, h, w = model.shape
    pixels_crc = zlib.crc32(x_all.to(torch.uint8).numpy().tobytes())
    head = _HEAD.pack(
        MAGIC, VERSION, PLANS[plan], 0 if plan == "full" else budget, model.fingerprint, ch, h, w, model.levels, bits,
        seed, group, len(x_all), pixels_crc,
    )  # fmt: skip
    out = bytearray(head + struct.pack("<I", zlib.crc32(head)))
    family = c.stream.model.Categorical(perfect=False)
    payloads: list[bytes] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x_all), group):
            x = x_all[start : start + group]
            calls = _group_probs(model, x, orders, plans)
            if nll_bits is not None:
                nll_bits.extend(_nll_bits(calls, len(x)).tolist())
            arrays = [(digits.numpy().astype(np.int32), probs.numpy()) for digits, probs in reversed(calls)]
            for i in range(len(x)):
                coder = c.stream.stack.AnsCoder()
                for digits, probs in arrays:
                    coder.encode_reverse(digits[i], family, probs[i])
                payloads.append(_pack(coder.get_compressed()))
    base = min(map(len, payloads), default=0)
    out += _varint(base) + _rice_encode([len(p) - base for p in payloads]) + b"".join(payloads)
    out += struct.pack("<I", zlib.crc32(bytes(out)))
    return bytes(out)


def read_header(data: bytes) -> dict[str, Any]:
    """The header fields of an ``.ardm`` byte string (checks magic, version, checksums, length, and every
    field that can be checked without the model: a bad one is a :class:`CodecError` that names it)."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise CodecError("not an ARDM file (bad magic)")
    if len(data) < _HEAD.size + 8:
        raise CodecError("truncated file (shorter than the header)")
    fields = _HEAD.unpack_from(data)
    if fields[1] != VERSION:
        raise CodecError(f"unsupported ARDM file version {fields[1]} (this difflab reads version {VERSION})")
    (crc,) = struct.unpack_from("<I", data, _HEAD.size)
    if crc != zlib.crc32(data[: _HEAD.size]):
        raise CodecError("corrupt file (header checksum mismatch)")
    (total,) = struct.unpack_from("<I", data, len(data) - 4)
    if total != zlib.crc32(data[:-4]):
        raise CodecError("corrupt or truncated file (file checksum mismatch)")
    out = dict(zip(_FIELDS, fields, strict=True))

    def bad(name: str, why: str) -> CodecError:
        return CodecError(f"corrupt file (header field {name} is {out[name]}: {why})")

    plans = {v: k for k, v in PLANS.items()}
    if out["plan"] not in plans:
        raise bad("plan", f"not a plan id; valid: {', '.join(f'{v} ({k})' for k, v in PLANS.items())}")
    out["plan"] = plans[out["plan"]]
    if out["plan"] == "full" and out["budget"]:
        raise bad("budget", "the full plan stores budget 0")
    if out["plan"] != "full" and not out["budget"]:
        raise bad("budget", f"plan {out['plan']} needs a budget of at least 1 network call")
    for name in ("channels", "height", "width", "group"):
        if out[name] < 1:
            raise bad(name, "must be at least 1")
    if out["levels"] < 2:
        raise bad("levels", "must be at least 2")
    if out["bits"] not in BITS:
        raise bad("bits", "must be 1 or 8")
    if out["bits"] == 1 and out["channels"] != 1:
        raise bad("bits", f"1-bit images have one channel, the header says {out['channels']}")
    if out["count"] > 8 * len(data):  # every image takes at least one bit of the length table
        raise bad("count", f"more images than a file of {len(data)} bytes can hold")
    return out


def decompress(model: Any, data: bytes) -> Tensor:
    """Decode an ``.ardm`` byte string into (N, C, H, W) uint8 levels, exactly as coded."""
    c = _coder()
    hd = read_header(data)
    if hd["fingerprint"] != model.fingerprint:
        raise CodecError(
            f"this file was made with a different model (fingerprint {hd['fingerprint'].hex()[:16]}, "
            f"the given model has {model.fingerprint.hex()[:16]}): decode it with the model that coded it"
        )
    # the fingerprint covers the model's config, so a shape or levels field that differs from it is corrupt
    for name, want in zip(("channels", "height", "width", "levels"), (*model.shape, model.levels), strict=True):
        if hd[name] != want:
            raise CodecError(
                f"corrupt file (header field {name} is {hd[name]}, but the file's model (its fingerprint matches) "
                f"has {want})"
            )
    try:
        plans = _plans(model, hd["plan"], hd["budget"] or None)
    except ValueError as e:
        raise CodecError(
            f"corrupt file (header fields plan {hd['plan']} and budget {hd['budget']} give no plan for this model: {e})"
        ) from None
    orders = orders_from_seed(hd["seed"], model.D, model.num_stages)
    records = [_unpack(raw) for raw in _payloads(data, hd["count"])]
    family = c.stream.model.Categorical(perfect=False)
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(records), hd["group"]):
            part = records[start : start + hd["group"]]
            try:
                coders = [c.stream.stack.AnsCoder(words) for words in part]
            except Exception as e:  # e.g. a stream that ends in a zero word
                raise CodecError(f"images {start}..: corrupt rANS stream ({e})") from None
            x = torch.zeros(len(part), model.D, dtype=torch.long)
            for s, known, idx in walk(orders, plans, model.D):
                probs = model.digit_probs(x, known.expand(len(x), -1), s, idx).numpy()
                try:
                    digits = np.stack([np.asarray(coder.decode(family, probs[i])) for i, coder in enumerate(coders)])
                except Exception as e:  # constriction's own errors, e.g. a stream that runs out
                    raise CodecError(f"images {start}..: the rANS stream cannot be decoded ({e})") from None
                x[:, idx] += torch.from_numpy(digits.astype(np.int64)) * model.R[s + 1]
            out.append(x.to(torch.uint8))
    images = torch.cat(out).view(-1, *model.shape) if out else torch.zeros(0, *model.shape, dtype=torch.uint8)
    if zlib.crc32(images.numpy().tobytes()) != hd["pixels_crc"]:
        raise CodecError(
            "the decoded pixels fail the header's pixel checksum: the file was altered and its checksums "
            "recomputed (a field that only decoding can check, such as seed or group, or the payload), or it was "
            "encoded on another kind of device or thread count (decode it on the kind that encoded it)"
        )
    if hd["bits"] == 1 and len(images) and int(images.max()) > 1:
        raise CodecError(f"corrupt file (header field bits is 1, but the images hold levels up to {int(images.max())})")
    return images


def _payloads(data: bytes, count: int) -> list[bytes]:
    """Every image's payload, cut out of a checked ``.ardm`` byte string with the length table."""
    end = len(data) - 4
    base, pos = _read_varint(data, _HEAD.size + 4)
    extra, pos = _rice_decode(data[:end], pos, count)
    out = []
    for n in extra:
        if pos + base + n > end:
            raise CodecError("truncated file (an image record runs past the end)")
        out.append(data[pos : pos + base + n])
        pos += base + n
    if pos != end:
        raise CodecError(f"corrupt file ({end - pos} unexpected bytes after the last image)")
    return out


def payload_bits(data: bytes) -> list[int]:
    """Bits of every image's payload (without the length table) of an ``.ardm`` byte string."""
    return [8 * len(p) for p in _payloads(data, read_header(data)["count"])]


def order_nll(
    model: Any, images: Tensor, *, plans: Sequence[Any] | None = None, seed: int = 0, group: int = 64
) -> Tensor:
    """Exact NLL in bits (N,) of ``images`` for the coding order of ``seed`` (what the codec should reach)."""
    x_all = check_images(images, model)
    plans = list(plans) if plans is not None else [None] * model.num_stages
    orders = orders_from_seed(seed, model.D, model.num_stages)
    with torch.no_grad():
        parts = (x_all[start : start + group] for start in range(0, len(x_all), group))
        return torch.cat([_nll_bits(_group_probs(model, x, orders, plans), len(x)) for x in parts])
