"""Error types raised by the library. The CLI maps each one to an exit code."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type where it has none), to quote
    a library's error inside narrator's one-line messages."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def refuse_blank(options: dict[str, str | None]) -> None:
    """BadInput for an option given as an empty string (an unset `$VOICE` in a script):
    left out, it means the project's setting; given empty, it means a mistake."""
    for flag, value in options.items():
        if value is not None and not value.strip():
            raise BadInput(
                f"{flag} is empty; give a value, or leave {flag} out to use the project's setting"
            )


class NarratorError(Exception):
    """Base class: its message is one line that says what is wrong and what to do."""


class ProjectNotFound(NarratorError):
    """The project file, or the project id inside it, does not exist."""


class NotAProject(NarratorError):
    """The file exists but is not a narrator project (or is from a newer narrator)."""


class ProjectDamaged(NarratorError):
    """SQLite reports the project file as corrupt or not a database."""


class AmbiguousProject(NarratorError):
    """The file holds several projects and none was picked."""


class ProjectExists(NarratorError):
    """`narrator new` refuses to overwrite an existing file."""


class BadInput(NarratorError):
    """A value given by the user is not acceptable (index, voice, speed, file)."""


class BadDocument(NarratorError):
    """A document to import cannot be read as what it claims to be (or is DRM-protected)."""


class MissingExtra(NarratorError):
    """A feature needs an optional dependency that is not installed."""


class SegmentLocked(NarratorError):
    """The segment is locked and the command refuses to change it."""


class NotReady(NarratorError):
    """Export refuses: segments lack audio, or their audio is stale."""


class ModelUnavailable(NarratorError):
    """The Kokoro model, or the G2P a language needs, cannot be found or loaded."""


class RebuildFailed(ModelUnavailable):
    """`model pull` could not fetch, convert or rewrite the model; the message says what to do."""


class ClusterUnavailable(NarratorError):
    """`--ray`: no Ray cluster at the address, or its workers keep dying."""


class CannotWrite(NarratorError):
    """Storage refuses a write: read-only file or folder, full disk, I/O error."""


class AudioDirUnwritable(CannotWrite):
    """The audio folder cannot be created or written."""


class ProjectBusy(NarratorError):
    """Another run holds this project file, or another writer held it too long."""
