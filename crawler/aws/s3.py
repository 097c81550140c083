"""Conditional writes on S3, which pyarrow's S3 filesystem does not offer: create an object only if it is absent,
replace or delete it only if it is still the version read (its ETag).

The store uses them for the publish claim of a sharded run and for the lease of a snapshot date.
The client comes from the session factory (:meth:`crawler.aws.sessions.SessionFactory.s3_objects`):
the standard credential chain, and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` honoured by botocore.
"""
from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

#: Tries of a conditional put that S3 answered with ConditionalRequestConflict (a concurrent put).
CONFLICT_ATTEMPTS = 4
#: What S3 answers when a condition does not hold: another writer changed (or removed) the object first.
LOST_RACE = frozenset({"PreconditionFailed", "NoSuchKey", "404"})


class ConditionalObjects:
    """Conditional reads and writes of objects addressed as ``bucket/key`` (pyarrow's S3 paths)."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self._make_client = client
        self._client: Any = None
        self._lock = threading.Lock()

    def read(self, path: str) -> tuple[bytes, str] | None:
        """The object's content and ETag, or None when there is no object; OSError when S3 cannot be read."""
        bucket, key = _bucket_key(path)
        try:
            answer = self.client().get_object(Bucket=bucket, Key=key)
            return answer["Body"].read(), str(answer["ETag"])
        except ClientError as error:
            if _code(error) in ("NoSuchKey", "404"):
                return None
            raise OSError(errno.EIO, f"cannot read s3://{path}: {error}") from error
        except BotoCoreError as error:
            raise OSError(errno.EIO, f"cannot read s3://{path}: {error}") from error

    def put(self, path: str, content: bytes, version: str | None = None) -> bool:
        """Write the object if it is absent (``version`` None) or still at ``version``: False when it was not."""
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        bucket, key = _bucket_key(path)
        return self._conditionally(path, lambda: self.client().put_object(Bucket=bucket, Key=key, Body=content,
                                                                          **condition))

    def delete(self, path: str, version: str) -> bool:
        """Delete the object if it is still at ``version``: False when it was not."""
        bucket, key = _bucket_key(path)
        return self._conditionally(path, lambda: self.client().delete_object(Bucket=bucket, Key=key,
                                                                             IfMatch=version))

    def client(self) -> Any:
        """The S3 client, made on first use (client creation is not thread-safe: locked)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _conditionally(self, path: str, request: Callable[[], Any]) -> bool:
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                request()
                return True
            except ClientError as error:
                if _code(error) in LOST_RACE:
                    return False
                if _code(error) != "ConditionalRequestConflict" or attempt + 1 == CONFLICT_ATTEMPTS:
                    raise OSError(errno.EIO, f"cannot write s3://{path}: {error}") from error
                time.sleep(0.5 * (attempt + 1))  # another conditional write was in flight: S3 asks to retry
            except BotoCoreError as error:
                raise OSError(errno.EIO, f"cannot write s3://{path}: {error}") from error
        raise AssertionError("unreachable")


def _bucket_key(path: str) -> tuple[str, str]:
    bucket, _, key = path.partition("/")
    return bucket, key


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code") or "")
