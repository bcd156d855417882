"""Errors with an HTTP meaning. Backends and engines raise these; only the HTTP layer maps them."""
from __future__ import annotations


class UserInputError(Exception):
    """Something the client sent cannot be used: answered with a 4xx and a JSON body."""

    status_code = 422
    error = "invalid_input"

    def __init__(self, detail: str, *, error: str | None = None, status_code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code


class InvalidTextError(UserInputError):
    error = "invalid_text"


class InvalidImageError(UserInputError):
    error = "invalid_image"


class ImageTooLargeError(UserInputError):
    error = "image_too_large"
    status_code = 413


class InvalidAudioError(UserInputError):
    error = "invalid_audio"


class AudioTooLargeError(UserInputError):
    error = "audio_too_large"
    status_code = 413


class InvalidVideoError(UserInputError):
    error = "invalid_video"


class VideoTooLargeError(UserInputError):
    error = "video_too_large"
    status_code = 413


class NoFaceError(UserInputError):
    error = "no_face"


class UnknownVoiceError(UserInputError):
    error = "unknown_voice"


class UnsupportedLanguageError(UserInputError):
    """The text is in a language no installed voice speaks."""

    error = "unsupported_language"


class LipRefinerUnavailableError(UserInputError):
    """A request asked for the lip refiner while it is off (LIP_REFINER=none, or it could not load)."""

    error = "lip_refiner_unavailable"
    status_code = 409


class ServiceBusyError(Exception):
    """Too many requests are already waiting for the device (503, Retry-After: retry_after_s)."""

    retry_after_s: float = 5.0


class BackendUnavailable(RuntimeError):
    """A backend or engine cannot load here (weights missing, import error...); the factory falls back."""
