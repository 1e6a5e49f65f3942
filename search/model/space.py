"""The embedding space of a catalog: which weights made its vectors.

Vectors from different weights cannot be compared, so the catalog records the space of its vectors
(a content fingerprint of the weight files plus a readable name: ``search.catalog.spaces``) and every
process checks it against the model it loaded. Image rows carry the fingerprint as their
``embedding_model``: a hub id and a local copy of the same weights are one space.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.errors import Conflict
from search.model.weights import Checkpoint, checkpoint_folder

REEMBED_COMMAND = "python -m indexer reembed"


@dataclass(frozen=True)
class EmbeddingSpace:
    key: str  # "sha256:..." of the weight files' content
    name: str  # the model id it was loaded as, for people
    dim: int

    def describe(self) -> str:
        if self.key == self.name:  # rows from before fingerprints were recorded
            return f"{self.name} (no fingerprint recorded)"
        return f"{self.name} ({self.key}, {self.dim}-d)"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "fingerprint": self.key, "dim": self.dim}


class SpaceMismatch(Conflict):
    """Catalog work while the served model is not the catalog's: the message names both and the fix."""

    def __init__(self, catalog: EmbeddingSpace, served: EmbeddingSpace) -> None:
        self.catalog = catalog
        self.served = served
        super().__init__(
            f"the catalog's vectors were made by {catalog.describe()}, but this process runs "
            f"{served.describe()}; vectors of different models cannot be compared. Re-embed the catalog "
            f"with the served model (VITRINE_MODEL={served.name} {REEMBED_COMMAND}), or run "
            f"VITRINE_MODEL={catalog.name} again. Inference (POST /) is not affected."
        )


def space_of(model_id: str, dim: int, checkpoint: Checkpoint | None = None) -> EmbeddingSpace:
    """The space of a loaded model: its weights' fingerprint (the hub cache or a local folder).

    ``checkpoint``: the loaded encoder's, whose files were hashed once already (for its exports).
    """
    checkpoint = checkpoint or Checkpoint(checkpoint_folder(model_id))
    return EmbeddingSpace(checkpoint.fingerprint, model_id, dim)
