"""The errors core raises. The service layer maps each class to one gRPC status code."""

from __future__ import annotations


class LtrrError(Exception):
    """Base class of every error ltrr raises on purpose."""


class InvalidArgumentError(LtrrError, ValueError):
    """A caller-supplied value is malformed or out of range.

    `field` names the offending argument in wire terms (e.g. "query.text", "quota",
    "query.filters[0].field") so that clients can point at it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFoundError(LtrrError, LookupError):
    """A referenced object (entity, decision) does not exist."""


class NotReadyError(LtrrError):
    """The component is still loading or warming up."""


class IndexFormatError(LtrrError):
    """An index file is missing, truncated, corrupted or of an unsupported version.

    The message always names the file.
    """

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class StateError(LtrrError):
    """A state file the broker keeps (its event log, its policy snapshot) is damaged, truncated, not
    what it claims to be, or of a version this ltrr cannot read. The message names the file and
    what to do about it."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class CatalogError(LtrrError, ValueError):
    """A catalog file cannot be read as the format it claims to be; names the file and line."""


class UnimplementedError(LtrrError):
    """An optional ability (query understanding, learning) the strategy does not offer."""


class UnavailableError(LtrrError):
    """A dependency the request needs (the event log's disk, a shard) failed; the caller may retry."""


class OverloadedError(LtrrError):
    """A server's bounded queue is full: the request is refused at once instead of queued
    (services.admission); the caller may retry later or elsewhere."""


class DeadlineExceededError(LtrrError):
    """The request's deadline passed (or will pass before its work could finish) while it waited:
    the work was not started."""
