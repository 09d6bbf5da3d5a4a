"""Streaming multipart parsing with a size cap (DESIGN §6: FastAPI has no built-in cap).

The body is fed chunk by chunk from `request.stream()` into python-multipart's push parser; the
`file` part goes straight to a temporary file while its SHA-256 is computed, and the upload is
refused with 413 the moment it passes the cap, so neither memory nor disk ever holds more than
`max_bytes` of it. Starlette's own form parsing is not used: it spools the whole body first.

Everything else is bounded before it is buffered: a part's headers (PART_HEADER_LIMIT), a text
field (FIELD_LIMIT), and which fields exist at all: each endpoint names its fields, and a part with
another name, or a name sent twice, is refused (422) when its headers end, before any of its bytes
are kept. (Unknown fields used to be buffered up to the whole upload cap and refused afterwards.)
Numbers in fields are ASCII digits only (`ascii_int`): `str.isdigit` accepts '²', `int` does not.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import ApiError

logger = logging.getLogger(__name__)

FIELD_LIMIT = 16 * 1024  # bytes of one text field (architecture, params, a model section): they are tiny
PART_HEADER_LIMIT = 8 * 1024  # bytes of one part's headers
DIGITS = re.compile(r"[0-9]{1,12}")
OVERHEAD = 256 * 1024  # part headers, boundaries and text fields on top of the file itself


@dataclass
class Upload:
    path: Path  # the temporary file holding the `file` part; the caller deletes it
    filename: str
    sha256: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the upload exceeds the limit of {limit} bytes (ROBUSTLAB_MAX_UPLOAD_BYTES)")


class _Receiver:
    """python-multipart callbacks: where each part's bytes go."""

    def __init__(self, tmp_dir: Path, max_bytes: int, names: Collection[str]) -> None:
        self.tmp_dir, self.max_bytes, self.names = tmp_dir, max_bytes, frozenset(names)
        self.header_bytes = 0
        self.header_name, self.header_value = bytearray(), bytearray()
        self.headers: dict[str, bytes] = {}
        self.part_name: str | None = None
        self.text = bytearray()
        self.handle: IO[bytes] | None = None
        self.path: Path | None = None
        self.filename = ""
        self.digest = hashlib.sha256()
        self.size = 0
        self.fields: dict[str, str] = {}

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value_, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self.headers, self.part_name, self.text, self.header_bytes = {}, None, bytearray(), 0

    def _count_header(self, size: int) -> None:
        self.header_bytes += size
        if self.header_bytes > PART_HEADER_LIMIT:
            raise ApiError(400, "malformed_multipart", f"a multipart part's headers exceed {PART_HEADER_LIMIT} bytes")

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_name += data[start:end]

    def header_value_(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[bytes(self.header_name).decode("latin-1").lower()] = bytes(self.header_value)
        self.header_name, self.header_value = bytearray(), bytearray()

    def headers_finished(self) -> None:
        disposition, options = parse_options_header(self.headers.get("content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise ApiError(400, "malformed_multipart",
                           "a multipart part lacks 'Content-Disposition: form-data; name=...'")
        self.part_name = name.decode("utf-8", "replace")
        if self.part_name != "file":
            known = ", ".join(["file", *sorted(self.names)])
            if self.part_name not in self.names:
                shown = self.part_name[:100]
                raise ApiError(422, "invalid_request", f"unknown form field {shown!r}: the fields are {known}",
                               problems=[(shown, f"unknown field: the fields are {known}")])
            if self.part_name in self.fields:
                raise ApiError(422, "invalid_request", f"form field {self.part_name!r} is sent twice",
                               problems=[(self.part_name, "send each field once")])
        if self.part_name == "file":
            if self.handle is not None:
                raise ApiError(400, "malformed_multipart", "send exactly one 'file' part")
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")
            # The loader tells formats apart by suffix, so the temporary file keeps the upload's.
            suffix = Path(safe_filename(self.filename)).suffix
            self.handle = tempfile.NamedTemporaryFile(dir=self.tmp_dir, prefix="upload-", suffix=suffix,  # noqa: SIM115
                                                      delete=False)
            self.path = Path(self.handle.name)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.part_name == "file" and self.handle is not None:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise _too_large(self.max_bytes)
            self.digest.update(chunk)
            self.handle.write(chunk)
        else:
            self.text += chunk
            if len(self.text) > FIELD_LIMIT:
                raise ApiError(413, "too_large", f"form field {self.part_name!r} exceeds {FIELD_LIMIT} bytes")

    def part_end(self) -> None:
        if self.part_name != "file" and self.part_name is not None:
            self.fields[self.part_name] = self.text.decode("utf-8", "replace")

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(request: Request, tmp_dir: Path, max_bytes: int, fields: Collection[str] = ()) -> Upload:
    """Parse a multipart/form-data body with one `file` part and text parts named in `fields`;
    400/413/422 for a bad one."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(415 if content_type != b"multipart/form-data" else 400, "unsupported_media_type",
                       "send the upload as multipart/form-data with a 'file' part (e.g. curl -F file=@model.onnx "
                       "-F model='{\"format\": \"onnx\", ...}', or -F file=@data.npz for datasets)")
    limit = max_bytes + OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and DIGITS.fullmatch(declared) and int(declared) > limit:
        raise _too_large(max_bytes)  # refused before a byte is read
    tmp_dir.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(tmp_dir, max_bytes, fields)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _too_large(max_bytes)
            parser.write(chunk)  # writes to a local temp file: short, bounded blocking
        parser.finalize()
    except MultipartParseError as exc:
        receiver.discard()
        raise ApiError(400, "malformed_multipart", f"the multipart body is malformed: {exc}") from None
    except BaseException:
        receiver.discard()
        raise
    receiver.close()
    if receiver.path is None:
        raise ApiError(422, "invalid_request", "the upload has no 'file' part",
                       problems=[("file", "required field is missing: add the checkpoint file")])
    return Upload(path=receiver.path, filename=receiver.filename, sha256=receiver.digest.hexdigest(),
                  size=receiver.size, fields=receiver.fields)


def ascii_int(fields: dict[str, str], name: str, minimum: int, maximum: int) -> int | None:
    """The field as an integer written in ASCII digits within [minimum, maximum]; None when absent; else 422."""
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    if not DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise ApiError(422, "invalid_request", f"{name} must be an integer from {minimum} to {maximum:,}",
                       problems=[(name, f"must be an integer from {minimum} to {maximum:,} written in digits "
                                  f"0-9 (got {raw[:40]!r})")])
    return int(raw)


def sha256_of(path: Path) -> str:
    """SHA-256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_filename(filename: str, default_stem: str = "checkpoint") -> str:
    """The base name of an uploaded file reduced to characters the artifact store accepts."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", base).lstrip("._-+")
    stem, dot, suffix = cleaned.rpartition(".")
    if not dot:
        return default_stem
    # Long names are cut in the stem, never in the suffix: the suffix says what the file is.
    return f"{stem[:150] or default_stem}.{suffix[:20].lower()}"
