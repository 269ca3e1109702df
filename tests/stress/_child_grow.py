"""Child process: grows an environment's map from outside and writes a lot into it.

Usage: ``python -m stress._child_grow PATH NEW_MAP_SIZE KEY_PREFIX COUNT VALUE_SIZE``

Opens the environment with plain py-lmdb (not aiolmdb), calls ``set_mapsize(NEW_MAP_SIZE)`` and
writes ``COUNT`` keys ``KEY_PREFIX + index`` in transactions of 16, each value derived from its
key by ``_stress_util.value_for``. The parent, which has the environment open with aiolmdb and a
smaller map, then sees ``lmdb.MapResizedError`` inside the engine and must adopt the new size.
"""

from __future__ import annotations

import sys

import lmdb

from ._stress_util import value_for


def open_plain(path: str) -> lmdb.Environment:
    """``lmdb.open`` as any plain py-lmdb process would, opening again when the parent grows
    the map while this opens: py-lmdb's open begins a read transaction, which then raises
    MapResizedError (aiolmdb.open adopts the new size instead; a plain process has to retry)."""
    for _ in range(100):
        try:
            return lmdb.open(path, max_dbs=128)
        except lmdb.MapResizedError:
            continue
    return lmdb.open(path, max_dbs=128)


def main(argv: list[str]) -> int:
    path, new_size, prefix, count, value_size = argv
    env = open_plain(path)
    try:
        env.set_mapsize(int(new_size))
        keys = [b"%s%06d" % (prefix.encode(), i) for i in range(int(count))]
        for start in range(0, len(keys), 16):
            with env.begin(write=True) as txn:
                for key in keys[start : start + 16]:
                    txn.put(key, value_for(key, int(value_size)))
        print("done", env.info()["map_size"], flush=True)
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
