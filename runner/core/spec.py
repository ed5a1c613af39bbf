"""Composed config → a frozen description of one run. Pure: no Docker, no files written.

What the run is (experiment, seed, world size, accelerator), what the training process sees
(``job.json``, environment variables) and how it is started (a container request, or a host
process) are all decided here, so they can be tested without an engine and replayed from a
manifest by feeding the recorded config back in.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core import cluster, determinism, layout, precision
from runner.core.engine_types import ContainerRequest
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.images import choose_kind, gpu_count_requested
from runner.core.worker_io import Experiment, WorkerPaths, WorkerRequest

# Paths inside the container.
CODE, DATA, JOB = "/code", "/data", "/job"
UNPRIVILEGED = "1000:1000"
RUN_ID_LABEL = "org.runner.run-id"  # on every container of a run
_NAME_OK = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    run_dir: Path
    config: dict[str, Any]
    experiment: dict[str, Any]
    backend: str  # docker | host
    image_kind: str  # cpu | cuda
    gpus: Any  # None | int | list[int] | "all"
    world_size: int
    accelerator: str  # cpu | gpu
    seed: int
    profile: dict[str, Any]
    env: dict[str, str]  # what the training process gets, besides paths
    user: str
    container_name: str
    launch: dict[str, Any] = field(default_factory=dict)
    nodes: int = 1  # >1: one container per node of a Slurm allocation, world_size // nodes processes each

    @property
    def per_node(self) -> int:
        """Training processes on each node."""
        return self.world_size // self.nodes

    def job_document(
        self, run_dir: str, code_dir: str, data_dir: str, dataset_files: Mapping[str, str]
    ) -> WorkerRequest:
        """``job.json``: everything the worker needs, with paths as the worker sees them."""
        return WorkerRequest(
            run_id=self.run_id,
            paths=WorkerPaths(run_dir=run_dir, code_dir=code_dir, data_dir=data_dir),
            experiment=Experiment.from_json(self.experiment),
            config=self.config,
            seed=self.seed,
            world_size=self.world_size,
            nodes=self.nodes,
            accelerator="gpu" if self.accelerator == "gpu" else "cpu",
            determinism=self.profile,
            precision=precision.resolve(self.config),  # None: a record from before the precision group
            dataset_files=dict(dataset_files),
            fingerprint_every=fingerprint_every(self.config),
            checkpoint_every=int(self.launch.get("checkpoint_every_n_steps") or 0),
            resume=self.launch.get("resume"),
        )

    def container_env(self) -> dict[str, str]:
        return {
            **self.env,
            "RUNNER_JOB": f"{JOB}/{layout.WORKER_REQUEST}",
            "PYTHONPATH": CODE,
            "HOME": "/tmp",
            "GLOO_SOCKET_IFNAME": "lo",
        }  # no network but loopback: gloo binds there

    def host_env(self, base: Mapping[str, str], code_dir: Path) -> dict[str, str]:
        # the host's interpreter setup is part of the host environment (and recorded as such)
        keep = {
            k: base[k]
            for k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "CUDA_HOME")
            if k in base
        }
        if self.accelerator == "gpu" and self.gpus != "all":
            ids = self.gpus if isinstance(self.gpus, (list, tuple)) else range(int(self.gpus))
            keep["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ids)
        pythonpath = ":".join(p for p in (str(code_dir), base.get("PYTHONPATH", "")) if p)  # snapshot first
        return {
            **keep,
            **self.env,
            "RUNNER_JOB": str(self.run_dir / layout.WORKER_REQUEST),
            "PYTHONPATH": pythonpath,
            "HOME": base.get("HOME", "/tmp"),
        }

    def with_recorded_env(
        self, recorded: Mapping[str, str], host_env: Mapping[str, str], code_dir: Path
    ) -> RunPlan:
        """The plan with recorded variables in place of its own (a replay); the ones the runner sets
        itself (the job file, PYTHONPATH, HOME, …) stay the runner's."""
        runner_owned = self.container_env() if self.backend == "docker" else self.host_env(host_env, code_dir)
        own = set(runner_owned) - set(self.env)
        return dataclasses.replace(self, env={k: v for k, v in sorted(recorded.items()) if k not in own})

    def container_request(
        self, image: str, code_dir: Path, data_root: Path, rendezvous: cluster.Rendezvous | None = None
    ) -> ContainerRequest:
        """The container that trains; with a ``rendezvous`` (a multi-node run) it is the first
        node's, on the host's network with the collectives pinned to the rendezvous interface
        (:func:`runner.core.cluster.node_request` makes the other nodes' from it)."""
        gpus = self.gpus
        req_gpus = None
        if self.accelerator == "gpu":
            req_gpus = -1 if gpus == "all" else (list(gpus) if isinstance(gpus, (list, tuple)) else int(gpus))
        # tied to the runner (a lifeline): however the runner dies, SIGKILL included, the container stops
        env = {**self.container_env(), cluster.LIFELINE_ENV: "stdin"}
        if rendezvous is not None:
            env.update(rendezvous.environment())
        return ContainerRequest(
            image=image,
            name=self.container_name,
            command=["python", "-m", "runner.worker"],
            environment=env,
            user=self.user,
            mounts=[
                (str(code_dir), CODE, True),
                (str(data_root), DATA, True),
                (str(self.run_dir), JOB, False),
            ],
            working_dir=CODE,
            gpus=req_gpus,
            shm_size=self.launch.get("shm_size"),
            cpuset_cpus=self.launch.get("cpuset_cpus"),
            mem_limit=self.launch.get("mem_limit"),
            labels={RUN_ID_LABEL: self.run_id, "org.runner.run-dir": str(self.run_dir)},
            network="host" if rendezvous is not None else "none",
            lifeline=True,
        )


def fingerprint_every(cfg: Mapping[str, Any]) -> int:
    """``fingerprints.every_k_steps``: optimizer steps between parameter hashes (10 when unset)."""
    return int((cfg.get("fingerprints") or {}).get("every_k_steps", 10))


LAUNCHERS = ("python", "torchrun")


def _experiment(cfg: Mapping[str, Any], project_root: Path) -> dict[str, Any]:
    """The experiment section, checked: exactly one of ``target`` (``module:function``, called
    in-process), ``script`` (``python script.py args``) or ``module`` (``python -m module args``);
    a program (script or module) may start under ``launcher: torchrun``."""
    exp = dict(cfg.get("experiment") or {})
    target, script, module = exp.get("target"), exp.get("script"), exp.get("module")
    if sum(bool(x) for x in (target, script, module)) != 1:
        raise RunnerError(
            "experiment must name exactly one of `target` (module:function), `script` "
            "(a file) or `module` (python -m)",
            EXIT_USAGE,
        )
    if target or module:
        name = str(target or module).partition(":")[0]
        rel = Path(*name.split("."))
        if not (
            (project_root / rel).with_suffix(".py").is_file()
            or (project_root / rel / "__init__.py").is_file()
        ):
            what = "target" if target else "module"
            raise RunnerError(
                f"experiment {what} {target or module!r}: no module {name} under {project_root}", EXIT_USAGE
            )
    elif not (project_root / str(script)).is_file():
        raise RunnerError(f"experiment script {script!r} not found under {project_root}", EXIT_USAGE)
    if not target:
        exp["args"] = [str(a) for a in exp.get("args") or []]
    _launcher(exp, program=not target)
    return exp


def _launcher(exp: dict[str, Any], program: bool) -> None:
    """``launcher`` (python | torchrun) and ``nproc_per_node`` (torchrun's processes; null: the
    world size)."""
    launcher = exp.get("launcher") or "python"
    if launcher not in LAUNCHERS:
        raise RunnerError(
            f"experiment.launcher={launcher!r} must be one of {', '.join(LAUNCHERS)}", EXIT_USAGE
        )
    if launcher == "torchrun" and not program:
        raise RunnerError(
            "experiment.launcher=torchrun starts a `script` or `module`, not a `target`", EXIT_USAGE
        )
    nproc = exp.get("nproc_per_node")
    if nproc is not None and (type(nproc) is not int or nproc < 1):
        raise RunnerError(
            f"experiment.nproc_per_node={nproc!r} must be a positive integer or null", EXIT_USAGE
        )
    if nproc is not None and launcher != "torchrun":
        raise RunnerError(
            "experiment.nproc_per_node is torchrun's: set experiment.launcher=torchrun", EXIT_USAGE
        )
    if "launcher" in exp or "nproc_per_node" in exp:
        exp["launcher"] = launcher


def _user(launch: Mapping[str, Any], uid: int, gid: int) -> str:
    if launch.get("user"):
        user = str(launch["user"])
        if user.split(":")[0] in ("0", "root"):
            raise RunnerError("launch.user must not be root: containers run unprivileged", EXIT_USAGE)
        return user
    return UNPRIVILEGED if uid == 0 else f"{uid}:{gid}"


def passthrough_env(names: list[str], host_env: Mapping[str, str]) -> dict[str, str]:
    """Only variables the user lists reach the training process; nothing is inherited silently."""
    out = {}
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise RunnerError(f"launch.env_passthrough: {name!r} is not a variable name", EXIT_USAGE)
        if name in host_env:
            out[str(name)] = host_env[name]
    return out


def _world_size(launch: Mapping[str, Any], n_gpus: int, detected_gpus: int) -> int:
    """Training processes: one per GPU asked for (every detected one for ``all``), else
    ``launch.processes``."""
    if n_gpus > 0:
        return n_gpus
    if n_gpus < 0:
        if detected_gpus < 1:
            raise RunnerError("launch.gpus=all but no GPU was found on this host (nvidia-smi -L)", EXIT_USAGE)
        return detected_gpus
    world = launch.get("processes", 1)
    if not isinstance(world, int) or world < 1:
        raise RunnerError(f"launch.processes={world!r} must be a positive integer", EXIT_USAGE)
    return world


def plan_run(
    cfg: Mapping[str, Any],
    run_dir: Path,
    project_root: Path,
    host_env: Mapping[str, str],
    uid: int,
    gid: int,
    run_id: str | None = None,
    detected_gpus: int = 0,
) -> RunPlan:
    """Plan one run. ``detected_gpus`` (the host's GPU count) is only consulted for ``launch.gpus=all``."""
    launch = dict(cfg.get("launch") or {})
    backend = str(launch.get("backend", "docker"))
    if backend not in ("docker", "host"):
        raise RunnerError(f"launch.backend={backend!r} must be docker or host", EXIT_USAGE)
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise RunnerError(f"seed={seed!r} must be an integer in [0, 2**32)", EXIT_USAGE)
    gpus = launch.get("gpus")
    n_gpus = gpu_count_requested(gpus)
    accelerator = "gpu" if n_gpus else "cpu"
    world = _world_size(launch, n_gpus, detected_gpus)
    nodes = cluster.nodes_requested(launch)
    profile = dict(cfg.get("determinism") or {})
    precision.resolve(cfg)  # a bad or doubly-set precision is refused before anything runs
    env = determinism.environment(profile)
    names = [str(n) for n in launch.get("env_passthrough") or []]
    env.update(passthrough_env(names, host_env))
    env = dict(sorted(env.items()))
    rid = run_id or f"{_NAME_OK.sub('-', run_dir.name)[-40:]}-{uuid.uuid4().hex[:8]}"
    experiment = _experiment(cfg, project_root)
    if experiment.get("nproc_per_node") and not n_gpus:  # torchrun's own count sets a CPU run's world size
        world = int(experiment["nproc_per_node"])
    _check_nodes(nodes, backend, experiment)
    image_kind = choose_kind(str((cfg.get("image") or {}).get("kind", "auto")), gpus)
    return RunPlan(
        run_id=rid,
        run_dir=run_dir,
        config=dict(cfg),
        experiment=experiment,
        backend=backend,
        image_kind=image_kind,
        gpus=gpus if n_gpus else None,
        world_size=world * nodes,
        accelerator=accelerator,
        seed=seed,
        profile=profile,
        env=env,
        user=_user(launch, uid, gid),
        container_name=f"runner-{rid}",
        launch=launch,
        nodes=nodes,
    )


def _check_nodes(nodes: int, backend: str, experiment: Mapping[str, Any]) -> None:
    """What a run across nodes supports: containers, and a target or a program under torchrun
    (a plain script would not know it has peers on other nodes)."""
    if nodes == 1:
        return
    if backend != "docker":
        raise RunnerError(f"launch.nodes={nodes} runs containers: it needs launch.backend=docker", EXIT_USAGE)
    if not experiment.get("target") and experiment.get("launcher") != "torchrun":
        raise RunnerError(
            f"launch.nodes={nodes}: a script or module runs across nodes under experiment.launcher=torchrun",
            EXIT_USAGE,
        )
