"""access-crawler: IAM access advisor across every account of an AWS Organization."""

__version__ = "0.1.0"
