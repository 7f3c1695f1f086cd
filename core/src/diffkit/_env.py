"""The one parser of diffkit's ``DIFFKIT_*`` on/off switches (light: no torch)."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("diffkit")

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f", ""})
_warned: set[tuple[str, str]] = set()


def env_flag(name: str, default: bool = False, *, invalid: bool | None = None) -> bool:
    """The switch ``name``: 1/true/yes/on or 0/false/no/off (any case, spaces ignored); unset is ``default``.

    Any other value warns once and counts as ``invalid`` (``default`` when not given); a
    safety switch passes ``invalid=True`` so that a typo errs on the safe side.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    fallback = default if invalid is None else invalid
    if (name, raw) not in _warned:
        _warned.add((name, raw))
        logger.warning("%s=%r is not a switch value (1/true/yes/on or 0/false/no/off); treating it as %s",
                       name, raw, "on" if fallback else "off")
    return fallback
