"""Feed baskets (models.feeds): the CONSTRUCTED Makuutu-like basket reproduces the disclosed
aggregates it claims; conversions of the published bases; incomplete feeds are refused."""

from __future__ import annotations

import pytest

from models.elements import RARE_EARTHS, element
from models.errors import InputError
from models.feeds import (
    FeedBasis,
    aggregate_pct,
    available_feeds,
    in_situ_pct,
    load_aggregates,
    load_feed,
)
from models.provenance import ProvenanceClass


def test_makuutu_like_has_all_fifteen_rare_earths_and_is_labelled_constructed() -> None:
    feed = load_feed("makuutu_like")
    assert set(feed.values) == set(RARE_EARTHS)
    assert all(v.value > 0.0 for v in feed.values.values())
    assert {v.provenance.cls for v in feed.values.values()} == {ProvenanceClass.CONSTRUCTED}
    assert feed.total == pytest.approx(100.0, abs=1e-3)
    assert len(feed.rests_on()) == 15


def test_makuutu_like_reproduces_every_claimed_aggregate_within_its_tolerance() -> None:
    pct = load_feed("makuutu_like").oxide_pct_treo()
    aggregates = {a.name: a for a in load_aggregates("makuutu_like")}
    ce_ore = aggregates["ceo2_in_situ"].value_pct
    # (848 - 584) / 848 ppm from the Stage 1 ore reserve
    assert ce_ore == pytest.approx(100.0 * (848 - 584) / 848, abs=1e-4)
    shape = [a for a in aggregates.values() if a.basis == "shape"]
    shape_total = sum(a.value_pct for a in shape)
    shape_basket = sum(aggregate_pct(pct, a.members) for a in shape)
    claimed = [a for a in aggregates.values() if a.claimed]
    assert {a.name for a in claimed} >= {"medium_plus_heavy", "magnet_and_heavy", "hreo_in_situ"}
    for agg in claimed:
        if agg.basis == "basket":
            got = aggregate_pct(pct, agg.members)
        elif agg.basis == "in_situ":
            got = aggregate_pct(in_situ_pct(pct, ce_ore), agg.members)
        else:  # shape: the group ratio is kept, scaled to the published groups' total
            got = aggregate_pct(pct, agg.members) * shape_total / shape_basket
        assert abs(got - agg.value_pct) <= agg.tolerance_pct, agg.name


def test_makuutu_definitions_are_the_documented_ones() -> None:
    aggregates = {a.name: a for a in load_aggregates("makuutu_like")}
    medium, heavy = ("Sm", "Eu", "Gd", "Tb", "Dy"), ("Ho", "Er", "Tm", "Yb", "Lu", "Y")
    assert aggregates["medium_plus_heavy"].members == medium + heavy
    assert set(aggregates["magnet_and_heavy"].members) == set(RARE_EARTHS) - {"La", "Ce"}
    assert aggregates["hreo_in_situ"].members == heavy
    # the 43 % 'magnet' figure is shown but not claimed (it cannot hold with the others)
    assert not aggregates["magnet_reo"].claimed


def test_in_situ_restoration_keeps_the_basket_a_composition() -> None:
    pct = load_feed("makuutu_like").oxide_pct_treo()
    ore = in_situ_pct(pct, 31.13)
    assert sum(ore.values()) == pytest.approx(100.0, abs=1e-9)
    assert ore["Ce"] == 31.13
    assert ore["Y"] / ore["Dy"] == pytest.approx(pct["Y"] / pct["Dy"], rel=1e-12)


def test_cepr_nd_line_element_mass_fractions_convert_to_oxide_basis() -> None:
    feed = load_feed("cepr_nd_line")
    assert feed.basis is FeedBasis.ELEMENT_MASS_FRACTION
    w = {"Ce": 0.4445, "Pr": 0.1842, "Nd": 0.3713}
    oxide = {s: v * element(s).oxide_g_per_mol_element / element(s).atomic_weight_g_per_mol
             for s, v in w.items()}
    total = sum(oxide.values())
    got = feed.oxide_pct_treo()
    for s in w:
        assert got[s] == pytest.approx(100.0 * oxide[s] / total, rel=1e-12)
    assert got["Nd"] == pytest.approx(36.04, abs=0.01)
    fractions = feed.mole_fractions()
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-14)


def test_pitinga_is_complete_with_scandium_in_treo() -> None:
    feed = load_feed("pitinga_xenotime")
    assert feed.complete
    assert "Sc" in feed.values
    assert feed.total == pytest.approx(99.81, abs=1e-9)
    assert sum(feed.oxide_pct_treo().values()) == pytest.approx(100.0, abs=1e-9)


@pytest.mark.parametrize("name", ["barc_y_dy", "longnan_hree"])
def test_incomplete_feeds_are_refused_for_conversion(name: str) -> None:
    feed = load_feed(name)
    assert not feed.complete
    with pytest.raises(InputError) as exc:
        feed.mole_fractions()
    assert exc.value.field == "feed"
    assert "incomplete" in exc.value.message
    assert "makuutu_like" in exc.value.message


def test_unknown_feed_names_the_available_ones() -> None:
    with pytest.raises(InputError) as exc:
        load_feed("makuutu")
    assert exc.value.field == "feed"
    for name in available_feeds():
        assert name in exc.value.message
