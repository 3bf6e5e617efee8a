"""Standard output that outlives its reader (`diskspec map disk.vhdx | head`).

When the reader of a pipe exits early, writes fail with EPIPE. qemu-img ignores that: the
command runs to its end and exits with its own code (check's 2 for corruption stays 2).
The command line does the same: once the pipe is gone, output is dropped, not raised.
Text the stream cannot encode (a lone surrogate in a name an image holds) is written with
backslash escapes, not raised either.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class PipeTolerant:
    """A text stream over `stream` that drops output once the reader has gone."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                try:
                    return self._stream.write(text)
                except UnicodeEncodeError:  # e.g. a lone surrogate from a UTF-16 field
                    self._stream.write(self._escaped(text))
                    return len(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def _escaped(self, text: str) -> str:
        """`text` with what the stream cannot encode as backslash escapes (an image's
        names are shown, never a UnicodeEncodeError)."""
        encoding = getattr(self._stream, "encoding", None) or "utf-8"
        errors = getattr(self._stream, "errors", None) or "strict"
        if errors == "strict":
            errors = "backslashreplace"
        try:
            return text.encode(encoding, errors).decode(encoding, "replace")
        except UnicodeEncodeError:  # a handler of the stream's own that still fails
            return text.encode(encoding, "backslashreplace").decode(encoding, "replace")

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def _gone(self) -> None:
        self.reader_gone = True
        # the interpreter flushes the real stream again at exit: let that go to /dev/null
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno, ... of the stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def tolerant_stdout() -> Iterator[PipeTolerant]:
    """sys.stdout is a PipeTolerant over itself for the duration."""
    saved = sys.stdout
    wrapper = PipeTolerant(saved)
    sys.stdout = wrapper  # print() and the commands need only write, flush and isatty
    try:
        yield wrapper
    finally:
        sys.stdout = saved
