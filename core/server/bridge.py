"""TEMPORARY: the worker's inspection path, for the service until ``core.inspection.Inspector`` lands."""

from __future__ import annotations

import threading

from core.routing import LEVEL_POLICIES
from core.settings import Settings
from core.worker import Worker
from db.engine import Database
from db.lines import LineConfig
from db.pipeline import ClaimedInspection, PhoneResult


class WorkerPath:
    def __init__(self, database: Database, settings: Settings, *, threads: int = 0) -> None:
        self.worker = Worker(database, settings, threads=threads)
        self._lock = threading.Lock()
        self._drift_lock = threading.Lock()

    def load(self, lines: list[LineConfig]) -> None:
        for line in lines:
            if LEVEL_POLICIES[line.level].runs_model:
                for model_id in (line.active_model_id, line.candidate_model_id):
                    if model_id is not None:
                        with self._lock:
                            self.worker._detector(model_id)

    def model_problems(self) -> list[str]:
        return [f"model {k}: {v}" for k, v in self.worker.stats.model_errors.items()]

    def is_loaded(self, model_id: int) -> bool:
        slot = self.worker._models.get(model_id)
        return bool(slot and slot.detector)

    def inspect_posted(self, inspection_id: int, serial: str, image_path: str, line: LineConfig) -> tuple[PhoneResult, str | None]:
        with self._lock:
            for model_id in (line.active_model_id, line.candidate_model_id):
                if model_id is not None and LEVEL_POLICIES[line.level].runs_model:
                    self.worker._detector(model_id)
        found = self.worker._inspect_safely(ClaimedInspection(inspection_id, serial, line.id, image_path, 1), line)
        result = PhoneResult(inspection_id, line.id, line.level, **found, active_model_id=line.active_model_id)
        return result, line.active_model_version

    def after_written(self, line: LineConfig, result: PhoneResult) -> None:
        with self._drift_lock:
            self.worker._step_down_lines_whose_model_failed({line.id: line}, [result])
            if self.worker.drift is not None:
                self.worker.drift.note_processed(line.id, 1)

    def background_checks(self) -> None:
        with self._drift_lock:
            self.worker.check_drift()
