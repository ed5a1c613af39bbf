"""Datasets on the host: find the files, fetch missing ones (checksums verified), hash them.

Data is mounted read-only into the container; the manifest records each file's sha256.
Downloads happen here, on the host, because training containers have no network.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.core.errors import EXIT_ENVIRONMENT, RunnerError
from runner.host import atomic
from runner.host.hashing import FileDigest, HashCache


def prepare(dataset: Mapping[str, Any], cache: HashCache, log=print) -> tuple[Path, dict[str, FileDigest]]:
    """Return the dataset root and {file name: {sha256, bytes}}; download what is missing."""
    root = Path(str(dataset["root"])).expanduser()
    names = [str(n) for n in dataset["files"].values()]
    missing = [n for n in names if not (root / n).is_file()]
    download = dataset.get("download")
    if missing and download:
        _download(root, missing, download, log)
    elif missing:
        raise RunnerError(
            f"dataset {dataset['name']}: {', '.join(missing)} not found under {root}"
            + (
                " (apt-get install dataset-fashion-mnist, or `make setup`)"
                if dataset["name"] == "fashion_mnist"
                else ""
            ),
            EXIT_ENVIRONMENT,
        )
    expected = (download or {}).get("sha256") or {}
    files: dict[str, FileDigest] = {}
    for n in names:
        digest = cache.sha256(root / n)
        if n in expected and expected[n] != digest:
            raise RunnerError(
                f"dataset {dataset['name']}: {root / n} has sha256 {digest[:12]}…, expected "
                f"{expected[n][:12]}… — delete it to download it again",
                EXIT_ENVIRONMENT,
            )
        files[n] = {"sha256": digest, "bytes": (root / n).stat().st_size}
    return root, files


def _download(root: Path, names: list[str], download: Mapping[str, Any], log) -> None:
    """Fetch each missing file from the first mirror that serves it with the expected sha256.

    A file is written under a temporary name and renamed into place only once its hash matches,
    so a refused or interrupted download leaves nothing behind that a later run could trust.
    """
    mirrors = [str(m) for m in download.get("mirrors") or []]
    sums = download.get("sha256") or {}
    timeout = float(download.get("timeout_s", 30))
    unpinned = [n for n in names if not sums.get(n)]
    if unpinned:
        raise RunnerError(
            f"no sha256 for {', '.join(unpinned)} in dataset.download.sha256: refusing to download "
            "unverified data",
            EXIT_ENVIRONMENT,
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunnerError(f"cannot create data root {root}: {exc.strerror}", EXIT_ENVIRONMENT) from None
    for name in names:
        unreachable, mismatched = [], []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                log(f"downloading {url}")
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    digest = atomic.write_stream(
                        root / name, iter(lambda: resp.read(1 << 20), b""), sums[name]
                    )
                if digest == sums[name]:
                    break
                mismatched.append(f"{url} gave sha256 {digest[:12]}…")
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                unreachable.append(f"{url}: {getattr(exc, 'reason', exc)}")
        else:
            if mismatched:
                raise RunnerError(
                    f"{name}: checksum mismatch, file not kept ({'; '.join(mismatched)}; expected "
                    f"{sums[name][:12]}… from dataset.download.sha256)",
                    EXIT_ENVIRONMENT,
                )
            raise RunnerError(
                f"cannot download {name} ({'; '.join(unreachable) or 'no mirrors configured'}); offline? put "
                f"the IDX files under {root} (dataset.root=…), set dataset.download.mirrors to a reachable "
                "mirror, or use dataset=fashion_mnist (Debian's dataset-fashion-mnist)",
                EXIT_ENVIRONMENT,
            )
