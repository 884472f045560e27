"""Named plant scenarios: how camera conditions evolve over a run of phones.

A scenario maps the phone's index in a run to the :class:`~core.camera.render.Conditions` it is
photographed under. Each phone also gets the small natural variation of a real line (lights
flicker a little, focus breathes), drawn from the phone's own seed so a run is reproducible.

Drifting scenarios move one parameter from the trained value to a drifted one along a linear
ramp over ``ramp`` phones (``ramp=0`` jumps at once), starting after ``onset`` phones.

Camera faults (``lens-cap``, ``frozen-frame``) strike at once after ``onset`` phones: the phones
keep coming, with their defects, but the camera no longer shows them: a near-black frame under
a lens cap, the last good frame again and again from a frozen camera.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.camera.render import UNSEEN_COLOURS, Conditions, Phone, render_phone
from core.vocabulary import DefectClass

#: Natural per-phone variation under normal conditions: the range the model is trained on.
NORMAL_BRIGHTNESS = (0.85, 1.15)
NORMAL_BLUR = (0.0, 0.7)
NORMAL_NOISE = (1.5, 5.0)
NORMAL_TEMPERATURE = (-0.25, 0.25)


@dataclass(frozen=True)
class Scenario:
    """A named way the plant's conditions change over a run.

    Attributes:
        name: The scenario's name as the CLI takes it.
        description: One sentence for people.
        drifted: Overrides of the per-phone conditions once the drift is complete.
        ramp: Phones over which the drift grows from 0 to 1 (0 = a step).
        onset: Phones at trained conditions before the drift starts.
    """

    name: str
    description: str
    drifted: dict[str, float]
    ramp: int = 200
    onset: int = 0
    fault: str = ""

    def drift_at(self, index: int) -> float:
        """Fraction 0..1 of the drift reached at phone ``index`` (0-based)."""
        if self.fault:
            return 1.0 if index >= self.onset else 0.0
        if not self.drifted or index < self.onset:
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return float(min(1.0, (index - self.onset + 1) / self.ramp))

    def conditions_at(self, index: int, seed: int) -> Conditions:
        """Conditions for phone ``index`` of a run; ``seed`` is that phone's seed."""
        rng = np.random.default_rng([seed, 7919])
        base = Conditions(
            brightness=float(rng.uniform(*NORMAL_BRIGHTNESS)),
            colour_temperature=float(rng.uniform(*NORMAL_TEMPERATURE)),
            blur_sigma=float(rng.uniform(*NORMAL_BLUR)),
            noise_std=float(rng.uniform(*NORMAL_NOISE)),
            glare=float(rng.uniform(0.0, 0.35)) if rng.random() < 0.3 else 0.0,
        )
        level = self.drift_at(index)
        if level == 0.0:
            return base
        changes: dict[str, object] = {}
        for key, target in self.drifted.items():
            if key == "new_colour_share":
                if rng.random() < level * target:
                    changes["colours"] = tuple(UNSEEN_COLOURS)
            elif key == "new_defect_share":
                # Defective phones carry the unseen chip instead of a known defect.
                if rng.random() < level * target:
                    changes["defect_kinds"] = {DefectClass.CHIP: 1.0}
            elif key == "brightness":
                changes[key] = base.brightness + (target - 1.0) * level
            elif key == "blur_sigma":
                changes[key] = base.blur_sigma + target * level
            else:
                changes[key] = getattr(base, key) + (target - getattr(base, key)) * level
        return replace(base, **changes)  # type: ignore[arg-type]

    def with_ramp(self, ramp: int | None = None, onset: int | None = None) -> Scenario:
        """This scenario with another ramp length or onset."""
        return replace(self, ramp=self.ramp if ramp is None else ramp, onset=self.onset if onset is None else onset)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("normal", "The conditions the model was trained on.", {}),
        Scenario("dim-lights", "The lights fade to a third of the lab level.", {"brightness": 0.33}),
        Scenario("blur", "The camera drifts out of focus.", {"blur_sigma": 3.5}),
        Scenario("new-colour", "Phones arrive in body colours never seen in training.", {"new_colour_share": 1.0}),
        Scenario("new-defect", "Defective phones show chipped edges, a defect never seen in training.", {"new_defect_share": 1.0}),
        Scenario("glare", "A new lamp puts a strong highlight on every phone.", {"glare": 0.9}),
        Scenario("lens-cap", "After the onset the lens cap is on: near-black frames of phones nobody can see.", {}, ramp=0, onset=50, fault="lens-cap"),
        Scenario("frozen-frame", "After the onset the camera freezes: every phone gets the last good frame.", {}, ramp=0, onset=50, fault="frozen-frame"),
    )
}


class UnknownScenarioError(ValueError):
    """Raised for a scenario name that is not in :data:`SCENARIOS`."""


def get_scenario(name: str) -> Scenario:
    """Look a scenario up by name, with an error that lists the alternatives."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenarioError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}") from None


def phone_seed(run_seed: int, index: int) -> int:
    """The seed of phone ``index`` in the run started with ``run_seed`` (stable, non-overlapping)."""
    return int(np.random.default_rng([run_seed, index]).integers(0, 2**31 - 1))


def render_run_phone(scenario: Scenario, run_seed: int, index: int, defect_rate: float | None = None) -> Phone:
    """Render phone ``index`` of a run under ``scenario``."""
    seed = phone_seed(run_seed, index)
    conditions = scenario.conditions_at(index, seed)
    if defect_rate is not None:
        conditions = replace(conditions, defect_rate=defect_rate)
    phone = render_phone(seed, conditions)
    if scenario.fault and index >= scenario.onset:
        phone = replace(phone, image=_faulty_frame(scenario, run_seed, index, phone.image, defect_rate))
    return phone


def _faulty_frame(scenario: Scenario, run_seed: int, index: int, image: np.ndarray, defect_rate: float | None) -> np.ndarray:
    """What a faulty camera gives instead of ``image`` (the phone it should show)."""
    if scenario.fault == "lens-cap":
        # A little light leaks round the cap; the sensor's noise stays.
        rng = np.random.default_rng([run_seed, index, 4099])
        dark = image.astype(np.float32) * 0.015 + rng.normal(2.0, 1.5, image.shape)
        return np.clip(dark, 0, 255).astype(np.uint8)
    if scenario.fault == "frozen-frame":
        last_good = max(scenario.onset - 1, 0)
        seed = phone_seed(run_seed, last_good)
        conditions = scenario.conditions_at(last_good, seed)
        if defect_rate is not None:
            conditions = replace(conditions, defect_rate=defect_rate)
        return render_phone(seed, conditions).image
    raise ValueError(f"unknown camera fault {scenario.fault!r}")
