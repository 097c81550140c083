"""What is read from AWS, as data: the organization's accounts (``organizations``), each account's IAM
inventory (``inventory``), access-advisor jobs (``advisor``), the Organizations view
(``organizations_view``), the one poller both run their asynchronous jobs on (``poller``), and the
pure transforms of what they return into table rows (``rows``).

May import: ``crawler.aws``, ``crawler.config``, ``crawler.errors``, ``crawler.crawl.progress``. Never the store.
"""
