"""CTR models over any embedding module (KJT in, KeyedTensor out), with parameter and FLOP counts
(``base``); their options live, torch-free, in ``options``."""
