"""Sequential recommendation: sequence data, encoders, retrieval/ranking tasks."""
