"""``python -m aiolmdb`` and the ``aiolmdb`` console script (see :mod:`aiolmdb._cli.commands`)."""

from ._cli.commands import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
