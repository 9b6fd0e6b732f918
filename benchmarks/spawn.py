"""A tiny launcher: ``python benchmarks/spawn.py RESULT.json TIMEOUT_S -- CMD...`` (stdlib only).

Why it exists: on Linux a forked child inherits its parent's peak-RSS mark (``hiwater_rss`` is copied
at fork and kept across ``execve``), so a child of the harness — which holds big Arrow tables while
populating stores — would report at least the harness's RSS. This launcher is small; the measured
command is forked from *it*, so ``os.wait4``'s ``ru_maxrss`` is the command's own peak (as
``/usr/bin/time -v`` would report it from a small parent).

Writes ``{"wall_s", "cpu_s", "maxrss_kib", "returncode", "timed_out"}`` to RESULT.json. The command's
stdout/stderr are inherited (the harness redirects them to files). On timeout the command's whole
process group is killed.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time


def main(argv: list[str]) -> int:
    """Run the command after ``--`` and write its measurements."""
    result_path, timeout_s = argv[1], float(argv[2])
    cmd = argv[argv.index("--") + 1:]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:  # leftovers of the group (e.g. a peer's background server)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    with open(result_path, "w") as out:
        json.dump({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
                   "returncode": proc.returncode, "timed_out": expired.is_set()}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
