"""Slot planning (pure): concurrent sweep jobs get disjoint cores and GPUs, sized for what a job needs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.core.config import Launch
from runner.core.errors import RunnerError
from runner.core.slots import (
    JobNeeds,
    Slot,
    format_cpu_list,
    job_needs,
    parse_cpu_list,
    placement,
    plan_slots,
    unplaced,
)
from runner.host.facts import detect_gpus


def _disjoint(slots: list[Slot]) -> bool:
    cpus = [c for s in slots for c in s.cpus]
    gpus = [g for s in slots for g in s.gpus]
    return len(cpus) == len(set(cpus)) and len(gpus) == len(set(gpus))


def test_cpu_lists_round_trip():
    assert parse_cpu_list("0-3,6, 8-9") == [0, 1, 2, 3, 6, 8, 9]
    assert format_cpu_list([9, 8, 6, 3, 2, 1, 0]) == "0-3,6,8-9"
    assert format_cpu_list([5]) == "5"
    for bad in ("", "a", "3-1", "-2"):
        with pytest.raises(RunnerError):
            parse_cpu_list(bad)


@given(st.sets(st.integers(0, 200), min_size=1))
def test_cpu_list_format_parses_back(cpus):
    assert parse_cpu_list(format_cpu_list(sorted(cpus))) == sorted(cpus)


def test_job_needs_from_config():
    strict = {"launch": {"processes": 2, "gpus": 0}, "determinism": {"threads": 1}}
    assert job_needs(strict) == JobNeeds(cores=2, gpus=0)
    assert job_needs({"launch": {"processes": 4}, "determinism": {"threads": 2}}) == JobNeeds(8, 0)
    assert job_needs({"launch": {"processes": 2}, "determinism": {"threads": None}}) == JobNeeds(2, 0)
    assert job_needs({"launch": {"gpus": [1, 3]}, "determinism": {"threads": 1}}).gpus == 2
    assert job_needs({"launch": {"gpus": "all"}}).gpus == -1
    assert job_needs({"launch": {"processes": 1, "nodes": 3}}).nodes == 3
    # a bad profile counts one thread: its job reports the bad value when it runs
    assert job_needs({"launch": {"processes": 2}, "determinism": {"threads": "x"}}) == JobNeeds(2, 0)


@pytest.mark.parametrize(
    "launch", [{"processes": "two"}, {"gpus": -1}, {"nodes": 0}, {"backend": "k8s"}, "x"]
)
def test_a_job_whose_launch_is_bad_is_planned_around(launch):
    """Its needs are none (it fails alone, with its own one-line error, when it runs)."""
    assert job_needs({"launch": launch}) is None
    assert unplaced({"seed": 0, "launch": launch}) == {"seed": 0, "launch": launch}


def test_default_on_two_cores_is_one_slot_for_strict_ddp():
    assert plan_slots([0, 1], [], [JobNeeds(2, 0)]) == [Slot(0, (0, 1))]


def test_one_process_jobs_get_a_core_each():
    assert plan_slots([0, 1], [], [JobNeeds(1, 0)] * 3) == [Slot(0, (0,)), Slot(1, (1,))]
    assert plan_slots([0, 1], [], [JobNeeds(2, 0)], slots=2) == [Slot(0, (0,)), Slot(1, (1,))]


def test_slots_follow_the_biggest_job_and_explicit_settings():
    cpus = list(range(16))
    plan = plan_slots(cpus, [], [JobNeeds(2, 0), JobNeeds(4, 0)])
    assert len(plan) == 4 and all(len(s.cpus) == 4 for s in plan) and _disjoint(plan)
    plan = plan_slots(cpus, [], [JobNeeds(2, 0)], cpus_per_slot=3)
    assert len(plan) == 5 and plan[-1].cpus == (12, 13, 14) and _disjoint(plan)
    plan = plan_slots(cpus, [], [JobNeeds(2, 0)], slots=3)
    assert [len(s.cpus) for s in plan] == [5, 5, 5] and _disjoint(plan)
    # a job needing more than the machine has still gets one slot of everything
    assert plan_slots([0, 1], [], [JobNeeds(8, 0)]) == [Slot(0, (0, 1))]


def test_overlapping_requests_are_refused_not_shared():
    with pytest.raises(RunnerError, match="slots=3"):
        plan_slots([0, 1], [], [JobNeeds(1, 0)], slots=3)
    with pytest.raises(RunnerError, match="slots=2"):
        plan_slots([0, 1, 2], [], [JobNeeds(1, 0)], slots=2, cpus_per_slot=2)
    with pytest.raises(RunnerError):
        plan_slots([0, 1], [], [JobNeeds(1, 0)], slots=0)


def test_gpu_jobs_get_disjoint_gpus_and_a_share_of_cores():
    plan = plan_slots(list(range(16)), list(range(8)), [JobNeeds(2, 2)])
    assert [s.gpus for s in plan] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert all(len(s.cpus) == 4 for s in plan) and _disjoint(plan)
    plan = plan_slots(list(range(16)), [4, 5, 6, 7], [JobNeeds(1, 1)], slots=2)
    assert [s.gpus for s in plan] == [(4,), (5,)]
    assert plan_slots(list(range(4)), [0, 1, 2], [JobNeeds(1, -1)]) == [Slot(0, (0, 1, 2, 3), (0, 1, 2))]
    with pytest.raises(RunnerError, match="GPUs"):
        plan_slots([0, 1], [], [JobNeeds(1, 1)])
    with pytest.raises(RunnerError, match="slots=3"):
        plan_slots(list(range(8)), [0, 1, 2, 3], [JobNeeds(2, 2)], slots=3)


@given(st.integers(1, 64), st.integers(0, 8), st.integers(1, 8), st.integers(0, 4))
def test_any_plan_is_disjoint_and_within_the_pool(n_cpus, n_gpus, cores, gpus_per_job):
    cpus, gpus = list(range(n_cpus)), list(range(n_gpus))
    try:
        plan = plan_slots(cpus, gpus, [JobNeeds(cores, gpus_per_job)])
    except RunnerError:
        assert gpus_per_job > n_gpus  # the only refusal without explicit settings: GPUs asked, too few
        return
    assert plan and _disjoint(plan)
    assert all(set(s.cpus) <= set(cpus) and set(s.gpus) <= set(gpus) for s in plan)
    assert all(len(s.gpus) == gpus_per_job for s in plan)


def test_placement_keeps_what_the_job_asked_for():
    p = placement(Slot(1, (2, 3), (5,)), Launch.parse({"cpuset_cpus": None, "gpus": 1}))
    assert p["cpuset_cpus"] == "2-3" and p["gpus"] == [5]
    assert p["slot"] == {
        "index": 1,
        "cpus": "2-3",
        "gpus": [5],
        "requested": {"cpuset_cpus": None, "gpus": 1},
    }
    assert "gpus" not in placement(Slot(0, (0,)), Launch.parse({"gpus": 0}))


def test_a_slot_with_memory_limits_the_container_unless_the_job_set_its_own_limit():
    asked = {"cpuset_cpus": None, "gpus": 0, "mem_limit": None}
    p = placement(Slot(0, (0, 1), mem_mb=4000), Launch.parse(asked))
    assert p["mem_limit"] == "4000m"
    assert "mem_limit" not in placement(
        Slot(0, (0,), mem_mb=4000), Launch.parse({**asked, "mem_limit": "1g"})
    )
    config = {"seed": 0, "launch": {"backend": "docker", **asked}}
    placed = {**config, "launch": {**config["launch"], **p}}
    assert unplaced(placed)["launch"]["mem_limit"] is None  # a replay does not inherit the allocation


def test_a_slot_with_the_sweeps_image_pins_it_by_id_and_a_replay_forgets_it():
    """A Slurm job runs the image its sweep resolved, by id (``launch.image_id``); a replay and a
    skip-completed check see the config as the job asked for it."""
    image = "sha256:" + "ab" * 32
    asked = {"cpuset_cpus": None, "gpus": 0}
    p = placement(Slot(0, (0,), image=image), Launch.parse(asked))
    assert p["image_id"] == image and "image_id" not in p["slot"]["requested"]
    config = {"seed": 0, "launch": {"backend": "docker", **asked}}
    placed = {**config, "launch": {**config["launch"], **p}}
    assert unplaced(placed) == config and unplaced(placed, as_asked=True) == config
    assert "image_id" not in placement(
        Slot(0, (0,)), Launch.parse(asked)
    )  # no image resolved: nothing pinned
    ref = "127.0.0.1:5000/runner@sha256:" + "cd" * 32  # where image.registry put it, by digest
    p = placement(Slot(0, (0,), image=image, image_ref=ref), Launch.parse(asked))
    assert (p["image_id"], p["image_ref"]) == (image, ref)
    assert unplaced({**config, "launch": {**config["launch"], **p}}) == config


@pytest.mark.parametrize(
    ("slot", "asked", "gpus", "cpuset"),
    [
        (Slot(3, (6, 7), (2, 3)), {"cpuset_cpus": None, "gpus": "all"}, 2, None),  # ids → their count
        (Slot(1, (1,)), {"cpuset_cpus": "0-1", "gpus": 0}, 0, "0-1"),  # the user's own pinning stays
    ],
)
def test_a_replay_asks_for_what_the_job_ran_with_not_its_slot(slot, asked, gpus, cpuset):
    config = {"seed": 4, "launch": {"backend": "docker", **asked}}
    placed = {**config, "launch": {**config["launch"], **placement(slot, Launch.parse(asked))}}
    out = unplaced(placed)
    assert out["launch"] == {"backend": "docker", "cpuset_cpus": cpuset, "gpus": gpus} and out["seed"] == 4
    assert unplaced(placed, as_asked=True)["launch"] == {"backend": "docker", **asked}  # as before placement
    assert "slot" in placed["launch"], "the record itself is not changed"
    assert unplaced(config) == config  # a run no launcher placed


def test_gpus_from_cuda_visible_devices():
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == [2, 3]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
