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
    per image: payload length in bytes (LEB128 varint) | payload (the rANS words as u32, with the
        top word's leading zero bytes left out)
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
VERSION = 2  # 2: byte-trimmed payloads (version 1 stored whole 32-bit words)
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
            raise CodecError("truncated file (inside an image record)")
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos
        if shift > 35:
            raise CodecError("corrupt file (bad record length)")


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
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x_all), group):
            x = x_all[start : start + group]
            calls = _group_probs(model, x, orders, plans)
            if nll_bits is not None:
                bits = torch.zeros(len(x), dtype=torch.float64)
                for digits, probs in calls:
                    bits -= torch.log2(probs.gather(-1, digits[..., None]).squeeze(-1)).sum(1)
                nll_bits.extend(bits.tolist())
            arrays = [(digits.numpy().astype(np.int32), probs.numpy()) for digits, probs in reversed(calls)]
            for i in range(len(x)):
                coder = c.stream.stack.AnsCoder()
                for digits, probs in arrays:
                    coder.encode_reverse(digits[i], family, probs[i])
                raw = _pack(coder.get_compressed())
                out += _varint(len(raw)) + raw
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
    pos, end = _HEAD.size + 4, len(data) - 4
    records: list[np.ndarray] = []
    for _ in range(hd["count"]):
        n, pos = _read_varint(data, pos)
        if pos + n > end:
            raise CodecError("truncated file (an image record runs past the end)")
        records.append(_unpack(data[pos : pos + n]))
        pos += n
    if pos != end:
        raise CodecError(f"corrupt file ({end - pos} unexpected bytes after the last image)")
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


def payload_bits(data: bytes) -> list[int]:
    """Bits of every image's payload (without its length field) of an ``.ardm`` byte string."""
    hd = read_header(data)
    pos, bits = _HEAD.size + 4, []
    for _ in range(hd["count"]):
        n, pos = _read_varint(data, pos)
        bits.append(8 * n)
        pos += n
    return bits


def order_nll(
    model: Any, images: Tensor, *, plans: Sequence[Any] | None = None, seed: int = 0, group: int = 64
) -> Tensor:
    """Exact NLL in bits (N,) of ``images`` for the coding order of ``seed`` (what the codec should reach)."""
    x_all = check_images(images, model)
    plans = list(plans) if plans is not None else [None] * model.num_stages
    orders = orders_from_seed(seed, model.D, model.num_stages)
    out = []
    with torch.no_grad():
        for start in range(0, len(x_all), group):
            x = x_all[start : start + group]
            bits = torch.zeros(len(x), dtype=torch.float64)
            for digits, probs in _group_probs(model, x, orders, plans):
                bits -= torch.log2(probs.gather(-1, digits[..., None]).squeeze(-1)).sum(1)
            out.append(bits)
    return torch.cat(out)
