"""One-line user errors for the project's command-line tools (standard library only).

:func:`run_cli` runs a ``main(argv)`` and turns an expected user error (``ValueError``,
``OSError``, ``RuntimeError``: bad values, missing or unwritable files, a busy output folder)
into one line ``<prog>: error: <message>`` on stderr and exit status 2, without a traceback.
``--debug`` anywhere on the command line re-raises instead (full traceback).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, OSError, RuntimeError)


def run_cli(prog: str, main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """``main(argv)`` with user errors as one line on stderr (exit 2); ``--debug``: traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        return main(argv)
    except USER_ERRORS as err:
        if debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{prog}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
