"""The pure side of Slurm runs (runner.core.cluster): a job's record, its slot, what it asks for."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from runner.core import cluster, slots
from runner.core.config import Launch
from runner.core.engine_types import ContainerRequest
from runner.core.errors import RunnerError

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
    "SLURM_JOB_USER": "ada",
}


def test_outside_a_job_there_is_no_record():
    assert cluster.record({}, None) is None and not cluster.in_job({"PATH": "/bin"})


def test_the_record_names_job_array_nodes_partition_and_allocation():
    r = cluster.record(JOB, [4, 5, 6, 7])
    assert (r["job_id"], r["array_job_id"], r["array_task_id"], r["restart_count"]) == ("42", "40", 2, 1)
    assert (r["partition"], r["nodelist"], r["node"], r["num_nodes"]) == ("gpu", "n[1-2]", "n2", 2)
    assert r["allocation"]["cpu_ids"] == [4, 5, 6, 7] and r["allocation"]["gpus"] == [2, 3]
    assert r["user"] == "ada"  # whom Slurm ran the job as


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
        "launch": {
            **cfg["launch"],
            **slots.placement(cluster.slot(JOB, range(16), [4, 5]), Launch.parse(cfg["launch"])),
        },
    }
    assert placed["launch"]["cpuset_cpus"] == "4-5" and placed["launch"]["gpus"] == [2, 3]
    assert slots.unplaced(placed, as_asked=True) == cfg


def test_a_sweep_asks_for_its_most_demanding_job():
    cfgs = [
        {"launch": {"processes": 1}, "determinism": {"threads": 1}},
        {"launch": {"processes": 3}, "determinism": {"threads": 2}},
    ]
    assert cluster.request(cfgs, None, None) == {"cpus_per_task": 6, "nodes": 1}
    assert cluster.request(cfgs, 2, None) == {"cpus_per_task": 2, "nodes": 1}
    assert cluster.request([{"launch": {"gpus": 2}}], None, None) == {
        "cpus_per_task": 2,
        "gpus_per_node": 2,
        "nodes": 1,
    }


def test_the_memory_of_an_allocation_is_per_node_or_per_core_times_cores():
    assert cluster.memory_mb({"SLURM_MEM_PER_NODE": "8000"}, 4) == 8000
    assert cluster.memory_mb({"SLURM_MEM_PER_CPU": "2000"}, 3) == 6000
    assert cluster.memory_mb({}, 4) is None
    assert cluster.slot({**JOB, "SLURM_MEM_PER_CPU": "1000"}, range(16), [4, 5, 6, 7]).mem_mb == 4000


def test_a_sweep_of_multi_node_jobs_asks_for_the_most_nodes():
    cfgs = [{"launch": {"processes": 1}}, {"launch": {"processes": 1, "nodes": 3}}]
    assert cluster.request(cfgs, None, None) == {"cpus_per_task": 1, "nodes": 3}


def test_a_job_whose_launch_is_bad_does_not_decide_what_the_sweep_asks_for():
    cfgs = [{"launch": {"processes": 2}}, {"launch": {"processes": 1, "nodes": "3"}}]
    assert cluster.request(cfgs, None, None) == {"cpus_per_task": 2, "nodes": 1}


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True])
def test_a_bad_node_count_is_refused(bad):
    with pytest.raises(RunnerError, match="launch.nodes"):
        Launch.parse({"nodes": bad})


def test_a_multi_node_run_needs_an_allocation_with_enough_nodes():
    with pytest.raises(RunnerError, match=r"inside one \(sbatch -N 2\)"):
        cluster.check_allocation(2, {})
    with pytest.raises(RunnerError, match="this Slurm job has 1 node$"):
        cluster.check_allocation(2, {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "1"})
    with pytest.raises(RunnerError, match="must run on the allocation's first node"):
        cluster.check_allocation(2, {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2"})  # salloc's shell
    cluster.check_allocation(2, {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "3", "SLURMD_NODENAME": "n1"})


MEET = cluster.Rendezvous(nodes=2, interface="ib0", address="10.0.0.1", port=29500)


def test_the_rendezvous_pins_both_collectives_to_its_interface():
    env = MEET.environment()
    assert env == {
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
        "GLOO_SOCKET_IFNAME": "ib0",
        "NCCL_SOCKET_IFNAME": "ib0",
    }
    assert MEET.record()["network"] == "host" and MEET.record()["interface"] == "ib0"


def test_nodes_that_meet_again_record_the_port_that_was_taken():
    again = MEET.moved(41234).moved(41999)
    assert again.environment()["MASTER_PORT"] == "41999"
    assert again.record()["port"] == 41999 and again.record()["taken"] == [29500, 41234]
    assert MEET.record()["taken"] == []


@pytest.mark.parametrize(
    ("line", "taken"),
    [
        (
            "torch.distributed.DistNetworkError: The server socket has failed to listen on any local "
            "network address. port: 29500, useIpv6: false, code: -98, name: EADDRINUSE, message: "
            "address already in use",
            True,
        ),
        (
            "RuntimeError: The server socket has failed to bind to [::]:29500 "
            "(errno: 98 - Address already in use)",
            True,
        ),
        ("… port: 295001, useIpv6: false, code: -98, name: EADDRINUSE …", False),  # another port
        ("… port: 29500, useIpv6: false, code: -111, name: ECONNREFUSED …", False),  # not taken
        ("probe: waiting 29500", False),
    ],
)
def test_a_rendezvous_port_taken_is_told_from_the_first_nodes_log(line, taken):
    assert cluster.port_taken(line, 29500) is taken


def test_a_nodes_end_survives_json_and_says_who_the_kernel_killed():
    end = cluster.NodeEnd(node=1, host="n2", exit_code=137, oom_killed=True, mem_limit="512m")
    assert cluster.NodeEnd.from_json(end.to_json()) == end
    assert end.out_of_memory() == "the kernel killed node 1's container on n2, memory limit 512m"
    assert "no memory limit set" in dataclasses.replace(end, mem_limit=None).out_of_memory()
    for bad in ("[]", '{"node": 1}', "not json"):
        with pytest.raises(ValueError):
            cluster.NodeEnd.from_json(bad)


def test_a_nodes_end_says_whose_engine_went_away():
    engine = "docker at unix:///run/d.sock"
    end = cluster.NodeEnd(node=1, host="n2", exit_code=5, engine_lost=(engine, "its socket is gone"))
    assert cluster.NodeEnd.from_json(end.to_json()) == end
    assert end.lost_engine() == (f"{engine} of node 1 on n2", "its socket is gone")
    with pytest.raises(ValueError):
        cluster.NodeEnd.from_json('{"node": 1, "host": null, "exit_code": 5, "engine_lost": "gone"}')


def test_srun_starts_one_agent_per_node_beside_the_runners_own_step():
    argv = cluster.srun_command(3, "runner-x", ["python", "-m", "runner.flows.node", "/r/nodes.json"])
    assert argv[0] == "srun" and argv[-4:] == ["python", "-m", "runner.flows.node", "/r/nodes.json"]
    for flag in (
        "--nodes=3",
        "--ntasks=3",
        "--ntasks-per-node=1",
        "--overlap",
        "--mem=0",
        "--kill-on-bad-exit=1",
    ):
        assert flag in argv


BASE = ContainerRequest(
    image="runner:cpu-x",
    name="runner-r1",
    command=["python", "-m", "runner.worker"],
    environment={"MASTER_ADDR": "10.0.0.1", "NODE_RANK": "0"},
    user="1000:1000",
    mounts=[("/r", "/job", False)],
    gpus=[0, 1],
    network="host",
)


def test_each_node_gets_its_own_container_rank_placement_and_lifeline():
    req = cluster.node_request(BASE, 1, slots.Slot(1, (4, 5), (2, 3), mem_mb=6000))
    assert req.name == "runner-r1-node1" and req.environment["NODE_RANK"] == "1"
    assert req.environment["MASTER_ADDR"] == "10.0.0.1" and req.environment[cluster.LIFELINE_ENV] == "stdin"
    assert req.lifeline and req.network == "host"
    assert (req.cpuset_cpus, req.gpus, req.mem_limit) == ("4-5", [2, 3], "6000m")
    own = cluster.node_request(dataclasses.replace(BASE, mem_limit="2g"), 0, slots.Slot(0, (0,), mem_mb=6000))
    assert own.mem_limit == "2g" and own.name == "runner-r1-node0"


def test_a_container_request_survives_json():
    back = ContainerRequest.from_dict(json.loads(json.dumps(BASE.to_dict())))
    assert back == BASE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mounts": [["/a", "/b"]]}, "request: mounts[0] must be [host path, container path, read-only]"),
        ({"gpus": "all"}, "request: gpus must be null, a count or GPU ids, got a string"),
        ({"environment": {"A": 1}}, "request: environment must map names to strings"),
        ({"image": None}, "request: image must be a string"),
    ],
)
def test_a_container_request_of_another_shape_is_one_line_naming_the_field(change, message):
    """What a node agent reads from nodes.json: refused in one line, not a TypeError deep inside."""
    with pytest.raises(ValueError, match=re.escape(message)):
        ContainerRequest.from_dict({**BASE.to_dict(), **change})


@pytest.mark.parametrize(
    ("launch", "folded"),
    [
        ({"nodes": 2, "processes": 3, "gpus": 0}, {"nodes": 1, "processes": 6, "gpus": 0}),
        ({"nodes": 2, "gpus": 4}, {"nodes": 1, "gpus": 8}),
        ({"nodes": 3, "gpus": [0, 1]}, {"nodes": 1, "gpus": 6}),
        ({"nodes": 1, "processes": 2}, {"nodes": 1, "processes": 2}),
    ],
)
def test_a_multi_node_run_folds_into_one_container_of_the_same_world_size(launch, folded):
    cfg, nodes = cluster.folded({"seed": 1, "launch": launch})
    assert cfg == {"seed": 1, "launch": folded} and nodes == launch["nodes"]


def test_a_torchrun_programs_own_process_count_is_folded_too():
    cfg, _ = cluster.folded({"experiment": {"nproc_per_node": 2}, "launch": {"nodes": 3, "processes": 1}})
    assert cfg["experiment"]["nproc_per_node"] == 6 and cfg["launch"]["processes"] == 3


def test_a_multi_node_run_on_all_gpus_cannot_be_folded():
    with pytest.raises(RunnerError, match="gpus=all"):
        cluster.folded({"launch": {"nodes": 2, "gpus": "all"}})
