"""``python -m runner.replay``: the command-line edge of :mod:`runner.flows.replay`."""

from runner.flows.replay import main

if __name__ == "__main__":
    main()
