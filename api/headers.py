"""Security headers on every answer.

- ``X-Content-Type-Options: nosniff`` everywhere: a browser never reinterprets a JSON answer or a
  stored image as HTML or script.
- The pages (``/ui``, ``/docs``) also get a Content-Security-Policy that allows scripts and styles from
  this origin only (no inline script, no eval), pictures from anywhere (a product's image may redirect
  to its shop's URL), and no framing (``frame-ancestors 'none'``, with ``X-Frame-Options`` for older
  browsers): a stored title can never run as script, and the page cannot be clickjacked.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: https: http:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_PREFIXES = ("/ui", "/docs", "/static/")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope["path"].startswith(PAGE_PREFIXES)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-content-type-options"]
                headers.append((b"x-content-type-options", b"nosniff"))
                if page:
                    headers += [
                        (b"content-security-policy", PAGE_POLICY.encode()),
                        (b"x-frame-options", b"DENY"),
                        (b"referrer-policy", b"same-origin"),
                    ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
