"""MeshWarp: our embedded animator. MediaPipe face mesh + audio-driven dense warp, CPU only, no download."""
from .animator import MeshWarpAnimator, PreparedPortrait

__all__ = ["MeshWarpAnimator", "PreparedPortrait"]
