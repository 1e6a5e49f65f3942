"""What every runtime adapter offers: pooled features of a pixel batch and of a token-id batch.

Adapters return raw pooled features as float32; the encoder normalises them (one place, in float32,
whatever the runtime computed in). Inputs are numpy arrays: float32 pixels (N, 3, H, W) and int64 token
ids (N, L), so the scheduler and the preprocessing never depend on a runtime's tensor type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class RuntimeChoice:
    """One way to run the model: which runtime, at which precision, on which device."""

    runtime: str
    precision: str
    device: str = "cpu"

    def __str__(self) -> str:
        return f"{self.runtime}-{self.precision}-{self.device}"


class BackendUnavailable(Exception):
    """This choice cannot serve here (package missing, export refused by its accuracy check, ...)."""


class ModelBackend(Protocol):
    choice: RuntimeChoice
    logit_scale: float  # exp(logit_scale) of the checkpoint
    logit_bias: float

    def image_features(self, pixels: np.ndarray) -> np.ndarray: ...

    def text_features(self, input_ids: np.ndarray) -> np.ndarray: ...


def normalise(features: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The worst row-wise cosine between two feature batches (the accuracy check of a runtime)."""
    return float((normalise(a).astype(np.float64) * normalise(b).astype(np.float64)).sum(axis=1).min())
