"""``python -m runner.diff``: the command-line edge of :mod:`runner.flows.diff`."""

import sys

from runner.flows.diff import main

if __name__ == "__main__":
    sys.exit(main())
