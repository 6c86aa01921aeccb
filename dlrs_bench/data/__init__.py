"""Datasets: in-memory CTR splits (``base``), batching into TorchRec ``Batch`` objects
(``batching``), dataset plugins, and the raw-file preparation pipeline (``prepare``, which
must stay importable without torch: its worker processes only parse text)."""
