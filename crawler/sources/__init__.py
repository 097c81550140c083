"""What is read from AWS, as data: the organization's accounts (``organizations``), each account's IAM
inventory (``inventory``), access-advisor jobs (``advisor``), the Organizations view
(``organizations_view``), the one poller both run their asynchronous jobs on (``poller``), and the
pure transforms of what they return into table rows (``rows``: the list of per-account tables, each made
of an account's ``account_result``).

May import: ``crawler.aws``, ``crawler.config``, botocore's exception types, and the shared modules
(``crawler.errors``, ``crawler.outcomes``, ``crawler.progress``). Never the store or the run.
"""
