"""The sweep's progress line on stderr."""

from __future__ import annotations

import shutil
import sys
import time


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A one-line progress bar on stderr: cells done/total, elapsed, ETA.

    On a terminal the line is redrawn in place; otherwise (CI logs, pipes)
    each finished cell prints a line of its own.
    """

    def __init__(self, total: int, already: int, estimate_per_cell: float, stream=None):
        self.total = total
        self.done = already
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self.ran = 0
        self.estimate_per_cell = estimate_per_cell

    def _eta(self) -> float:
        per = (time.monotonic() - self.started) / self.ran if self.ran else self.estimate_per_cell
        return per * (self.total - self.done)

    def _bar(self, width: int = 24) -> str:
        filled = int(width * self.done / self.total) if self.total else width
        return "#" * filled + "-" * (width - filled)

    def starting(self, label: str) -> None:
        if self.tty:
            self._line(f"{label} ...")

    def finished(self, label: str, row: dict) -> None:
        self.done += 1
        self.ran += 1
        if row["status"] == "ok" and row.get("offered_rate") not in (None, ""):
            what = (f"ok {row['events_per_s']:,.0f} of {row['offered_rate']:,.0f} ev/s offered"
                    f"{', SATURATED' if row.get('saturated') is True else ''}")
            if isinstance(row.get("queue_wait_p50_ms"), float):
                what += f", queue wait p50 {row['queue_wait_p50_ms']:.1f} ms"
        elif row["status"] == "ok":
            what = f"ok {row['events_per_s']:,.0f} ev/s"
        else:
            what = f"{row['status'].upper()}: {row['error']}"
        if row["status"] != "ok" and self.tty:
            # Failures stay visible above the redrawn bar.
            self.stream.write("\r\x1b[K" + f"{label}: {what}\n")
        self._line(f"{label} {what}")
        if not self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        pct = 100 * self.done / self.total if self.total else 100
        elapsed = time.monotonic() - self.started
        head = (
            f"[{self._bar()}] {self.done}/{self.total} {pct:3.0f}% "
            f"{fmt_duration(elapsed)} ETA {fmt_duration(self._eta())}  "
        )
        line = head + text
        if self.tty:
            cols = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r\x1b[K" + line[: cols - 1])
            self.stream.flush()
        else:
            self.stream.write(line)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


__all__ = ["Progress", "fmt_duration"]
