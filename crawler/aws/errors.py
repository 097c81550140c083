"""AWS's error shapes: which exceptions are AWS's (or the network's) doing, and their codes and messages."""
from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

#: Everything a call can raise because of what AWS (or the network) did: the crawler records
#: these; anything else is a bug. botocore's ResponseParserError (a malformed answer) is not
#: a BotoCoreError.
AWS_ERRORS = (ClientError, BotoCoreError, ResponseParserError)


def error_code(error: BaseException) -> str:
    """The AWS error code of a botocore exception (or its class name)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code") or "Unknown")
    return type(error).__name__


def error_message(error: BaseException) -> str:
    """The AWS error message of a botocore exception (or its text)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Message") or error)
    return str(error)
