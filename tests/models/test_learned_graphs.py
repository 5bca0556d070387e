"""Graph masks of the learned verifier against hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from models.graphs import MASK_VALUE, additive_mask, knn_adjacency, step_adjacency


def test_step_graph_stays_inside_strokes() -> None:
    stroke = np.array([0, 0, 0, 1, 1])
    adj = step_adjacency(stroke, k=1)
    expected = np.array(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 1, 1, 0, 0],  # point 2 is next to point 3 in time, but 3 is another stroke
            [0, 0, 0, 1, 1],
            [0, 0, 0, 1, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(adj, expected)


def test_step_graph_k2_reaches_two_steps() -> None:
    adj = step_adjacency(np.zeros(6, dtype=int), k=2)
    assert adj[0].tolist() == [True, True, True, False, False, False]
    assert adj[3].tolist() == [False, True, True, True, True, True]
    assert (adj == adj.T).all()


def test_knn_graph_by_position_not_order() -> None:
    # Points 0 and 3 are at the same place (a retraced stroke); 1 and 2 far away.
    x = np.array([0.0, 10.0, 10.5, 0.1])
    y = np.array([0.0, 0.0, 0.0, 0.0])
    adj = knn_adjacency(x, y, k=1)
    expected = np.array(
        [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]],
        dtype=bool,
    )
    np.testing.assert_array_equal(adj, expected)
    assert adj.sum(axis=1).tolist() == [2, 2, 2, 2]  # itself plus k


def test_knn_graph_k_larger_than_points_links_all() -> None:
    adj = knn_adjacency(np.arange(3.0), np.zeros(3), k=10)
    assert adj.all()


def test_additive_mask_pads_and_keeps_padding_rows_defined() -> None:
    adj = np.array([[True, False], [True, True]])
    m = additive_mask(adj, length=4)
    assert m.dtype == np.float32 and m.shape == (4, 4)
    np.testing.assert_array_equal(
        m,
        np.array(
            [
                [0, MASK_VALUE, MASK_VALUE, MASK_VALUE],
                [0, 0, MASK_VALUE, MASK_VALUE],
                [MASK_VALUE, MASK_VALUE, 0, MASK_VALUE],
                [MASK_VALUE, MASK_VALUE, MASK_VALUE, 0],
            ],
            dtype=np.float32,
        ),
    )


def test_mask_value_is_small_for_int8_softmax() -> None:
    assert -20 <= MASK_VALUE <= -5


def test_mask_too_long_graph_rejected() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        additive_mask(np.ones((5, 5), dtype=bool), length=4)
