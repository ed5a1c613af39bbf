"""``python -m runner.summary``: the command-line edge of :mod:`runner.flows.summary`."""

from runner.flows.summary import main

if __name__ == "__main__":
    main()
