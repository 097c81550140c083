"""The run: plan or resume it under the snapshot's lease (``runs``), split it into shards (``shards``),
crawl the accounts and publish (``scheduler``), count progress (``progress``), keep memory low (``memory``).

May import every stage below it: ``crawler.config``, ``crawler.aws``, ``crawler.sources``, ``crawler.store``.
"""
