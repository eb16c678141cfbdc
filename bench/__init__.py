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
