"""The dataset on disk or object storage: the tables' schemas (``schema``), Parquet files (``parquet``),
staging, publishing and manifests (``dataset``), the lease of a snapshot date (``lease``), the crawl_runs
rows (``run_rows``), checking a snapshot (``verify``) and the warehouse DDL (``warehouse``).

May import: pyarrow, ``crawler.config.settings``, ``crawler.errors``. Only this package imports pyarrow for
writing; readers (analysis, report) ask it which run is published.
"""
