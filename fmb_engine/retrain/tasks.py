"""Which retrain tasks exist, without importing torch or pydantic (CLI commands, TUI stage list)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInfo:
    """One adaptation task: its command help and the module defining its ``Task`` (imports torch)."""

    summary: str
    module: str


#: Task name -> its entry; the schema of each is ``retrain.<task>`` (:func:`section_of`).
TASKS: dict[str, TaskInfo] = {
    "aion-adapter": TaskInfo("Train the Euclid<->HSC U-Net adapters that AION's embedder needs, through AION's "
                             "frozen image codec.", "fmb_engine.retrain.aion_adapter"),
    "astroclip-heads": TaskInfo("Fine-tune AstroCLIP's projection heads (optionally the last ViT blocks) with the "
                                "CLIP loss on matched pairs.", "fmb_engine.retrain.astroclip_heads"),
    "astropt": TaskInfo("Retrain AstroPT (multimodal GPT on image + spectrum patches), from scratch or from a "
                        "checkpoint.", "fmb_engine.retrain.astropt"),
}


def section_of(task: str) -> str:
    """Config section of a task: ``retrain.aion_adapter`` for ``aion-adapter``."""
    return "retrain." + task.replace("-", "_")
