"""The HTTP server's settings: the core's (``search.settings.Settings``) plus what only a server has, its
address, its tokens and the limits on a request, read from the same ``VITRINE_`` environment."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from search.settings import MiB, Settings, split_csv


class ServerSettings(Settings):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_bytes: int = Field(64 * MiB, ge=1024)
    max_pending_requests: int = Field(64, ge=1, description="Requests in flight before 429.")
    request_body_timeout: float = Field(30.0, gt=0, description="Seconds to receive a request body (408).")
    malloc_arenas: int = Field(
        2,
        ge=0,
        description="glibc heap arenas for the server (0: glibc's default of 8 per core). Few arenas "
        "let memory freed after a burst go back to the system.",
    )

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: object) -> object:
        return split_csv(value)
