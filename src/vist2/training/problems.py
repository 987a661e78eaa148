"""Bad-data accounting: every skipped record is counted and reported with its file and line.

A record is one unit of input a user can point at: a text file, a line of a text file, a JSONL
line, an image. Readers and dataset workers never raise on bad data; they return a `DataProblem`
and move on. `ProblemLog` keeps the distinct problems of a run, writes each to
`RUN_DIR/bad_data.jsonl` as it arrives, and stops the run with one clear `Vist2Error` once more
than `max_bad_records` records were skipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vist2.errors import Vist2Error


@dataclass(frozen=True)
class DataProblem:
    """One skipped record: where it is and why it was skipped."""

    source: str  # file path (or "synthetic")
    line: int | None  # 1-based line (JSONL line, text line), None for a whole file or image
    reason: str

    def where(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where()}: {self.reason}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataProblem:
        return cls(source=data["source"], line=data["line"], reason=data["reason"])


class BadDataBudgetExceeded(Vist2Error):
    """More records were bad than `TrainConfig.max_bad_records` allows."""


class ProblemLog:
    """The distinct bad records of a run, checked against a budget.

    `add` returns True for a problem not seen before. With `path`, each new problem is appended to
    that JSONL file at once, so a crash loses none of them.
    """

    def __init__(self, max_bad_records: int, path: str | Path | None = None) -> None:
        self.max_bad_records = max_bad_records
        self.path = Path(path) if path is not None else None
        self.problems: list[DataProblem] = []
        self._seen: set[DataProblem] = set()

    def __len__(self) -> int:
        return len(self.problems)

    def add(self, problem: DataProblem) -> bool:
        if problem in self._seen:
            return False
        self._seen.add(problem)
        self.problems.append(problem)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(problem.to_dict(), ensure_ascii=False) + "\n")
        return True

    def extend(self, problems) -> list[DataProblem]:
        """Add many; returns the ones that were new."""
        return [p for p in problems if self.add(p)]

    def check_budget(self) -> None:
        """Raise `BadDataBudgetExceeded` if more records were skipped than the budget allows."""
        if len(self.problems) <= self.max_bad_records:
            return
        shown = "; ".join(str(p) for p in self.problems[:3])
        where = f" (all of them in {self.path})" if self.path is not None else ""
        raise BadDataBudgetExceeded(
            f"{len(self.problems)} bad data records skipped, more than max_bad_records="
            f"{self.max_bad_records}{where}; first: {shown}. Fix the data or raise "
            "max_bad_records in the --config file"
        )

    def summary(self, limit: int = 5) -> str:
        """A few lines for the console."""
        if not self.problems:
            return "no bad data records"
        lines = [f"{len(self.problems)} bad data record(s) skipped:"]
        lines += [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            more = f"{len(self.problems) - limit} more"
            lines.append(f"  ... {more}" + (f" in {self.path}" if self.path is not None else ""))
        return "\n".join(lines)

    def state_dict(self) -> dict:
        return {"problems": [p.to_dict() for p in self.problems]}

    def load_state_dict(self, state: dict) -> None:
        self.problems = [DataProblem.from_dict(p) for p in state["problems"]]
        self._seen = set(self.problems)


__all__ = ["BadDataBudgetExceeded", "DataProblem", "ProblemLog"]
