"""``python -m crawler.bench``: see :mod:`crawler.bench.cli`."""
from crawler.bench.cli import main

raise SystemExit(main())
