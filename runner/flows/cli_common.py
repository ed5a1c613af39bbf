"""What every command-line edge shares: one-line errors and config validation before Hydra runs."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.json_types import JsonObject
from runner.host.project import conf_dir, find_root

if TYPE_CHECKING:
    from omegaconf import DictConfig


def project_conf_dir() -> Path:
    """The project's ``conf/`` (or the built-in one), found when a command composes a config, not at
    import: finding the project runs git. The built-in groups are on Hydra's search path too
    (``hydra_plugins/runner_searchpath``)."""
    return conf_dir(find_root())


def fail(exc: BaseException) -> NoReturn:
    """Print one line and exit. The decision to exit is final: a further Ctrl-C or SIGTERM (a
    user pressing it again while the process winds down) must not turn the exit into a
    traceback or a death by signal."""
    import contextlib
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            signal.signal(sig, signal.SIG_IGN)
    if isinstance(exc, RunnerError):
        code, msg = exc.exit_code, exc.message
    else:
        code, msg = EXIT_USAGE, " ".join(str(exc).split())
    print(f"runner: error: {msg}", file=sys.stderr)
    sys.exit(code)


def compose(overrides: list[str], return_hydra_config: bool = False):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(project_conf_dir()), version_base="1.3"):
        return hydra_compose(
            config_name="config", overrides=overrides, return_hydra_config=return_hydra_config
        )


def resolved(cfg: DictConfig) -> JsonObject:
    """A composed config as a plain dict, interpolations resolved: what a run records and plans from."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(container, dict):
        raise TypeError(f"a composed config is a mapping, not {type(container).__name__}")
    # OmegaConf types a container's keys as any primitive; a composed config's keys are strings
    return cast(JsonObject, container)


def validate_overrides(argv: list[str]) -> None:
    """Compose the config once (first value of each sweep) so that a typo fails in one line,
    naming the available options, instead of a Hydra error page."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if not a.startswith("-")]
    if any(a in ("--help", "-h", "--info", "--cfg", "-c", "--hydra-help") for a in argv):
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise RunnerError(f"bad override: {' '.join(str(exc).split())}", EXIT_USAGE) from None
    plain: list[str] = []
    for line, o in zip(overrides, parsed, strict=True):  # one parsed override per input line
        if o.is_hydra_override():
            continue
        if o.is_sweep_override():
            first = next(iter(o.sweep_string_iterator()), None)
            if first is None:
                continue
            plain.append(f"{o.get_key_element()}={first}")
        else:
            plain.append(line)
    try:
        cfg = compose(plain)
        OmegaConf.to_container(cfg, resolve=True)
    except MissingConfigException as exc:
        first = str(exc).strip().splitlines()[0]
        opts = f" (available: {', '.join(exc.options)})" if exc.options else ""
        raise RunnerError(f"{first}{opts}", EXIT_USAGE) from None
    except (HydraException, OmegaConfBaseException) as exc:
        lines = [" ".join(line.split()) for line in str(exc).strip().splitlines()] or [type(exc).__name__]
        first = lines[0]
        if len(lines) > 1 and lines[1].startswith("To append"):  # an unknown key: say so, and how to add one
            hint = lines[1][len("To append to your config ") :]
            first = f"{first.rstrip('.')}: no such key (to add one, {hint})"
        raise RunnerError(f"bad config: {first}", EXIT_USAGE) from None


def engine_spec(name: str) -> JsonObject:
    """``launch.engine`` as the option ``engine=NAME`` of the user's own config composes it: how a
    replay or a resume chooses its engine, by name, never by a ``_target_`` a record holds."""
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf

    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", name):
        raise RunnerError(f"engine {name[:40]!r}: not an engine name (docker, podman, …)", EXIT_USAGE)
    try:
        cfg = compose([f"engine={name}"])
    except MissingConfigException as exc:
        opts = f" (available: {', '.join(exc.options)})" if exc.options else ""
        raise RunnerError(f"engine {name!r}: no such engine{opts}", EXIT_USAGE) from None
    spec = OmegaConf.to_container(cfg.launch.engine, resolve=True)
    if not isinstance(spec, dict):
        raise RunnerError(f"engine={name}: launch.engine is not a mapping", EXIT_USAGE)
    return cast(JsonObject, spec)


def engine_for(recorded: str | None, chosen: str | None, how: str) -> JsonObject:
    """The engine a replay or a resume runs on: ``chosen`` by name, else the one the record names
    (its name only, an option of the user's ``engine`` group), else Docker; ``how`` says how to
    choose one (``--engine NAME``)."""
    try:
        return engine_spec(chosen or recorded or "docker")
    except RunnerError as exc:
        if chosen:
            raise
        raise RunnerError(f"the record ran on {exc.message}: choose one with {how}", EXIT_USAGE) from None
