"""Training: the cached slices in, a model folder out.

``config`` (a run is its :class:`~bratseg.training.config.TrainConfig`), ``dataset`` (slices,
patches and augmentation), ``losses``, ``epoch`` (one pass of training and of validation),
``trainer`` (the run: resume, weight average, checkpoints), ``distributed`` (``torchrun``),
``run_files`` (checkpoints written atomically) and ``export`` (a run's weights as a model
folder). The command is ``bratseg train``; the names are imported from their modules.
"""
