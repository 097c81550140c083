"""The dataset on disk or object storage: the tables' schemas (``schema``), Parquet files (``parquet``),
staging, publishing and manifests (``dataset``), which run a reader reads (``published``), the lease of a
snapshot date (``lease``), the crawl_runs rows (``run_rows``), checking a snapshot (``verify``), the
warehouse DDL (``warehouse``) and Arrow's memory for a crawl (``memory``).

May import: pyarrow, ``crawler.config``, and the shared modules (``crawler.errors``, ``crawler.outcomes``,
``crawler.listing``). Never boto3: conditional writes on S3 come in from the AWS edge
(``crawler.aws.s3``). Readers (analysis, report) ask it which run is published.
"""
