"""The twin step's fingerprint of an operation's output (runner/worker/output_digest.py), run here on
the CPU with torch's integer kernels, as it runs on a GPU: the same bits give the same value
whatever the layout; one element changed, two swapped or two signs flipped give another; every
dtype, 0-dim, empty, odd-sized and non-contiguous tensors are read; a trace of two runs names the
operation whose output differed."""

from __future__ import annotations

import hashlib

import pytest
import torch

from runner.worker.audit_step import first_difference
from runner.worker.op_trace import TraceMode
from runner.worker.output_digest import DeviceFingerprints, fingerprint, tensor_sha256

DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
    torch.float8_e4m3fn,
]


def fp(t: torch.Tensor, chunk: int = 1 << 22) -> int:
    return int(fingerprint(t, chunk=chunk))


def sample(dtype: torch.dtype, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=g)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    return (torch.randn(shape, generator=g) * 20).to(dtype)


def one_bit_flipped(t: torch.Tensor, element: int) -> torch.Tensor:
    """A row-major copy of ``t`` with the lowest bit of one element's first byte flipped (for bool:
    True and False swapped)."""
    c = t.contiguous().clone()
    c.reshape(-1)[element : element + 1].view(torch.uint8)[0] ^= 1
    return c


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (1,), (3,), (5, 7), (2, 3, 4, 5)], ids=str)
def test_equal_tensors_agree_and_one_element_changed_differs(dtype, shape):
    x = sample(dtype, *shape)
    assert fp(x) == fp(x.clone()) == fp(x.contiguous().clone())
    n = x.numel()
    for i in sorted({0, n // 2, n - 1}):
        assert fp(one_bit_flipped(x, i)) != fp(x), (dtype, shape, i)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_non_contiguous_tensor_is_read_in_row_major_order(dtype):
    base = sample(dtype, 6, 10)
    views = {
        "transposed": base.t(),
        "strided": base[:, ::3],
        "offset": base.reshape(-1)[1:],  # starts one element in: its bytes are not 8-aligned
        "expanded": base[:1].expand(4, 10),
    }
    for name, v in views.items():
        assert fp(v) == fp(v.contiguous()), name
        assert fp(v) != fp(one_bit_flipped(v, v.numel() - 1)), name


def test_the_view_changes_with_its_own_elements_only():
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    v = base[:, ::3]
    before = fp(v)
    base[0, 1] = -1.0  # not in the view
    assert fp(v) == before
    base[0, 3] = -1.0  # in it
    assert fp(v) != before


def test_empty_tensors_and_the_other_shapes_of_the_same_bytes_differ_by_their_head():
    assert fp(torch.zeros(0)) == fp(torch.zeros(0, 3)) == 0
    d = DeviceFingerprints(host=())
    digests = [d.of(t) for t in (torch.zeros(0), torch.zeros(0, 3), torch.ones(6), torch.ones(2, 3))]
    settled = d.settle(digests)
    assert len(set(settled)) == 4


def test_what_a_plain_integer_sum_misses_is_caught():
    """A position-free sum misses a swap; a position-weighted one misses two sign flips of the top
    bit (2**63 twice); torch's sign-copying shift maps x and ~x alike. None of them here."""
    x = torch.arange(1, 65, dtype=torch.int64) * 1_000_003
    swapped = x.clone()
    swapped[[3, 40]] = swapped[[40, 3]]
    assert fp(swapped) != fp(x)
    signs = x.clone()
    signs[[2, 4]] ^= torch.tensor([-(1 << 63), -(1 << 63)])
    assert fp(signs) != fp(x)
    zero, ones = torch.zeros(8, dtype=torch.int64), torch.zeros(8, dtype=torch.int64)
    ones[5] = -1
    assert fp(ones) != fp(zero)
    floats = torch.randn(64, generator=torch.Generator().manual_seed(1))
    flipped = floats.clone()
    flipped[[0, 2]] = -flipped[[0, 2]]
    assert fp(flipped) != fp(floats)


def test_a_tensor_longer_than_a_chunk_keys_every_chunk_apart():
    x = torch.arange(64, dtype=torch.int64)
    assert fp(x, chunk=4) == fp(x.clone(), chunk=4)
    chunks_swapped = torch.cat([x[4:8], x[:4], x[8:]])
    assert fp(chunks_swapped, chunk=4) != fp(x, chunk=4)
    for i in (0, 5, 63):
        assert fp(one_bit_flipped(x, i), chunk=4) != fp(x, chunk=4)
    d = DeviceFingerprints(host=(), chunk=4)
    a, b = d.of(x), d.of(x.clone())
    assert len(d.pending) == 2  # nothing read back yet
    sa, sb = d.settle([a, b])
    assert sa == sb and d.pending == []


def test_the_value_does_not_depend_on_how_many_threads_add():
    x = torch.randn(1 << 18, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fp(x, chunk=1 << 15)
        torch.set_num_threads(max(2, threads))
        assert fp(x, chunk=1 << 15) == one
    finally:
        torch.set_num_threads(threads)


def test_outputs_of_every_kind_settle_to_strings_and_host_tensors_keep_their_sha256():
    out = (torch.ones(3, dtype=torch.bfloat16), torch.tensor(True), 4, torch.zeros(2, 2).t())
    for host in ((), ("cpu",)):
        d = DeviceFingerprints(host=host)
        first, again, none = d.of(out), d.of(tuple(t for t in out)), d.of([1, "x"])
        s1, s2, s3 = d.settle([first, again, none])
        assert s1 == s2 and s3 is None and "torch.bfloat16|(3,)" in s1
    meta = torch.empty(3, device="meta")
    assert tensor_sha256(meta) == "torch.float32|(3,)|torch.strided"
    # the sha256 a recorded trace holds: dtype, shape and the row-major bytes
    x = torch.arange(6, dtype=torch.int16).reshape(2, 3).t()
    want = hashlib.sha256(b"torch.int16|(3, 2)|" + x.contiguous().numpy().tobytes()).hexdigest()
    assert tensor_sha256(x) == want


def test_a_trace_of_two_runs_names_the_op_whose_output_differed(tmp_path):
    def step(g: torch.Generator) -> None:
        a = torch.ones(8, 8, dtype=torch.bfloat16).matmul(torch.ones(8, 8, dtype=torch.bfloat16))
        noise = torch.randn(8, generator=g)
        (a.float().sum(0) + noise).relu()

    rows = []
    for seed in (1, 2):
        with TraceMode(tmp_path, [], DeviceFingerprints(host=())) as mode:
            step(torch.Generator().manual_seed(seed))
        rows.append(mode.settle())
    assert [r["op"] for r in rows[0]] == [r["op"] for r in rows[1]]
    diff = first_difference(rows[0], rows[1])
    assert diff is not None and diff.op == "aten::randn"
    with TraceMode(tmp_path, [], DeviceFingerprints(host=())) as mode:
        step(torch.Generator().manual_seed(1))
    assert first_difference(rows[0], mode.settle()) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_on_a_gpu_the_fingerprint_is_the_cpu_ones_and_is_read_back_once(dtype):
    """Integer arithmetic is exact: the GPU's kernels, adding in their own order, give the value the
    CPU's give. The fingerprints stay on the GPU until :meth:`settle` reads them all."""
    xs = [sample(dtype, *s) for s in [(), (3,), (5, 7), (64, 33)]] + [sample(dtype, 6, 10)[:, ::3]]
    for x in xs:
        for chunk in (4, 1 << 22):
            assert int(fingerprint(x.cuda(), chunk=chunk)) == fp(x, chunk=chunk), (dtype, x.shape)
    d = DeviceFingerprints()
    digests = [d.of(x.cuda()) for x in xs] + [d.of(one_bit_flipped(xs[-2], 100).cuda())]
    assert all(p.is_cuda for p in d.pending) and len(d.pending) == len(xs) + 1
    settled = d.settle(digests)
    assert settled[-1] != settled[-3] and len(set(settled)) == len(settled)


def test_a_batch_digest_reads_every_leaf_and_changes_with_one_element():
    from runner.worker.audit_step import batch_digest

    batch = {"x": torch.arange(12, dtype=torch.float32).reshape(3, 4), "y": [torch.tensor(True), 3, "a"]}
    same = {"x": batch["x"].clone(), "y": [torch.tensor(True), 3, "a"]}
    assert batch_digest(batch) == batch_digest(same)
    changed = {"x": one_bit_flipped(batch["x"], 11), "y": batch["y"]}
    assert batch_digest(changed) != batch_digest(batch)
    assert batch_digest({**batch, "y": [torch.tensor(True), 4, "a"]}) != batch_digest(batch)
    assert batch_digest(7) == "7" and batch_digest(7) != batch_digest(8)


def test_a_lazily_conjugated_or_negated_view_is_read_as_its_values():
    z = sample(torch.complex64, 4, 3)
    assert fp(z.conj()) == fp(z.conj().resolve_conj()) != fp(z)
    neg = torch._neg_view(z)
    assert fp(neg) == fp(-z) != fp(z)
    assert tensor_sha256(z.conj()) == tensor_sha256(z.conj().resolve_conj())
