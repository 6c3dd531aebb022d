"""``qd_tasks.cli_errors.run_cli``: user errors as one line (exit 2), every other error with its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qd_tasks.cli_errors import UserInputError, run_cli


def _raising(error: BaseException):
    def main(argv: list[str]) -> int:
        raise error

    return main


@pytest.mark.parametrize("error", [UserInputError("--shard=9/2 is not allowed; allowed: K/N"), ValueError("bad value\n  on two lines"),
                                   FileNotFoundError("no such file: x.json")])
def test_user_errors_are_one_line_with_exit_2(error, capsys):
    assert run_cli("qd-x", _raising(error), []) == 2
    err = capsys.readouterr().err
    assert err == f"qd-x: error: {' '.join(str(error).split())} (--debug shows the traceback)\n"


def test_debug_reraises_a_user_error(capsys):
    with pytest.raises(UserInputError, match="bad"):
        run_cli("qd-x", _raising(UserInputError("bad")), ["--debug"])
    assert capsys.readouterr().err == ""


def test_debug_is_removed_from_the_arguments():
    seen = []
    assert run_cli("qd-x", lambda argv: seen.append(argv) or 0, ["a", "--debug", "b"]) == 0
    assert seen == [["a", "b"]]


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), KeyError("a bug"), TypeError("a bug")])
def test_other_errors_propagate(error, capsys):
    with pytest.raises(type(error)):
        run_cli("qd-x", _raising(error), [])
    assert capsys.readouterr().err == ""


def test_torch_out_of_memory_is_not_a_user_error(capsys):
    torch = pytest.importorskip("torch")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_cli("qd-x", _raising(torch.cuda.OutOfMemoryError("CUDA out of memory")), [])
    assert capsys.readouterr().err == ""


COMMAND = """
import sys
from qd_tasks.cli_errors import UserInputError, run_cli
def main(argv):
    raise {error}("{message}")
sys.exit(run_cli("qd-x", main, []))
"""


@pytest.mark.integration
def test_a_runtime_error_shows_its_traceback_and_a_user_error_one_line():
    """As a user sees it: the interpreter's exit status and stderr."""
    crash = subprocess.run([sys.executable, "-c", COMMAND.format(error="RuntimeError", message="CUDA out of memory")],
                           capture_output=True, text=True, timeout=120)
    assert crash.returncode == 1 and crash.stderr.startswith("Traceback (most recent call last):")
    assert crash.stderr.strip().splitlines()[-1] == "RuntimeError: CUDA out of memory" and "qd-x: error" not in crash.stderr
    user = subprocess.run([sys.executable, "-c", COMMAND.format(error="UserInputError", message="bits=9 is not allowed; allowed: 2..8")],
                          capture_output=True, text=True, timeout=120)
    assert user.returncode == 2 and "Traceback" not in user.stderr
    assert user.stderr.splitlines() == ["qd-x: error: bits=9 is not allowed; allowed: 2..8 (--debug shows the traceback)"]
