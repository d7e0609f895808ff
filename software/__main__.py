"""``python -m software COMMAND``: the command-line client (see :mod:`software.cli`)."""
import sys

from software.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
