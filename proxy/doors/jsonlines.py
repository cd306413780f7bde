"""The local socket's own protocol: one JSON object a line, each way."""

from __future__ import annotations

import asyncio
import json
from typing import Any

__all__ = ["send_json"]


async def send_json(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    """Write ``message`` as one line and wait until it may be sent."""
    writer.write(json.dumps(message, default=str).encode("utf-8") + b"\n")
    await writer.drain()
