"""``make test``: the suite in two phases, both always run, with both summaries at the end.

Phase one runs on two workers (most tests wait on a training child or a subprocess); phase two
runs the tests that bound a time on their own (``-m alone``), so that no other test's training
steals their cores. The checks of built distributions (``-m packaging``) are ``make
test-packaging``'s, not the suite's. Usage: ``python tools/test_phases.py PYTHON [pytest options...]``.
Exits 1 if either phase failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

PHASES = (("parallel", ["-n", "2", "--dist", "loadgroup", "-m", "not alone and not packaging"]),
          ("alone", ["-m", "alone and not packaging"]))
_SUMMARY = re.compile(r"^\d+ \w+.* in [\d.]+s")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?)")


def run_phase(python: str, options: list[str]) -> tuple[int, str]:
    """Run one phase, streaming its output; its exit code and pytest's summary line."""
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    summary = "no summary (pytest did not finish)"
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            if _SUMMARY.match(line.strip("= \n")):
                summary = line.strip("= \n")
    return process.returncode, summary


def main(argv: list[str]) -> int:
    python, extra = argv[0], argv[1:]
    results = []
    for name, options in PHASES:
        print(f"\n--- {name} phase ---", flush=True)
        results.append((name, *run_phase(python, options + extra)))
    totals = {"passed": 0, "failed": 0}
    print()
    for name, code, summary in results:
        print(f"{name} phase: {'ok' if code == 0 else f'FAILED (exit {code})'}: {summary}")
        for count, kind in _COUNT.findall(summary):
            totals["passed" if kind == "passed" else "failed"] += int(count)
    failed = any(code != 0 for _name, code, _summary in results)
    if failed and totals["failed"] == 0:
        totals["failed"] = 1  # a phase that failed without a count (collection error, crash) still fails
    print(f"total: {totals['passed']} passed, {totals['failed']} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
