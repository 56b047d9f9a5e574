"""Exception types for expected failures. Each carries a message that names the problem and the input."""

from __future__ import annotations


class SonopiError(Exception):
    """Base class for every expected failure in sonopi; `code` is a stable machine-readable name."""

    code = "error"


class ConfigError(SonopiError):
    code = "config_invalid"


class BundleError(SonopiError):
    """A model bundle is missing, malformed, tampered with or of an unknown format version."""

    code = "model_rejected"


class RuntimeUnavailableError(SonopiError):
    code = "runtime_unavailable"


class ImageDecodeError(SonopiError):
    """An input file could not be turned into a frame (empty, truncated, not an image, too large...)."""

    code = "decode_failed"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class SourceError(SonopiError):
    """A frame source cannot be opened or has gone away (unplugged capture card, missing folder...)."""

    code = "source_failed"


class SourceUnavailableError(SourceError):
    """The source needs a library or device that is not present on this machine (e.g. picamera2)."""

    code = "source_unavailable"


class StoreError(SonopiError):
    """The result store could not durably write (disk full, read-only filesystem, corruption)."""

    code = "store_failed"
