"""The result model: measurements, targets and peer figures, and their JSON form."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TargetKind = Literal["min_rate", "max_s", "max_rss_mib", "max_ratio"]


@dataclass
class Target:
    """A goal from the benchmark issue. ``max_ratio`` compares with ``reference`` (another measurement's
    median, filled in by the workload)."""

    kind: TargetKind
    value: float
    text: str
    reference_s: float | None = None

    def met(self, m: Measurement) -> bool | None:
        """Whether ``m`` meets this target (None when it cannot be judged)."""
        if m.median_s is None:
            return None
        if self.kind == "min_rate":
            return m.rate is not None and m.rate >= self.value
        if self.kind == "max_s":
            return m.median_s <= self.value
        if self.kind == "max_rss_mib":
            return m.peak_rss_mib is not None and m.peak_rss_mib <= self.value
        if self.reference_s is None:
            return None
        return m.median_s <= self.value * self.reference_s


@dataclass
class PeerFigure:
    """The same work in a peer orchestrator."""

    peer: str
    seconds: float | None
    items: int | None
    note: str
    extrapolated: bool = False
    ratio: float | None = None
    runs_s: list[float] = field(default_factory=list)
    peak_rss_mib: float | None = None

    @property
    def rate(self) -> float | None:
        """Items per second."""
        return self.items / self.seconds if self.seconds and self.items else None


@dataclass
class Measurement:
    """One timed figure of a workload: the runs of one command (CLI) or one API call (in-process)."""

    workload: str
    key: str
    label: str
    mode: Literal["cli", "in-process"]
    items: int
    unit: str
    rate_unit: str
    targets: list[Target] = field(default_factory=list)
    runs_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    process_wall_s: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    cwd: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    peers: list[PeerFigure] = field(default_factory=list)
    rate_scale: float = 1.0
    """Rate = items × rate_scale / seconds (e.g. 1e-9 turns bytes/s into GB/s)."""

    @property
    def median_s(self) -> float | None:
        """Median seconds of the timed runs."""
        return statistics.median(self.runs_s) if self.runs_s else None

    @property
    def median_cpu_s(self) -> float | None:
        """Median CPU seconds (user + system) of the timed part."""
        return statistics.median(self.cpu_s) if self.cpu_s else None

    @property
    def rate(self) -> float | None:
        """Items per second at the median."""
        median = self.median_s
        return self.items * self.rate_scale / median if median else None

    @property
    def peak_rss_mib(self) -> float | None:
        """Largest peak RSS over the runs (whole process)."""
        return max(self.rss_mib) if self.rss_mib else None

    def met(self) -> bool | None:
        """All targets met (None when there are none or they cannot be judged)."""
        verdicts = [t.met(self) for t in self.targets]
        if not verdicts or any(v is None for v in verdicts):
            return None
        return all(verdicts)

    @staticmethod
    def from_json(data: dict[str, Any]) -> Measurement:
        """A measurement read back from results.json (without its peer figures)."""
        names = {f for f in Measurement.__dataclass_fields__ if f not in ("targets", "peers")}
        m = Measurement(**{k: v for k, v in data.items() if k in names})
        m.targets = [Target(t["kind"], t["value"], t["text"], t.get("reference_s")) for t in data.get("targets", [])]
        return m

    def to_json(self) -> dict[str, Any]:
        """The JSON form written to results.json."""
        data = asdict(self)
        data.pop("peers")
        data["median_s"] = self.median_s
        data["median_cpu_s"] = self.median_cpu_s
        data["rate"] = self.rate
        data["peak_rss_mib"] = self.peak_rss_mib
        data["met"] = self.met()
        data["targets"] = [{**asdict(t), "met": t.met(self)} for t in self.targets]
        data["peers"] = [{**asdict(p), "rate": p.rate} for p in self.peers]
        return data
