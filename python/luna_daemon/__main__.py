"""``python -m luna_daemon ARGS``: the same as ``luna-daemon ARGS`` (``serve``, ``stop``, ``doctor``, ...)."""

from __future__ import annotations

import sys

from luna_daemon import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
