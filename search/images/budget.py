"""Memory for decoding pictures: reserved from the header's numbers before a pixel is decoded.

A few hundred bytes of PNG or JPEG can declare tens of millions of pixels; what they cost is known
from the header alone. Every decode reserves its cost from two budgets: the request's (all images of
one request together: past it, 413) and the server's (all decodes in flight: past it, wait a little,
then 429). The server budget is what bounds memory however many requests arrive at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from search.errors import Overloaded, TooLarge

# Bytes per pixel as Pillow stores each mode: RGB is kept as 4 bytes (RGBX); 1-bit and 8-bit modes
# as 1. Every image line is also a separate block with a pointer to it (tall images cost per line).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "LA": 4, "PA": 4}
_LINE_OVERHEAD = 16


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Peak memory to decode one picture of this size and mode and make it upright RGB.

    The decoded source, its RGB conversion and one more RGB copy (EXIF rotation or the white
    background of transparent pictures) may all be alive at once.
    """
    source = height * (width * _BYTES_PER_PIXEL.get(mode, 4) + _LINE_OVERHEAD)
    rgb = height * (width * 4 + _LINE_OVERHEAD)
    return source + 2 * rgb


class DecodeBudget:
    """The server's budget: bytes of pictures being decoded at once, all requests together."""

    def __init__(self, max_bytes: int, wait_seconds: float = 10.0) -> None:
        self.max_bytes = max_bytes
        self.wait_seconds = wait_seconds
        self.in_use = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, cost: int) -> Iterator[None]:
        if cost > self.max_bytes:
            raise TooLarge(
                f"image would take {cost} bytes to decode; the server's limit is {self.max_bytes} "
                "(VITRINE_MAX_DECODE_BYTES)"
            )
        with self._changed:
            if not self._changed.wait_for(lambda: self.in_use + cost <= self.max_bytes, self.wait_seconds):
                raise Overloaded(
                    "server is busy decoding images (VITRINE_MAX_DECODE_BYTES in use); retry later"
                )
            self.in_use += cost
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= cost
                self._changed.notify_all()


class RequestDecodeBudget:
    """One request's share: the decode costs of all its images added up (thread-safe)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, cost: int) -> None:
        with self._lock:
            if self.used + cost > self.max_bytes:
                raise TooLarge(
                    f"the images of this request would take more than {self.max_bytes} bytes to decode "
                    f"(VITRINE_MAX_DECODE_BYTES_PER_REQUEST); send fewer or smaller images"
                )
            self.used += cost
