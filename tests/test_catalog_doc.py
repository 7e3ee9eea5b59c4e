"""docs/catalog.md is generated from the catalogs and must not drift from them."""
from pathlib import Path

from tpmon.catalog_doc import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "catalog.md"


def test_catalog_doc_is_up_to_date():
    assert DOC.read_text() == render(), "regenerate with: .venv/bin/tpmon catalog --output docs/catalog.md"


def test_catalog_doc_lists_every_metric_and_knob():
    text = render()
    assert text.count("| `") == 68 + 112
