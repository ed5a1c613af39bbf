"""Puts the runner's built-in config groups (images, determinism profiles, data sets, launch
settings) on Hydra's search path, after the project's own ``conf/``: a project's config composes
with them (``image: auto``, ``determinism: strict`` …) without copying them, and its own groups
and options come first."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class RunnerSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from runner.host.project import builtin_conf

        path = f"file://{builtin_conf()}"
        if not any(
            element.path == path or element.path == str(builtin_conf()) for element in search_path.get_path()
        ):
            search_path.append(provider="runner", path=path)
