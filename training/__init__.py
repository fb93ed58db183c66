"""Training and evaluation of the JCS models (Wu et al., IEEE TIP 2021, §III and §V).

Run from the repository root as modules: ``python -m training.train_segmenter --config ...``,
``python -m training.train_classifier``, ``python -m training.evaluate``, ``python -m training.export``.
Architectures come from ``jcs.models`` (one source of truth shared with the engine); the plain U-Net in
:mod:`training.unet` is only the Table VII-style baseline.
"""
