"""Migrations build the schema the models describe, from an empty database, and enforce the rules."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from db.migrate import current_revision, head_revision, upgrade
from db.models import AuditEntry, Base

pytestmark = pytest.mark.both_backends


def test_upgrade_from_empty_reaches_head_and_matches_the_models(empty_database):
    assert current_revision(empty_database.engine) is None
    upgrade(empty_database.engine)
    assert current_revision(empty_database.engine) == head_revision()
    with empty_database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": False}), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    upgrade(empty_database.engine)  # idempotent


def test_downgrade_to_base_and_back(empty_database):
    upgrade(empty_database.engine)
    from alembic import command

    from db.migrate import alembic_config

    config = alembic_config()
    with empty_database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert "inspections" not in inspect(empty_database.engine).get_table_names()
    upgrade(empty_database.engine)
    assert "inspections" in inspect(empty_database.engine).get_table_names()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(database):
    with database.read() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert session.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_audit_log_is_append_only(database):
    with database.write() as session:
        session.add(AuditEntry(actor="ana", action="test", entity="thing"))
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(IntegrityError, match="append-only"), database.write() as session:
            session.execute(text(statement))
    if not database.is_sqlite:  # SQLite has no TRUNCATE (DELETE without WHERE is what it empties with)
        for table in ("audit_log", "final_decisions", "human_decisions"):
            with pytest.raises(IntegrityError, match=r"append-only|insert-only"), database.write() as session:
                session.execute(text(f"TRUNCATE {table} CASCADE"))
    with database.read() as session:
        assert "mallory" not in {row[0] for row in session.execute(text("SELECT actor FROM audit_log"))}
        assert session.execute(text("SELECT count(*) FROM audit_log")).scalar() > 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_ids_are_64_bit_on_postgres(database):  # SQLite's INTEGER PRIMARY KEY is 64-bit already
    with database.read() as session:
        narrow = (
            session.execute(
                text(
                    "SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND data_type = 'integer' AND (column_name = 'id' OR column_name LIKE '%\\_id' ESCAPE '\\')"
                )
            )
            .scalars()
            .all()
        )
    assert narrow == []
    big = 2**31 + 5
    with database.write() as session:
        session.execute(text(f"SELECT setval(pg_get_serial_sequence('audit_log', 'id'), {big})"))
        session.add(AuditEntry(actor="ana", action="test", entity="thing"))
    with database.read() as session:
        assert session.execute(text("SELECT max(id) FROM audit_log")).scalar() == big + 1


def _alarm_sql(alarm_id: int, acknowledged: bool = False) -> str:
    ack = "'2026-01-02'" if acknowledged else "NULL"
    return (
        "INSERT INTO drift_alarms (id, line_id, metric, kind, severity, statistic, reason, raised_at, last_seen_at, cleared_at, acknowledged_at) "
        f"VALUES ({alarm_id}, 1, 'brightness', 'input', 'warning', 'psi', 'r', '2026-01-01', '2026-01-01', {ack}, {ack})"
    )


def test_one_open_alarm_per_line_and_metric_and_the_upgrade_closes_older_duplicates(empty_database):
    upgrade(empty_database.engine, "0010")
    with empty_database.engine.begin() as connection:
        connection.execute(text("INSERT INTO lines (id, name, created_at) VALUES (1, 'line-1', '2026-01-01')"))
        for alarm_id in (1, 2, 3):
            connection.execute(text(_alarm_sql(alarm_id)))
    upgrade(empty_database.engine)
    with empty_database.engine.connect() as connection:
        still_open = connection.execute(text("SELECT id FROM drift_alarms WHERE acknowledged_at IS NULL OR cleared_at IS NULL")).scalars().all()
    assert still_open == [3]
    with pytest.raises(IntegrityError), empty_database.engine.begin() as connection:
        connection.execute(text(_alarm_sql(4)))
    with empty_database.engine.begin() as connection:  # a closed one may repeat
        connection.execute(text(_alarm_sql(5, acknowledged=True)))


def test_foreign_keys_and_checks_are_enforced(database):
    with pytest.raises(IntegrityError), database.write() as session:
        session.execute(
            text(
                "INSERT INTO inspections (serial, line_id, captured_at, image_path, source, status, attempts) "
                "VALUES ('x', 999, '2026-01-01', 'p', 'ingest', 'queued', 0)"
            )
        )
    with pytest.raises(IntegrityError), database.write() as session:
        session.execute(text("UPDATE line_settings SET level = 'turbo'"))


def test_upgrade_backfills_the_line_of_existing_final_decisions(empty_database):
    upgrade(empty_database.engine, "0002")
    with empty_database.engine.begin() as connection:
        connection.execute(text("INSERT INTO lines (id, name, created_at) VALUES (7, 'line-7', '2026-01-01')"))
        connection.execute(
            text(
                "INSERT INTO inspections (id, serial, line_id, captured_at, image_path, source, status, attempts) "
                "VALUES (1, 's', 7, '2026-01-01', 'p', 'ingest', 'done', 1)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO final_decisions (inspection_id, verdict, decided_by, level, rule, decided_at) "
                "VALUES (1, 'pass', 'model', 'full', 'r', '2026-01-01')"
            )
        )
    upgrade(empty_database.engine)
    with empty_database.engine.connect() as connection:
        assert connection.execute(text("SELECT line_id FROM final_decisions")).scalar() == 7


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_the_documented_application_role_cannot_empty_or_unprotect_the_audit_log(database, settings) -> None:
    """The README's roles SQL, run as written (role names made unique to this test's database); SQLite has no roles."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ProgrammingError

    app_role = f"app_{make_url(settings.database_url).database}"
    tables = "audit_log, final_decisions, human_decisions, decision_corrections"
    with database.engine.begin() as connection:  # the owner (the test server's superuser) ran the migrations
        for statement in (
            f"CREATE ROLE {app_role} LOGIN",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            f"GRANT USAGE ON SCHEMA public TO {app_role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app_role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app_role}",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON {tables} FROM {app_role}",
        ):
            connection.execute(text(statement))
        connection.execute(text("INSERT INTO audit_log (at, actor, action, entity) VALUES (now(), 'ana', 'test', 'thing')"))
    app = create_engine(make_url(settings.database_url).set(username=app_role))
    try:
        for statement in ("TRUNCATE audit_log", "ALTER TABLE audit_log DISABLE TRIGGER ALL", "DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'"):
            with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"), app.begin() as connection:
                connection.execute(text(statement))
        with app.begin() as connection:  # what the application does: insert and read
            connection.execute(text("INSERT INTO audit_log (at, actor, action, entity) VALUES (now(), 'app', 'test', 'thing')"))
            assert connection.execute(text("SELECT count(*) FROM audit_log")).scalar() >= 2
    finally:
        app.dispose()


def test_0012_groups_the_alarms_open_at_upgrade_into_one_incident_per_line_and_scope(empty_database):
    upgrade(empty_database.engine, "0011")
    alarm = (
        "INSERT INTO drift_alarms (line_id, metric, kind, severity, statistic, reason, raised_at, last_seen_at, acknowledged_at, cleared_at) "
        "VALUES (1, :metric, :kind, :severity, 'ks', 'test', '2026-11-01 10:00:00', '2026-11-01 10:00:00', :acked, :cleared)"
    )
    with empty_database.engine.begin() as connection:
        connection.execute(text("INSERT INTO lines (id, name, created_at) VALUES (1, 'line-1', '2026-01-01')"))
        for metric, kind, severity, acked, cleared in (
            ("brightness", "input", "severe", None, None),
            ("mean_b", "input", "warning", "2026-11-01 10:05:00", None),
            ("latency_p95_ms", "software", "warning", None, None),
            ("sharpness", "input", "severe", "2026-10-01 10:00:00", "2026-10-02 10:00:00"),  # closed before: no incident
        ):
            connection.execute(text(alarm), {"metric": metric, "kind": kind, "severity": severity, "acked": acked, "cleared": cleared})
    upgrade(empty_database.engine)
    with empty_database.engine.connect() as connection:
        incidents = connection.execute(text("SELECT id, scope, severity, acknowledged_at FROM drift_incidents ORDER BY scope")).all()
        members = dict(connection.execute(text("SELECT metric, incident_id FROM drift_alarms")).all())
    assert [(scope, severity, acked) for _, scope, severity, acked in incidents] == [("drift", "severe", None), ("system", "warning", None)]
    drift_id, system_id = incidents[0][0], incidents[1][0]
    assert members == {"brightness": drift_id, "mean_b": drift_id, "latency_p95_ms": system_id, "sharpness": None}


def test_0014_stores_model_paths_under_the_models_folder_relative_and_back(empty_database, tmp_path):
    from alembic import command

    from db.migrate import alembic_config

    models = tmp_path / "models"
    (models / "scratch-v3").mkdir(parents=True)
    upgrade(empty_database.engine, "0013", models_dir=models)
    row = "INSERT INTO model_versions (version, path, card, registered_at) VALUES (:version, :path, '{}', '2026-11-01 10:00:00')"
    with empty_database.engine.begin() as connection:
        for version, path in (("v3", str(models / "scratch-v3")), ("elsewhere", "/opt/lab/v9"), ("relative", "v1")):
            connection.execute(text(row), {"version": version, "path": path})
    upgrade(empty_database.engine, models_dir=models)
    paths = "SELECT version, path FROM model_versions"
    with empty_database.engine.connect() as connection:
        assert dict(connection.execute(text(paths)).all()) == {"v3": "scratch-v3", "elsewhere": "/opt/lab/v9", "relative": "v1"}

    config = alembic_config()
    config.attributes["models_dir"] = models
    with empty_database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0013")
    with empty_database.engine.connect() as connection:
        assert dict(connection.execute(text(paths)).all()) == {"v3": str(models / "scratch-v3"), "elsewhere": "/opt/lab/v9", "relative": str(models / "v1")}
