"""The one table that maps core errors to gRPC status codes."""

from __future__ import annotations

import grpc

from core.errors import (
    CatalogError,
    DeadlineExceededError,
    IndexFormatError,
    InvalidArgumentError,
    LtrrError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    StateError,
    UnavailableError,
    UnimplementedError,
)

STATUS_FOR: dict[type[LtrrError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    CatalogError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    IndexFormatError: grpc.StatusCode.FAILED_PRECONDITION,
    UnimplementedError: grpc.StatusCode.UNIMPLEMENTED,
    StateError: grpc.StatusCode.FAILED_PRECONDITION,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_for(error: LtrrError) -> grpc.StatusCode:
    """The status code of the most specific class of `error` in STATUS_FOR (INTERNAL if none)."""
    for cls in type(error).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.INTERNAL
