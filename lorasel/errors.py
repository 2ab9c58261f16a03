"""One error family for everything a user can get wrong.

Every error a person can fix carries a message (what is wrong, naming the file,
key or value) and a hint (what to do about it). The CLI prints it as one line,
``error: <message> (hint: <hint>)``, with exit status 2 and no traceback.
"""

from __future__ import annotations


class LoraselError(Exception):
    """A problem the user can fix: bad input, a missing file, an unfit model."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        # One line, always: messages may quote file contents.
        return " ".join(text.split())


def first_line(exc: BaseException) -> str:
    """The first line of a library's exception message (many add paragraphs of advice that
    do not apply here), or its type when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class ConfigError(LoraselError):
    """A configuration file or option is invalid (unknown key, bad value)."""


class CheckpointError(LoraselError):
    """A checkpoint file cannot be read, is not a LoRA, or does not fit the base."""


class ModelLoadError(LoraselError):
    """A base model or scorer cannot be found or loaded."""


class DatasetError(LoraselError):
    """A training dataset is missing, empty or malformed."""


class EvaluationError(LoraselError):
    """An evaluation cannot run (no checkpoints, bad prompt set, bad settings)."""


class ResultsError(LoraselError):
    """Stored results are missing or unreadable (run `lorasel eval` first)."""


class OutputError(LoraselError):
    """A file lorasel was asked to write cannot be written (no such folder, no permission, a
    folder in the way, a full disk)."""


class NoCandidateError(LoraselError):
    """No (checkpoint, strength) meets the requested minimums."""

    exit_code = 3
