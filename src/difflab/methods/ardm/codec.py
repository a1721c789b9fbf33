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
    channels u8 | height u16 | width u16 | levels u16 | seed u32 | group u16 | count u32
    pixels crc32 u32 (of all images' uint8 pixels, in order) | header crc32 u32
    length table: the smallest payload length in bytes (LEB128 varint) | Rice parameter k u8 |
        every image's payload length minus the smallest, Rice-coded (quotient in unary, k
        remainder bits, most significant bit first), padded to a whole byte
    every image's payload (the rANS words as u32, with the top word's leading zero bytes left out)
    crc32 of everything before it u32

The order of stage ``s`` is ``numpy.random.default_rng([seed, s]).permutation(D)``; images are
coded in groups of ``group`` (one network call serves a group), and the decoder uses the same
groups. A file that is truncated, corrupted, made with another model or decoded into pixels
whose checksum differs is rejected with a :class:`CodecError`.
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
VERSION = 3  # 3: Rice-coded length table; 2: byte-trimmed payloads, varint lengths; 1: whole 32-bit words
PLANS = {"full": 0, "dp": 1, "uniform": 2}
_HEAD = struct.Struct("<4sBBI16sBHHHIHII")


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
    nll_bits: list[float] | None = None,
) -> bytes:
    """Code ``images`` (N, C, H, W) of integer levels, each image on its own, into one ``.ardm`` byte string.

    ``nll_bits``, a list, receives each image's NLL in bits under the coding order and plan (the
    ideal code length, from the same float64 probabilities the coder quantizes).
    """
    c = _coder()
    x_all = check_images(images, model)
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}; valid: {', '.join(PLANS)}")
    if plan != "full" and budget is None:
        raise ValueError(f"plan {plan!r} needs a budget (number of network calls)")
    plans = _plans(model, plan, budget)
    orders = orders_from_seed(seed, model.D, model.num_stages)
    ch, h, w = model.shape
    pixels_crc = zlib.crc32(x_all.to(torch.uint8).numpy().tobytes())
    head = _HEAD.pack(
        MAGIC, VERSION, PLANS[plan], budget or 0, model.fingerprint, ch, h, w, model.levels, seed, group, len(x_all),
        pixels_crc,
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
    """The header fields of an ``.ardm`` byte string (checks magic, version, checksums and length)."""
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
    names = ("magic", "version", "plan", "budget", "fingerprint", "channels", "height", "width", "levels", "seed")
    out = dict(zip(names, fields[:10], strict=True))
    out.update(group=fields[10], count=fields[11], pixels_crc=fields[12])
    out["plan"] = {v: k for k, v in PLANS.items()}.get(out["plan"], out["plan"])
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
    if (hd["channels"], hd["height"], hd["width"]) != tuple(model.shape) or hd["levels"] != model.levels:
        raise CodecError("the file's image shape or levels differ from the model's")
    if not isinstance(hd["plan"], str):
        raise CodecError(f"corrupt file (unknown plan id {hd['plan']})")
    plans = _plans(model, hd["plan"], hd["budget"] or None)
    orders = orders_from_seed(hd["seed"], model.D, model.num_stages)
    records = [_unpack(raw) for raw in _payloads(data, hd["count"])]
    family = c.stream.model.Categorical(perfect=False)
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(records), hd["group"]):
            part = records[start : start + hd["group"]]
            coders = [c.stream.stack.AnsCoder(words) for words in part]
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
            "the decoded pixels fail the checksum: decode on the kind of device (and thread count) that encoded "
            "the file, with the same model"
        )
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
