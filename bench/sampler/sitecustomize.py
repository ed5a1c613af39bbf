"""A sampling profiler for diagnosis, started in every Python process that has ``RUNNER_SAMPLE_OUT``
in its environment and this folder first on ``PYTHONPATH``: a thread looks at the main thread's
stack every 5 ms and counts, per ``file:line function`` of each frame on it, the samples it was on
(so a line's count is the wall time spent in it and below, ×5 ms). Every second and at exit it
writes the 60 busiest lines to ``$RUNNER_SAMPLE_OUT/sample-<pid>.txt`` (every second: a process
that ends with ``os._exit``, as the runner's worker does, runs no exit hook). Pass the variable to
a run's training processes with ``launch.env_passthrough=[RUNNER_SAMPLE_OUT]``. Not part of the
runner.
"""

import os

if os.environ.get("RUNNER_SAMPLE_OUT"):
    import atexit
    import collections
    import sys
    import threading
    import time

    _counts: collections.Counter = collections.Counter()
    _main = threading.main_thread().ident
    _total = [0]

    def _write() -> None:
        out = os.path.join(os.environ["RUNNER_SAMPLE_OUT"], f"sample-{os.getpid()}.txt")
        with open(out, "w") as f:
            f.write(f"argv {sys.argv} samples {_total[0]} (x5 ms)\n")
            for key, n in _counts.most_common(60):
                f.write(f"{n:6d} {key}\n")

    def _sample() -> None:
        while True:
            if _total[0] % 200 == 199:
                _write()
            time.sleep(0.005)
            frame = sys._current_frames().get(_main)
            _total[0] += 1
            seen = set()
            while frame is not None:
                key = f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
                if key not in seen:
                    seen.add(key)
                    _counts[key] += 1
                frame = frame.f_back

    threading.Thread(target=_sample, daemon=True, name="sampler").start()
    atexit.register(_write)
