"""Opening project files (never creating one by accident), the schema and its version."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, SQLModel, select

from narrator.errors import AmbiguousProject, NotAProject, ProjectExists, ProjectNotFound
from narrator.models import GlobalSettings, Project

# "NARR": marks a SQLite file as a narrator project (PRAGMA application_id).
APPLICATION_ID = 0x4E415252
SQLITE_HEADER = b"SQLite format 3\x00"

# Upgrades from one schema version to the next, in order: UPGRADES[0] takes a version 1
# file to version 2, and so on. A new file gets the current tables and SCHEMA_VERSION.
UPGRADES: list[Callable[[Connection], None]] = []


def schema_version() -> int:
    return 1 + len(UPGRADES)


@dataclass(frozen=True)
class ProjectStore:
    """An open project file and the project picked inside it. Safe to share: it holds
    an Engine (thread-safe), never a session; each thread opens its own session."""

    path: Path
    project_id: int
    engine: Engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    # mode=rw / ro never creates a file, unlike a plain connect.
    uri = f"file:{quote(str(path.resolve()))}?mode={mode}"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)


def _engine(path: Path) -> Engine:
    # A real pool: SQLAlchemy's default for "sqlite://" is one connection per thread,
    # which does not suit a worker thread that comes and goes.
    engine = create_engine(
        "sqlite://", creator=lambda: _connect(path, "rw"), poolclass=QueuePool
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        dbapi_connection.execute("PRAGMA busy_timeout=30000")

    return engine


def _check_file(path: Path) -> None:
    """Refuse anything that is not a narrator project, without writing to it."""
    if not path.exists():
        raise ProjectNotFound(
            f"{path}: no such project file; create one with `narrator new {path}`"
        )
    if not path.is_file():
        raise NotAProject(f"{path} is not a file; give the path of a narrator project file")
    with path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise NotAProject(
            f"{path} is not a SQLite file; give a project made by `narrator new`"
        )
    con = _connect(path, "ro")
    try:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise NotAProject(f"{path} cannot be read as SQLite ({exc}); is it damaged?") from exc
    finally:
        con.close()
    if app_id != APPLICATION_ID:
        raise NotAProject(
            f"{path} is a SQLite file but not a narrator project; "
            "create one with `narrator new`"
        )
    if version > schema_version():
        raise NotAProject(
            f"{path} was written by a newer narrator (schema {version}, this one reads up "
            f"to {schema_version()}); upgrade narrator"
        )


def _upgrade(engine: Engine) -> None:
    with engine.begin() as conn:
        version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
        for upgrade in UPGRADES[version - 1 :]:
            upgrade(conn)
        if version != schema_version():
            conn.exec_driver_sql(f"PRAGMA user_version={schema_version()}")


def project_ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return list(session.exec(select(Project.id).order_by(Project.id)))


def open_project(path: str | Path, project_id: int | None = None) -> ProjectStore:
    """Open an existing project file; pick the project by id when it holds several."""
    path = Path(path)
    _check_file(path)
    engine = _engine(path)
    _upgrade(engine)
    ids = project_ids(engine)
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
    return ProjectStore(path=path, project_id=project_id, engine=engine)


def create_project(path: str | Path, name: str) -> ProjectStore:
    """Create a new project file; refuse to touch an existing path."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise ProjectExists(f"{path} already exists; choose another name or remove it first")
    if not path.parent.is_dir():
        raise ProjectNotFound(f"{path.parent} does not exist; create the folder first")
    con = sqlite3.connect(path)
    try:
        con.execute(f"PRAGMA application_id={APPLICATION_ID}")
        con.execute(f"PRAGMA user_version={schema_version()}")
        con.execute("PRAGMA journal_mode=WAL")
        con.commit()
    finally:
        con.close()
    engine = _engine(path)
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        project = Project(name=name)
        session.add(project)
        session.add(GlobalSettings())
        session.commit()
        project_id = project.id
    assert project_id is not None
    return ProjectStore(path=path, project_id=project_id, engine=engine)
