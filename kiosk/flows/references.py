"""The template cache: each customer's reference set as the current verifier built it.

Reference sets are built from the stored references (``kiosk.templates``: pen trajectories, and
paper references for the paper verifier) on first use and kept in memory, the most recently used
of them, at most :data:`MAX_SETS` and :data:`MAX_BYTES`: a kiosk open for months meets thousands of
customers, and a paper set takes 0.6 MB (five pad references drawn at one pen width) to 5 MB (ten
drawn at four widths, ``models.paper.MAX_KEPT_WIDTHS``), where the daemon's whole budget is 250 MB
and it uses about 225 idle. A set dropped is rebuilt from the
store when next needed (milliseconds for pen and paper references, about 0.2 s a pen width for
pad references drawn as ink). A lookup returns the set together with the verifier that built it,
so a verification never pairs one model's features with another model's verifier; a model switch
(:meth:`ReferenceCache.use`) drops every set, and a set built while the model switched is not
kept.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kiosk.templates import StoredTemplate, TemplateStore
from models.verification import ReferenceSet, Verifier

log = logging.getLogger(__name__)

V = TypeVar("V", bound=Verifier[Any])
#: Enrolled is read-only (frozen): an Enrolled[PenVerifier] is an Enrolled[Verifier[Trajectory]].
V_co = TypeVar("V_co", bound=Verifier[Any], covariant=True)
#: Reference sets one cache keeps: the customers at the counter now and in the last minutes
#: (a retry, a second document) find theirs built...
MAX_SETS = 16
#: ... and the memory they may hold together (``ReferenceSet.nbytes``), within the daemon's
#: headroom (about 225 MB idle, budget 250). A paper set of five pad references is about 0.6 MiB
#: drawn at one pen width, 1.2-2.3 MiB after questions at other widths, ten references at every
#: width a customer keeps 4.7 MiB (``sigkiosk bench offline``): 16 MiB holds 16 customers who sign
#: with one pen, fewer otherwise. The most recently used set is kept whatever its size.
MAX_BYTES = 16 << 20


@dataclass(frozen=True)
class Enrolled(Generic[V_co]):
    """A customer's references as ``verifier`` compares them."""

    verifier: V_co
    reference_set: ReferenceSet[Any]   # the verifier's own features: opaque here


class ReferenceCache(Generic[V]):
    """Reference sets built by one verifier (``References`` of ``kiosk.flows.base``). Thread-safe;
    its byte count assumes verifications one at a time, as the daemon runs them (a set grown by a
    verification is measured again at the next lookup).

    ``enroll(verifier, stored)``: how this verifier builds a set from a stored template (the pen
    verifier enrolls the pad references as they are; the paper verifier its paper references, or
    the pad references drawn as ink), None when the template holds none it can use."""

    def __init__(self, store: TemplateStore, verifier: V,
                 enroll: Callable[[V, StoredTemplate], ReferenceSet[Any] | None],
                 on_built: Callable[[str, StoredTemplate, V], None] | None = None,
                 max_sets: int = MAX_SETS, max_bytes: int = MAX_BYTES) -> None:
        if max_sets < 1 or max_bytes < 1:
            raise ValueError("a reference cache keeps at least one set")
        self.store = store
        self._max_sets = max_sets
        self._max_bytes = max_bytes
        #: Told after a set is built from the stored references (the site calibration scores them).
        self._on_built = on_built
        self._verifier = verifier
        self._enroll = enroll
        self._sets: OrderedDict[str, ReferenceSet[Any]] = OrderedDict()  # least recently used first
        #: Each set's memory when last measured: when it was built, and when the next lookup came
        #: after its use (a paper set grows while it is used: the verification after its lookup
        #: may draw its pad references at another width; the kiosk verifies one at a time).
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def verifier(self) -> V:
        with self._lock:
            return self._verifier

    def use(self, verifier: V) -> None:
        """A new model serves from now on: every set built by the old one is dropped."""
        with self._lock:
            self._verifier = verifier
            self._sets.clear()
            self._bytes.clear()

    def forget(self, customer: str) -> None:
        """The customer's template changed or was deleted."""
        with self._lock:
            self._sets.pop(customer, None)
            self._bytes.pop(customer, None)

    @property
    def nbytes(self) -> int:
        """The memory the cached sets hold, as last measured."""
        with self._lock:
            return sum(self._bytes.values())

    def _remeasure_last_used(self) -> None:
        # Lock held. The most recently used set is the one a verification may have grown since.
        if self._sets:
            last = next(reversed(self._sets))
            self._bytes[last] = self._sets[last].nbytes()

    def _shrink(self) -> None:
        # Lock held. Least recently used first; the most recently used set always stays.
        while len(self._sets) > 1 and (len(self._sets) > self._max_sets
                                       or sum(self._bytes.values()) > self._max_bytes):
            dropped, _ = self._sets.popitem(last=False)
            self._bytes.pop(dropped, None)

    def lookup(self, customer: str) -> Enrolled[V] | None:
        """The customer's set (built now from the stored references if not cached); None if the
        customer is not enrolled (or has no references this verifier can use). ``kiosk.templates.TemplateError`` if the template is unusable."""
        with self._lock:
            verifier = self._verifier
            self._remeasure_last_used()
            cached = self._sets.get(customer)
            if cached is not None:
                self._sets.move_to_end(customer)
            self._shrink()
        if cached is not None:
            return Enrolled(verifier, cached)
        stored = self.store.get(customer)
        if stored is None:
            return None
        built = self._enroll(verifier, stored)
        if built is None:
            return None
        with self._lock:
            if self._verifier is verifier:   # not switched meanwhile: keep it
                self._sets[customer] = built
                self._sets.move_to_end(customer)
                self._bytes[customer] = built.nbytes()
                self._shrink()
        if self._on_built is not None:
            try:
                self._on_built(customer, stored, verifier)
            except Exception:   # derived state only: never costs the customer the verification
                log.exception("reference set hook failed", extra={"event": "on_built_failed"})
        return Enrolled(verifier, built)


class Caches:
    """Several caches forgotten together (``kiosk.flows.enroll.TemplateCache``)."""

    def __init__(self, *caches: ReferenceCache[Any]) -> None:
        self.caches = list(caches)

    def add(self, cache: ReferenceCache[Any]) -> None:
        self.caches.append(cache)

    def forget(self, customer: str) -> None:
        for c in self.caches:
            c.forget(customer)
