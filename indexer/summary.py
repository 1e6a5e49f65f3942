"""What a batch command did: one summary type for ``add``, ``import`` and ``reembed``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RowIssue:
    """A row (or file) that could not be written, and why; the rest of the run goes on."""

    where: str  # "line 7" (a manifest), "row 12" (a vector file), a file's path (a folder), "manifest"
    external_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" (id {self.external_id})" if self.external_id else ""
        return f"{self.where}{who}: {self.reason}"

    def as_dict(self) -> dict[str, object]:
        return {"where": self.where, "id": self.external_id, "error": self.reason}


@dataclass
class RunSummary:
    command: str  # add | import | reembed
    total: int = 0
    added: int = 0
    updated: int = 0  # new vectors for a stored product (re-embedded, or imported anew)
    metadata_updated: int = 0
    skipped: int = 0  # unchanged
    embedded: int = 0  # images that went through the model
    failed: list[RowIssue] = field(default_factory=list)
    attribute_columns: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)  # add FOLDER: files that are not pictures
    interrupted: bool = False
    switched: bool = False  # reembed: the catalog moved to the served model's space
    seconds: float = 0.0
    nodes: dict[str, int] = field(default_factory=dict)  # --engine ray: images embedded per node id

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def count(self, kind: str) -> None:
        """One more product of a write plan's kind (created | updated | metadata | unchanged)."""
        if kind == "created":
            self.added += 1
        elif kind == "updated":
            self.updated += 1
        elif kind == "metadata":
            self.metadata_updated += 1
        elif kind == "unchanged":
            self.skipped += 1
        else:
            raise ValueError(kind)

    def as_dict(self) -> dict[str, object]:
        """The summary for ``--json``: counts, timing, and every failed row."""
        return {
            "command": self.command,
            "total": self.total,
            "added": self.added,
            "updated": self.updated,
            "metadata_updated": self.metadata_updated,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "embedded": self.embedded,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 3),
            "interrupted": self.interrupted,
            "switched": self.switched,
            "attribute_columns": self.attribute_columns,
            "skipped_files": self.skipped_files,
            "failures": [issue.as_dict() for issue in self.failed],
        } | ({"nodes": self.nodes} if self.nodes else {})

    def lines(self) -> list[str]:
        updated = "re-embedded" if self.command != "import" else "new vectors"
        out = [
            f"{self.total} rows: {self.added} added, {self.updated} {updated}, "
            f"{self.metadata_updated} metadata updated, {self.skipped} unchanged, {len(self.failed)} failed"
        ]
        timing = "interrupted after" if self.interrupted else "in"
        if self.command == "import":
            out.append(f"{timing} {self.seconds:.1f} s")
        else:
            out.append(
                f"{self.embedded} images embedded {timing} {self.seconds:.1f} s ({self.images_per_second:.2f} images/s)"
            )
        if self.nodes:
            shares = ", ".join(f"{node[:12]} {count}" for node, count in sorted(self.nodes.items()))
            out.append(f"images embedded per Ray node: {shares}")
        if self.attribute_columns:
            out.append(f"columns kept as attributes: {', '.join(self.attribute_columns)}")
        if self.skipped_files:
            shown = ", ".join(self.skipped_files[:10]) + (" ..." if len(self.skipped_files) > 10 else "")
            out.append(f"{len(self.skipped_files)} file(s) skipped, not pictures: {shown}")
        if self.switched:
            out.append("the catalog is now in the served model's space")
        if self.interrupted:
            out.append("INTERRUPTED: finished batches are saved; run the same command again to continue")
        if self.failed and self.command == "reembed":
            out.append(
                f"{len(self.failed)} product(s) failed and keep their old vectors; fix or remove them "
                "(python -m indexer remove ID...), then run reembed again:"
            )
        for issue in self.failed[:50]:
            out.append(f"  failed {issue}")
        if len(self.failed) > 50:
            out.append(f"  ... and {len(self.failed) - 50} more")
        return out
