"""Encoding a key for LMDB: the key coder, then a size check that names what is wrong."""

from __future__ import annotations

from typing import Any

from .._codecs.coder import Coder
from ..errors import InvalidKeyError

__all__ = ["encode_key", "key_error"]


def key_error(key: object, encoded: Any, max_key_size: int) -> Exception | None:
    """Diagnose LMDB's BadValsizeError for a key: an InvalidKeyError naming what is wrong."""
    size = len(encoded)
    if size == 0:
        return InvalidKeyError(f"empty key ({key!r} encodes to 0 bytes); LMDB keys need >= 1 byte")
    if size > max_key_size:
        return InvalidKeyError(
            f"key of {size} bytes is longer than this environment's max_key_size() "
            f"({max_key_size} bytes)"
        )
    return None


def encode_key(kc: Coder[Any], key: Any, max_key_size: int) -> Any:
    """Serialize a key and check its size, raising InvalidKeyError with the reason."""
    encoded = kc.serialize(key)
    if not 0 < len(encoded) <= max_key_size:
        err = key_error(key, encoded, max_key_size)
        if err is not None:
            raise err
    return encoded
