#!/usr/bin/env python3
"""Benchmark azproxy against the simulator direct, a bare aiohttp relay and nginx.

    python scripts/bench.py [--quick] [--duration S] [--json OUT] [--only SECTIONS]
                            [--baseline-src PATH]

The benchmark itself is the package scripts/benchmark/ (its docstring has the
module map; scripts/benchmark/sections/ lists the sections).
"""

import sys

from benchmark.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
