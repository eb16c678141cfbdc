"""Opening project files (never creating one by accident), the schema and its version."""

from __future__ import annotations

import errno
import os
import sqlite3
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, SQLModel, select

if TYPE_CHECKING:
    from filelock import FileLock

from narrator.atomic import sync, temp_path
from narrator.errors import (
    AmbiguousProject,
    CannotWrite,
    NarratorError,
    NotAProject,
    ProjectBusy,
    ProjectDamaged,
    ProjectExists,
    ProjectNotFound,
)
from narrator.models import GlobalSettings, LexiconEntry, Project
from narrator.text import clean, warn_removed

# "NARR": marks a SQLite file as a narrator project (PRAGMA application_id).
APPLICATION_ID = 0x4E415252
SQLITE_HEADER = b"SQLite format 3\x00"

# Every engine this process opened, so that close_all() can close their connections.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()

# How long a writer waits for another one (another command, another terminal) to finish.
BUSY_TIMEOUT_S = 30.0


def new_uid() -> str:
    """A project's identity in its audio file names: 8 hex digits."""
    return uuid.uuid4().hex[:8]


def _v2_identity_and_task_outcome(conn: Connection) -> None:
    """A uid per project (audio file names say which project made them); a task's error
    kind and what it skipped during the run."""
    conn.exec_driver_sql("ALTER TABLE project ADD COLUMN uid VARCHAR NOT NULL DEFAULT ''")
    conn.exec_driver_sql("ALTER TABLE project ADD COLUMN file_identity VARCHAR NOT NULL DEFAULT ''")
    for (project_id,) in conn.exec_driver_sql("SELECT id FROM project").fetchall():
        conn.exec_driver_sql("UPDATE project SET uid = ? WHERE id = ?", (new_uid(), project_id))
    conn.exec_driver_sql("ALTER TABLE batchtask ADD COLUMN error_kind VARCHAR")
    conn.exec_driver_sql(
        "ALTER TABLE batchtask ADD COLUMN skipped_during_run VARCHAR NOT NULL DEFAULT '{}'"
    )


def _v3_headings(conn: Connection) -> None:
    """A segment may be a heading (level 1-6): it starts a chapter."""
    conn.exec_driver_sql("ALTER TABLE segment ADD COLUMN heading_level INTEGER")
    conn.exec_driver_sql("ALTER TABLE batchtask ADD COLUMN current_chapter VARCHAR")


def _v4_sentence_timings(conn: Connection) -> None:
    """Each recording keeps where its sentences lie, for captions."""
    conn.exec_driver_sql("ALTER TABLE segment ADD COLUMN audio_cues JSON")


def _v5_home(conn: Connection) -> None:
    """The path a project file is opened by, whatever name it is given."""
    conn.exec_driver_sql("ALTER TABLE project ADD COLUMN file_path VARCHAR NOT NULL DEFAULT ''")


def _v6_lexicon(conn: Connection) -> None:
    """A pronunciation lexicon per project."""
    LexiconEntry.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


def _v7_cast(conn: Connection) -> None:
    """A voice, speed and language per segment, and a voice for headings."""
    _add_columns(conn, "segment", cast_voice="VARCHAR", cast_speed="FLOAT", cast_lang="VARCHAR")
    _add_columns(conn, "globalsettings", heading_voice="VARCHAR")


def _v8_verdicts(conn: Connection) -> None:
    """What `narrator verify` found in a segment's audio, and which audio it judged."""
    _add_columns(conn, "segment", verified_audio="VARCHAR", verify_findings="JSON")


def _add_columns(conn: Connection, table: str, **columns: str) -> None:
    """Add the columns a table lacks (a file a newer narrator began to upgrade has some)."""
    have = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")}
    for name, kind in columns.items():
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


# Upgrades from one schema version to the next, in order: UPGRADES[0] takes a version 1
# file to version 2, and so on. A new file gets the current tables and SCHEMA_VERSION.
UPGRADES: list[Callable[[Connection], None]] = [
    _v2_identity_and_task_outcome,
    _v3_headings,
    _v4_sentence_timings,
    _v5_home,
    _v6_lexicon,
    _v7_cast,
    _v8_verdicts,
]


def schema_version() -> int:
    return 1 + len(UPGRADES)


# The first schema that records a project file's home (Project.file_path).
HOME_SCHEMA = UPGRADES.index(_v5_home) + 2


@dataclass(frozen=True)
class ProjectStore:
    """An open project file and the project picked inside it. Safe to share: it holds
    an Engine (thread-safe), never a session; each thread opens its own session."""

    path: Path
    project_id: int
    engine: Engine
    uid: str

    def session(self) -> Session:
        """A session for reading (a deferred transaction: it never blocks writers)."""
        return Session(self.engine, expire_on_commit=False)

    def writing(self) -> Session:
        """A session for a read-then-write: it takes the write lock when it begins
        (BEGIN IMMEDIATE), so no other writer can slip in between its read and its write."""
        return Session(self.engine.execution_options(begin="IMMEDIATE"), expire_on_commit=False)


def _connect(path: Path) -> sqlite3.Connection:
    # mode=rw never creates a file, unlike a plain connect.
    uri = f"file:{quote(str(path.resolve()))}?mode=rw"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_S)


def _engine(path: Path, named: Path | None = None) -> Engine:
    """An engine on the file at `path`; its storage errors name `named` (default: path)."""
    # A real pool: SQLAlchemy's default for "sqlite://" is one connection per thread,
    # which does not suit a worker thread that comes and goes.
    engine = create_engine("sqlite://", creator=lambda: _connect(path), poolclass=QueuePool)
    _engines.add(engine)

    # SQLAlchemy's recipe for SQLite transactions: the driver stops beginning them itself,
    # and each one begins here, DEFERRED for readers or IMMEDIATE for writers.
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        dbapi_connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('begin', 'DEFERRED')}")

    # Storage failures leave the engine as narrator errors that name the file, whichever
    # statement met them.
    @event.listens_for(engine, "handle_error")
    def _storage(context: ExceptionContext) -> NarratorError | None:
        return storage_error(context.original_exception, named or path)

    return engine


_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_UNWRITABLE = {
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PERM,
}
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# The disk, not the input: a run cannot go on past these.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def close_all() -> None:
    """Close every pooled connection to every project file this process opened. The last
    connection to close folds the write-ahead log into the file and removes it, so the
    project is one self-contained file again (safe to copy alone)."""
    for engine in list(_engines):
        engine.dispose()


def storage_error(
    exc: BaseException, project: Path | str = "the project file", folder: Path | str | None = None
) -> NarratorError | None:
    """The narrator error for a storage failure, by SQLite's error code (naming the project
    file) or the OS errno (naming the file, or `folder`); None when `exc` is not one."""
    if isinstance(exc, CannotWrite | ProjectBusy | ProjectDamaged):
        return exc
    path = project
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) is not None:
        code = exc.sqlite_errorcode & 0xFF  # the primary code of an extended one
        if code in _BUSY:
            return ProjectBusy(
                f"{path} stayed busy for {BUSY_TIMEOUT_S:.0f}s ({exc}); "
                "try again when the other narrator command is done"
            )
        if code in _UNWRITABLE:
            return CannotWrite(
                f"cannot write {path} ({exc}); check that it is writable and the disk has space"
            )
        if code in _DAMAGED:
            return ProjectDamaged(f"{path} is damaged ({exc}); restore it from a backup")
        return None
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        where = exc.filename or folder or project
        return CannotWrite(
            f"cannot write {where} ({exc.strerror}); free some space or fix its permissions, "
            "then run again"
        )
    return None


def run_lock_path(path: Path) -> Path:
    """The lock that allows one run at a time per project file, by its real path, so a
    symlink or another spelling of the path finds the same lock."""
    real = path.resolve()
    return real.with_name(real.name + ".lock")


def take_run_lock(path: Path, wait: float = 0.5) -> FileLock | None:
    """The run lock, held, or None when another process holds it. The OS drops it if
    the process dies. The short default wait lets a `status` that is looking at the lock
    step aside."""
    from filelock import FileLock, Timeout  # only commands that run take it

    # not thread-local: a run may release it from another thread than the one that took it
    lock = FileLock(run_lock_path(path), timeout=wait, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def run_in_progress(path: Path) -> bool | None:
    """Whether some process holds the run lock now (None when it cannot be told)."""
    try:
        lock = take_run_lock(path, wait=0)
    except OSError:  # e.g. a read-only folder: cannot tell
        return None
    if lock is None:
        return True
    lock.release()
    return False


def _check_file(path: Path) -> Path:
    """Refuse anything that is not a narrator project, without writing to it; return the
    path to open it by: its home when `path` is another name of the same file."""
    if not path.exists():
        raise ProjectNotFound(
            f"{path}: no such project file; create one with `narrator new {path}`"
        )
    if not path.is_file():
        raise NotAProject(f"{path} is not a file; give the path of a narrator project file")
    with path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise NotAProject(f"{path} is not a SQLite file; give a project made by `narrator new`")
    # immutable: the main file as it is, with no lock and no write-ahead log, which would
    # follow this name (another name's log may be in use)
    con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?immutable=1", uri=True)
    try:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        con.close()
        raise storage_error(exc, path) or NotAProject(
            f"{path} cannot be read as SQLite ({exc}); restore it from a backup"
        ) from exc
    if app_id != APPLICATION_ID:
        con.close()
        raise NotAProject(
            f"{path} is a SQLite file but not a narrator project; create one with `narrator new`"
        )
    try:  # a project still in the log of the process that made it has no home here yet
        homes = (
            [row[0] for row in con.execute("SELECT file_path FROM project")]
            if version >= HOME_SCHEMA
            else []
        )
    except sqlite3.DatabaseError:
        homes = []
    finally:
        con.close()
    return next((Path(home) for home in homes if _another_name(path, home)), path)


def _home(path: Path) -> str:
    """The home `path` gives a project file: its folder's real path and its own name (not
    resolve(), which would read through a symlinked file and move the audio folder)."""
    return str(path.absolute().parent.resolve() / path.name)


def _another_name(path: Path, home: str) -> bool:
    """Whether `path` names the file whose home is `home` under another name."""
    try:
        return bool(home) and _home(path) != home and os.path.samefile(home, path)
    except OSError:  # the home is gone (moved, removed): this name becomes the home
        return False


def _upgrade(engine: Engine, path: Path) -> None:
    with engine.connect() as conn:  # most opens need no upgrade: read without the lock
        version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
    if version > schema_version():
        raise NotAProject(
            f"{path} was written by a newer narrator (schema {version}, this one reads up "
            f"to {schema_version()}); upgrade narrator"
        )
    if version == schema_version():
        return
    with engine.execution_options(begin="IMMEDIATE").begin() as conn:
        version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
        for upgrade in UPGRADES[version - 1 :]:
            upgrade(conn)
        if version != schema_version():
            conn.exec_driver_sql(f"PRAGMA user_version={schema_version()}")


def _projects(engine: Engine) -> dict[int, tuple[str, str, str]]:
    """Each project's id -> (uid, the file identity the uid belongs to, the file's home)."""
    with Session(engine) as session:
        rows = session.exec(
            select(Project.id, Project.uid, Project.file_identity, Project.file_path).order_by(
                Project.id
            )
        )
        return {id_: (uid, identity, home) for id_, uid, identity, home in rows}


def open_project(path: str | Path, project_id: int | None = None) -> ProjectStore:
    """Open an existing project file; pick the project by id when it holds several."""
    path = _check_file(Path(path))
    engine = _engine(path)
    _upgrade(engine, path)
    projects = _projects(engine)
    ids = list(projects)
    if project_id is None:
        if not ids:
            raise ProjectNotFound(f"{path} holds no project; create one with `narrator new`")
        if len(ids) > 1:
            listed = ", ".join(str(i) for i in ids)
            raise AmbiguousProject(
                f"{path} holds several projects ({listed}); pick one with --project-id"
            )
        project_id = ids[0]
    elif project_id not in ids:
        listed = ", ".join(str(i) for i in ids) or "none"
        raise ProjectNotFound(f"{path} has no project {project_id} (projects: {listed})")
    uid = _claim_uid(engine, path, project_id, *projects[project_id])
    return ProjectStore(path=path, project_id=project_id, engine=engine, uid=uid)


def _file_identity(path: Path) -> str:
    info = path.stat()
    return f"{info.st_dev}:{info.st_ino}"


def _claim_uid(
    engine: Engine, path: Path, project_id: int, uid: str, claimed: str, home: str
) -> str:
    """The project's uid, for this very file. A copy of a project file (another inode:
    `cp`, a restored backup) takes a uid of its own the first time it is opened, so it
    never sweeps, replaces or removes the files the original records. A read-only copy
    keeps the uid: it writes and removes nothing. `claimed`: the identity on record;
    `home`: the path on record, which `path` becomes when it is not (a moved file)."""
    identity, real = _file_identity(path), _home(path)
    if claimed == identity and home == real:
        return uid
    try:
        with Session(engine.execution_options(begin="IMMEDIATE")) as session:
            project = session.get(Project, project_id)
            assert project is not None
            if project.file_identity != identity:  # nobody claimed it in the meantime
                if project.file_identity:
                    project.uid = new_uid()
                project.file_identity = identity
            project.file_path = real
            session.add(project)
            session.commit()
            return project.uid
    except (CannotWrite, ProjectBusy):
        return uid


def create_project(
    path: str | Path, name: str, fill: Callable[[ProjectStore], object] | None = None
) -> ProjectStore:
    """Create a new project file and `fill` it (an import), all under a temporary name
    beside `path`, which it takes only once complete: a full disk or a bad document
    leaves no file behind, and an existing path is never touched."""
    path, (name, removed) = Path(path), clean(name)
    warn_removed(removed)
    exists = ProjectExists(f"{path} already exists; choose another name or remove it first")
    if path.exists() or path.is_symlink():
        raise exists
    if not path.parent.is_dir():
        raise ProjectNotFound(f"{path.parent} does not exist; create the folder first")
    tmp = temp_path(path)
    engine = None
    try:
        con = sqlite3.connect(tmp)
        try:
            con.execute(f"PRAGMA application_id={APPLICATION_ID}")
            con.execute(f"PRAGMA user_version={schema_version()}")
            con.execute("PRAGMA journal_mode=WAL")
            con.commit()
        finally:
            con.close()
        engine = _engine(tmp, named=path)
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            project = Project(
                name=name, uid=new_uid(), file_identity=_file_identity(tmp), file_path=_home(path)
            )
            session.add(project)
            session.add(GlobalSettings())
            session.commit()
            project_id, uid = project.id, project.uid
        assert project_id is not None
        if fill is not None:
            fill(ProjectStore(path=tmp, project_id=project_id, engine=engine, uid=uid))
        _fold_log(engine, path)
        engine.dispose()
        _take_name(tmp, path, exists)
    except sqlite3.Error as exc:  # the bare connection's: a full disk, a read-only folder
        problem = storage_error(exc, path)
        if problem is None:
            raise
        raise problem from exc
    except OSError as exc:
        raise storage_error(exc, path) or CannotWrite(
            f"cannot create {path} ({exc.strerror}); check the folder, then try again"
        ) from exc
    finally:
        if engine is not None:
            engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)
    return ProjectStore(path=path, project_id=project_id, engine=_engine(path), uid=uid)


def _fold_log(engine: Engine, path: Path) -> None:
    """Fold the write-ahead log into the file, or CannotWrite: closing the last connection
    would try too, but ignores a full disk, leaving a file that lacks what the log held."""
    with engine.connect() as conn:
        busy, logged, folded = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    if busy or logged != folded:
        raise CannotWrite(
            f"cannot write {path} (its log could not be folded in); check that "
            "the disk has space, then try again"
        )


# link() refused: a file system without hard links (FAT, exFAT, some network mounts)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def _take_name(tmp: Path, path: Path, exists: ProjectExists) -> None:
    """Give the complete file at `tmp` its name `path`, never replacing a file made there
    meanwhile (a hard link fails where a rename would replace), then sync the folder."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if path.exists() or path.is_symlink():
            raise exists from None
        os.rename(tmp, path)
    sync(path.parent)
