"""Image normalisation: every stored image is RGB JPEG without EXIF/ICC, longest side capped,
named by the sha256 of its normalised bytes (content addressing)."""

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageRejected(ValueError):
    """The file cannot become a study image; the message says why."""


@dataclass(frozen=True)
class NormalisedImage:
    data: bytes
    content_hash: str
    width: int
    height: int

    @property
    def relative_path(self) -> str:
        return f"items/{self.content_hash[:2]}/{self.content_hash}.jpg"


def image_normalise(*, raw: bytes, max_side: int | None = None, min_side: int | None = None) -> NormalisedImage:
    """Decode, check and re-encode an image. Raises ImageRejected with a readable reason."""
    max_side = max_side or settings.STUDY_IMAGE_MAX_SIDE
    min_side = min_side or settings.STUDY_IMAGE_MIN_SIDE
    if not raw:
        raise ImageRejected("empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = settings.STUDY_IMAGE_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; a bomb must be an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as probe:
                probe.verify()
            image = Image.open(io.BytesIO(raw))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(f"image too large (over {settings.STUDY_IMAGE_MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"corrupt or truncated image ({exc})") from None
    # Honour the camera's orientation before the EXIF that carries it is dropped.
    image = ImageOps.exif_transpose(image)
    if min(image.size) < min_side:
        raise ImageRejected(f"image too small ({image.width}×{image.height}; shortest side must be ≥ {min_side} px)")
    image = image.convert("RGB")  # a new image, with a copy of the source's info
    # Pillow's JPEG writer still copies info["comment"] into a COM segment (a JPEG or GIF comment can
    # hold markup or a file name): keep nothing but the pixels.
    image.info.clear()
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    # A fresh save without exif=/icc_profile= writes neither: nothing of the source file survives.
    image.save(out, format="JPEG", quality=92, optimize=True)
    data = out.getvalue()
    return NormalisedImage(
        data=data, content_hash=hashlib.sha256(data).hexdigest(), width=image.width, height=image.height
    )


def image_store(*, image: NormalisedImage) -> Path:
    """Write the image under MEDIA_ROOT by content hash; idempotent and safe for concurrent writers."""
    path = Path(settings.MEDIA_ROOT) / image.relative_path
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as fh:
        fh.write(image.data)
    os.replace(tmp, path)
    return path


def image_path(*, relative_path: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative_path
