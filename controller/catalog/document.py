"""The catalog document GET /api/v1/catalog serves: metrics, knobs, counts, categories, topology (rendered once)."""
from __future__ import annotations

from collections import Counter
from typing import Any

from shared.knobs import KNOB_CATEGORIES, KNOBS, catalog_json
from shared.metrics import CATEGORIES, METRICS
from shared.topology import EXTENSIONS, Topology


def catalog_document(topology: Topology) -> dict[str, Any]:
    return {
        "metrics": [m.to_json() for m in METRICS],
        "knobs": catalog_json(),
        "counts": {
            "metrics": len(METRICS), "knobs": len(KNOBS), "points": len(topology.points),
            "metricsByCategory": dict(Counter(m.category for m in METRICS)),
            "knobsByCategory": dict(Counter(k.category for k in KNOBS)),
        },
        "categories": {"metrics": list(CATEGORIES), "knobs": list(KNOB_CATEGORIES)},
        "topology": {
            "stations": list(topology.stations),
            "extensions": [{"extension": ext, "language": lang, "key": f"extension_{ext}"}
                           for ext, lang in EXTENSIONS.items()],
        },
    }
