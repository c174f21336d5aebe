"""tcc_model: Temporal Cycle-Consistency learning, evaluation, export and streaming alignment."""

__version__ = "0.1.0"
