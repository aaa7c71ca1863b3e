"""Every value shipped in models/data carries a source (resolvable in sources.toml), a locus and
a class; a file without per-row provenance columns must be declared in datasets.toml."""

from __future__ import annotations

import csv
import io
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from models.provenance import ProvenanceClass, load_sources

DATA = resources.files("models").joinpath("data")
CSV_FILES = sorted(p.name for p in DATA.iterdir() if p.name.endswith(".csv"))
PROVENANCE_COLUMNS = ("class", "source", "locus")


def provenance_gaps(text: str, name: str) -> list[str]:
    """Rows of a CSV whose provenance is missing or unresolvable (empty list when clean)."""
    sources = load_sources()
    classes = {c.value for c in ProvenanceClass}
    reader = csv.DictReader(io.StringIO(text))
    header = tuple(reader.fieldnames or ())
    if not all(c in header for c in PROVENANCE_COLUMNS):
        declared = tomllib.loads(DATA.joinpath("datasets.toml").read_text(encoding="utf-8"))
        entry = declared.get(name)
        if entry is None:
            return [f"{name}: no {'/'.join(PROVENANCE_COLUMNS)} columns and not in datasets.toml"]
        gaps = []
        if entry.get("class") not in classes:
            gaps.append(f"{name}: datasets.toml class {entry.get('class')!r}")
        if not str(entry.get("locus", "")).strip():
            gaps.append(f"{name}: datasets.toml has no locus")
        gaps += [f"{name}: source key {k!r}" for k in str(entry.get("source", "")).split("+")
                 if k.strip() not in sources]
        labels = set(entry.get("labels", []))
        for n, row in enumerate(reader, start=2):
            if row.get(entry.get("label_column", "")) not in labels:
                gaps.append(f"{name}:{n}: study label {row.get(entry.get('label_column', ''))!r}")
        return gaps
    gaps = []
    for n, row in enumerate(reader, start=2):
        where = f"{name}:{n}"
        if (row.get("class") or "").strip() not in classes:
            gaps.append(f"{where}: class {row.get('class')!r}")
        if not (row.get("locus") or "").strip():
            gaps.append(f"{where}: no locus")
        keys = [k.strip() for k in (row.get("source") or "").split("+")]
        if not any(keys) or any(k not in sources for k in keys):
            gaps.append(f"{where}: source {row.get('source')!r} not resolvable in sources.toml")
    return gaps


@pytest.mark.parametrize("name", CSV_FILES)
def test_every_value_has_source_locus_and_class(name: str) -> None:
    text = DATA.joinpath(name).read_text(encoding="utf-8")
    assert provenance_gaps(text, name) == []


def test_the_shipped_files_include_systems_prices_and_feeds() -> None:
    for expected in ("p507_t21_nitrate.csv", "d2ehpa_sulfate_uky.csv", "naphthenic_hcl_z1.csv",
                     "prices.csv", "price_scenarios.csv", "feeds.csv", "feed_aggregates.csv"):
        assert expected in CSV_FILES


def test_checker_catches_a_value_without_source(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "parameter,element,value,unit,class,source,locus,note\n"
        "log10_k,Dy,1.0,1,MEASURED,,Table 1,\n"
        "log10_k,Tb,1.0,1,GUESSED,T21,Table 1,\n"
        "log10_k,Ho,1.0,1,MEASURED,NO_SUCH_KEY,Table 1,\n"
        "log10_k,Er,1.0,1,MEASURED,T21,,\n",
        encoding="utf-8",
    )
    gaps = provenance_gaps(bad.read_text(encoding="utf-8"), "bad.csv")
    assert len(gaps) == 4
    assert any("bad.csv:2" in g and "source" in g for g in gaps)
    assert any("GUESSED" in g for g in gaps)
    assert any("NO_SUCH_KEY" in g for g in gaps)
    assert any("bad.csv:5: no locus" in g for g in gaps)


def test_checker_refuses_an_undeclared_file_without_provenance_columns() -> None:
    gaps = provenance_gaps("a,b\n1,2\n", "mystery.csv")
    assert gaps == ["mystery.csv: no class/source/locus columns and not in datasets.toml"]
