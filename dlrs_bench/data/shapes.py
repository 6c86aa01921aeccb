"""Published table shapes of the Criteo datasets (plain constants: read by validate without numpy)."""

#: DLRM's per-table cardinalities on Kaggle (REFERENCE §1), sum 33,762,577.
KAGGLE_CARDINALITIES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
                        14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
#: TorchRec's Terabyte sizes with the MLPerf 40M cap (REFERENCE §1), sum 204,184,588.
TERABYTE_CARDINALITIES = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
                          2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36]
#: MLPerf DLRM-DCNv2 multi-hot sizes per table.
MLPERF_MULTI_HOT = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]
#: The cache manifest's ``multi_hot.source`` of bags copied from MLPerf DLRM-DCNv2's materialised multi-hot
#: Criteo 1TB (``data prepare criteo-tb --format mlperf-multihot``).
MLPERF_MATERIALISED = "mlperf-materialised"
