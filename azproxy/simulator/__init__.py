"""The built-in Azure OpenAI simulator (`azproxy simulate`, `azproxy serve --demo`)."""

from .app import (
    FAULTS,
    SIM_STATE,
    SimSettings,
    SimState,
    apply_faults,
    create_simulator,
    parse_fault,
)

__all__ = [
    "FAULTS",
    "SIM_STATE",
    "SimSettings",
    "SimState",
    "apply_faults",
    "create_simulator",
    "parse_fault",
]
