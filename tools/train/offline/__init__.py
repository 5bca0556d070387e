"""``sigkiosk train offline``: the writer-independent CNN-LSTM image embedding, float and int8 TFLite.

Split like the pen training (:mod:`tools.train.data`, :mod:`tools.train.trainer`,
:mod:`tools.train.convert`, :mod:`tools.train.pipeline`):

* :mod:`~tools.train.offline.data`: the prepared 128×128 images (Dutch scans, cross-media
  (writer, name) identities on paper and electronic ink, ink rendered from the online sets,
  synthetic writers), cached outside the repository;
* :mod:`~tools.train.offline.augment`: what training does to a prepared image;
* :mod:`~tools.train.offline.selection`: the validation figures, the normalisation prior and the
  model-selection criterion, for Keras and for converted models alike;
* :mod:`~tools.train.offline.trainer`: batches, losses, the epoch loop with early stopping;
* :mod:`~tools.train.offline.convert`: float and int8 TFLite, each with its prior, threshold and
  golden vectors;
* :mod:`~tools.train.offline.pipeline`: one run end to end and its record, scoring converted
  models, the quick configuration. The command line is :mod:`tools.commands.train_cmd`.

Test writers are never read here. TensorFlow is imported only where a model is built, trained,
run through Keras or converted, so the data and selection modules load without it.
"""

#: ``--select-on``: the validation writers model selection is judged on, each pool's skilled EER
#: weighing the same (the Dutch scans always; with the cross-media set's and/or rendered ink's).
#: Here, not in :mod:`~tools.train.offline.data`, so that the command line reads it without loading
#: the data modules.
SELECT_CHOICES = ("dutch", "dutch+cross-media", "dutch+rendered", "dutch+cross-media+rendered")
