"""Datasets: the binary cache (``cache``) and views over it (``base``: splits as row sets, read by
``batching`` into TorchRec ``Batch`` objects in a training order from ``order``), dataset plugins,
first-use caches (``local_cache``), and the raw-file preparation pipeline (``prepare``, which must stay
importable without torch: its worker processes only parse text)."""
