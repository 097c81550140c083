"""The run: plan or resume it under the snapshot's lease (``runs``), split it into shards (``shards``),
crawl the accounts (``scheduler``), record where the run stands and publish it (``publish``).

May import every stage below it: ``crawler.config``, ``crawler.aws``, ``crawler.sources``,
``crawler.store``, and the shared modules. tests/test_layout.py checks every stage's imports.
"""
