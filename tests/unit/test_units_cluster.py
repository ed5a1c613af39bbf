"""The pure side of Slurm runs (runner.core.cluster): a job's record, its slot, what it asks for."""

from __future__ import annotations

from runner.core import cluster, slots

JOB = {
    "SLURM_JOB_ID": "42",
    "SLURM_ARRAY_JOB_ID": "40",
    "SLURM_ARRAY_TASK_ID": "2",
    "SLURM_JOB_PARTITION": "gpu",
    "SLURM_JOB_NODELIST": "n[1-2]",
    "SLURMD_NODENAME": "n2",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODEID": "1",
    "SLURM_CPUS_ON_NODE": "4",
    "SLURM_JOB_GPUS": "2,3",
    "SLURM_RESTART_COUNT": "1",
}


def test_outside_a_job_there_is_no_record():
    assert cluster.record({}, None) is None and not cluster.in_job({"PATH": "/bin"})


def test_the_record_names_job_array_nodes_partition_and_allocation():
    r = cluster.record(JOB, [4, 5, 6, 7])
    assert (r["job_id"], r["array_job_id"], r["array_task_id"], r["restart_count"]) == ("42", "40", 2, 1)
    assert (r["partition"], r["nodelist"], r["node"], r["num_nodes"]) == ("gpu", "n[1-2]", "n2", 2)
    assert r["allocation"]["cpu_ids"] == [4, 5, 6, 7] and r["allocation"]["gpus"] == [2, 3]


def test_a_bound_job_keeps_its_affinity_an_unbound_one_takes_slurms_cpu_ids():
    bound = cluster.slot(JOB, affinity=[8, 9, 10, 11], cpu_ids=[4, 5, 6, 7])
    assert bound.cpus == (8, 9, 10, 11) and bound.gpus == (2, 3) and bound.index == 1
    unbound = cluster.slot(JOB, affinity=range(16), cpu_ids=[4, 5, 6, 7])
    assert unbound.cpus == (4, 5, 6, 7)
    assert cluster.slot(JOB, affinity=range(16), cpu_ids=None).cpus == (0, 1, 2, 3)


def test_the_slot_of_an_allocation_is_undone_for_a_replay():
    cfg = {"launch": {"gpus": 2, "cpuset_cpus": None}, "seed": 0}
    placed = {
        **cfg,
        "launch": {**cfg["launch"], **slots.placement(cluster.slot(JOB, range(16), [4, 5]), cfg["launch"])},
    }
    assert placed["launch"]["cpuset_cpus"] == "4-5" and placed["launch"]["gpus"] == [2, 3]
    assert slots.unplaced(placed, as_asked=True) == cfg


def test_a_sweep_asks_for_its_most_demanding_job():
    cfgs = [
        {"launch": {"processes": 1}, "determinism": {"threads": 1}},
        {"launch": {"processes": 3}, "determinism": {"threads": 2}},
    ]
    assert cluster.request(cfgs, None, None) == {"cpus_per_task": 6}
    assert cluster.request(cfgs, 2, None) == {"cpus_per_task": 2}
    assert cluster.request([{"launch": {"gpus": 2}}], None, None) == {"cpus_per_task": 2, "gpus_per_node": 2}
