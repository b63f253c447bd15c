"""The demo's caption rule (data/build_demo.py: demo_caption) and the bundled captions it made."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "data" / "openclipart"
BOILERPLATE = ("Part of the Flat Icon Collection", "Clipart by Nicu Buculei", "Lemon SVG theme", "gramastar",
               "SVG Gradient Collection", "EPS converted from", "aiga.org", "HASH(0x")
DATE_RE = re.compile(r"\b(?:19|20)\d{2}\b|\b\d{1,2}:\d{2}\b|\b(?:mon|tue|wed|thu|fri|sat|sun)\s+"
                     r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\b", re.I)
URL_RE = re.compile(r"https?://|www\.|@[\w-]+\.\w+|\.(?:org|com|net)\b", re.I)


def _load_build_demo():
    spec = importlib.util.spec_from_file_location("build_demo", ROOT / "data" / "build_demo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_demo"] = mod
    spec.loader.exec_module(mod)
    return mod


bd = _load_build_demo()


@pytest.mark.parametrize("fields, expected", [
    (("Baby-Tux", "", "penguin, tux, animal, linux", "animals/birds/baby_tux_01", "Gerald G."),
     "Baby-Tux: penguin, animal, linux"),  # "tux" is in the title already
    (("AZ-lizard", "", "lizard, reptile, animal", "animals/reptiles/az_lizard_ja_01", "Jarno Vasamaa"),
     "AZ-lizard: reptile, animal"),
    (("Part of the Flat Icon Collection (Wed Aug 25 23:29:46 2004)", "", "hash, action, computer, icons, theme",
      "computer/icons/flat-theme/action/editcopy", "Danny Allen"), "Editcopy: action, computer"),
    (("Clipart by Nicu Buculei - smiley111", "", "people, smiley", "people/smilies/smiley_grin", "Nicu Buculei"),
     "Smiley grin: people"),
    (("gramastar", "", "stars, shapes, magick, geometry", "shapes/stars/star_05pt02step", "codifiedivining"),
     "Star: stars, shapes, geometry"),
    (("AIGA_Symbol_Signs", "EPS converted from http://aiga.org", "symbol, mapsym",
      "signs_and_symbols/aiga_symbol_signs/aiga_baggage_check_in1", "AIGA"), "Baggage check in: symbol"),
    (("pansement", "jean.victor.balin@gmail.com", "work, health", "tools/pansement_jean_victor_ba_",
      "Jean-Victor Balin"), "Pansement: work, health"),
    (("Acquila", "", "architetto francesco rollandin, animal, bird", "animals/birds/acquila_architetto_franc_01",
      "Architetto Francesco Rollandin"), "Acquila: animal, bird"),
    (("Pink_cake", "birthday dessert", "food, festive", "food/pink_cake", ""),
     "Pink cake: food, festive. birthday dessert"),
    (("Aircraft3", "", "airtravel", "transportation/vehicles/aircraft_jarno_vasamaa2", "Jarno Vasamaa"),
     "Aircraft: airtravel"),
    (("", "", "", "unsorted/scala_doppia", ""), "Scala doppia"),
])
def test_demo_caption_describes_the_image(fields, expected):
    assert bd.demo_caption(*fields) == expected


def test_author_names_of_the_bundle_are_removed_from_descriptions():
    cap = bd.demo_caption("workstation", 'Workstation based on "Andy Fitzsimon\'s Computer"', "hardware, pc",
                          "computer/hardware/workstation_hash_0x89c79_01", "Someone Else",
                          authors=("Andy Fitzsimon", "Nicu Buculei", "mo"))
    assert "Fitzsimon" not in cap and "0x" not in cap and cap.startswith("Workstation: hardware, pc")
    # one-word creators are only removed from their own images ("Saint Kitts" keeps its "Saint")
    assert bd.demo_caption("Saint Kitts and Nevis", "", "flag", "flags/america/saint_kitts", "Jose Hevia",
                           authors=("Saint", "mo")) == "Saint Kitts and Nevis: flag"


def test_caption_is_pure_and_bounded():
    long = "word " * 200
    a = bd.demo_caption(long, long, "a, b", "x/y", "")
    assert a == bd.demo_caption(long, long, "a, b", "x/y", "") and len(a) <= bd.CAPTION_MAX_CHARS


def _bundle() -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(BUNDLE.glob("shard-*.parquet"))])


def test_bundle_captions_are_the_rule_applied_to_the_raw_fields():
    """python data/build_demo.py --recaption would change nothing: the caption column is reproducible."""
    table = _bundle()
    rows = table.select([c for c in table.column_names if c != "image"]).to_pylist()
    stored = [r["caption"] for r in rows]
    assert [r["caption"] for r in bd.caption_rows(rows)] == stored
    assert {"title", "description", "keywords", "creator"} <= set(table.column_names)  # raw fields kept
    assert sum(p.stat().st_size for p in BUNDLE.iterdir()) < 30e6


def test_bundle_captions_have_no_boilerplate_dates_urls_or_authors():
    table = _bundle()
    caps = table["caption"].to_pylist()
    creators = {c for c in table["creator"].to_pylist() if c and len(c.split()) >= 2}
    for cap in caps:
        assert cap.strip(), "empty caption"
        assert not any(b.casefold() in cap.casefold() for b in BOILERPLATE), cap
        assert not DATE_RE.search(cap), cap
        assert not URL_RE.search(cap), cap
        assert not any(c.casefold() in cap.casefold() for c in creators), cap
    assert len(set(caps)) > 4000  # it was 2,849 distinct captions from the titles alone
