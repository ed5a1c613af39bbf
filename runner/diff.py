"""``python -m runner.diff``: the command-line edge of :mod:`runner.flows.diff`."""

from runner.flows.diff import main

if __name__ == "__main__":
    main()
