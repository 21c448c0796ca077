"""A small Prometheus registry: counters, gauges and histograms, text format.

Hot paths hold a reference to a child (`counter.labels(...)` once) and call
`inc()`: one attribute add, no dictionary lookups per request.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

__all__ = ["Counter", "Gauge", "Histogram", "Registry"]

DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(names: tuple[str, ...], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class _HistogramValue:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value


class _Family:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._children: dict[LabelValues, object] = {}

    def _child(self, values: LabelValues, make: Callable[[], object]) -> object:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = make()
        return child

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    kind = "counter"

    def labels(self, *values: str) -> _Value:
        child = self._child(values, _Value)
        assert isinstance(child, _Value)
        return child

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def render(self) -> list[str]:
        lines = self.header()
        for values, child in sorted(self._children.items()):
            assert isinstance(child, _Value)
            lines.append(f"{self.name}{_label_text(self.labelnames, values)} {child.value:g}")
        return lines


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float) -> None:
        self.labels().set(value)


class Histogram(_Family):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Iterable[str] = (),
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))

    def labels(self, *values: str) -> _HistogramValue:
        child = self._child(values, lambda: _HistogramValue(self.buckets))
        assert isinstance(child, _HistogramValue)
        return child

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def render(self) -> list[str]:
        lines = self.header()
        for values, child in sorted(self._children.items()):
            assert isinstance(child, _HistogramValue)
            cumulative = 0
            for bound, count in zip((*self.buckets, float("inf")), child.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                labels = _label_text(self.labelnames, values, f'le="{le}"')
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            base = _label_text(self.labelnames, values)
            lines.append(f"{self.name}_sum{base} {child.sum:g}")
            lines.append(f"{self.name}_count{base} {child.count}")
        return lines


class Registry:
    """Owns metric families and renders them in Prometheus text format 0.0.4."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def _add(self, family: _Family) -> _Family:
        if family.name in self._families:
            raise ValueError(f"metric {family.name} registered twice")
        self._families[family.name] = family
        return family

    def counter(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Counter:
        family = self._add(Counter(name, help_text, labelnames))
        assert isinstance(family, Counter)
        return family

    def gauge(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Gauge:
        family = self._add(Gauge(name, help_text, labelnames))
        assert isinstance(family, Gauge)
        return family

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Iterable[str] = (),
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> Histogram:
        family = self._add(Histogram(name, help_text, labelnames, buckets))
        assert isinstance(family, Histogram)
        return family

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines.extend(family.render())
        return "\n".join(lines) + "\n"
