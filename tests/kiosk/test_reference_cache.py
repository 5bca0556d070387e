"""The template cache keeps the most recently used reference sets and no more: a kiosk open for
months must not grow with every customer it ever served (a paper set is up to 5 MB), in number or
in bytes. A set
it dropped is rebuilt from the encrypted store, the same customer verifies the same; a model switch
still drops everything. Real template store, real pen verifier, synthetic writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kiosk.flows.references import MAX_BYTES, MAX_SETS, ReferenceCache
from kiosk.templates import StoredTemplate, TemplateStore
from models.pen import make_verifier
from models.verification import ReferenceSet, footprint


@pytest.fixture(scope="module")
def population():  # type: ignore[no-untyped-def]
    from tools.synth import make_population

    return make_population(n_writers=4, n_genuine=6, n_forgeries=0, seed=5)


def _cache(tmp_path: Path, population, max_sets: int,  # type: ignore[no-untyped-def]
           max_bytes: int = MAX_BYTES) -> tuple[ReferenceCache[Any], list[str], dict]:
    store = TemplateStore(tmp_path / "templates", tmp_path / "template.key", create_key=True)
    questions = {}
    for w in sorted(population):
        store.put(f"cust-{w}", population[w][0][:5])
        questions[f"cust-{w}"] = population[w][0][5]
    built: list[str] = []

    def enroll(verifier: Any, stored: StoredTemplate) -> ReferenceSet[Any]:
        built.append(stored.customer)
        return verifier.enroll(stored.references)

    return (ReferenceCache(store, make_verifier("classic", 1.30), enroll, max_sets=max_sets, max_bytes=max_bytes),
            built, questions)


def test_the_least_recently_used_set_is_dropped_and_rebuilt_alike(tmp_path: Path, population) -> None:  # type: ignore[no-untyped-def]
    cache, built, questions = _cache(tmp_path, population, max_sets=2)
    a, b, c, _ = sorted(questions)
    first = cache.lookup(a)
    assert first is not None
    verdict = first.verifier.verify(first.reference_set, questions[a])
    cache.lookup(b)
    again = cache.lookup(a)                       # a used again: b is now the oldest
    assert again is not None and again.reference_set is first.reference_set
    cache.lookup(c)                               # a third customer: b is dropped, not a
    assert built == [a, b, c]
    assert cache.lookup(a) is not None and built == [a, b, c]
    assert cache.lookup(b) is not None and built == [a, b, c, b]   # rebuilt; c was the oldest
    cache.lookup(c)                                                  # rebuilt; a is dropped
    back = cache.lookup(a)
    assert back is not None and built == [a, b, c, b, c, a]
    assert back.reference_set is not first.reference_set
    # A set rebuilt from the store decides as the first one did.
    again_verdict = back.verifier.verify(back.reference_set, questions[a])
    assert again_verdict.distance == verdict.distance and again_verdict.decision == verdict.decision


def test_a_model_switch_still_drops_every_set(tmp_path: Path, population) -> None:  # type: ignore[no-untyped-def]
    cache, built, questions = _cache(tmp_path, population, max_sets=MAX_SETS)
    for customer in questions:
        cache.lookup(customer)
    cache.use(make_verifier("classic", 1.30))
    cache.lookup(sorted(questions)[0])
    assert len(built) == len(questions) + 1


def test_a_cache_keeps_at_least_one_set(tmp_path: Path, population) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="at least one"):
        _cache(tmp_path, population, max_sets=0)


def test_the_cache_keeps_no_more_bytes_than_its_budget(tmp_path: Path, population) -> None:  # type: ignore[no-untyped-def]
    probe, _, questions = _cache(tmp_path / "probe", population, max_sets=MAX_SETS)
    sizes = {}
    for customer in sorted(questions):
        found = probe.lookup(customer)
        assert found is not None
        sizes[customer] = found.reference_set.nbytes()
    assert probe.nbytes == sum(sizes.values()) > 0
    a, b, c, d = sorted(questions)
    budget = sizes[c] + sizes[d] + min(sizes.values()) // 2   # two sets, not three
    cache, built, _ = _cache(tmp_path / "small", population, max_sets=MAX_SETS, max_bytes=budget)
    for customer in (a, b, c, d):
        cache.lookup(customer)
    assert cache.nbytes <= budget
    assert cache.lookup(d) is not None and cache.lookup(c) is not None and built == [a, b, c, d]
    assert cache.lookup(a) is not None and built == [a, b, c, d, a]   # dropped for its bytes: rebuilt
    # The most recently used set stays whatever its size.
    tiny, built_tiny, _ = _cache(tmp_path / "tiny", population, max_sets=MAX_SETS, max_bytes=1)
    assert tiny.lookup(a) is not None and tiny.lookup(a) is not None and built_tiny == [a]
    assert tiny.lookup(b) is not None and tiny.nbytes == sizes[b]


def test_a_paper_set_grown_by_its_verification_is_counted_at_the_next_lookup(tmp_path: Path, population) -> None:  # type: ignore[no-untyped-def]
    """Pad references drawn at a question's pen width grow the customer's set after it was
    cached; the next lookup measures it again, and the byte budget holds."""
    from models import PaperVerifier
    from models.render import render_ink

    store = TemplateStore(tmp_path / "templates", tmp_path / "template.key", create_key=True)
    a, b = sorted(population)[:2]
    for w in (a, b):
        store.put(f"cust-{w}", population[w][0][:5])
    paper = PaperVerifier(threads=1)
    cache = ReferenceCache(store, paper, lambda v, stored: v.enroll_pad(stored.references))
    first = cache.lookup(f"cust-{a}")
    assert first is not None
    before = cache.nbytes
    assert before == first.reference_set.nbytes() > 0
    paper.verify(first.reference_set, render_ink(population[a][0][5], pen_width_mm=1.2))
    cache.lookup(f"cust-{b}")
    grown = first.reference_set.nbytes()
    assert grown > 1.5 * before
    assert cache.nbytes == grown + cache.lookup(f"cust-{b}").reference_set.nbytes()  # type: ignore[union-attr]
    # With a budget between the two, the grown set is the one let go (b was used since).
    built: list[str] = []

    def enroll(v: Any, stored: StoredTemplate) -> ReferenceSet[Any]:
        built.append(stored.customer)
        return v.enroll_pad(stored.references)
    tight = ReferenceCache(store, paper, enroll, max_bytes=grown)
    again = tight.lookup(f"cust-{a}")
    assert again is not None
    paper.verify(again.reference_set, render_ink(population[a][0][5], pen_width_mm=1.2))
    b_set = tight.lookup(f"cust-{b}")
    assert b_set is not None and tight.nbytes == b_set.reference_set.nbytes() < grown
    assert tight.lookup(f"cust-{b}") is not None and built == [f"cust-{a}", f"cust-{b}"]
    assert tight.lookup(f"cust-{a}") is not None and built == [f"cust-{a}", f"cust-{b}", f"cust-{a}"]


def test_footprint_counts_each_buffer_once_and_a_view_as_its_base() -> None:
    import dataclasses

    import numpy as np

    big = np.zeros(1000)                      # 8000 bytes

    @dataclasses.dataclass
    class Holder:
        rows: tuple[np.ndarray, ...]
        extra: dict[str, object]

    class Plain:
        def __init__(self) -> None:
            self.same = big
            self.other = np.zeros(10, np.float32)

    assert footprint(big[:10]) == 8000        # a view keeps its whole base alive
    assert footprint(Holder((big, big[5:], big.reshape(10, 100)), {"x": [Plain()], "s": "text"})) == 8000 + 40
    assert footprint(None) == 0 and footprint({"a": 1.0}) == 0
