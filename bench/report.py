"""The results as a plain-text table (printed) and as Markdown (``--markdown``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.stats import Run


@dataclass(frozen=True)
class Table:
    """Headers and rows of text; the first column is left-aligned, the others right-aligned."""

    headers: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def text(self) -> str:
        """Aligned columns for a terminal."""
        widths = [max(len(row[i]) for row in (self.headers, *self.rows)) for i in range(len(self.headers))]

        def line(cells: tuple[str, ...]) -> str:
            first, *rest = cells
            parts = [first.ljust(widths[0])] + [
                cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)
            ]
            return "  ".join(parts).rstrip()

        return "\n".join([line(self.headers), *(line(row) for row in self.rows)])

    def markdown(self) -> str:
        """A GitHub-flavoured Markdown table."""
        rule = ["---"] + ["---:"] * (len(self.headers) - 1)
        lines = [self.headers, tuple(rule), *self.rows]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


@dataclass
class Report:
    """Everything a run prints: a title, the tables under their headings, and result lines."""

    title: str
    tables: list[tuple[str, Table]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The report for a terminal."""
        parts = [self.title]
        for heading, table in self.tables:
            parts += ["", heading, table.text()]
        if self.lines:
            parts += ["", *self.lines]
        return "\n".join(parts)

    def markdown(self) -> str:
        """The report as Markdown."""
        parts = [self.title]
        for heading, table in self.tables:
            parts += ["", f"**{heading}**", "", table.markdown()]
        if self.lines:
            parts += ["", *(f"- {line}" for line in self.lines)]
        return "\n".join(parts) + "\n"


THROUGHPUT_HEADERS = (
    "case",
    "workers",
    "rps",
    "p50 ms",
    "p99 ms",
    "errors",
    "x baseline",
    "p99 - baseline ms",
)


def rate(value: float) -> str:
    """A rate, with a decimal when it is small."""
    if math.isnan(value):
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def millis(value: float) -> str:
    """Milliseconds with two decimals."""
    return "-" if math.isnan(value) else f"{value:.2f}"


def throughput_row(case: str, workers: object, run: Run, baseline: Run | None) -> tuple[str, ...]:
    """One row of the throughput table; the ratio and difference are to ``baseline`` when given."""
    ratio = f"{run.rps / baseline.rps:.3f}" if baseline and baseline.rps else "-"
    difference = run.p99_ms - baseline.p99_ms if baseline else math.nan
    extra = "-" if math.isnan(difference) else f"{difference:+.2f}"
    return (
        case,
        str(workers),
        rate(run.rps),
        millis(run.p50_ms),
        millis(run.p99_ms),
        str(run.errors),
        ratio,
        extra,
    )


SERIAL_HEADERS = (
    "case",
    "workers",
    "rps",
    "x baseline",
    "baseline p50 ms",
    "baseline p99 ms",
    "p50 ms",
    "p99 ms",
    "errors",
    "p99 - baseline ms",
)


def serial_row(case: str, workers: object, run: Run, baseline: Run) -> tuple[str, ...]:
    """One row of the one-call-at-a-time table: the case's rate and latencies beside the baseline's."""
    return (
        case,
        str(workers),
        rate(run.rps),
        f"{run.rps / baseline.rps:.3f}" if baseline.rps else "-",
        millis(baseline.p50_ms),
        millis(baseline.p99_ms),
        millis(run.p50_ms),
        millis(run.p99_ms),
        str(run.errors),
        f"{run.p99_ms - baseline.p99_ms:+.2f}",
    )
