"""The fused verifier prepares a questioned signature once for its classic and learned parts: the
shared points and time functions give the very numbers each part computes on its own."""

from __future__ import annotations

import numpy as np

from models.classic import signature_features
from models.global_features import deviations, global_features
from models.pen import FusedVerifier, make_verifier
from models.preprocess import PreprocessConfig, prepared_time_functions
from tools.synth import make_population


def test_shared_preparation_changes_no_number() -> None:
    ver = make_verifier("fused", 1.3)
    assert isinstance(ver, FusedVerifier) and ver.score_model is not None
    genuine, forged = make_population(n_writers=1, n_genuine=7, n_forgeries=2, seed=4)["001"]
    refset = ver.enroll(genuine[:5])
    refs = refset.features_for(ver.name, ver.model_versions())
    for q in (genuine[5], forged[0]):
        shared = prepared_time_functions(q, ver.classic.config.preprocess)
        assert np.array_equal(signature_features(q, ver.classic.config, shared),
                              signature_features(q, ver.classic.config))
        assert np.array_equal(ver.learned.embed(q, shared), ver.learned.embed(q))
        # The verdict is the one of the two parts computed apart.
        cv = ver.classic.verify_features(refs.classic, q)
        d_l = ver.learned.score(refs.learned, ver.learned.embed(q))
        x = ver.score_model.inputs(cv.distance, deviations(global_features(q), refs.globals, ver.score_model.spread),
                                   d_l)
        assert ver.verify(refset, q).distance == -float(ver.score_model.logit(x)[0])
    # Prepared another way, it is not used: each part prepares the signature itself.
    other = prepared_time_functions(genuine[5], PreprocessConfig(resample_hz=None))
    assert np.array_equal(signature_features(genuine[5], ver.classic.config, other),
                          signature_features(genuine[5], ver.classic.config))
