"""The documents' msgspec types, apart so that the harness imports without msgspec.

No ``from __future__ import annotations``: msgspec reads these annotations at class creation.
"""

import msgspec


class Address(msgspec.Struct):
    """A document's address."""

    street: str
    city: str
    zip: str
    country: str


class Order(msgspec.Struct):
    """One of a document's orders."""

    sku: str
    qty: int
    price: float
    status: str


class Document(msgspec.Struct):
    """A document, as ``documents.make_document`` makes them."""

    id: int
    name: str
    email: str
    active: bool
    score: float
    created: str
    tags: list[str]
    address: Address
    orders: list[Order]
    note: str
