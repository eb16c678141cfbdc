"""What a person does to a project: segments, locks and settings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from narrator.audiofiles import audio_path, may_remove, recording_of
from narrator.errors import BadInput, SegmentLocked
from narrator.lexicon import Entry, Lexicon, check_phonemes
from narrator.models import GlobalSettings, LexiconEntry, Segment
from narrator.planning import AudioState, Cast, Casting, SegmentState, Voicing, audio_state
from narrator.selection import select as select_segments
from narrator.splitting import Block
from narrator.store import ProjectStore
from narrator.text import clean, warn_removed
from narrator.voices import canonical_voice, check_speed, language_of, normalise_lang


@dataclass(frozen=True)
class Settings:
    """GlobalSettings as plain values, with the language resolved."""

    voice_id: str
    speed: float
    lang: str
    lang_set: bool
    audio_dir: str | None
    heading_voice: str | None = None
    lexicon: Lexicon = Lexicon()

    @property
    def voicing(self) -> Voicing:
        return Voicing(self.voice_id, self.speed, self.lang, self.lexicon)

    @property
    def casting(self) -> Casting:
        return Casting(self.voicing, self.heading_voice, self.lang_set)

    def as_dict(self) -> dict[str, object]:
        shown: dict[str, object] = {k: v for k, v in vars(self).items() if k != "lexicon"}
        return shown | {"lexicon_entries": len(self.lexicon.entries)}


@dataclass(frozen=True)
class SegmentRow:
    """A segment as the `segments` command shows it."""

    id: int
    sequence_index: int
    text_content: str
    is_locked: bool
    audio_file: str | None
    audio_duration: float | None
    stale: bool
    heading_level: int | None
    # what the recorded file is on disk: none, missing, damaged or whole
    recording: str
    # the voice that speaks it, where it is not the project's (its cast, or the heading voice)
    voice: str | None = None
    # its own voice, speed and language, as set by `narrator voice`
    cast: dict[str, object] | None = None
    # `narrator verify`'s verdict on its current audio: ok, flagged or not checked
    verify: str = "not checked"

    def as_dict(self) -> dict[str, object]:
        return dict(vars(self))


def _settings_row(session: Session) -> GlobalSettings:
    row = session.get(GlobalSettings, 1)
    if row is None:
        row = GlobalSettings()
        session.add(row)
    return row


def read_settings(store: ProjectStore) -> Settings:
    with store.session() as session:
        row = _settings_row(session)
        return Settings(
            voice_id=row.voice_id,
            speed=row.speed,
            lang=language_of(row.voice_id, row.lang),
            lang_set=row.lang is not None,
            audio_dir=row.audio_dir,
            heading_voice=row.heading_voice,
            lexicon=_lexicon(session, store),
        )


# ---------------------------------------------------------------------------- lexicon


def _lexicon(session: Session, store: ProjectStore) -> Lexicon:
    rows = session.exec(
        select(LexiconEntry)
        .where(LexiconEntry.project_id == store.project_id)
        .order_by(col(LexiconEntry.id))
    )
    return Lexicon(tuple(Entry(r.word, r.say, r.ipa, r.case_sensitive) for r in rows))


def read_lexicon(store: ProjectStore) -> Lexicon:
    with store.session() as session:
        return _lexicon(session, store)


@dataclass(frozen=True)
class LexiconChange:
    """What adding entries did: the entries they replaced, and how many segments the new
    entries match (their audio is now stale)."""

    replaced: list[Entry]
    segments: int


def add_entries(store: ProjectStore, entries: Sequence[Entry]) -> LexiconChange:
    """Add entries to the project's lexicon in one transaction; an entry for a word
    already there replaces it. Phonemes the model cannot read are refused first."""
    check_phonemes(entries, model_vocab())
    latest = {e.key: e for e in entries}  # a file that lists a word twice: the last wins
    with store.writing() as session:
        replaced = []
        for e in latest.values():
            old = session.exec(
                select(LexiconEntry).where(
                    LexiconEntry.project_id == store.project_id, LexiconEntry.word_key == e.key
                )
            ).first()
            if old is None:
                old = LexiconEntry(project_id=store.project_id, word=e.grapheme, word_key=e.key)
            else:  # replaced where it stands
                replaced.append(Entry(old.word, old.say, old.ipa, old.case_sensitive))
            old.word, old.say, old.ipa = e.grapheme, e.say, e.ipa
            old.case_sensitive = e.case_sensitive
            session.add(old)
        session.commit()
        texts = session.exec(
            select(Segment.text_content).where(Segment.project_id == store.project_id)
        )
        added = Lexicon(tuple(latest.values()))
        matched = sum(1 for text in texts if added.matching(text))
    return LexiconChange(replaced, matched)


def remove_entry(store: ProjectStore, word: str) -> Entry:
    """Take a word out of the lexicon (matched as entries are: by case unless the entry is
    case-sensitive); BadInput when it is not there."""
    with store.writing() as session:
        rows = session.exec(
            select(LexiconEntry).where(LexiconEntry.project_id == store.project_id)
        ).all()
        for row in rows:
            if row.word_key == Entry(word, case_sensitive=row.case_sensitive).key:
                gone = Entry(row.word, row.say, row.ipa, row.case_sensitive)
                session.delete(row)
                session.commit()
                return gone
    raise BadInput(f"{word!r} is not in the lexicon; `narrator lexicon PROJECT list` shows it")


def model_vocab() -> dict[str, int]:
    """Kokoro v1.0's phoneme vocabulary (the same in every copy of the model)."""
    import json

    from narrator.weights.sources import kokoro_config_text

    return json.loads(kokoro_config_text())["vocab"]


def update_settings(
    store: ProjectStore,
    *,
    voice: str | None = None,
    speed: float | None = None,
    lang: str | None = None,
    audio_dir: str | None = None,
    heading_voice: str | None = None,
) -> Settings:
    """Change the project's settings; `lang=""` goes back to the voice's language,
    `heading_voice=""` to the project's voice for headings."""
    if voice is not None:
        voice = canonical_voice(voice)
    if heading_voice:
        heading_voice = canonical_voice(heading_voice)
    if speed is not None:
        check_speed(speed)
    with store.writing() as session:
        row = _settings_row(session)
        if voice is not None:
            row.voice_id = voice
        if speed is not None:
            row.speed = speed
        if lang is not None:
            row.lang = normalise_lang(lang) if lang else None
        if audio_dir is not None:
            row.audio_dir = audio_dir
        if heading_voice is not None:
            row.heading_voice = heading_voice or None
        language_of(row.voice_id, row.lang)
        session.add(row)
        session.commit()
    return read_settings(store)


def _segment_columns(
    session: Session,
    store: ProjectStore,
    index: int | None = None,
    segment_id: int | None = None,
) -> list[Any]:
    """Plain rows (no ORM objects): all, the one at `index`, or the one with `segment_id`.
    Listing stays fast."""
    query = select(
        Segment.id,
        Segment.sequence_index,
        Segment.text_content,
        Segment.is_locked,
        Segment.audio_file,
        Segment.audio_duration,
        Segment.audio_fingerprint,
        Segment.heading_level,
        Segment.cast_voice,
        Segment.cast_speed,
        Segment.cast_lang,
    ).where(Segment.project_id == store.project_id)
    if index is not None:
        query = query.where(Segment.sequence_index == index)
    if segment_id is not None:
        query = query.where(Segment.id == segment_id)
    return list(session.exec(query.order_by(col(Segment.sequence_index))))


def _states(store: ProjectStore, rows: list[Any]) -> list[SegmentState]:
    return [
        SegmentState(
            id=id_,
            sequence_index=index,
            text=text,
            is_locked=locked,
            audio_file=audio,
            recording=recording_of(store, audio, seconds)[0],
            audio_fingerprint=stamp,
            heading_level=level,
            cast=Cast(*cast),
        )
        for id_, index, text, locked, audio, seconds, stamp, level, *cast in rows
    ]


def segment_states(store: ProjectStore, index: int | None = None) -> list[SegmentState]:
    """Every segment (or the one at `index`) as the plain values planning needs, audio
    checked on disk."""
    with store.session() as session:
        return _states(store, _segment_columns(session, store, index))


def state_by_id(session: Session, store: ProjectStore, segment_id: int) -> SegmentState | None:
    """The segment with this id as it is now, in the caller's transaction (None: removed)."""
    found = _states(store, _segment_columns(session, store, segment_id=segment_id))
    return found[0] if found else None


def recorded_files(session: Session) -> set[str]:
    """Every audio file recorded in the project file, by any of its projects."""
    return set(session.exec(select(Segment.audio_file).where(col(Segment.audio_file).isnot(None))))


def list_segments(store: ProjectStore) -> list[SegmentRow]:
    casting = read_settings(store).casting
    with store.session() as session:
        rows = _segment_columns(session, store)
        verdicts = dict(
            session.exec(
                select(Segment.id, Segment.verify_findings).where(
                    Segment.project_id == store.project_id,
                    col(Segment.verified_audio).isnot(None),
                    col(Segment.verified_audio) == Segment.audio_file,
                )
            ).all()
        )
    listed = []
    for id_, index, text, locked, audio, duration, stamp, level, *cast in rows:
        recording = recording_of(store, audio, duration)[0]
        voicing = casting.voicing(Cast(*cast), level is not None)
        state = audio_state(recording, stamp, voicing, text)
        listed.append(
            SegmentRow(
                id=id_,
                sequence_index=index,
                text_content=text,
                is_locked=locked,
                audio_file=audio,
                audio_duration=duration,
                stale=state is AudioState.stale,
                heading_level=level,
                recording=recording.value,
                voice=None if voicing is casting.base else voicing.voice,
                cast=_cast_dict(Cast(*cast)),
                verify=_verify_cell(verdicts.get(id_), state),
            )
        )
    return listed


def _verify_cell(findings: list | None, state: AudioState) -> str:
    """`narrator verify`'s verdict on the audio there is now."""
    if findings is None or state is not AudioState.current:
        return "not checked"
    return "flagged" if findings else "ok"


def _cast_dict(cast: Cast) -> dict[str, object] | None:
    return {k: v for k, v in vars(cast).items() if v is not None} or None


def selected(store: ProjectStore, specs: Iterable[str]) -> list[int]:
    """The segment indices a selection names (narrator.selection); BadInput when it names
    nothing that exists."""
    with store.session() as session:
        rows = session.exec(
            select(Segment.sequence_index, Segment.heading_level)
            .where(Segment.project_id == store.project_id)
            .order_by(col(Segment.sequence_index))
        ).all()
    return select_segments(specs, [(index, level) for index, level in rows])


def set_cast(store: ProjectStore, indices: Sequence[int], cast: Cast | None) -> int:
    """Give these segments their own voice, speed or language (what `cast` leaves None
    stays as it was), or none (`cast` None: they follow the project again). Their audio
    is stale where the voice it was made with changes. Returns how many changed."""
    if cast is not None:
        if cast.voice is not None:
            cast = Cast(canonical_voice(cast.voice), cast.speed, cast.lang)
            language_of(cast.voice, cast.lang)
        if cast.speed is not None:
            check_speed(cast.speed)
        if cast.lang is not None:
            cast = Cast(cast.voice, cast.speed, normalise_lang(cast.lang))
    with store.writing() as session:
        rows = session.exec(
            select(Segment).where(
                Segment.project_id == store.project_id, col(Segment.sequence_index).in_(indices)
            )
        ).all()
        for row in rows:
            if cast is None:
                row.cast_voice = row.cast_speed = row.cast_lang = None
            else:
                row.cast_voice = cast.voice if cast.voice is not None else row.cast_voice
                row.cast_speed = cast.speed if cast.speed is not None else row.cast_speed
                row.cast_lang = cast.lang if cast.lang is not None else row.cast_lang
            session.add(row)
        session.commit()
        return len(rows)


def only(states: list[SegmentState], specs: Iterable[str]) -> list[SegmentState]:
    """Those of `states` a selection names, when the caller has every segment's state in
    hand already (BadInput as `selected`)."""
    pairs = [(s.sequence_index, s.heading_level) for s in states]
    chosen = set(select_segments(specs, pairs))
    return [s for s in states if s.sequence_index in chosen]


def segment_state(store: ProjectStore, index: int) -> SegmentState:
    """The segment at `index`; BadInput when there is none."""
    found = segment_states(store, index)
    if not found:
        raise _no_such_index([index])
    return found[0]


def add_segments(store: ProjectStore, texts: Iterable[str | Block]) -> list[int]:
    """Append segments (texts, or blocks that may be headings) after the last one;
    return their sequence indices."""
    with store.writing() as session:
        last = session.exec(
            select(func.max(Segment.sequence_index)).where(Segment.project_id == store.project_id)
        ).one()
        start = (last or 0) + 1
        indices, removed = [], 0
        for item in texts:
            block = Block(item) if isinstance(item, str) else item
            text, dropped = clean(block.text)
            removed += dropped
            if dropped and not text.strip():
                continue  # control or invisible characters only: not a scene break
            index = start + len(indices)
            session.add(
                Segment(
                    project_id=store.project_id,
                    sequence_index=index,
                    text_content=text,
                    heading_level=block.heading_level,
                    cast_voice=block.voice,
                    cast_speed=block.speed,
                )
            )
            indices.append(index)
        session.commit()
    warn_removed(removed)
    return indices


def _by_index(session: Session, store: ProjectStore, indices: Sequence[int]) -> list[Segment]:
    """The segments with these indices; BadInput naming any that do not exist."""
    rows = {
        s.sequence_index: s
        for s in session.exec(
            select(Segment).where(
                Segment.project_id == store.project_id,
                col(Segment.sequence_index).in_(indices),
            )
        )
    }
    missing = [i for i in indices if i not in rows]
    if missing:
        raise _no_such_index(missing)
    return [rows[i] for i in dict.fromkeys(indices)]


def _no_such_index(missing: Sequence[int]) -> BadInput:
    return BadInput(
        f"no segment with index {', '.join(map(str, missing))}; "
        "see `narrator segments` for the indices"
    )


def _refuse_locked(segments: Sequence[Segment], action: str) -> None:
    locked = [s.sequence_index for s in segments if s.is_locked]
    if locked:
        raise SegmentLocked(
            f"segment {', '.join(map(str, locked))} is locked; unlock it or {action} with --force"
        )


def edit_segment(store: ProjectStore, index: int, text: str, force: bool = False) -> None:
    """Replace a segment's text; its audio stays until re-rendered (it is now stale)."""
    with store.writing() as session:
        (segment,) = _by_index(session, store, [index])
        if not force:
            _refuse_locked([segment], "edit")
        segment.text_content, removed = clean(text)
        session.add(segment)
        session.commit()
    warn_removed(removed)


def remove_segments(store: ProjectStore, indices: Sequence[int], force: bool = False) -> int:
    """Delete segments, then the audio files no remaining segment uses."""
    with store.writing() as session:
        doomed = _by_index(session, store, indices)
        if not force:
            _refuse_locked(doomed, "remove")
        files = {s.audio_file for s in doomed if s.audio_file}
        for segment in doomed:
            session.delete(segment)
        session.commit()
        still_used = set(
            session.exec(select(Segment.audio_file).where(col(Segment.audio_file).in_(files)))
        )
    for name in files - still_used:
        if may_remove(store, name):
            audio_path(store, name).unlink(missing_ok=True)
    return len(doomed)


def set_locked(store: ProjectStore, indices: Sequence[int], locked: bool) -> int:
    """Lock or unlock segments; nothing changes if any index is unknown."""
    with store.writing() as session:
        segments = _by_index(session, store, indices)
        for segment in segments:
            segment.is_locked = locked
            session.add(segment)
        session.commit()
        return len(segments)


HEADING_LEVELS = range(1, 7)


def set_heading(store: ProjectStore, index: int, level: int | None) -> None:
    """Make a segment a heading of `level` (1-6), or an ordinary segment (None)."""
    if level is not None and level not in HEADING_LEVELS:
        raise BadInput(f"heading level {level} is outside 1-6; 1 is a chapter")
    with store.writing() as session:
        (segment,) = _by_index(session, store, [index])
        segment.heading_level = level
        session.add(segment)
        session.commit()


def chapter_at(session: Session, store: ProjectStore, index: int) -> str | None:
    """The text of the last heading at or before `index`: the chapter it belongs to."""
    return session.exec(
        select(Segment.text_content)
        .where(
            Segment.project_id == store.project_id,
            col(Segment.heading_level).isnot(None),
            Segment.sequence_index <= index,
        )
        .order_by(col(Segment.sequence_index).desc())
        .limit(1)
    ).first()
