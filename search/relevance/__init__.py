"""Relevance on the user's own judgements: metrics, the judgements file, evaluation runs, calibration."""
