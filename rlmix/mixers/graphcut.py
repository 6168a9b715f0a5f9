"""The graph-cut solver PuzzleMix and Co-Mixup share: ``gco-wrapper`` (the authors' binding).

It is an optional dependency (``pip install 'rlmix[graphcut]'``), imported when a mixer that
needs it is built, so that a missing install fails at once with one line.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=64)
def _grid_edges(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The 4-connected grid's edges, vertical ones first, as gco-wrapper orders them: first and
    second site indices (read-only, shared between calls)."""
    sites = np.arange(h * w, dtype=np.intc).reshape(h, w)
    first = np.concatenate((sites[:-1].ravel(), sites[:, :-1].ravel()))
    second = np.concatenate((sites[1:].ravel(), sites[:, 1:].ravel()))
    first.flags.writeable = second.flags.writeable = False
    return first, second


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
    (H, W - 1). As in gco-wrapper, the energies are scaled to integers inside the solver when
    any array is float. The solver calls are ``gco.cut_grid_graph``'s, in its order, without
    rebuilding the grid's edges at every call (Co-Mixup cuts hundreds of small grids a batch).
    """
    h, w, labels = unary.shape
    first, second = _grid_edges(h, w)
    is_float = any(a.dtype.kind == "f" for a in (unary, label_cost, edge_v, edge_h))
    graph = gco.GCO()
    graph.create_general_graph(h * w, labels, energy_is_float=is_float)
    try:
        graph.set_data_cost(np.ascontiguousarray(unary).reshape(h * w, labels))
        graph.set_all_neighbors(first, second, np.concatenate((edge_v.ravel(), edge_h.ravel())))
        graph.set_smooth_cost(np.ascontiguousarray(label_cost))
        graph.swap(-1)
        return graph.get_labels().reshape(h, w)
    finally:
        graph.destroy_graph()
