"""Thinning a stream of measurements before the historian records it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from models.errors import bad_value
from twin.historian_records import Sample, check_interval

__all__ = ["Downsampler"]


class Downsampler:
    """Thins a stream of samples before it is recorded (one instance per stream, one thread).

    A sample of a tag is kept when it is the tag's first, when its quality or its having a
    value changed, when at least ``min_interval`` has passed since the last kept sample, or
    (with ``deadband``) when its value moved more than ``deadband`` from the last kept value.
    Samples older than the last kept one of their tag are dropped.

    Parameters
    ----------
    min_interval
        Shortest time between kept samples of one tag (by source time).
    deadband
        Keep earlier when the value moves by more than this (internal units), if given.
    """

    def __init__(self, min_interval: timedelta, deadband: float | None = None) -> None:
        check_interval(min_interval, "min_interval")
        if deadband is not None and not deadband >= 0:
            raise bad_value("deadband", deadband, "a number >= 0 or None")
        self.min_interval = min_interval
        self.deadband = deadband
        self._last: dict[str, Sample] = {}

    def accept(self, sample: Sample) -> bool:
        """Whether to keep ``sample`` (and, if so, remember it as the tag's last kept)."""
        last = self._last.get(sample.tag)
        keep = (
            last is None
            or sample.quality is not last.quality
            or (sample.value is None) != (last.value is None)
            or sample.source_time - last.source_time >= self.min_interval
            or (
                self.deadband is not None
                and sample.value is not None
                and last.value is not None
                and abs(sample.value - last.value) > self.deadband
            )
        )
        if last is not None and sample.source_time < last.source_time:
            keep = False
        if keep:
            self._last[sample.tag] = sample
        return keep

    def filter(self, samples: Iterable[Sample]) -> list[Sample]:
        """The samples to keep, in order."""
        return [s for s in samples if self.accept(s)]
