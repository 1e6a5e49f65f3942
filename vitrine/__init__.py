"""vitrine's Python client: ``from vitrine import Client``."""

from vitrine.client import Client, Product, SearchHit, SearchResults, VitrineAPIError

__all__ = ["Client", "Product", "SearchHit", "SearchResults", "VitrineAPIError"]
