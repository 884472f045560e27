"""The simulated line: serials that never repeat across lines."""

from __future__ import annotations

from core.camera import get_scenario
from core.line_simulator import queue_simulated_phone
from db import audit
from db.lines import add_line, get_line


def test_two_lines_simulated_with_the_same_seed_never_share_a_serial(database, settings) -> None:
    with database.write() as session:
        first = get_line(session=session, name="line-1").id
        second = add_line(session=session, name="line-2", actor=audit.SYSTEM_ACTOR)
    serials = [
        queue_simulated_phone(database, settings, line_id=line_id, line_name=name, scenario=get_scenario("normal"), seed=1, index=index)[0]
        for line_id, name in ((first, "line-1"), (second, "line-2"))
        for index in range(2)
    ]
    assert serials == [f"SN-L{first}-1-000000", f"SN-L{first}-1-000001", f"SN-L{second}-1-000000", f"SN-L{second}-1-000001"]
