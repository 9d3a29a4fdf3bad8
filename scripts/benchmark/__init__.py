"""Benchmark azproxy against the simulator direct, a bare aiohttp relay and nginx.

scripts/bench.py runs it (see its docstring for the command line). One run
starts the Azure OpenAI simulator, azproxy, the floor relay and (where
installed) nginx, each on a free loopback port, runs the same bounded load
against them and prints a table with ratios to direct access, and with how busy
the machine was. Everything it starts, it stops.

The modules, by job:
  cli            options, starting the targets, printing, stopping everything
  runner         the preflight check, then each section, timed, with the load
  sections/      one module per section or family; the registry by name
  report         the table, the --json document, the run's metadata
  results        a section's rows, and the arithmetic on its numbers
  context        what every section receives (Bench, Options), and Skip
  targets        the columns (direct, azproxy, floor, nginx) and the requests
  services       starting and stopping the simulator, azproxy, floor, nginx
  wrk            the load generator for non-streamed requests
  stream_client  an aiohttp client timing every SSE event
  procfs         CPU time, memory and how busy the machine is, from /proc
  hostile_load   bodies and raw-socket clients built to hurt (hostile section)
  fake_azure     an upstream that answers at once or streams flat out, run as
                 a script (hostile section)

Targets beside the numbers are printed as PASS/MISS and never asserted.
Absolute numbers depend on the machine and its other load; the ratios are the
point.
"""

__all__: list[str] = []
