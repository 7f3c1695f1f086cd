"""Project-wide test settings: plugin load errors are exceptions in the test suite."""

import os

os.environ.setdefault("DIFFKIT_STRICT_PLUGINS", "1")
