"""The edge to AWS: the one session factory that makes credentials and clients (``sessions``), AWS's error
shapes (``errors``), paced and patient calls (``calls``) and the rate limits behind them (``ratelimit``),
and AWS's timestamps (``timestamps``).

May import: boto3/botocore, ``crawler.config``, ``crawler.errors``, ``crawler.crawl.progress`` (call counters).
Only this package and ``crawler.sources`` call boto3.
"""
