"""Registers the foundation-model embedders (lazily: nothing heavy is imported here)."""

from __future__ import annotations

from fmb_engine.embed.base import Embedder, register


def _astropt() -> type[Embedder]:
    from fmb_engine.embed.astropt import AstroPTEmbedder

    return AstroPTEmbedder


def _aion() -> type[Embedder]:
    from fmb_engine.embed.aion import AIONEmbedder

    return AIONEmbedder


def _astroclip() -> type[Embedder]:
    from fmb_engine.embed.astroclip import AstroCLIPEmbedder

    return AstroCLIPEmbedder


register("astropt", _astropt)
register("aion", _aion)
register("astroclip", _astroclip)
