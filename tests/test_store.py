import sqlite3
from pathlib import Path

import pytest

from narrator import store as store_module
from narrator.errors import AmbiguousProject, NotAProject, ProjectExists, ProjectNotFound
from narrator.models import Project
from narrator.store import create_project, open_project


def test_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(ProjectNotFound, match="narrator new"):
        open_project(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()


def test_not_sqlite_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("hello")
    with pytest.raises(NotAProject, match="not a SQLite file"):
        open_project(path)
    assert path.read_text() == "hello"


def test_foreign_sqlite_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("create table t (x)")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(NotAProject, match="not a narrator project"):
        open_project(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    create_project(path, "p")
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(NotAProject, match="newer narrator"):
        open_project(path)


def test_older_schema_is_upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.db"
    create_project(path, "p")
    ran = []
    upgrades = [*store_module.UPGRADES, lambda conn: ran.append(conn)]
    monkeypatch.setattr(store_module, "UPGRADES", upgrades)
    store = open_project(path)
    assert len(ran) == 1
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA user_version").scalar_one() == len(upgrades) + 1
    open_project(path)
    assert len(ran) == 1


def test_wal_and_foreign_keys(tmp_path: Path) -> None:
    store = create_project(tmp_path / "p.db", "p")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1


def test_create_refuses_existing(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    path.write_text("keep me")
    with pytest.raises(ProjectExists):
        create_project(path, "p")
    assert path.read_text() == "keep me"


def test_several_projects_need_an_id(tmp_path: Path) -> None:
    store = create_project(tmp_path / "p.db", "one")
    with store.session() as session:
        session.add(Project(name="two"))
        session.commit()
    with pytest.raises(AmbiguousProject, match="1, 2"):
        open_project(store.path)
    assert open_project(store.path, 2).project_id == 2
    with pytest.raises(ProjectNotFound, match="no project 3"):
        open_project(store.path, 3)
