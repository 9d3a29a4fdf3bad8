"""The collector settings a serving process runs with (server/runner.py):
start-up frozen, the young generation's threshold raised, the older
generations' ratios kept. Safe only while failed requests leave no cycles
(tests/integration/test_no_cycles*.py)."""

from __future__ import annotations

import gc

from azproxy.server.runner import YOUNG_THRESHOLD, freeze_start_up


def test_serving_freezes_start_up_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        freeze_start_up()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert YOUNG_THRESHOLD == 10_000 > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
