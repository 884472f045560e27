"""Migrations build the schema the models describe, from an empty database, and enforce the rules."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from db.migrate import current_revision, head_revision, upgrade
from db.models import AuditEntry, Base


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
    with database.read() as session:
        assert "mallory" not in {row[0] for row in session.execute(text("SELECT actor FROM audit_log"))}


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


def test_0011_groups_the_alarms_open_at_upgrade_into_one_incident_per_line_and_scope(empty_database):
    upgrade(empty_database.engine, "0010")
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
