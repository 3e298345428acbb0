"""The `gpuvjp` logger: silent by default; GPUVJP_LOG=debug logs kernel compiles and fallbacks.

`GPUVJP_LOG` takes a level name (debug, info, warning, error); when it is set, records go to
stderr. Without it the logger has only a NullHandler, so nothing is ever printed (an
application may still attach its own handler to `logging.getLogger("gpuvjp")`).
"""

from __future__ import annotations

import logging
import os

__all__ = ["logger", "fallback"]

logger = logging.getLogger("gpuvjp")
logger.addHandler(logging.NullHandler())

_level = os.environ.get("GPUVJP_LOG", "").strip().upper()
if _level:
    if _level.isdigit():
        _level = int(_level)
    logger.setLevel(_level)
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("gpuvjp %(levelname)s: %(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False

_FELL_BACK: set = set()


def fallback(op, why):
    """Log, once per op, that an elementwise op runs unfused."""
    if op.name not in _FELL_BACK:
        _FELL_BACK.add(op.name)
        logger.debug("fallback: %s runs unfused (%s)", op.name, why)
