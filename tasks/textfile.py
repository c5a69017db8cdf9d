"""A user's text file (a JSONL task, a policy YAML, a session's saved policy), read as
UTF-8: the one place that decides the encoding and says what to do when it is not."""

from __future__ import annotations

from pathlib import Path


class NotUtf8Error(ValueError):
    """A user's file that is not UTF-8 text; the message names the file, the line and the fix."""


def read_utf8(path: Path) -> str:
    """The text of the file at `path` (`NotUtf8Error` when it is not UTF-8)."""
    return decode_utf8(path.read_bytes(), path)


def decode_utf8(data: bytes, where: Path) -> str:
    """`data` decoded as UTF-8, a leading byte-order mark dropped.

    >>> decode_utf8(b"\\xef\\xbb\\xbfok", Path("rows.jsonl"))
    'ok'
    >>> decode_utf8(b"ok\\ncaf\\xe9\\n", Path("rows.jsonl"))
    Traceback (most recent call last):
    tasks.textfile.NotUtf8Error: rows.jsonl is not UTF-8 (byte 0xe9 on line 2): save it as UTF-8
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise NotUtf8Error(
            f"{where} is not UTF-8 (byte 0x{data[error.start]:02x} on line {line}): "
            "save it as UTF-8"
        ) from None
