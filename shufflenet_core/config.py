"""The one description of a ShuffleNet v1 network.

Everything else (the PyTorch model, its complexity, latency, export) derives from a
:class:`ShuffleNetConfig`. It is frozen, validated on construction with messages that say
what to change, and round-trips through JSON with a schema version.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONFIG_SCHEMA_VERSION",
    "PAPER_STAGE2_CHANNELS",
    "ShuffleNetConfig",
    "bottleneck_channels",
    "quantize_channels",
]

CONFIG_SCHEMA_VERSION = 1

# Paper Table 1: output channels of stage 2 at width 1x for each group count. Later stages
# double the channels at each stage.
PAPER_STAGE2_CHANNELS: dict[int, int] = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}

_BASE_STEM_CHANNELS = 24


def quantize_channels(value: float, multiple: int) -> int:
    """Round ``value`` to the nearest positive multiple of ``multiple`` (halves round up)."""
    if multiple < 1:
        raise ValueError(f"channel multiple must be >= 1, got {multiple}")
    return max(multiple, int(math.floor(value / multiple + 0.5)) * multiple)


def bottleneck_channels(out_channels: int, ratio: float, groups: int) -> int:
    """Bottleneck width of a unit: ``out_channels * ratio`` rounded to a multiple of groups.

    The official code uses ``out // 4``; for every preset that is already a multiple of the
    group count, so this rule reproduces them exactly while keeping any ratio valid.
    """
    return quantize_channels(out_channels * ratio, groups)


def _stage_name(index: int) -> str:
    """Paper numbering: the first searched stage is 'stage 2' (stage 1 is the stem)."""
    return f"stage {index + 2}"


@dataclass(frozen=True)
class ShuffleNetConfig:
    """A ShuffleNet v1 network, in the paper's terms (Zhang et al., CVPR 2018, Table 1)."""

    groups: int
    """Group count g of the pointwise group convolutions."""
    stage_out_channels: tuple[int, ...]
    """Output channels of each stage (paper: 240, 480, 960 for 1x, g=3)."""
    stage_depths: tuple[int, ...] = (4, 8, 4)
    """Units per stage, the first of each with stride 2 (paper: 4, 8, 4)."""
    stem_channels: int = 24
    """Output channels of the 3x3 stride-2 stem convolution."""
    bottleneck_ratio: float = 0.25
    """Bottleneck width as a fraction of the stage's output channels."""
    num_classes: int = 1000
    """Outputs of the classifier."""
    in_channels: int = 3
    """Channels of the input image."""
    input_size: int = 224
    """Deployment resolution; complexity is counted here."""
    channel_shuffle: bool = True
    """False builds the paper's no-shuffle ablation (Table 3)."""
    group_first_pointwise: bool = False
    """Group stage 2's first 1x1 conv too (the paper does not: its input is tiny)."""
    schema_version: int = field(default=CONFIG_SCHEMA_VERSION, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_out_channels", _int_tuple(self.stage_out_channels, "stage_out_channels"))
        object.__setattr__(self, "stage_depths", _int_tuple(self.stage_depths, "stage_depths"))
        object.__setattr__(self, "bottleneck_ratio", float(self.bottleneck_ratio))
        self._validate()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_width(
        cls,
        groups: int,
        width: float,
        *,
        stage_depths: tuple[int, ...] = (4, 8, 4),
        stem_channels: int | None = None,
        channel_multiple: int = 1,
        **overrides: Any,
    ) -> ShuffleNetConfig:
        """The paper's 'ShuffleNet s x' for ``groups``, with one quantization rule.

        Channel rule: stage i outputs ``PAPER_STAGE2_CHANNELS[g] * 2**i * width`` rounded to
        the nearest multiple of ``lcm(g, channel_multiple)``; the stem is ``24 * p`` rounded
        the same way, with ``p`` the largest power of two not above ``width`` (this gives the
        official code's stems: 12/24/24/48 for g=3 and 16/24/24/48 for g=8 at 0.5/1/1.5/2x).
        Bottlenecks are rounded to a multiple of g by the builder (see
        :func:`bottleneck_channels`), so every result divides correctly.
        """
        if groups not in PAPER_STAGE2_CHANNELS:
            allowed = ", ".join(str(g) for g in PAPER_STAGE2_CHANNELS)
            raise ValueError(f"groups={groups} has no paper channel table; use one of {allowed}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        multiple = math.lcm(int(groups), int(channel_multiple))
        depths = _int_tuple(stage_depths, "stage_depths")
        base = PAPER_STAGE2_CHANNELS[groups]
        outs = tuple(quantize_channels(base * 2**i * width, multiple) for i in range(len(depths)))
        if stem_channels is None:
            power = 2.0 ** math.floor(math.log2(width))
            stem_channels = quantize_channels(_BASE_STEM_CHANNELS * power, multiple)
        return cls(
            groups=groups,
            stage_out_channels=outs,
            stage_depths=depths,
            stem_channels=stem_channels,
            **overrides,
        )

    def replace(self, **changes: Any) -> ShuffleNetConfig:
        """A copy with some fields changed; unknown field names are an error."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    # -- derived quantities -------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stage_depths)

    def stage_bottleneck_channels(self) -> tuple[int, ...]:
        """Bottleneck width of each stage's units."""
        return tuple(bottleneck_channels(c, self.bottleneck_ratio, self.groups) for c in self.stage_out_channels)

    def stage_in_channels(self) -> tuple[int, ...]:
        """Input channels of each stage's first unit."""
        return (self.stem_channels,) + self.stage_out_channels[:-1]

    @property
    def short_name(self) -> str:
        """A compact, human-readable identifier (not unique across all fields)."""
        outs = "-".join(str(c) for c in self.stage_out_channels)
        depths = "-".join(str(d) for d in self.stage_depths)
        shuffle = "" if self.channel_shuffle else "-noshuffle"
        return f"g{self.groups}_c{self.stem_channels}-{outs}_d{depths}_b{self.bottleneck_ratio:g}{shuffle}"

    # -- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stage_out_channels"] = list(self.stage_out_channels)
        data["stage_depths"] = list(self.stage_depths)
        data["schema_version"] = CONFIG_SCHEMA_VERSION
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShuffleNetConfig:
        if not isinstance(data, Mapping):
            raise ValueError(f"a config must be a JSON object, got {type(data).__name__}")
        payload = dict(data)
        version = payload.pop("schema_version", CONFIG_SCHEMA_VERSION)
        if version != CONFIG_SCHEMA_VERSION:
            raise ValueError(
                f"config schema_version {version} is not supported by this shufflenas "
                f"(it reads version {CONFIG_SCHEMA_VERSION}); upgrade shufflenas"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(payload) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        missing = [name for name in ("groups", "stage_out_channels") if name not in payload]
        if missing:
            raise ValueError(f"config is missing required field(s): {', '.join(missing)}")
        return cls(**payload)

    @classmethod
    def from_json(cls, text: str) -> ShuffleNetConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"config is not valid JSON: {error}") from None
        return cls.from_dict(data)

    # -- validation -----------------------------------------------------------------------
    def _validate(self) -> None:
        g = self.groups
        _require_int(g, "groups", minimum=1)
        _require_int(self.stem_channels, "stem_channels", minimum=1)
        _require_int(self.num_classes, "num_classes", minimum=1)
        _require_int(self.in_channels, "in_channels", minimum=1)
        _require_int(self.input_size, "input_size", minimum=32)
        if not isinstance(self.channel_shuffle, bool) or not isinstance(self.group_first_pointwise, bool):
            raise ValueError("channel_shuffle and group_first_pointwise must be true or false")
        if not self.stage_depths:
            raise ValueError("stage_depths must name at least one stage, e.g. (4, 8, 4)")
        if len(self.stage_out_channels) != len(self.stage_depths):
            raise ValueError(
                f"stage_out_channels has {len(self.stage_out_channels)} entries but stage_depths has "
                f"{len(self.stage_depths)}: give one output width per stage"
            )
        for index, depth in enumerate(self.stage_depths):
            if depth < 1:
                raise ValueError(f"{_stage_name(index)} depth must be >= 1, got {depth}")
        if not (0.0 < self.bottleneck_ratio <= 4.0) or math.isnan(self.bottleneck_ratio):
            raise ValueError(f"bottleneck_ratio must be in (0, 4], got {self.bottleneck_ratio}")
        if self.group_first_pointwise and self.stem_channels % g:
            raise ValueError(
                f"group_first_pointwise needs stem_channels divisible by groups={g}; "
                f"got {self.stem_channels}"
            )
        for index, (c_in, c_out) in enumerate(zip(self.stage_in_channels(), self.stage_out_channels, strict=True)):
            name = _stage_name(index)
            if c_out % g:
                raise ValueError(
                    f"{name} outputs {c_out} channels, not a multiple of groups={g}; "
                    f"use {quantize_channels(c_out, g)} or ShuffleNetConfig.from_width"
                )
            branch = c_out - c_in
            if branch <= 0 or branch % g:
                raise ValueError(
                    f"{name}'s first unit concatenates its {c_in} input channels with a branch of "
                    f"{c_out} - {c_in} = {branch} channels, which must be a positive multiple of "
                    f"groups={g}: make the input (stem or previous stage) a multiple of {g} "
                    f"smaller than {c_out}"
                )


def _int_tuple(values: Any, name: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}")
    result = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(f"{name} must hold integers, got {value!r}")
        result.append(int(value))
    return tuple(result)


def _require_int(value: Any, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
