"""``python -m creditmeter.cli``: the ``creditmeter`` command."""

from creditmeter.cli import main

main()
