"""The numpy Isolation Forest the kiosk uses, against the paper's definitions and scikit-learn's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.iforest import IsolationForest, average_path_length


def test_average_path_length_matches_the_paper() -> None:
    # c(n) = 2 H(n-1) - 2(n-1)/n with H(i) ~ ln(i) + Euler's constant; c(2) = 1, c(1) = 0.
    np.testing.assert_allclose(average_path_length(np.array([1, 2])), [0.0, 1.0])
    n = 256
    assert average_path_length(np.array([n]))[0] == pytest.approx(2 * (np.log(n - 1) + 0.5772156649) - 2 * (n - 1) / n)


def test_an_isolated_point_scores_higher_than_the_crowd() -> None:
    rng = np.random.default_rng(0)
    crowd = rng.normal(size=(200, 4))
    forest = IsolationForest(trees=100, max_samples=64, seed=1).fit(crowd)
    inlier, outlier = forest.score(np.zeros(4))[0], forest.score(np.full(4, 6.0))[0]
    assert 0.0 < inlier < 0.5 < outlier <= 1.0


def test_same_seed_same_forest_other_seed_other_forest() -> None:
    x = np.random.default_rng(2).normal(size=(5, 16))
    q = np.random.default_rng(3).normal(size=(20, 16))
    a = IsolationForest(seed=7, max_samples=5).fit(x).score(q)
    np.testing.assert_array_equal(a, IsolationForest(seed=7, max_samples=5).fit(x).score(q))
    assert not np.array_equal(a, IsolationForest(seed=8, max_samples=5).fit(x).score(q))


def test_ranks_points_like_scikit_learn() -> None:
    from sklearn import ensemble as sklearn  # off the device only (the eval extra, installed for tests)

    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 6))
    q = np.vstack([rng.normal(size=(150, 6)), rng.normal(scale=3.0, size=(150, 6))])
    ours = IsolationForest(trees=200, max_samples=128, seed=0).fit(x).score(q)
    theirs = -sklearn.IsolationForest(n_estimators=200, max_samples=128, random_state=0).fit(x).score_samples(q)
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(ours), rank(theirs))[0, 1] > 0.9
    assert abs(float(np.mean(ours - theirs))) < 0.02


def test_constant_features_and_bad_input() -> None:
    x = np.ones((5, 3))
    x[:, 0] = np.arange(5)
    s = IsolationForest(max_samples=5).fit(x).score(np.array([[10.0, 1.0, 1.0]]))
    assert 0.0 < s[0] <= 1.0
    with pytest.raises(ValueError):
        IsolationForest().fit(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(RuntimeError):
        IsolationForest().score(np.zeros((1, 2)))


def _tree_by_tree(forest: IsolationForest, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The forest's scores by its definition, from its own trees grown again (the same seed draws
    the same trees) and walked one tree and one row at a time: what the packed all-at-once walk
    must give exactly."""
    from models.iforest import _grow

    rng = np.random.default_rng(forest.seed)
    psi = min(forest.max_samples, len(x))
    depth = math.ceil(math.log2(psi))
    trees = [_grow(x[rng.choice(len(x), size=psi, replace=False)], rng, depth) for _ in range(forest.trees)]
    lengths = []
    for tree in trees:
        per_row = []
        for row in rows:
            node = 0
            while tree.feature[node] >= 0:
                node = tree.left[node] if row[tree.feature[node]] <= tree.threshold[node] else tree.right[node]
            per_row.append(tree.depth[node] + average_path_length(np.array([tree.size[node]]))[0])
        lengths.append(per_row)
    return np.power(2.0, -np.mean(np.array(lengths), axis=0) / float(average_path_length(psi)))


@pytest.mark.parametrize("shape, samples, trees", [((5, 16), 5, 100), ((3, 16), 3, 100), ((300, 6), 128, 100),
                                                   ((4, 3), 4, 1), ((5, 2), 5, 7)])
def test_all_trees_at_once_score_exactly_as_tree_by_tree(shape: tuple[int, int], samples: int, trees: int) -> None:
    rng = np.random.default_rng(shape[0])
    x = rng.normal(size=shape)
    q = np.vstack([x[:2], rng.normal(scale=2.0, size=(40, shape[1]))])
    forest = IsolationForest(trees=trees, max_samples=samples, seed=5).fit(x)
    # Several rows, and one row as the kiosk asks (numpy sums a column of one row in another order:
    # the same row's mean may differ in its last bit between the two, as it did tree by tree).
    for rows in (q, q[3:4]):
        np.testing.assert_array_equal(forest.score(rows), _tree_by_tree(forest, x, rows))
