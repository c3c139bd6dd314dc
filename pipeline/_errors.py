"""Exceptions, catchable by category (after httpx's ``_exceptions.py``)::

PipelineError
├── ConfigError            a config problem: file + key path, all problems at once (exit 2)
├── RegistryError          a plugin could not be loaded or is registered twice
└── ComponentError         raised by a component; carries its ID when known
    ├── ScrapeError        one target failed; carries the target and an ErrorClass
    │   └── ParseError     the page did not parse; carries the line number and the line
    └── ExportError        a push failed
        ├── PermanentExportError   never retried (e.g. a 400 other than throttling)
        └── RetryableExportError   retried with backoff
            └── ThrottledError     retried after the server's delay, if it gave one
"""

from __future__ import annotations

from collections.abc import Sequence

from ._model import ErrorClass


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """One or more config problems; each names the source file and the full key path."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]], note: str = "") -> None:
        self.source = source
        self.problems = list(problems)
        #: Set when checking stopped early: says what was not checked yet, and why.
        self.note = note
        super().__init__("\n".join(self.lines() + ([note] if note else [])))

    def lines(self) -> list[str]:
        prefix = f"{self.source}: " if self.source else ""
        return [
            f"{prefix}{key}: {message}" if key else f"{prefix}{message}"
            for key, message in self.problems
        ]


class RegistryError(PipelineError):
    """A component plugin could not be loaded, or two plugins claim one type."""


class ComponentError(PipelineError):
    def __init__(self, message: str, component: str = "") -> None:
        self.component = component
        super().__init__(f"{component}: {message}" if component else message)


class ScrapeError(ComponentError):
    """A target's scrape failed; the message names the target."""

    def __init__(self, target: str, error_class: ErrorClass, message: str) -> None:
        self.target = target
        self.error_class = error_class
        self.reason = message
        super().__init__(f"target {target}: {error_class}: {message}")


class ParseError(ScrapeError):
    """A metrics page did not parse; ``line_number`` is 1-based, ``line`` the offending text."""

    def __init__(self, message: str, line_number: int, line: str, target: str = "") -> None:
        self.message = message
        self.line_number = line_number
        self.line = line
        shown = line if len(line) <= 200 else line[:200] + "..."
        super().__init__(target, ErrorClass.PARSE, f"line {line_number}: {message}: {shown!r}")

    def for_target(self, target: str) -> ParseError:
        """The same error, naming the target (the parser does not know it)."""
        return ParseError(self.message, self.line_number, self.line, target)


class ExportError(ComponentError):
    pass


class PermanentExportError(ExportError):
    """The data was refused and will be refused again; never retried."""


class RetryableExportError(ExportError):
    pass


class ThrottledError(RetryableExportError):
    def __init__(self, message: str, retry_after: float | None = None, component: str = "") -> None:
        self.retry_after = retry_after
        super().__init__(message, component)
