"""Helper process for the SIGKILL test: records items in a loop and prints each one's id on
stdout only after the historian has returned (committed). Run: python _historian_writer.py URL."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from itertools import count

from twin.historian import Historian
from twin.historian_records import (
    EventKind,
    NewEvent,
    NewProposal,
    Quality,
    Sample,
    Severity,
)


def main(url: str) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    with Historian(url) as h:
        for i in count():
            kind = i % 4
            if kind == 0:
                h.record_samples(
                    [
                        Sample(
                            tag="SIGKILL.PV",
                            value=float(i),
                            quality=Quality.GOOD,
                            source_time=t0 + timedelta(seconds=i),
                        )
                    ]
                )
                line = f"sample {i}"
            elif kind == 1:
                p = h.record_proposal(
                    NewProposal(
                        setpoints={"FIC-1.SP": float(i)},
                        predicted_effect={},
                        active_constraints=(),
                        reason=f"writer {i}",
                        spec_version="s",
                        parameter_set_version="p",
                    )
                )
                line = f"proposal {p.id}"
            elif kind == 2:
                e = h.record_event(
                    NewEvent(
                        kind=EventKind.EVENT,
                        severity=Severity.INFO,
                        source="w",
                        message=f"event {i}",
                    )
                )
                line = f"event {e.id}"
            else:
                a = h.audit("writer", "test.write", details={"i": i})
                line = f"audit {a.id}"
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
