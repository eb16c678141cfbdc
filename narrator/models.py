"""SQLModel tables of a narrator project file."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

DEFAULT_VOICE = "af_heart"
DEFAULT_SPEED = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Project(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    # Names this project's audio files, so that projects sharing a folder never touch
    # each other's files.
    uid: str = ""
    # st_dev:st_ino of the file the uid belongs to: a copy of the file gets its own uid.
    file_identity: str = ""
    # The file's home: the real path it is opened by, whatever name a command was given
    # (a hard link, a symlink), so that SQLite's write-ahead log, the run lock and the
    # default audio folder, which all follow the name, are the same for every name.
    file_path: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Segment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("project_id", "sequence_index"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    sequence_index: int
    text_content: str
    is_locked: bool = False
    audio_file: str | None = None
    audio_duration: float | None = None
    # What the audio was made from (text, voice, speed, lang): tells stale audio apart.
    audio_fingerprint: str | None = None
    # 1-6 when the segment is a heading: spoken like any segment, and it starts a chapter.
    heading_level: int | None = None
    # Where each sentence lies in the audio, [[first sample, samples, text], ...], recorded
    # with the audio: export times captions from it.
    audio_cues: list | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # This segment's own voice, speed or language (None: the project's); `narrator voice`.
    cast_voice: str | None = None
    cast_speed: float | None = None
    cast_lang: str | None = None
    # `narrator verify`'s verdict on the audio file it judged (a new render is not judged)
    verified_audio: str | None = None
    verify_findings: list | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class LexiconEntry(SQLModel, table=True):
    """A word the project says differently: an alias, or phonemes (narrator.lexicon)."""

    __table_args__ = (UniqueConstraint("project_id", "word_key"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    word: str
    # The word as entries are told apart: casefolded unless case-sensitive.
    word_key: str
    say: str | None = None
    ipa: str | None = None
    case_sensitive: bool = False


class GlobalSettings(SQLModel, table=True):
    id: int = Field(default=1, primary_key=True)
    voice_id: str = DEFAULT_VOICE
    speed: float = DEFAULT_SPEED
    lang: str | None = None
    audio_dir: str | None = None
    # The voice that speaks headings (None: the project's voice).
    heading_voice: str | None = None


class BatchTask(SQLModel, table=True):
    task_id: str = Field(primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    status: str
    total_segments: int
    segments_to_process: int
    skipped_locked: int = 0
    skipped_has_audio: int = 0
    skipped_empty: int = 0
    processed: int = 0
    failed: int = 0
    current: int = 0
    current_segment_id: int | None = None
    current_chapter: str | None = None
    voice: str
    speed: float
    lang: str
    audio_seconds: float = 0.0
    error: str | None = None
    # The NarratorError type that ended the task (the CLI's exit code follows it).
    error_kind: str | None = None
    # Segments the worker found changed since planning: reason -> count.
    skipped_during_run: dict[str, int] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict)
    )
    pid: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class BatchError(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(foreign_key="batchtask.task_id", index=True)
    segment_id: int
    sequence_index: int
    message: str
