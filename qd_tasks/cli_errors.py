"""One-line user errors for the project's command-line tools (standard library only).

:func:`run_cli` runs a ``main(argv)`` and turns a user error into one line
``<prog>: error: <message>`` on stderr and exit status 2, without a traceback. User errors are
:class:`UserInputError` (the project's own type) and the types the input checks raise:
``ValueError`` (bad values, malformed files) and ``OSError`` (missing or unwritable files).
Every other exception (a ``RuntimeError`` such as CUDA out of memory, a bug) keeps its traceback.
``--debug`` anywhere on the command line re-raises user errors too (full traceback).
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserInputError(ValueError):
    """An error the user fixes by changing the command, its files or its environment (a busy
    output folder, a missing optional package); :func:`run_cli` prints it as one line."""


USER_ERRORS = (ValueError, OSError)
"""What :func:`run_cli` prints as one line (:class:`UserInputError` is a ``ValueError``)."""


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
