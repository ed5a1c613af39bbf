"""``runner export RUN_DIR -o FILE`` and ``runner import FILE``: a run's image as one file, and back.

``export`` writes the image a run recorded (by its id: the very image, here or pulled by its
recorded digest) as ``docker-archive`` (default), ``oci`` or ``squashfs``
(:mod:`runner.host.image_files`), prints the file's sha256 as ``sha256sum`` does, and writes
``FILE.json`` beside it: which digest is which (the file's sha256, the image id — its config's
digest —, the registry digest the run recorded, an OCI file's manifest digest) and the run it
came from. The same image always gives the same bytes.

``import`` loads a docker-archive or OCI file into the engine (``--engine NAME``; Docker by default,
``charliecloud`` unpacks it into the user's image cache) and prints the image id it holds;
``python -m runner.replay RUN_DIR --image FILE`` does both and refuses a file that does not hold the
recorded image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from runner.core import commands
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.flows.cli_common import fail
from runner.host import atomic, console, records


def export(target: str | os.PathLike, out: str | os.PathLike, fmt: str = "docker-archive") -> Path:
    """Write the image the run at ``target`` ran in to ``out``; returns the record written beside it."""
    from runner.host import engine as engines
    from runner.host import image_builder, image_files

    if fmt not in image_files.FORMATS:
        raise RunnerError(f"--format {fmt!r}: one of {', '.join(image_files.FORMATS)}", EXIT_USAGE)
    original = records.load(target)
    if original.edited:
        raise RunnerError(f"cannot export: {original.digest_note}", EXIT_USAGE)
    m = original.manifest
    if not m.containerized or m.image is None:
        raise RunnerError(
            f"{original.dir} ran in no image (launch.backend=host): nothing to export", EXIT_USAGE
        )
    path = _output(Path(out), original.dir)
    engine = engines.connect()  # the default engine: a record does not choose code to run
    exact = image_builder.exact(engine, m.image, None, console.echo)
    if exact.image is None:
        raise RunnerError(
            f"image {m.image.tag} ({m.image.id[:19]}…) that {original.dir} ran in is not on this engine "
            "and no registry gave it: export it where the run was recorded",
            EXIT_ENVIRONMENT,
        )
    written = image_files.export(engine, m.image.id, m.image.tag, path, fmt)
    sidecar = path.with_name(path.name + ".json")
    doc = {
        **written.to_json(),
        "registry_ref": m.image.registry_ref,
        "run": {"dir": str(original.dir), "run_id": m.run_id, "manifest_sha256": original.sha256},
    }
    atomic.write_text(sidecar, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"{written.sha256}  {path}")
    return sidecar


def _output(path: Path, run_dir: Path) -> Path:
    """Where the file goes: a new or replaced file in a writable directory, never a directory, and
    never inside the run dir (a file there would be one the record does not vouch for)."""
    path = path.resolve()
    if path.is_relative_to(run_dir.resolve()):
        raise RunnerError(f"-o {path}: inside the run dir {run_dir}; write it elsewhere", EXIT_USAGE)
    if path.is_dir():
        raise RunnerError(f"-o {path}: is a directory; name the file to write", EXIT_USAGE)
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK | os.X_OK):
        raise RunnerError(f"-o {path}: {path.parent} is not a writable directory", EXIT_USAGE)
    return path


def import_file(path: str | os.PathLike, engine: str | None = None) -> list[str]:
    """Load an image file into the engine named ``engine`` (an option of the ``engine`` group;
    None: Docker); the ids of the images it held."""
    from runner.flows.cli_common import engine_spec
    from runner.host import engine as engines
    from runner.host import image_files

    file = Path(path)
    image_files.sniff(file)  # a file that is no image: one line, before the engine is asked
    ids = image_files.load(engines.connect(engine_spec(engine) if engine else None), file)
    for image_id in ids:
        print(f"{image_id}  {file}")
    return ids


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runner export", description=commands.COMMANDS["export"])
    p.add_argument("run", help="a run dir or its manifest.json")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write")
    p.add_argument(
        "--format",
        default="docker-archive",
        choices=["docker-archive", "oci", "squashfs"],
        help="docker-archive (docker/podman load, apptainer), oci (skopeo, podman, apptainer), "
        "squashfs (enroot, srun --container-image)",
    )
    return p


def build_import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runner import", description=commands.COMMANDS["import"])
    p.add_argument("file", help="a docker-archive or OCI file (`runner export` writes them)")
    p.add_argument(
        "--engine",
        metavar="NAME",
        help="the engine to load it into, an option of the engine group (default: docker; "
        "charliecloud unpacks it into your image cache)",
    )
    return p


def main_export(argv: list[str]) -> int:
    args = build_export_parser().parse_args(argv)
    try:
        export(args.run, args.output, args.format)
    except RunnerError as exc:
        fail(exc)
    except KeyboardInterrupt:
        fail(RunnerError("interrupted: nothing was written", 130))
    return 0


def main_import(argv: list[str]) -> int:
    args = build_import_parser().parse_args(argv)
    try:
        import_file(args.file, args.engine)
    except RunnerError as exc:
        fail(exc)
    except KeyboardInterrupt:
        fail(RunnerError("interrupted: the engine may hold the image's layers loaded so far, no image", 130))
    return 0


if __name__ == "__main__":
    sys.exit(main_export(sys.argv[1:]))
