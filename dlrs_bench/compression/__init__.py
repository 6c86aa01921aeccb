"""Embedding compressors: every method is a module taking a KJT and returning a KeyedTensor (``base``);
their options and the plan each makes for given tables live, torch-free, in ``options``."""
