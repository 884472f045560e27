"""The synthetic end-of-line camera: phones, defects and plant scenarios."""

from core.camera.render import IMAGE_HEIGHT, IMAGE_WIDTH, Conditions, Defect, Phone, render_phone
from core.camera.scenarios import SCENARIOS, Scenario, UnknownScenarioError, get_scenario, phone_seed, render_run_phone

__all__ = [
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "SCENARIOS",
    "Conditions",
    "Defect",
    "Phone",
    "Scenario",
    "UnknownScenarioError",
    "get_scenario",
    "phone_seed",
    "render_phone",
    "render_run_phone",
]
