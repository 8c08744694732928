"""``python -m luna_daemon.server [FLAGS]``: the original's start command, now ``luna-daemon serve [FLAGS]``.

Every flag of ``luna-daemon serve`` works the same (``--socket``, ``--spool-dir``, ``--state-dir``, ``--config``,
...), and so do the environment variables (``LUNA_DAEMON_SOCKET``, ...); see ``luna-daemon serve --help``.
"""

from __future__ import annotations

import sys

from luna_daemon import run


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return run(["serve", *args])


if __name__ == "__main__":
    sys.exit(main())
