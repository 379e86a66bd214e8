"""Named models of the paper and its official code, reproduced exactly."""

from __future__ import annotations

from dataclasses import dataclass

from .config import ShuffleNetConfig

__all__ = ["Preset", "PRESETS", "get_preset", "preset_names"]


@dataclass(frozen=True)
class Preset:
    name: str
    groups: int
    width: float
    config: ShuffleNetConfig
    source: str
    paper_top1_error: float | None = None
    """ImageNet top-1 error (%) the paper reports for this model, where it does."""


# Paper Table 2: top-1 error (%) by width and group count.
_PAPER_TABLE2_ERROR: dict[float, dict[int, float]] = {
    1.0: {1: 33.6, 2: 32.7, 3: 32.6, 4: 32.8, 8: 32.4},
    0.5: {1: 45.1, 2: 44.4, 3: 43.2, 4: 41.6, 8: 42.3},
    0.25: {1: 57.1, 2: 56.8, 3: 55.0, 4: 54.2, 8: 52.7},
}
# Paper Table 5 (1.5x and 2x are reported for g=3 only).
_PAPER_TABLE5_ERROR: dict[tuple[float, int], float] = {(1.5, 3): 28.5, (2.0, 3): 26.3}


def _name(width: float, groups: int) -> str:
    return f"shufflenet_v1_{width:.{2 if width == 0.25 else 1}f}x_g{groups}"


def _make_presets() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for width in (0.25, 0.5, 1.0):
        for groups in (1, 2, 3, 4, 8):
            official = groups in (3, 8) and width in (0.5, 1.0)
            source = "official code" if official else ("paper Table 1" if width == 1.0 else "paper Table 2")
            config = ShuffleNetConfig.from_width(groups, width)
            error = _PAPER_TABLE2_ERROR[width][groups]
            presets[_name(width, groups)] = Preset(_name(width, groups), groups, width, config, source, error)
    for width in (1.5, 2.0):
        for groups in (3, 8):
            config = ShuffleNetConfig.from_width(groups, width)
            table5_error = _PAPER_TABLE5_ERROR.get((width, groups))
            presets[_name(width, groups)] = Preset(_name(width, groups), groups, width, config, "official code", table5_error)
    return dict(sorted(presets.items(), key=lambda item: (item[1].width, item[1].groups)))


PRESETS: dict[str, Preset] = _make_presets()


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> ShuffleNetConfig:
    """The config of a named preset, e.g. ``shufflenet_v1_1.0x_g3``."""
    try:
        return PRESETS[name].config
    except KeyError:
        close = [n for n in PRESETS if name.replace("shufflenet_v1_", "") in n]
        hint = f"; did you mean {', '.join(close[:3])}?" if close else "; run `nas presets` to list them"
        raise ValueError(f"unknown preset {name!r}{hint}") from None
