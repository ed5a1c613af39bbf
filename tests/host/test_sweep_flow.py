"""The sweep flow without Hydra or an engine: jobs whose tasks are plain functions run in forked
processes, one per slot at a time; each job's end is recorded; the sweep's verdict comes from the
jobs' ends; a signal stops new jobs and reaches the running ones."""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.core.config import Launch
from runner.core.errors import EXIT_FAILED, EXIT_INTERRUPTED
from runner.core.slots import Slot
from runner.flows import sweep
from runner.host import sweep_records as job_records


def _job(tmp_path: Path, idx: int, task) -> sweep.SweepJob:
    return sweep.SweepJob(idx, [f"seed={idx}"], tmp_path / str(idx), {"seed": idx}, task, f"seed={idx}")


def _status(job: sweep.SweepJob) -> dict:
    return json.loads((job.run_dir / job_records.JOB_STATUS_FILE).read_text())


def _timed(log: Path):
    """A task that notes when it ran and in which slot, taking a little time."""

    def task(slot: Slot | None) -> sweep.JobEnd:
        start = time.monotonic()
        time.sleep(0.3)
        with log.open("a") as f:
            f.write(
                json.dumps({"slot": slot.index, "cpus": slot.cpuset, "span": [start, time.monotonic()]})
                + "\n"
            )
        return sweep.JobEnd(0)

    return task


def test_jobs_run_one_per_slot_at_a_time_and_each_end_is_recorded(tmp_path):
    log = tmp_path / "ran.jsonl"
    jobs = [_job(tmp_path, i, _timed(log)) for i in range(5)]
    plan = [Slot(0, (0,)), Slot(1, (1,))]
    ends = sweep.SlotPool(plan, quiet=True).run(jobs)
    assert ends == {i: sweep.JobEnd(0) for i in range(5)}
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(runs) == 5 and {r["slot"] for r in runs} == {0, 1}
    assert all(r["cpus"] == str(r["slot"]) for r in runs)  # a job ran with its slot's cores
    for s in (0, 1):  # never two jobs in one slot at once
        spans = sorted(r["span"] for r in runs if r["slot"] == s)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(
        _status(j) == {"status": "completed", "exit_code": 0, "error": None, "overrides": j.overrides}
        for j in jobs
    )
    assert all((j.run_dir / sweep.CONSOLE_LOG).exists() for j in jobs)  # quiet: output to the run dir


def _raises(_slot):
    raise ValueError("bad value")


def _killed(_slot):
    os.kill(os.getpid(), signal.SIGKILL)


def _refused(_slot):
    return sweep.JobEnd(2, None)


def test_failing_jobs_are_recorded_the_others_go_on_and_the_sweep_fails(tmp_path):
    log = tmp_path / "ran.jsonl"
    jobs = [
        _job(tmp_path, 0, _raises),
        _job(tmp_path, 1, _killed),
        _job(tmp_path, 2, _refused),
        _job(tmp_path, 3, _timed(log)),
    ]
    ends = sweep.SlotPool([Slot(0, (0,))], quiet=False).run(jobs)
    assert [ends[i].exit_code for i in range(4)] == [EXIT_FAILED, EXIT_FAILED, 2, 0]
    assert _status(jobs[0])["error"] == "ValueError: bad value"
    assert _status(jobs[1])["error"] == f"job process ended with status {-signal.SIGKILL} before reporting"
    assert _status(jobs[2]) == {"status": "failed", "exit_code": 2, "error": None, "overrides": ["seed=2"]}
    assert log.is_file()  # the last job ran all the same

    verdict = sweep.judge(tmp_path, jobs, ends)
    assert verdict is not None and verdict.exit_code == EXIT_FAILED
    assert verdict.message.startswith(
        "3 job(s) of the sweep did not complete: #0 (exit 1), #1 (exit 1), #2 (exit 2)"
    )
    assert sweep.judge(tmp_path, jobs[3:], ends) is None
    stopped = sweep.judge(tmp_path, jobs[3:], ends, stopped="finished jobs are recorded")
    assert stopped is not None and stopped.exit_code == EXIT_INTERRUPTED


def _stops_the_sweep(_slot):
    """SIGTERM to the sweep's process, as `kill` or a scheduler sends it; then wait to be stopped."""
    os.kill(os.getppid(), signal.SIGTERM)
    time.sleep(60)
    return sweep.JobEnd(0)


def test_sigterm_stops_new_jobs_and_reaches_the_running_one(tmp_path):
    jobs = [_job(tmp_path, i, _stops_the_sweep) for i in range(3)]
    before = signal.getsignal(signal.SIGTERM)
    pool = sweep.SlotPool([Slot(0, (0,))], quiet=False)
    started = time.monotonic()
    ends = pool.run(jobs)
    assert time.monotonic() - started < 30  # the running job was stopped, not waited for
    assert pool.stop.signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) == before
    assert ends[0] == sweep.JobEnd(EXIT_INTERRUPTED, "KeyboardInterrupt: ")
    assert _status(jobs[0])["status"] == "interrupted"
    assert ends[1] == ends[2] == sweep.JobEnd(EXIT_INTERRUPTED, "not started: sweep interrupted")
    assert not jobs[1].run_dir.exists()


def test_a_payload_that_does_not_pickle_stays_behind(tmp_path):
    end = sweep.JobEnd(0, payload=lambda: None)
    assert sweep.picklable(end).payload is None and sweep.picklable(sweep.JobEnd(0, payload=[1])).payload == [
        1
    ]


def test_set_aside_keeps_every_earlier_attempt(tmp_path):
    run_dir = tmp_path / "sweep" / "0"
    for attempt in ("first", "second"):
        run_dir.mkdir(parents=True)
        (run_dir / "note").write_text(attempt)
        sweep.set_aside(tmp_path / "sweep", run_dir)
    kept = tmp_path / "sweep" / job_records.SUPERSEDED_DIR
    assert not run_dir.exists()
    assert [(kept / n / "note").read_text() for n in ("0.1", "0.2")] == ["first", "second"]


def test_skip_completed_sets_leftovers_aside_and_runs_every_job_without_a_completed_run(tmp_path):
    jobs = [_job(tmp_path, i, _refused) for i in range(2)]
    jobs[0].run_dir.mkdir()
    (jobs[0].run_dir / job_records.JOB_STATUS_FILE).write_text("{}")
    chosen = sweep.choose(jobs, tmp_path, skip_completed=True)
    assert chosen.to_run == jobs and chosen.ends == {}
    assert (tmp_path / job_records.SUPERSEDED_DIR / "0.1" / job_records.JOB_STATUS_FILE).is_file()
    assert sweep.choose(jobs, tmp_path, skip_completed=False).to_run == jobs


def test_the_launchers_settings_are_typed_from_hydra_config():
    from hydra_plugins.runner_launcher.runner_launcher import RunnerSlotsLauncher
    from hydra_plugins.runner_slurm.slurm_launcher import RunnerSlurmLauncher

    cfg = OmegaConf.create({"gpus": [0, 1], "slots": 2})
    slots = RunnerSlotsLauncher(**{k: cfg[k] for k in cfg}).settings
    assert slots == sweep.SlotSettings(slots=2, gpus=[0, 1]) and type(slots.gpus) is list
    extra = OmegaConf.create({"additional_parameters": {"qos": "high"}, "setup": ["module load x"]})
    slurm = RunnerSlurmLauncher(**{k: extra[k] for k in extra}).settings
    assert slurm.additional_parameters == {"qos": "high"} and type(slurm.additional_parameters) is dict
    with pytest.raises(TypeError):
        RunnerSlotsLauncher(partition="debug")  # a Slurm setting is not a slots launcher's


# -- Hydra's side: a job's task is Hydra's run_job of the task function --------------------------------------
def _as_main(fn):
    """As ``@hydra.main`` does: the module's attribute is a wrapper, the task function is inside it."""

    @functools.wraps(fn)
    def main():
        raise AssertionError("the wrapper is not the task")

    return main


@_as_main
def _where_it_ran(cfg):
    return cfg.launch.cpuset_cpus


def _buggy(cfg):
    raise ValueError("a bug")


@pytest.fixture
def hydra_job(tmp_path):
    """A sweep job's whole config (hydra node included), composed by Hydra from a small config dir."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext
    from omegaconf import open_dict

    (tmp_path / "config.yaml").write_text("seed: 0\nlaunch: {cpuset_cpus: null}\n")
    sweep_dir = tmp_path / "sweep"
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        overrides = [f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=0", "hydra.job.chdir=false"]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.job.id = cfg.hydra.job.num = 0
        yield HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks()), cfg


def test_a_hydra_task_runs_in_its_slot_and_travels_by_name(hydra_job):
    import pickle

    from hydra_plugins.runner_launcher.sweep_launcher import HydraTask

    context, cfg = hydra_job
    fn = _where_it_ran.__wrapped__
    task = pickle.loads(pickle.dumps(HydraTask(context, fn, cfg, Launch.parse({"cpuset_cpus": None}))))
    assert task.task_function is fn  # by name, as it reaches a Slurm node
    end = task(Slot(0, (2, 3)))
    assert end.exit_code == 0 and end.error is None and end.payload.return_value == "2-3"
    assert task(None).payload.return_value is None  # no slot: where the job asked to run
    # a job whose launch does not parse is not placed: its run refuses it, in its one line
    assert HydraTask(context, fn, cfg, None)(Slot(0, (2, 3))).payload.return_value is None


def test_a_bug_in_a_sweep_job_keeps_its_traceback_and_is_its_error(hydra_job, capsys):
    from hydra_plugins.runner_launcher.sweep_launcher import HydraTask, job_return

    context, cfg = hydra_job
    end = HydraTask(context, _buggy, cfg, None)(None)
    assert (end.exit_code, end.error) == (EXIT_FAILED, "ValueError: a bug")
    err = capsys.readouterr().err
    assert "Traceback" in err and 'raise ValueError("a bug")' in err
    job = sweep.SweepJob(0, [], Path(cfg.hydra.sweep.dir) / "0", {}, _buggy)
    assert job_return(cfg, job, end) is end.payload  # Hydra gets back the record its run_job made
    skipped = job_return(cfg, job, sweep.JobEnd(0, skipped=True))
    assert skipped.return_value == 0 and skipped.hydra_cfg.hydra.runtime.output_dir == str(job.run_dir)
    with pytest.raises(KeyboardInterrupt):
        _ = job_return(cfg, job, sweep.JobEnd(EXIT_INTERRUPTED, "not started")).return_value
