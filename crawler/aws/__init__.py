"""The edge to AWS: the one session factory that makes credentials and clients (``sessions``), AWS's error
shapes (``errors``), paced and patient calls (``calls``) and the rate limits behind them (``ratelimit``),
conditional writes on S3 (``s3``) and AWS's timestamps (``timestamps``).

May import: boto3/botocore, ``crawler.config`` and the shared modules (``crawler.errors``,
``crawler.progress``). Only this package calls boto3.
"""
