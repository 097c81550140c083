"""The few exception types the library raises; ``cli.py`` maps them to messages and exit codes.

Exit codes: 0 done; 1 a run published with recorded failures (or ``verify`` found problems);
2 bad usage or configuration, or the snapshot date is held by another run; 3 failed, nothing
was published (or written); 130 interrupted.
"""


class CrawlerError(Exception):
    """Base of every error access-crawler reports to its user: it failed, nothing was published (exit code 3)."""

    exit_code = 3


class UsageError(CrawlerError):
    """Bad command-line options or configuration: exit code 2."""

    exit_code = 2


class Interrupted(CrawlerError):
    """The crawl was stopped (Ctrl-C): finished accounts stay staged, nothing was published."""

    exit_code = 130
