"""The template cache keeps the most recently used reference sets and no more: a kiosk open for
months must not grow with every customer it ever served (a paper set is about a megabyte). A set
it dropped is rebuilt from the encrypted store, the same customer verifies the same; a model switch
still drops everything. Real template store, real pen verifier, synthetic writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kiosk.flows.references import MAX_SETS, ReferenceCache
from kiosk.templates import StoredTemplate, TemplateStore
from models.pen import make_verifier
from models.verification import ReferenceSet


@pytest.fixture(scope="module")
def population():  # type: ignore[no-untyped-def]
    from tools.synth import make_population

    return make_population(n_writers=4, n_genuine=6, n_forgeries=0, seed=5)


def _cache(tmp_path: Path, population, max_sets: int) -> tuple[ReferenceCache[Any], list[str], dict]:  # type: ignore[no-untyped-def]
    store = TemplateStore(tmp_path / "templates", tmp_path / "template.key", create_key=True)
    questions = {}
    for w in sorted(population):
        store.put(f"cust-{w}", population[w][0][:5])
        questions[f"cust-{w}"] = population[w][0][5]
    built: list[str] = []

    def enroll(verifier: Any, stored: StoredTemplate) -> ReferenceSet[Any]:
        built.append(stored.customer)
        return verifier.enroll(stored.references)

    return ReferenceCache(store, make_verifier("classic", 1.30), enroll, max_sets=max_sets), built, questions


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
