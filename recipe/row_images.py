"""The one place the pre-flight, the tiny model's warm start and evaluation read a data row's prompt and images.

Each image goes through the dataset's own ``recipe.dataset.fetch_image`` with the row's ``min_pixels`` /
``max_pixels``, exactly as verl's agent loop gets it (``RLHFDataset._build_messages`` puts the image dict into the
content item, ``StagedRLHFDataset._process_multi_modal_info`` fetches it), so a prompt measured or trained on here
has the size it has in training. Rows whose images are stored beside the Parquet (``images/<sha256>.png``) must have
their paths made absolute first (``data_prep.image_files.resolve_row_images``).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from data_prep.image_files import open_row_image
from data_prep.images import PATCH_SIZE


def row_images(
    row: dict[str, Any],
    *,
    patch_size: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> list[Image.Image]:
    """The row's images as the agent loop hands them to the processor (RGB, fitted to the row's pixel budget, or
    to ``min_pixels`` / ``max_pixels`` when given: evaluation can override the budget)."""
    from recipe.dataset import fetch_image

    images = []
    for image in row.get("images") or []:
        item = {"type": "image", **image} if isinstance(image, dict) else {"type": "image", "image": image}
        if min_pixels is not None:
            item["min_pixels"] = min_pixels
        if max_pixels is not None:
            item["max_pixels"] = max_pixels
        images.append(fetch_image(item, patch_size or PATCH_SIZE))
    return images


def image_size(image: Any, *, where: str = "row image") -> tuple[int, int]:
    """(width, height) of one stored image entry as stored (header only, no decoding, no resize); a stored path
    must already be absolute (``data_prep.image_files.resolve_row_images``)."""
    if isinstance(image, Image.Image):
        return image.size
    with open_row_image(image, where=where) as opened:
        return opened.size


def chat_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's prompt as chat-template messages, split as verl's ``_build_messages``: each ``<image>``
    placeholder becomes an image content item (a message whose content is not text is kept as it is)."""
    messages = []
    for message in row["prompt"]:
        content = message.get("content")
        if not isinstance(content, str):
            messages.append(dict(message))
            continue
        items: list[dict[str, str]] = []
        for k, piece in enumerate(content.split("<image>")):
            if k:
                items.append({"type": "image"})
            if piece:
                items.append({"type": "text", "text": piece})
        messages.append({"role": message.get("role", "user"), "content": items})
    return messages
