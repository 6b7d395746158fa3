"""User-facing errors.

A `NiftError` is a mistake the user can fix (bad input, bad config, missing package). The CLI prints its message
and exits with status 2, without a traceback; anything else is a bug in nift and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class NiftError(Exception):
    """An error caused by input, configuration or environment, with a message that says how to fix it."""


class ConfigError(NiftError):
    """A configuration file or command-line value is invalid."""


class InputError(NiftError):
    """An input file is missing, malformed or unusable."""


class BadRow(InputError):
    """One row of an input is unusable; the message names file and line, `reason` is what `--on-bad-row skip`
    counts it under."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Registry lookups answer an unknown name with the closest matches and the full list (lm-eval style)."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} Choices: {', '.join(choices)}."


def missing_package(package: str, extra: str | None = None, purpose: str = "") -> NiftError:
    """The error for an optional dependency that is not installed (backends are imported lazily)."""
    how = f"pip install 'nift[{extra}]'" if extra else f"pip install {package}"
    what = f" for {purpose}" if purpose else ""
    return NiftError(f"the optional package '{package}' is needed{what} but is not installed: {how}")


_DISK = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
}


def environment_error(e: BaseException) -> NiftError | None:
    """A full disk, a used-up quota or a read-only file system as one line that says what to do (the CLI prints it
    instead of a traceback); None for any other error, which keeps its traceback."""
    import sqlite3

    if isinstance(e, OSError) and e.errno in _DISK:
        what, where, readonly = _DISK[e.errno], f" ({e.filename})" if e.filename else "", e.errno == errno.EROFS
    elif isinstance(e, sqlite3.OperationalError) and ("disk is full" in str(e) or "readonly" in str(e)):
        what, where, readonly = f"SQLite: {e}", " (a request store)", "readonly" in str(e)
    else:
        return None
    fix = "choose a writable --run-dir" if readonly else "free some space or choose another --run-dir"
    return NiftError(f"{what}{where}: {fix}, then run the same command again (finished work is kept)")
