"""Configuration: the YAML reader (``yamlnodes``), the loader that validates it (``loader``) and the frozen
settings every other stage receives (``settings``).

May import: the standard library, PyYAML, ``crawler.errors``. Nothing here calls AWS or touches the output.
"""
