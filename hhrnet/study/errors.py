"""The study's errors, one type per kind of failure (never recognised by their text)."""

from __future__ import annotations


class StudyError(RuntimeError):
    """A study that cannot be expanded or run; the message names the file, run or entry at fault."""


class SpecError(StudyError):
    """``rows.yaml`` is malformed: the message names the file, the entry and the key (or line:column)."""


class RunFailed(StudyError):
    """A notebook failed; the message names the run, the cell and the kept notebook."""


class StudyLocked(StudyError):
    """Another process holds the lock of a run (and waiting was not asked for); ``holder`` says which."""

    def __init__(self, message: str, holder: str = "another process") -> None:
        super().__init__(message)
        self.holder = holder
