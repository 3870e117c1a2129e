"""``python -m creditmeter``: the same as the ``creditmeter`` command."""

from creditmeter.cli import main

if __name__ == "__main__":
    main()
