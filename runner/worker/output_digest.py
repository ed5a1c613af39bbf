"""What an operation's output was, as a short value two runs can compare: where the tensors are.

The twin step (:mod:`runner.worker.audit_step`) needs to know whether the two runs of a step gave
every operation the same output bits, and which operation first did not. Hashing each output on
the host would copy every output of both twins off the GPU (gigabytes a step at a large batch).
Instead :func:`fingerprint` reduces a tensor's bytes, read as 64-bit integers, to one 64-bit
integer on the tensor's own device: each word is multiplied by an odd key of its position and put
through a non-linear integer mix, then the words are summed. Integer sums wrap exactly and do not depend on
the order the device adds in, so the fingerprint of the same bits is the same on every run, and a
word that differs changes it (two or more that differ leave it unchanged with a chance of about
one in 2**64). :class:`DeviceFingerprints` keeps the results on the device, without a sync, and
reads them all in one transfer per device when the step is over. Tensors on the CPU are hashed
with sha256 where they are: there is nothing to transfer.

Each tensor's dtype, shape and layout are part of what is compared (known on the host, free).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol


def _signed(c: int) -> int:
    """A 64-bit pattern as the signed integer torch's int64 arithmetic takes."""
    c &= (1 << 64) - 1
    return c - (1 << 64) if c >> 63 else c


# 64-bit odd constants (splitmix64's)
_GOLDEN, _MIX1, _MIX2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
CHUNK_WORDS = 1 << 22  # words mixed at once: bounds the scratch memory to 32 MB on a device


class Digests(Protocol):
    """How a trace digests each operation's output: :meth:`of` as the operation runs, :meth:`settle`
    once the step is over (what :meth:`of` gave, made final)."""

    def of(self, out: Any) -> Any: ...

    def settle(self, digests: list[Any]) -> list[Any]: ...


def head(t: Any) -> str:
    """What a tensor is, without its values: dtype, shape, layout."""
    return f"{t.dtype}|{tuple(t.shape)}|{t.layout}"


def has_bytes(t: Any) -> bool:
    """Whether a tensor's values can be read as bytes (strided, not meta, not quantized)."""
    return t.layout == _torch().strided and not t.is_meta and not t.is_quantized


def words(t: Any) -> Any:
    """A tensor's bytes in row-major order as int64 words (the last one padded with zero bytes):
    a view where the bytes already lie so, else a copy."""
    torch = _torch()
    c = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)
    if c.numel() % 8 or c.storage_offset() % 8:
        padded = c.new_zeros((c.numel() + 7) // 8 * 8)
        padded[: c.numel()] = c
        c = padded
    return c.view(torch.int64)


def position_keys(n: int, device: Any) -> Any:
    """``n`` odd int64 keys, one per word position, from a mix of the position."""
    torch = _torch()
    keys = torch.arange(n, dtype=torch.int64, device=device).mul_(_GOLDEN).add_(_MIX1)
    return _mix(_fold(keys).mul_(_MIX1)).bitwise_or_(1)


def _fold(x: Any) -> Any:
    """In place, ``x ^= x >> 32`` with a logical shift: each word's high 32 bits xored into its low
    32 (an int32 view of the words, on a little-endian device: one pass over half the words; torch's
    ``>>`` on int64 copies the sign bit and would need a mask and two more passes)."""
    torch = _torch()
    halves = x.view(torch.int32).view(-1, 2)
    halves[:, 0].bitwise_xor_(halves[:, 1])
    return x


def _mix(x: Any) -> Any:
    """In place, a bijection of int64 words: fold the high half down, multiply by an odd constant,
    fold again (murmur3's finaliser, with shifts of 32)."""
    return _fold(_fold(x).mul_(_MIX2))


def fingerprint(t: Any, keys: Any | None = None, chunk: int = CHUNK_WORDS) -> Any:
    """A 0-dim int64 tensor on ``t``'s device: the wrapped sum over ``t``'s words of
    mix(word × key(position)), each key odd (so each word's product is a bijection of it and words
    that differ stay different). ``keys``: :func:`position_keys` of at least ``min(len, chunk)`` on
    that device (made here when None). Same bits, same value; not read back here (no sync).
    Five passes over the words (multiply, fold, multiply, fold, sum), in chunks of ``chunk``."""
    torch = _torch()
    w = words(t)
    n = w.numel()
    if keys is None or keys.numel() < min(n, chunk):
        keys = position_keys(min(n, chunk), w.device)
    total = torch.zeros((), dtype=torch.int64, device=w.device)
    for c, start in enumerate(range(0, n, chunk)):
        part = w[start : start + chunk]
        x = torch.mul(part, keys[: part.numel()])
        if c:  # a later chunk's positions: its products shifted by the chunk's number
            x.add_(_signed(c * _GOLDEN))
        total.add_(_mix(x).sum())
    return total


class DeviceFingerprints:
    """Digests of operation outputs for a comparison between runs on this machine: sha256 for
    tensors on the CPU (they are on the host already, and hashlib is faster there than torch's
    integer kernels), :func:`fingerprint` for tensors on a device, read back in one transfer per
    device by :meth:`settle`. ``host``: the device types hashed on the host (``()``: none, every
    tensor fingerprinted with torch, as a test does on the CPU)."""

    def __init__(self, host: tuple[str, ...] = ("cpu",), chunk: int = CHUNK_WORDS):
        self.host, self.chunk = host, chunk
        self.pending: list[Any] = []  # 0-dim int64 tensors, on their devices
        self.keys: dict[str, Any] = {}  # position keys per device

    def of(self, out: Any) -> tuple[Any, ...] | None:
        """The digest of an operation's output (its tensor leaves; None when it has none): a tuple
        of heads, host hashes and indices into :attr:`pending`, made final by :meth:`settle`."""
        torch = _torch()
        from torch.utils._pytree import tree_leaves

        parts: list[Any] = []
        for x in tree_leaves(out):
            if not isinstance(x, torch.Tensor):
                continue
            parts.append(head(x))
            if has_bytes(x):
                parts.append(self._one(x.detach()))
        return tuple(parts) or None

    def _one(self, t: Any) -> str | int:
        """A host tensor's sha256, or the index of a device tensor's pending fingerprint."""
        if t.device.type in self.host:
            return tensor_sha256(t)
        n = min(t.numel() * t.element_size() // 8 + 1, self.chunk)
        keys = self.keys.get(str(t.device))
        if keys is None or keys.numel() < n:
            keys = self.keys[str(t.device)] = position_keys(max(n, 1 << 12), t.device)
        self.pending.append(fingerprint(t, keys, self.chunk))
        return len(self.pending) - 1

    def settle(self, digests: list[Any]) -> list[str | None]:
        """``digests`` (from :meth:`of`) as strings: the device fingerprints read, one transfer per
        device."""
        read = self.read()
        return [None if d is None else "|".join(_part(p, read) for p in d) for d in digests]

    def read(self) -> list[int]:
        """Every pending fingerprint's value, in order: one stack and copy per device."""
        torch = _torch()
        by_device: dict[str, list[int]] = {}
        for i, f in enumerate(self.pending):
            by_device.setdefault(str(f.device), []).append(i)
        values = [0] * len(self.pending)
        for idx in by_device.values():
            got = torch.stack([self.pending[i] for i in idx]).cpu().tolist()
            for i, v in zip(idx, got, strict=True):
                values[i] = v
        self.pending = []
        return values


def _part(p: Any, read: list[int]) -> str:
    return f"{read[p] & 0xFFFFFFFFFFFFFFFF:016x}" if isinstance(p, int) else p


def tensor_sha256(t: Any) -> str:
    """A tensor's sha256 over its dtype, shape and bytes (copied to the host when elsewhere);
    its head alone when it has no bytes to read."""
    t = t.detach()
    if not has_bytes(t):
        return head(t)
    c = t.cpu().resolve_conj().resolve_neg().contiguous()
    h = hashlib.sha256(f"{c.dtype}|{tuple(c.shape)}|".encode())
    h.update(c.reshape(-1).view(_torch().uint8).numpy())
    return h.hexdigest()


def _torch() -> Any:
    import torch

    return torch
