"""The few exception types the library raises; ``cli.py`` maps them to messages and exit codes."""


class CrawlerError(Exception):
    """Base of every error access-crawler reports to its user."""

    exit_code = 1


class UsageError(CrawlerError):
    """Bad command-line options or configuration: exit code 2."""

    exit_code = 2


class Interrupted(CrawlerError):
    """The crawl was stopped (Ctrl-C): finished accounts stay staged, nothing was published."""

    exit_code = 130
