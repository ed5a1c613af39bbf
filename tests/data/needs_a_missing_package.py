"""An experiment whose module needs a package the image lacks: it fails as it is imported, at
once, with the user's own error line (for the runner's tests of a container that ends at once)."""

from __future__ import annotations

import a_package_the_image_lacks  # noqa: F401


def train(cfg, run_dir):
    return {}
