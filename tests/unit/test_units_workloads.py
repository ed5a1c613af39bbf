"""The benchmark workloads (experiments/mnist.py, experiments/resnet.py): ``model.channels_last``, and the
epoch permutations made ahead on a helper thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from experiments import mnist, resnet
from runner.core.errors import RunnerError
from runner.host import params

ROOT = Path(__file__).resolve().parents[2]


def _model(cls, channels_last: bool):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (32,), dtype=torch.uint8)
    return (
        cls(images, labels, channels=4, hidden=8, batch_size=8, channels_last=channels_last),
        images,
        labels,
    )


@pytest.mark.parametrize("cls", [mnist.MnistCNN, resnet.SmallResNet])
def test_channels_last_lays_out_weights_and_images_nhwc_and_computes_the_same(cls):
    nhwc, images, labels = _model(cls, True)
    nchw, _, _ = _model(cls, False)
    convs = [m for m in nhwc.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not all(c.weight.is_contiguous() for c in convs)
    x = nhwc.normalise(images[:8])
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert nchw.normalise(images[:8]).is_contiguous()
    # same weights, same data: the layout changes where numbers sit in memory, not the result
    nchw.load_state_dict(nhwc.state_dict())
    y = labels[:8].long()
    a, b = F.cross_entropy(nhwc(x), y), F.cross_entropy(nchw(nchw.normalise(images[:8])), y)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    for (_, p), (_, q) in zip(nhwc.named_parameters(), nchw.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("workload", ["mnist_ddp", "resnet_small"])
def test_the_workloads_ship_channels_last_off_and_the_schema_checks_it(workload):
    conf = yaml.safe_load((ROOT / "conf" / "experiment" / f"{workload}.yaml").read_text())
    assert conf["model"]["channels_last"] is False
    params.check(conf, conf["experiment"]["schemas"], ROOT)
    params.check(
        {**conf, "model": {**conf["model"], "channels_last": True}}, conf["experiment"]["schemas"], ROOT
    )
    with pytest.raises(RunnerError, match="channels_last"):
        params.check(
            {**conf, "model": {**conf["model"], "channels_last": "sideways"}},
            conf["experiment"]["schemas"],
            ROOT,
        )


def test_a_model_section_recorded_before_the_option_still_passes():
    """Runs recorded before ``channels_last`` existed have no such key; they trained NCHW."""
    conf = yaml.safe_load((ROOT / "conf" / "experiment" / "mnist_ddp.yaml").read_text())
    old = {k: v for k, v in conf["model"].items() if k != "channels_last"}
    params.check({**conf, "model": old}, conf["experiment"]["schemas"], ROOT)


def test_permutations_made_ahead_are_the_seeded_ones_in_any_order_of_epochs(monkeypatch):
    # the helper thread makes the next epoch's while one trains; a resume jumps to any epoch; the bits
    # are epoch_permutation's whichever thread made them
    threads = []
    seeded = mnist.epoch_permutation

    def recorded(*args):
        threads.append(threading.current_thread().name)
        return seeded(*args)

    monkeypatch.setattr(mnist, "epoch_permutation", recorded)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)  # as under fast on a host of 4 cores
    pool_sizes = []
    monkeypatch.setattr(torch, "set_num_threads", pool_sizes.append)
    made = mnist.Permutations(seed=3, n=1000)
    try:
        for epoch in [0, 1, 2, 7, 8, 3]:
            perm = made.made_ahead(epoch, pin=False)
            assert torch.equal(perm, seeded(3, epoch, 1000))
            assert list(made._ahead) == [epoch + 1]  # the next one is on its way
        assert made.made_ahead(4, pin=False).tolist() == seeded(3, 4, 1000).tolist()
    finally:
        made.close()
    assert threads and all(name.startswith("epoch-permutation") for name in threads)
    assert pool_sizes[:2] == [1, 4] and set(pool_sizes) == {1, 4}  # each shuffle on one thread, then back


def test_a_cpu_run_shuffles_on_its_own_thread_and_starts_no_helper():
    made = mnist.Permutations(seed=3, n=1000)
    assert torch.equal(made.get(5, torch.device("cpu")), mnist.epoch_permutation(3, 5, 1000))
    assert made._pool is None and made._ahead == {}


def test_epoch_permutations_keep_the_order_runs_were_recorded_with():
    # torch's seeded randperm of (seed, epoch): a change here changes every recorded run's data order
    assert mnist.epoch_permutation(3, 7, 1000)[:6].tolist() == [364, 112, 163, 478, 944, 144]
    assert mnist.epoch_permutation(0, 0, 60000)[:4].tolist() == [36044, 10678, 57327, 55074]
    assert sorted(mnist.epoch_permutation(3, 8, 1000).tolist()) == list(range(1000))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_permutations_for_a_gpu_are_pinned_and_arrive_whole():
    made = mnist.Permutations(seed=3, n=1000)
    try:
        perm = made.get(0, torch.device("cuda"))
        assert perm.is_cuda and torch.equal(perm.cpu(), mnist.epoch_permutation(3, 0, 1000))
        assert made._ahead[1].result().is_pinned()
    finally:
        made.close()
