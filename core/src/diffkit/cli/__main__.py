"""``python -m diffkit.cli``: the same as the ``diffkit`` command."""

import sys

from diffkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
