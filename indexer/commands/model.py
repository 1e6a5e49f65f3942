"""``export-model``: build (or verify) the exported model the runtime settings choose."""

from __future__ import annotations

from indexer.cli import Command, Context


def export_model(context: Context) -> int:
    with context.encoder() as encoder:
        info = encoder.info
        export = getattr(encoder.backend, "export", None)
    lines = [f"{info.model_id}: runtime {info.runtime}, {info.dtype}, {info.device}"]
    facts: dict[str, object] = {"runtime": info.runtime, "dtype": info.dtype, "device": info.device}
    if export is not None:
        cosine = ", ".join(f"{tower} {value:.6f}" for tower, value in export.manifest["cosine"].items())
        lines.append(f"export {export.folder} (cosine to float32: {cosine})")
        facts |= {"export": str(export.folder), "cosine": export.manifest["cosine"]}
    context.report("\n".join(lines), **facts)
    return 0


COMMANDS = [
    Command(
        "export-model",
        "build the exported model the runtime settings choose (also done at start)",
        export_model,
        needs_catalog=False,
    )
]
