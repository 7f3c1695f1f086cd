"""Project-wide test settings.

Plugin load errors are exceptions in the test suite. Hypothesis runs derandomized by default
(the "ci" profile): every run tries the same examples, so CI cannot fail on an example that a
previous run never met. ``HYPOTHESIS_PROFILE=explore`` draws fresh examples, to hunt for new
failures locally.
"""

import os

from hypothesis import settings

os.environ.setdefault("DIFFKIT_STRICT_PLUGINS", "1")

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
