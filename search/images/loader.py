"""Image inputs: from a caller's string (URL, base64, data URI) or a file to an RGB picture.

There is one loader. The API, the indexer and search by image all call it, so the same bytes always
become the same pixels and therefore the same embedding.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from search.errors import BadInput, TooLarge, VitrineError
from search.images.budget import DecodeBudget, RequestDecodeBudget, decoded_bytes
from search.images.fetch import UrlFetcher

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I
)
_WHITESPACE = re.compile(rb"\s+")


def unsupported_type_message(value: object) -> str:
    # Verbatim from the reference: "Unsupported image input type: <class 'NoneType'>".
    return f"Unsupported image input type: {type(value)}"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    # The model's input side (512 for base-512): pictures are decoded and kept at no less than twice
    # that per axis, and reduced when much larger. None: every picture at full size.
    model_side: int | None = None


def decode_image(
    data: bytes,
    limits: ImageLimits,
    *,
    server_budget: DecodeBudget | None = None,
    request_budget: RequestDecodeBudget | None = None,
) -> Image.Image:
    """Bytes -> upright RGB picture: first frame, EXIF orientation applied, transparency on white.

    The decode's memory is known from the header and charged to the budgets before any pixel is
    decoded; a JPEG much larger than the model needs is decoded at a reduced scale (``draft``).
    """
    if len(data) > limits.max_bytes:
        raise TooLarge(
            f"image is {len(data)} bytes; the limit is {limits.max_bytes} (VITRINE_MAX_IMAGE_BYTES)"
        )
    if not data:
        raise BadInput("image is empty")
    try:
        # Our pixel limit is checked from the header, before any pixel is decoded (a small file can
        # hold a huge picture); Pillow's own bomb check stays as a second line behind it. No
        # warnings.catch_warnings() here: it is process-global and images decode in parallel threads.
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        width, height = image.size
        if width * height > limits.max_pixels:
            raise BadInput(
                f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels} "
                "(VITRINE_MAX_IMAGE_PIXELS)"
            )
        if limits.model_side and image.format in ("JPEG", "MPO"):
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly; draft keeps both sides >= the target.
            image.draft(image.mode, (2 * limits.model_side, 2 * limits.model_side))
        cost = decoded_bytes(*image.size, image.mode)
        if request_budget is not None:
            request_budget.charge(cost)
        with server_budget.reserve(cost) if server_budget is not None else nullcontext():
            image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
            picture = shrink(to_rgb(image), limits.model_side)
    except VitrineError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInput(f"image is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise BadInput(f"not a supported image (formats: {', '.join(ALLOWED_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInput(f"image is truncated or corrupt: {exc}") from None
    return picture


def shrink(image: Image.Image, model_side: int | None) -> Image.Image:
    """A picture much larger than the model's input reduced (box filter, per axis) to 2-4x that input.

    Pictures up to 4x the input per axis are left exactly as decoded; the model's processor resizes
    them as it always does. Larger ones would only hold memory until the processor shrinks them.
    """
    if not model_side:
        return image
    factors = tuple(side // (2 * model_side) if side > 4 * model_side else 1 for side in image.size)
    if factors == (1, 1):
        return image
    return image.reduce(factors)


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB; transparent pixels are composited on white, the usual product-photo background."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not reject an otherwise fine picture
        pass
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    if image.mode != "RGB":
        # I;16 and friends: convert() clips 16-bit values, so scale them down to 8 bits first.
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = image.point(lambda value: value / 256).convert("L")
        return image.convert("RGB")
    return image


def decode_base64(text: str, limits: ImageLimits) -> bytes:
    """Raw base64 (the reference's form) or the payload of a data URI; whitespace is ignored."""
    raw = _WHITESPACE.sub(b"", text.encode("ascii", errors="replace"))
    # A base64 string's size gives the decoded size: refuse before decoding a huge payload.
    if len(raw) * 3 // 4 > limits.max_bytes + 3:
        raise TooLarge(
            f"image is about {len(raw) * 3 // 4} bytes; the limit is {limits.max_bytes} (VITRINE_MAX_IMAGE_BYTES)"
        )
    raw += b"=" * (-len(raw) % 4)
    try:
        if b"-" in raw or b"_" in raw:
            return base64.urlsafe_b64decode(raw)
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("not a URL and not valid base64 image data") from None


def parse_data_uri(text: str, limits: ImageLimits) -> bytes:
    match = _DATA_URI.match(text)
    if not match or not match.group("b64"):
        raise BadInput("data URI must have the form data:image/<type>;base64,<data>")
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith("image/"):
        raise BadInput(f"data URI has type {mime}; an image/* type is required")
    return decode_base64(text[match.end() :], limits)


def is_url(value: str) -> bool:
    return value[:8].lower().startswith(("http://", "https://"))


class ImageLoader:
    """Turns a batch of caller inputs into pictures, fetching URLs concurrently."""

    def __init__(
        self,
        fetcher: UrlFetcher,
        limits: ImageLimits,
        concurrency: int = 16,
        per_request: int = 4,
        decode_budget: DecodeBudget | None = None,
        request_decode_bytes: int | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.limits = limits
        self.decode_budget = decode_budget
        self.request_decode_bytes = request_decode_bytes
        # The pool is shared by every caller; one call keeps at most ``per_request`` of its slots busy,
        # so a request full of slow URLs cannot stall the image fetches of everyone else.
        self.per_request = max(1, min(per_request, concurrency))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vitrine-fetch")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()

    def read_bytes(self, value: object) -> bytes:
        """The encoded image bytes behind one input string."""
        if not isinstance(value, str):
            raise BadInput(unsupported_type_message(value))
        text = value.strip()
        if is_url(text):
            return self.fetcher.fetch(text)
        if text[:5].lower() == "data:":
            return parse_data_uri(text, self.limits)
        if not text:
            raise BadInput("image input is an empty string")
        return decode_base64(text, self.limits)

    def new_request_budget(self) -> RequestDecodeBudget | None:
        return RequestDecodeBudget(self.request_decode_bytes) if self.request_decode_bytes else None

    def decode(self, data: bytes, request_budget: RequestDecodeBudget | None = None) -> Image.Image:
        """``decode_image`` within the server's decode budget (and the request's, when given)."""
        return decode_image(
            data,
            self.limits,
            server_budget=self.decode_budget,
            request_budget=request_budget or self.new_request_budget(),
        )

    def load_with_bytes(self, value: object) -> tuple[bytes, Image.Image]:
        """The encoded bytes (to hash or store) and the picture, for catalog writes."""
        data = self.read_bytes(value)
        return data, self.decode(data)

    def load_one(self, value: object, request_budget: RequestDecodeBudget | None = None) -> Image.Image:
        return self.decode(self.read_bytes(value), request_budget)

    def load_many(self, values: Sequence[object], labels: Sequence[str] | None = None) -> list[Image.Image]:
        """All pictures, in order. The first failing input (by position) is named in the error.

        The images of one call share one request decode budget."""
        names = list(labels) if labels is not None else [f"inputs[{i}]" for i in range(len(values))]
        budget = self.new_request_budget()
        return self.map(lambda value: self.load_one(value, budget), values, names)

    def map(self, work: Callable[[object], object], values: Sequence[object], names: Sequence[str]) -> list:
        if len(values) == 1:
            return [_named(work, values[0], names[0])]
        # A window of at most per_request tasks, advanced in input order: results come back in order and
        # the first failing input by position is the one named.
        jobs = list(zip(values, names, strict=True))
        futures: list[Future] = []
        results = []
        try:
            for i in range(len(jobs)):
                while len(futures) < len(jobs) and len(futures) < i + self.per_request:
                    futures.append(self._pool.submit(_named, work, *jobs[len(futures)]))
                results.append(futures[i].result())
        except BaseException:
            for pending in futures:
                pending.cancel()
            raise
        return results


def _named(work: Callable[[object], object], value: object, name: str) -> object:
    try:
        return work(value)
    except VitrineError as exc:
        if exc.message.startswith("Unsupported image input type"):
            # Keep the reference's wording first, so clients matching on it still match.
            raise exc.with_message(f"{exc.message} ({name})") from None
        raise exc.with_message(f"{name}: {exc.message}") from None
