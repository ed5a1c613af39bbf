"""``python -m runner.audit``: the command-line edge of :mod:`runner.flows.audit`."""

from runner.flows.audit import main

if __name__ == "__main__":
    main()
