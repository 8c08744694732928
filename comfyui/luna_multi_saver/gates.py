"""Quality gates (SPEC section 4), computed on the uint8 image, each image of a batch on its own.

- gray = 0.299 R + 0.587 G + 0.114 B (float64; a 1-channel image is its own gray; alpha is ignored)
- variance score = min(1, var(gray on 0..255) / 3000)
- edge_density score = min(1, mean(mean|vertical neighbour diff|, mean|horizontal neighbour diff|) on 0..1 / 0.05)
- an image passes iff its score >= threshold; ``both`` needs both scores to pass.

The original node compared a 0..1 variance against /3000, so ``variance`` failed every image; this one does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GATES = ("disabled", "variance", "edge_density", "both")
VARIANCE_SCALE = 3000.0
EDGE_SCALE = 0.05


@dataclass(frozen=True)
class GateResult:
    """Scores (``None`` where that check did not run) and the verdict."""

    passed: bool
    variance: float | None = None
    edge_density: float | None = None

    def describe(self) -> str:
        parts = []
        if self.variance is not None:
            parts.append(f"variance={self.variance:.3f}")
        if self.edge_density is not None:
            parts.append(f"edge_density={self.edge_density:.3f}")
        return ", ".join(parts) or "no gate"


def _gray(image: np.ndarray) -> np.ndarray:
    """Gray on 0..255 as float64 from a uint8 [H, W] or [H, W, C] image."""
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.shape[2] < 3:
        return image[:, :, 0].astype(np.float64)
    r = image[:, :, 0].astype(np.float64)
    g = image[:, :, 1].astype(np.float64)
    b = image[:, :, 2].astype(np.float64)
    return 0.299 * r + 0.587 * g + 0.114 * b


def variance_score(image: np.ndarray) -> float:
    """min(1, var(gray 0..255) / 3000)."""
    return float(min(1.0, np.var(_gray(image)) / VARIANCE_SCALE))


def edge_density_score(image: np.ndarray) -> float:
    """min(1, mean(mean|dy|, mean|dx|) on 0..1 / 0.05). A one-pixel-wide or -high image has no neighbours in
    one direction: that mean is NaN and the score is 1, as the original node (``min(1.0, nan)``) and the daemon."""
    gray = _gray(image) / 255.0
    dy = np.abs(gray[:-1, :] - gray[1:, :])
    dx = np.abs(gray[:, :-1] - gray[:, 1:])
    mean_dy = float(dy.mean()) if dy.size else float("nan")
    mean_dx = float(dx.mean()) if dx.size else float("nan")
    return float(min(1.0, (mean_dy + mean_dx) / 2.0 / EDGE_SCALE))


def judge(image: np.ndarray, gate: str, threshold: float) -> GateResult:
    """Applies ``gate`` to one uint8 image."""
    if gate not in GATES:
        raise ValueError(f"quality_gate {gate!r} is not one of {', '.join(GATES)}")
    if gate == "disabled":
        return GateResult(passed=True)
    variance = variance_score(image) if gate in ("variance", "both") else None
    edges = edge_density_score(image) if gate in ("edge_density", "both") else None
    passed = all(score >= threshold for score in (variance, edges) if score is not None)
    return GateResult(passed=passed, variance=variance, edge_density=edges)
