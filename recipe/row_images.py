"""The one place the pre-flight and the tiny model's warm start read a data row's prompt and images.

Each image goes through the dataset's own ``recipe.dataset.fetch_image`` with the row's ``min_pixels`` /
``max_pixels``, exactly as verl's agent loop gets it (``RLHFDataset._build_messages`` puts the image dict into the
content item, ``StagedRLHFDataset._process_multi_modal_info`` fetches it), so a prompt measured or trained on here
has the size it has in training. If rows stop embedding PNG bytes (files beside the Parquet instead), these are the
functions to switch.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from data_prep.images import PATCH_SIZE


def row_images(row: dict[str, Any], *, patch_size: int | None = None) -> list[Image.Image]:
    """The row's images as the agent loop hands them to the processor (RGB, fitted to the row's pixel budget)."""
    from recipe.dataset import fetch_image

    images = []
    for image in row.get("images") or []:
        item = {"type": "image", **image} if isinstance(image, dict) else {"type": "image", "image": image}
        images.append(fetch_image(item, patch_size or PATCH_SIZE))
    return images


def image_size(image: Any) -> tuple[int, int]:
    """(width, height) of one stored image as stored (header only, no decoding, no resize)."""
    source = (image.get("bytes") or image.get("path")) if isinstance(image, dict) else image
    if isinstance(source, Image.Image):
        return source.size
    with Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source) as opened:
        return opened.size


def chat_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's prompt as chat-template messages: each ``<image>`` placeholder becomes an image content item."""
    messages = []
    for message in row["prompt"]:
        items: list[dict[str, str]] = []
        for k, piece in enumerate(str(message["content"]).split("<image>")):
            if k:
                items.append({"type": "image"})
            if piece:
                items.append({"type": "text", "text": piece})
        messages.append({"role": message["role"], "content": items})
    return messages
