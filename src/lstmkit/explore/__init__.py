"""The gate explorer: analyses of gate traces, the self-contained HTML page, static PNGs and a
local server. The analyses compute with NumPy on traces from any source; the PNGs import matplotlib
when called.

    from lstmkit.explore import retention, saturation, unit_search, find_matches, write_page
"""

from __future__ import annotations

from .analysis import (
    Match,
    MysteryReport,
    Retention,
    RetentionHistogram,
    Saturation,
    UnitEvidence,
    find_matches,
    mystery_report,
    retention,
    retention_histogram,
    saturation,
    token_kind,
    unit_scores,
    unit_search,
)
from .page import build_page, display_token, trace_for_sequence, write_page
from .pngs import write_pngs
from .run import explore_run
from .server import ExplorerServer, serve

__all__ = [
    "ExplorerServer",
    "Match",
    "MysteryReport",
    "Retention",
    "RetentionHistogram",
    "Saturation",
    "UnitEvidence",
    "build_page",
    "display_token",
    "find_matches",
    "mystery_report",
    "retention",
    "retention_histogram",
    "saturation",
    "serve",
    "token_kind",
    "trace_for_sequence",
    "unit_scores",
    "unit_search",
    "write_page",
    "write_pngs",
    "explore_run",
]
