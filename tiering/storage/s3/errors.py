"""S3 and botocore errors translated to the tree in :mod:`tiering.errors` (the table is in
:mod:`tiering.storage.s3.backend`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
    SSLError,
)

from tiering.errors import (
    AccessDenied,
    ArchivedObject,
    BackendError,
    DigestRefused,
    InsufficientStorage,
    ObjectNotFound,
    PermanentBackendError,
    TransientBackendError,
    Unreachable,
)

NOT_FOUND_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES: Final = frozenset({
    "AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
})
_FULL_CODES: Final = frozenset({
    "EntityTooLarge", "InsufficientStorage", "XMinioStorageFull", "QuotaExceeded",
    "XMinioAdminBucketQuotaExceeded", "StorageFull",
})
_TRANSIENT_CODES: Final = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException",
    "RequestTimeout", "OperationAborted", "XMinioServerNotInitialized",
})
DIGEST_CODES: Final = frozenset({"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"})
BATCH_DELETE_UNSUPPORTED: Final = frozenset({"NotImplemented", "MethodNotAllowed", "501"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def s3_error(code: str, message: str, operation: str = "DeleteObjects") -> ClientError:
    """An S3 error code and message read from an answer's document, as botocore would raise them."""
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {}}, operation)


def translate(
    exc: Exception, *, op: str, key: str, url: str, bucket: str, prefix: str, endpoint: Callable[[], str]
) -> BackendError:
    """``exc`` (a botocore error, or one made from a lean answer) as one of ours, for ``op`` on ``key`` of the
    backend at ``url`` (``bucket``, key ``prefix``); ``endpoint()`` names the endpoint in messages."""
    where = f"s3://{bucket}/{prefix}{key}" if key else f"s3://{bucket}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        # codes first: moto answers InvalidObjectState with 403, which is not a credentials problem
        if code == "InvalidObjectState":
            if op == "restore_object":
                return PermanentBackendError(
                    f"cannot restore {where}: it is not in an archive storage class ({message})",
                    backend=url, key=key,
                )
            storage_class = error.get("StorageClass") or "an archive storage class"
            return ArchivedObject(
                f"{where} is in {storage_class}: it needs a restore before it can be read "
                f"(`tiering restore NAME --to TIER`, or RestoreObject)",
                backend=url, key=key,
            )
        if code in DIGEST_CODES:
            return DigestRefused(f"{op} {where}: the store refused the body: {message}",
                                 backend=url, key=key)
        if code == "NoSuchUpload":
            return PermanentBackendError(f"{op} {where}: the multipart upload is gone ({message})",
                                         backend=url, key=key)
        if code == "NoSuchBucket":
            return PermanentBackendError(
                f"bucket {bucket!r} does not exist at {endpoint()} "
                f"(`tiering init` creates it)",
                backend=url, key=key,
            )
        if code in NOT_FOUND_CODES or status == 404:
            if key:
                return ObjectNotFound(key, backend=url)
            return PermanentBackendError(f"{op}: {where} not found ({code})", backend=url)
        if code in _FULL_CODES or status == 507 or "no space" in message.lower():
            return InsufficientStorage(f"{op} {where}: destination full ({code}: {message})",
                                       backend=url, key=key)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientBackendError(f"{op} {where}: {code or status}: {message}",
                                         backend=url, key=key)
        if code in _DENIED_CODES or status == 403:
            # SeaweedFS also answers a PUT into a missing bucket with AccessDenied
            return AccessDenied(
                f"access denied ({code}) for {op} on {where} at {endpoint()}: "
                f"check the tier's credentials and that the bucket exists",
                backend=url, key=key,
            )
        if code == "MethodNotAllowed" and op == "restore_object":
            return PermanentBackendError(
                f"{endpoint()} does not support RestoreObject "
                f"(not an archive endpoint)",
                backend=url, key=key,
            )
        return PermanentBackendError(f"{op} {where}: {code or status}: {message}",
                                     backend=url, key=key)
    if isinstance(exc, SSLError):
        return Unreachable(
            f"TLS error talking to S3 endpoint {endpoint()} "
            f"(check verify_tls / the CA bundle)",
            backend=url, key=key,
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ProxyConnectionError):
        return Unreachable(f"cannot reach S3 endpoint {endpoint()}",
                           backend=url, key=key)
    if isinstance(exc, HTTPClientError | ConnectionClosedError | IncompleteReadError):
        return TransientBackendError(
            f"{op} {where}: connection problem with {endpoint()} "
            f"({type(exc).__name__})",
            backend=url, key=key,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(f"no usable S3 credentials for {url}: configure the tier's credentials",
                            backend=url, key=key)
    return PermanentBackendError(f"{op} {where}: {type(exc).__name__}: {exc}", backend=url, key=key)
