"""What an uploaded file is, decided from its bytes, and the form it is stored in.

Nothing here touches storage or the database: a file either comes out as a `ValidatedFile`
ready to store, or raises `AttachmentRefused` with a sentence for the user. Images are decoded
with Pillow and re-encoded (which drops EXIF/GPS metadata and anything appended after the
image data), PDFs are opened with pypdf, and anything else must be UTF-8 text.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import PyPdfError

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
PDF_SIGNATURE: Final = b"%PDF-"
PILLOW_FORMATS: Final = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
}
THUMBNAIL_EDGE: Final = 320
FILENAME_MAX_CHARS: Final = 200
# Names that claim a type: a file called `x.png` that is not a PNG is refused rather than
# quietly taken as text, because the user meant to send something else.
IMAGE_EXTENSIONS: Final = frozenset({"png", "jpg", "jpeg", "gif", "webp", "bmp", "tif", "tiff"})
PDF_EXTENSIONS: Final = frozenset({"pdf"})
BINARY_EXTENSIONS: Final = frozenset(
    {"zip", "gz", "tar", "exe", "dll", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "heic"}
)


class AttachmentRefused(Exception):
    """The file cannot be attached; the message says why, in words for the user."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int
    max_text_bytes: int
    image_max_edge: int
    image_max_pixels: int
    pdf_max_pages: int


@dataclass(frozen=True, slots=True)
class ValidatedFile:
    kind: str  # "image", "pdf" or "text"
    media_type: str
    filename: str
    data: bytes
    extension: str
    width: int | None = None
    height: int | None = None
    page_count: int | None = None
    thumbnail: bytes | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def filename_clean(name: str) -> str:
    """A display name: the last path component, without control or format characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in {"C"})
    name = " ".join(name.split()).strip(". ")
    if len(name) > FILENAME_MAX_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            name = stem[: FILENAME_MAX_CHARS - len(extension) - 1] + "." + extension
        else:
            name = name[:FILENAME_MAX_CHARS]
    return name or "file"


def _extension(filename: str) -> str:
    stem, dot, extension = filename.rpartition(".")
    return extension.lower() if dot and stem else ""


def _size_text(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} bytes"


def _sniff(data: bytes) -> str:
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(JPEG_SIGNATURE):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(PDF_SIGNATURE):
        return "application/pdf"
    return ""


def file_validate(*, data: bytes, filename: str, limits: Limits) -> ValidatedFile:
    name = filename_clean(filename)
    if not data:
        raise AttachmentRefused(f"“{name}” is empty (0 bytes). Nothing was attached.")
    if len(data) > limits.max_file_bytes:
        raise AttachmentRefused(
            f"“{name}” is {_size_text(len(data))}; the limit is "
            f"{_size_text(limits.max_file_bytes)} per file."
        )
    sniffed = _sniff(data)
    extension = _extension(name)
    if sniffed.startswith("image/"):
        return _image_validate(data=data, name=name, media_type=sniffed, limits=limits)
    if sniffed == "application/pdf":
        return _pdf_validate(data=data, name=name, limits=limits)
    if extension in IMAGE_EXTENSIONS:
        raise AttachmentRefused(
            f"“{name}” is named like an image but its contents are not a JPEG, PNG, GIF or "
            "WebP image."
        )
    if extension in PDF_EXTENSIONS:
        raise AttachmentRefused(f"“{name}” is named like a PDF but its contents are not a PDF.")
    return _text_validate(data=data, name=name, extension=extension, limits=limits)


def _image_validate(*, data: bytes, name: str, media_type: str, limits: Limits) -> ValidatedFile:
    unreadable = AttachmentRefused(f"“{name}” could not be read as an image.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it: make that an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the decoder of the format the bytes announced: a file cannot steer Pillow
            # into any of the other formats it knows.
            image: Image.Image = Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[media_type]])
            width, height = image.size
            if width * height > limits.image_max_pixels or max(width, height) > 8000:
                raise AttachmentRefused(
                    f"“{name}” is {width}×{height} pixels; images may be at most 8000 pixels on "
                    f"a side and {limits.image_max_pixels:,} pixels in all."
                )
            image.seek(0)
            # The first frame only: an animated GIF is sent as its first frame (Claude reads
            # one frame anyway), so what is stored is exactly what the model sees.
            image.load()
            image = ImageOps.exif_transpose(image)
    except AttachmentRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AttachmentRefused(
            f"“{name}” declares far more pixels than it could hold: images may be at most 8000 "
            "pixels on a side. It was not decoded."
        ) from exc
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
    ) as exc:
        raise unreadable from exc
    image.thumbnail((limits.image_max_edge, limits.image_max_edge), Image.Resampling.LANCZOS)
    stored_type, extension = (
        ("image/jpeg", "jpg")
        if media_type == "image/jpeg"
        else (("image/webp", "webp") if media_type == "image/webp" else ("image/png", "png"))
    )
    encoded = _encode(image, stored_type)
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), Image.Resampling.LANCZOS)
    return ValidatedFile(
        kind="image",
        media_type=stored_type,
        filename=name,
        data=encoded,
        extension=extension,
        width=image.width,
        height=image.height,
        thumbnail=_encode(thumb, "image/webp"),
    )


def _encode(image: Image.Image, media_type: str) -> bytes:
    """Re-encode from pixels only: no EXIF, GPS, comments or trailing bytes survive."""
    out = io.BytesIO()
    if media_type == "image/jpeg":
        image.convert("RGB").save(out, format="JPEG", quality=90, optimize=True)
    elif media_type == "image/webp":
        mode = "RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"
        image.convert(mode).save(out, format="WEBP", quality=90)
    else:
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA")
        image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _pdf_validate(*, data: bytes, name: str, limits: Limits) -> ValidatedFile:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise AttachmentRefused(
                f"“{name}” is encrypted or password-protected; Claude cannot read it. Save an "
                "unprotected copy and attach that."
            )
        pages = len(reader.pages)
    except AttachmentRefused:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise AttachmentRefused(f"“{name}” could not be read as a PDF.") from exc
    if pages == 0:
        raise AttachmentRefused(f"“{name}” has no pages.")
    if pages > limits.pdf_max_pages:
        raise AttachmentRefused(
            f"“{name}” has {pages} pages; PDFs may have at most {limits.pdf_max_pages}."
        )
    if not name.lower().endswith(".pdf"):
        name = f"{name}.pdf"
    return ValidatedFile(
        kind="pdf",
        media_type="application/pdf",
        filename=name,
        data=data,
        extension="pdf",
        page_count=pages,
    )


def _text_validate(*, data: bytes, name: str, extension: str, limits: Limits) -> ValidatedFile:
    if extension in BINARY_EXTENSIONS:
        raise AttachmentRefused(
            f"“{name}” is not a type that can be attached: use images (JPEG, PNG, GIF, WebP), "
            "PDFs, or plain-text and code files."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AttachmentRefused(
            f"“{name}” is not a supported file: attach images (JPEG, PNG, GIF, WebP), PDFs, or "
            "plain-text and code files in UTF-8."
        ) from exc
    if "\x00" in text:
        raise AttachmentRefused(f"“{name}” looks like a binary file, not text.")
    if len(data) > limits.max_text_bytes:
        raise AttachmentRefused(
            f"“{name}” is {_size_text(len(data))}; text files may be at most "
            f"{_size_text(limits.max_text_bytes)}."
        )
    return ValidatedFile(
        kind="text",
        media_type="text/plain",
        filename=name,
        data=data.removeprefix(b"\xef\xbb\xbf"),
        extension="txt",
    )
