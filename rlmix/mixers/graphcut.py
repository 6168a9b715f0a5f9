"""The graph-cut solver PuzzleMix and Co-Mixup share: ``gco-wrapper`` (the authors' binding).

It is an optional dependency (``pip install 'rlmix[graphcut]'``), imported when a mixer that
needs it is built, so that a missing install fails at once with one line.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

INSTALL_HINT = "pip install 'rlmix[graphcut]'"


def load_gco(mixer: str) -> ModuleType:
    """The ``gco`` module; ``ImportError`` with the install hint when it is missing."""
    try:
        import gco
    except ImportError as e:
        raise ImportError(
            f"{mixer} solves graph cuts with gco-wrapper, which is not installed: {INSTALL_HINT}"
        ) from e
    return gco


def cut_grid(
    gco: ModuleType,
    unary: np.ndarray,
    label_cost: np.ndarray,
    edge_v: np.ndarray,
    edge_h: np.ndarray,
) -> np.ndarray:
    """Labels (H, W) minimising ``sum unary[site, label] + sum edge * label_cost[l1, l2]`` over
    the 4-connected grid, by alpha-beta swaps (the authors' choice).

    ``unary`` is (H, W, L), ``label_cost`` (L, L), ``edge_v`` (H - 1, W) and ``edge_h``
    (H, W - 1). As in gco-wrapper, float arrays are scaled to integers inside the solver.
    """
    labels = gco.cut_grid_graph(
        np.ascontiguousarray(unary),
        np.ascontiguousarray(label_cost),
        np.ascontiguousarray(edge_v),
        np.ascontiguousarray(edge_h),
        algorithm="swap",
    )
    return labels.reshape(unary.shape[:2])
