"""Vector indexes: int64 vector ids -> L2-normalised vectors, searched by inner product (= cosine).

The index knows nothing of products; ``VectorIndex`` is the one interface (upsert, remove, search with
an optional allow-list and exclusions, save/load). Kinds, chosen by ``IndexSpec``:
- ``flat``: exact, everything in memory (``exact.py``);
- ``hnsw``: a graph, approximate (``hnsw.py``);
- ``ivf``: IVF with 8-bit scalar-quantised vectors in memory and exact re-scoring of the candidates from
  float32 rows read from disk, plus an exact side index and deletion marks for changes since
  it was built (``ivf.py``); its probe count is tuned to a measured recall target (``tuning.py``);
- ``auto`` (default): flat below ``exact_limit`` vectors, ivf above.

Where searches run (``IndexSpec.device``: auto, cpu, cuda) is decided per index by ``gpu.choose_device``;
flat and ivf can serve searches from a GPU copy, the CPU index staying the source of truth (``gpu.py``).
"""

from search.index.errors import IndexFileError
from search.index.spec import IndexSpec
from search.index.vector_index import SearchHit, VectorIndex

__all__ = ["IndexFileError", "IndexSpec", "SearchHit", "VectorIndex"]
