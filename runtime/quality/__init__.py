"""Video quality metrics: `QualityScorer.score(mp4, portrait)` -> a JSON-ready report.

Used by POST /evaluate, `avatar score`, and scripts/compare_backends.py."""
from ..errors import InvalidVideoError
from .scorer import QualityScorer

__all__ = ["InvalidVideoError", "QualityScorer"]
