"""The documents of the coder workloads: ~1 KiB JSON-like records, and their msgspec type.

Every document has the same shape (nested dicts and lists of str, int, float and bool), as an
application's records do; field values come from small vocabularies and a seeded generator, so
the set is deterministic and compresses the way real records do.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from .workloads import BenchConfig

FIRST = ["Ada", "Brian", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas"]
LAST = ["Nakamura", "Okafor", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka", "Usman", "Varga"]
CITIES = ["Lyon", "Porto", "Graz", "Ghent", "Turku", "Bergen", "Cork", "Brno", "Split", "Aarhus"]
STREETS = ["Station Road", "Market Street", "Mill Lane", "Church Walk", "Harbour View"]
WORDS = [
    "account",
    "active",
    "archive",
    "billing",
    "cache",
    "client",
    "cluster",
    "config",
    "delivery",
    "deploy",
    "discount",
    "gateway",
    "invoice",
    "latency",
    "ledger",
    "merchant",
    "metrics",
    "mobile",
    "order",
    "payment",
    "pending",
    "premium",
    "priority",
    "queue",
    "refund",
    "region",
    "release",
    "replica",
    "retail",
    "review",
    "shipping",
    "storage",
    "support",
]
STATUSES = ["pending", "paid", "shipped", "delivered", "returned"]
#: Orders per document: with the fields above, about 1 KiB of JSON as JSONCoder writes it.
ORDERS = 8


def make_document(i: int, rng: random.Random) -> dict[str, Any]:
    """Document number ``i``: a customer record with an address and a few orders."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "id": i,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{i}@example.com",
        "active": rng.random() < 0.7,
        "score": round(rng.random() * 100, 3),
        "created": f"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
        f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
        "tags": rng.sample(WORDS, 4),
        "address": {
            "street": f"{rng.randrange(1, 200)} {rng.choice(STREETS)}",
            "city": rng.choice(CITIES),
            "zip": f"{rng.randrange(10**5):05d}",
            "country": rng.choice(["FR", "PT", "AT", "BE", "FI", "NO", "IE", "CZ"]),
        },
        "orders": [
            {
                "sku": f"SKU-{rng.randrange(10**5):05d}",
                "qty": rng.randrange(1, 10),
                "price": round(rng.random() * 500, 2),
                "status": rng.choice(STATUSES),
            }
            for _ in range(ORDERS)
        ],
        "note": " ".join(rng.choice(WORDS) for _ in range(12)),
    }


@functools.lru_cache(maxsize=2)
def _documents(n: int, seed: int) -> tuple[dict[str, Any], ...]:
    rng = random.Random(seed ^ 0xD0C5)
    return tuple(make_document(i, rng) for i in range(n))


def documents(cfg: BenchConfig) -> tuple[dict[str, Any], ...]:
    """The run's documents, one per key of the data set's first ``n_docs`` (made once per
    process and shared: do not modify them)."""
    return _documents(min(cfg.n_docs, cfg.n_keys), cfg.seed)


def document_type() -> Any:
    """The ``msgspec.Struct`` type of a document (nested Structs); ImportError without msgspec."""
    from ._doctypes import Document

    return Document
