"""The one table that maps core errors to gRPC status codes."""

from __future__ import annotations

import grpc

from core.errors import (
    CatalogError,
    IndexFormatError,
    InvalidArgumentError,
    LtrrError,
    NotFoundError,
    NotReadyError,
    StateError,
    UnimplementedError,
)

STATUS_FOR: dict[type[LtrrError], grpc.StatusCode] = {
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    CatalogError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    IndexFormatError: grpc.StatusCode.FAILED_PRECONDITION,
    StateError: grpc.StatusCode.FAILED_PRECONDITION,
    UnimplementedError: grpc.StatusCode.UNIMPLEMENTED,
}


def status_for(error: LtrrError) -> grpc.StatusCode:
    """The status code of the most specific class of `error` in STATUS_FOR (INTERNAL if none)."""
    for cls in type(error).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return grpc.StatusCode.INTERNAL
