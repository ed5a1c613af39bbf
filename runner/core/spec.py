"""Composed config → a frozen description of one run. Pure: no Docker, no files written.

What the run is (experiment, seed, world size, accelerator), what the training process sees
(``job.json``, environment variables) and how it is started (a container request, or a host
process) are all decided here, so they can be tested without an engine and replayed from a
manifest by feeding the recorded config back in. The config itself is read by
:func:`runner.core.config.parse`; this module adds what depends on the host.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core import cluster, layout, precision
from runner.core.config import Backend, Experiment, Gpus, Launch, RunConfig, parse
from runner.core.determinism import Profile
from runner.core.engine_types import ContainerRequest
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.worker_io import WorkerPaths, WorkerRequest

# Paths inside the container.
CODE, DATA, JOB = "/code", "/data", "/job"
UNPRIVILEGED = "1000:1000"
RUN_ID_LABEL = "org.runner.run-id"  # on every container of a run
_NAME_OK = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class Host:
    """What a plan takes from the host it is made on: the variables ``launch.env_passthrough`` may
    pass on, the user a container runs as by default, and the GPU count (consulted only for
    ``launch.gpus=all``)."""

    env: Mapping[str, str]
    uid: int
    gid: int
    gpus: int = 0


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    run_dir: Path
    config: RunConfig  # ``config.raw`` is what is recorded
    image_kind: str  # cpu | cuda
    world_size: int
    env: dict[str, str]  # what the training process gets, besides paths
    user: str
    container_name: str

    @property
    def launch(self) -> Launch:
        return self.config.launch

    @property
    def experiment(self) -> Experiment:
        return self.config.experiment

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def profile(self) -> Profile:
        """The determinism profile."""
        return self.config.determinism

    @property
    def backend(self) -> Backend:
        return self.launch.backend

    @property
    def containerized(self) -> bool:
        return self.launch.containerized

    @property
    def gpus(self) -> Gpus:
        return self.launch.gpus

    @property
    def accelerator(self) -> str:
        """cpu | gpu"""
        return "cpu" if self.gpus is None else "gpu"

    @property
    def nodes(self) -> int:
        """>1: one container per node of a Slurm allocation, :attr:`per_node` processes each."""
        return self.launch.nodes

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
            experiment=self.experiment,
            config=self.config.raw,
            seed=self.seed,
            world_size=self.world_size,
            nodes=self.nodes,
            accelerator="gpu" if self.accelerator == "gpu" else "cpu",
            determinism=self.profile.raw,
            precision=precision.resolve(self.config.raw),  # None: a record from before the precision group
            dataset_files=dict(dataset_files),
            fingerprint_every=self.config.fingerprint_every,
            checkpoint_every=self.launch.checkpoint_every_n_steps,
            keep_checkpoints=self.launch.keep_checkpoints,
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
        if self.gpus is not None and self.gpus != "all":
            ids = self.gpus if isinstance(self.gpus, tuple) else range(int(self.gpus))
            keep["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in ids)
        pythonpath = ":".join(p for p in (str(code_dir), base.get("PYTHONPATH", "")) if p)  # snapshot first
        return {
            **keep,
            **self.env,
            "RUNNER_JOB": str(self.run_dir / layout.WORKER_REQUEST),
            "PYTHONPATH": pythonpath,
            "HOME": base.get("HOME", "/tmp"),
        }

    def worker_env(self, host_env: Mapping[str, str], code_dir: Path) -> dict[str, str]:
        """Every variable the training process gets: in the container, or on this host."""
        return self.container_env() if self.containerized else self.host_env(host_env, code_dir)

    def worker_paths(self, code_dir: Path, data_root: Path) -> tuple[str, str, str]:
        """The run dir, code and data as the worker sees them."""
        if self.containerized:
            return JOB, CODE, DATA
        return str(self.run_dir), str(code_dir), str(data_root)

    def with_recorded_env(
        self, recorded: Mapping[str, str], host_env: Mapping[str, str], code_dir: Path
    ) -> RunPlan:
        """The plan with recorded variables in place of its own (a replay); the ones the runner sets
        itself (the job file, PYTHONPATH, HOME, …) stay the runner's."""
        own = set(self.worker_env(host_env, code_dir)) - set(self.env)
        return dataclasses.replace(self, env={k: v for k, v in sorted(recorded.items()) if k not in own})

    def container_request(
        self, image: str, code_dir: Path, data_root: Path, rendezvous: cluster.Rendezvous | None = None
    ) -> ContainerRequest:
        """The container that trains; with a ``rendezvous`` (a multi-node run) it is the first
        node's, on the host's network with the collectives pinned to the rendezvous interface
        (:func:`runner.core.cluster.node_request` makes the other nodes' from it)."""
        gpus = self.gpus
        req_gpus = (
            None if gpus is None else -1 if gpus == "all" else list(gpus) if isinstance(gpus, tuple) else gpus
        )
        # tied to the runner (a lifeline): however the runner dies, SIGKILL included, the container stops
        env = {**self.container_env(), cluster.LIFELINE_ENV: "stdin"}
        if rendezvous is not None:
            env.update(rendezvous.environment())
        launch = self.launch
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
            shm_size=launch.shm_size,
            cpuset_cpus=launch.cpuset_cpus,
            mem_limit=launch.mem_limit,
            labels={RUN_ID_LABEL: self.run_id, "org.runner.run-dir": str(self.run_dir)},
            network="host" if rendezvous is not None else "none",
            lifeline=True,
        )


def _check_experiment(exp: Experiment, project_root: Path) -> None:
    """The experiment's module or script is in the project it runs from."""
    if exp.kind == "script":
        if not (project_root / exp.entry).is_file():
            raise RunnerError(f"experiment script {exp.entry!r} not found under {project_root}", EXIT_USAGE)
        return
    name = exp.entry.partition(":")[0] if exp.kind == "target" else exp.entry
    rel = Path(*name.split("."))
    if not (
        (project_root / rel).with_suffix(".py").is_file() or (project_root / rel / "__init__.py").is_file()
    ):
        raise RunnerError(
            f"experiment {exp.kind} {exp.entry!r}: no module {name} under {project_root}", EXIT_USAGE
        )


def _user(launch: Launch, uid: int, gid: int) -> str:
    if launch.user:
        if launch.user.split(":")[0] in ("0", "root"):
            raise RunnerError("launch.user must not be root: containers run unprivileged", EXIT_USAGE)
        return launch.user
    return UNPRIVILEGED if uid == 0 else f"{uid}:{gid}"


def passthrough_env(names: list[str] | tuple[str, ...], host_env: Mapping[str, str]) -> dict[str, str]:
    """Only variables the user lists reach the training process; nothing is inherited silently."""
    out = {}
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise RunnerError(f"launch.env_passthrough: {name!r} is not a variable name", EXIT_USAGE)
        if name in host_env:
            out[str(name)] = host_env[name]
    return out


def _world_size(cfg: RunConfig, detected_gpus: int) -> int:
    """Training processes on each node: one per GPU asked for (every detected one for ``all``),
    else torchrun's ``nproc_per_node``, else ``launch.processes``."""
    n_gpus = cfg.launch.gpu_count
    if n_gpus > 0:
        return n_gpus
    if n_gpus < 0:
        if detected_gpus < 1:
            raise RunnerError("launch.gpus=all but no GPU was found on this host (nvidia-smi -L)", EXIT_USAGE)
        return detected_gpus
    return cfg.experiment.nproc_per_node or cfg.launch.processes


def plan_run(
    cfg: Mapping[str, Any] | RunConfig,
    run_dir: Path,
    project_root: Path,
    host: Host,
    run_id: str | None = None,
) -> RunPlan:
    """Plan one run of ``cfg`` (composed, recorded, or already parsed) from ``project_root``."""
    config = parse(cfg)
    precision.resolve(config.raw)  # a bad or doubly-set precision is refused before anything runs
    env = config.determinism.environment()
    env.update(passthrough_env(config.launch.env_passthrough, host.env))
    rid = run_id or f"{_NAME_OK.sub('-', run_dir.name)[-40:]}-{uuid.uuid4().hex[:8]}"
    world = _world_size(config, host.gpus)
    _check_experiment(config.experiment, project_root)
    _check_nodes(config)
    return RunPlan(
        run_id=rid,
        run_dir=run_dir,
        config=config,
        image_kind=config.image.kind_for(config.launch),
        world_size=world * config.launch.nodes,
        env=dict(sorted(env.items())),
        user=_user(config.launch, host.uid, host.gid),
        container_name=f"runner-{rid}",
    )


def _check_nodes(cfg: RunConfig) -> None:
    """What a run across nodes supports: containers, and a target or a program under torchrun
    (a plain script would not know it has peers on other nodes)."""
    nodes, exp = cfg.launch.nodes, cfg.experiment
    if nodes == 1:
        return
    if not cfg.launch.containerized:
        raise RunnerError(f"launch.nodes={nodes} runs containers: it needs launch.backend=docker", EXIT_USAGE)
    if exp.program and exp.launcher != "torchrun":
        raise RunnerError(
            f"launch.nodes={nodes}: a script or module runs across nodes under experiment.launcher=torchrun",
            EXIT_USAGE,
        )
