"""The one vocabulary of Shadowline: automation levels, verdicts, roles and statuses.

Every layer (database, routing policy, pages, CLI, tests) uses these enums; none spells the
values as bare strings of its own. They are ``StrEnum``s so their values are what the database
stores and what ``shadowline status --json`` prints.
"""

from __future__ import annotations

from enum import StrEnum


class AutomationLevel(StrEnum):
    """The rungs of the automation ladder, lowest first (see shared/DESIGN.md)."""

    HUMAN_ONLY = "human_only"
    SHADOW = "shadow"
    ASSIST = "assist"
    PARTIAL = "partial"
    CANARY = "canary"
    FULL = "full"

    @property
    def rank(self) -> int:
        """Position on the ladder: 0 for human_only up to 5 for full."""
        return list(AutomationLevel).index(self)

    @property
    def runs_model(self) -> bool:
        """Whether the worker runs the detector at this level."""
        return self is not AutomationLevel.HUMAN_ONLY


class Verdict(StrEnum):
    """The judgement on one phone."""

    PASS = "pass"
    REJECT = "reject"


class DecidedBy(StrEnum):
    """Who made a final decision; ``pending`` while a human has still to judge."""

    MODEL = "model"
    HUMAN = "human"
    PENDING = "pending"


class InspectionStatus(StrEnum):
    """Where an inspection is in the worker's pipeline."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class Role(StrEnum):
    """What a user may do in the app (shared/DESIGN.md, 'Who uses it')."""

    SUPERVISOR = "supervisor"
    ENGINEER = "engineer"
    MANAGER = "manager"
    ADMIN = "admin"


class DefectClass(StrEnum):
    """The defects the synthetic camera paints (core/camera), in the generator's class-id order.

    Only the generator and training on generated phones use these. The classes a line works with
    come from its model version's card (:func:`core.detector.card.class_list`), never from here.
    """

    SCRATCH = "scratch"
    DENT = "dent"
    CHIP = "chip"

    @property
    def class_id(self) -> int:
        return list(DefectClass).index(self)

    @classmethod
    def names(cls) -> dict[int, str]:
        """The ``{id: name}`` mapping written into YOLO data files."""
        return {member.class_id: member.value for member in cls}


class GateAction(StrEnum):
    """What the line's gate does with a phone the inspection service answered for."""

    PASS = "pass"
    REJECT = "reject"
    TO_PERSON = "to_person"  # divert the phone to a person's station


class FailsafeReason(StrEnum):
    """Why the gate acted on the line's fail-safe instead of a judged answer."""

    BUDGET_EXCEEDED = "budget_exceeded"
    MODEL_UNAVAILABLE = "model_unavailable"
    IMAGE_UNREADABLE = "image_unreadable"
    DATABASE_BUSY = "database_busy"
    #: The phone waited for an inspection thread past its budget: more phones than the service inspects in time.
    OVERLOADED = "overloaded"
    #: The image store could not take the image (full, read-only): the phone is recorded without it.
    IMAGE_NOT_STORED = "image_not_stored"
    INTERNAL_ERROR = "internal_error"
