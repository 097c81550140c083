"""The benchmark behind ``scripts/bench``: :mod:`~crawler.bench.measure` runs one configuration,
:mod:`~crawler.bench.plain` holds the plain-boto3 procedures it is compared with,
:mod:`~crawler.bench.targets` judges the figures, :mod:`~crawler.bench.cli` is the command line."""
