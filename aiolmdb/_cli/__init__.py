"""The ``aiolmdb`` command line."""
