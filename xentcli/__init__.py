"""xent: score prediction files (cross-entropy, entropy, KL divergence), streaming.

``from xentcli import score, ScoreOptions, LayoutRequest, Accumulator`` — imported lazily so that
``xent --help`` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Accumulator", "LayoutRequest", "Report", "ScoreOptions", "__version__", "score"]

if TYPE_CHECKING:
    from xentcli.core.accumulator import Accumulator
    from xentcli.io.layout import LayoutRequest
    from xentcli.pipeline import ScoreOptions, score
    from xentcli.report.model import Report


def __getattr__(name: str) -> Any:
    if name == "Accumulator":
        from xentcli.core.accumulator import Accumulator

        return Accumulator
    if name == "LayoutRequest":
        from xentcli.io.layout import LayoutRequest

        return LayoutRequest
    if name in ("score", "ScoreOptions"):
        from xentcli import pipeline

        return getattr(pipeline, name)
    if name == "Report":
        from xentcli.report.model import Report

        return Report
    raise AttributeError(f"module 'xentcli' has no attribute {name!r}")
