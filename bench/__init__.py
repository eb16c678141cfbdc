"""Benchmarks: scripts that print figures (never timed assertions in the test suite)."""


class Rows:
    """Tab-separated rows on stdout, the header taken from the first row's keys."""

    def __init__(self) -> None:
        self._header: list[str] | None = None

    def print(self, row: dict[str, object]) -> None:
        if self._header is None:
            self._header = list(row)
            print("\t".join(self._header))
        print("\t".join(str(row[k]) for k in self._header), flush=True)


# Prepended to a child's code: it reports its own peak RSS as it exits (VmHWM, the
# high-water mark since its exec; wait4's ru_maxrss would carry the parent's over the
# fork). `peak_mib` reads it back from the child's stderr.
PEAK = """
import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            print("VmHWM", line.split()[1], file=sys.stderr)
atexit.register(_peak)
"""
# The narrator command line, run as such a child.
NARRATOR = (
    PEAK
    + """
from narrator.cli import main
sys.argv = ["narrator", *sys.argv[1:]]
main()
"""
)


def peak_mib(stderr: str) -> int | None:
    kib = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("VmHWM")]
    return round(kib[0] / 1024) if kib else None
