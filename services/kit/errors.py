"""Errors a service raises; the server interceptor turns them into gRPC statuses with the message intact."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc


class StageError(Exception):
    """A request failed with a definite gRPC status. ``message`` tells the caller what to fix."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s  # sent as google.rpc.RetryInfo in the status details
        if code is not None:
            self.code = code

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """``grpc-status-details-bin`` (google.rpc.Status with RetryInfo) when a retry delay is known."""
        if self.retry_after_s is None:
            return ()
        from google.protobuf import duration_pb2
        from google.rpc import error_details_pb2, status_pb2

        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(self.retry_after_s), nanos=int((self.retry_after_s % 1) * 1e9)))
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.add().Pack(info)
        return (("grpc-status-details-bin", status.SerializeToString()),)


class InvalidArgument(StageError):
    """The request is malformed: wrong field, order, size or value."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(StageError):
    """A named thing (voice, tool, session, model) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(StageError):
    """A dependency is down; retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(StageError):
    """The RPC exists but this profile does not serve it."""

    code = grpc.StatusCode.UNIMPLEMENTED


class FailedPrecondition(StageError):
    """The system is not in a state to serve the request (e.g. draining)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(StageError):
    """The work did not finish in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


@contextlib.contextmanager
def invalid_argument_on(errors: tuple[type[Exception], ...] = (ValueError,)) -> Iterator[None]:
    """Turn a model layer's ValueError (or the given types) into INVALID_ARGUMENT with the same message."""
    try:
        yield
    except errors as e:
        raise InvalidArgument(str(e)) from None
