"""``python -m creditmeter.cli``: the same as the ``creditmeter`` command."""

from creditmeter.cli import main

if __name__ == "__main__":
    main()
