# `make run` and `make test` do all set-up themselves; both are idempotent.
PY      := .venv/bin/python
STAMP   := .venv/.installed-stamp

.PHONY: setup run test test-unit test-slow bench lock lint docker base data slurm charliecloud podman registry

setup: $(STAMP) docker base data

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	touch $@

docker:
	scripts/ensure-docker.sh

base: docker
	scripts/ensure-base.sh runner-base:bookworm

data:
	scripts/ensure-data.sh

# A two-node Slurm cluster on this machine (nodes n1, n2) for hydra/launcher=slurm and the `slurm` tests.
slurm:
	scripts/ensure-slurm.sh

# Charliecloud (unprivileged ch-run; skopeo and umoci unpack image files) for engine=charliecloud, and
# the unprivileged user its tests run the runner as (runner-ci), able to run this checkout's Python.
charliecloud: $(STAMP)
	scripts/ensure-charliecloud.sh runner-ci $(abspath $(PY)) $(CURDIR)

# Rootless Podman and an unprivileged user (runner-ci) who can run this venv, for engine=podman and its tests.
podman: $(STAMP)
	scripts/ensure-podman.sh runner-ci $(abspath $(PY))

# An image registry on 127.0.0.1:5000 (Debian's docker-registry) for image.registry and the registry
# tests, with skopeo and squashfs-tools for `runner export`.
registry:
	scripts/ensure-registry.sh

run: setup
	$(PY) -m runner experiment=mnist_ddp

test: setup slurm charliecloud podman registry
	$(PY) -m pytest -x -q

# The pure, fast tests alone (no engine, no Slurm): seconds, for the edit-test loop.
test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-slow: setup
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]  # 5: no test is marked slow: nothing failed

bench: setup
	$(PY) -m bench.run

# ruff (lint + formatting), the layer contracts (import-linter), mypy on the package, and every
# module that a docstring, comment or README names exists (scripts/check_refs.py).
lint: $(STAMP)
	.venv/bin/ruff check runner experiments tests bench hydra_plugins scripts
	.venv/bin/ruff format --check runner experiments tests bench hydra_plugins scripts
	.venv/bin/lint-imports
	.venv/bin/mypy
	$(PY) scripts/check_refs.py

# Regenerate the hash-pinned image locks from images/*.in (needs PyPI).
lock: $(STAMP)
	.venv/bin/pip-compile -q --generate-hashes --allow-unsafe --no-header --no-emit-index-url \
	  --no-emit-find-links --strip-extras -o images/cpu.lock images/cpu.in
	.venv/bin/pip-compile -q --generate-hashes --allow-unsafe --no-header --no-emit-index-url \
	  --no-emit-find-links --strip-extras -o images/cuda.lock images/cuda.in
