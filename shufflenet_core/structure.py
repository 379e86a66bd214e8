"""The layer-by-layer structure of a config, shared by the builder, complexity and latency.

Only this module turns a :class:`ShuffleNetConfig` into unit shapes, so the model that is
built and the numbers that are counted cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .config import ShuffleNetConfig

__all__ = ["UnitSpec", "conv_output_size", "unit_specs", "stem_output_size", "feature_sizes"]


def conv_output_size(size: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> int:
    """Spatial size after a conv or pool with the given geometry."""
    return (size + 2 * padding - kernel) // stride + 1


def stem_output_size(input_size: int) -> tuple[int, int]:
    """Spatial sizes after the stem conv and after the max pool."""
    after_conv = conv_output_size(input_size)
    return after_conv, conv_output_size(after_conv)


class UnitSpec(NamedTuple):
    """One ShuffleNet unit, with everything needed to build, count or time it alone.

    A named tuple rather than a dataclass: complexity() creates one per unit and must stay
    in the microseconds.
    """

    stage: int
    unit: int
    """Position of the unit in its stage (0 = the strided first unit)."""
    in_channels: int
    out_channels: int
    mid_channels: int
    stride: int
    groups: int
    first_pointwise_groups: int
    input_size: int
    channel_shuffle: bool
    output_size: int
    branch_channels: int
    """Channels the residual branch produces (stride 2 concatenates the shortcut)."""

    @property
    def module_name(self) -> str:
        return f"stages.{self.stage}.{self.unit}"

    def shape_key(self) -> tuple[int, ...]:
        """What determines this unit's cost: used as a lookup-table key."""
        return (
            self.in_channels,
            self.out_channels,
            self.mid_channels,
            self.stride,
            self.groups,
            self.first_pointwise_groups,
            self.input_size,
            int(self.channel_shuffle),
        )


def unit_specs(config: ShuffleNetConfig) -> Iterator[UnitSpec]:
    """Every unit of the network in order, with its input resolution at deployment size."""
    _, size = stem_output_size(config.input_size)
    mids = config.stage_bottleneck_channels()
    in_channels = config.stem_channels
    for stage, (depth, out_channels) in enumerate(zip(config.stage_depths, config.stage_out_channels, strict=True)):
        for index in range(depth):
            first = index == 0
            first_groups = 1 if (first and stage == 0 and not config.group_first_pointwise) else config.groups
            output_size = conv_output_size(size) if first else size
            spec = UnitSpec(
                stage=stage,
                unit=index,
                in_channels=in_channels,
                out_channels=out_channels,
                mid_channels=mids[stage],
                stride=2 if first else 1,
                groups=config.groups,
                first_pointwise_groups=first_groups,
                input_size=size,
                channel_shuffle=config.channel_shuffle,
                output_size=output_size,
                branch_channels=out_channels - in_channels if first else out_channels,
            )
            yield spec
            size = output_size
            in_channels = out_channels


def feature_sizes(config: ShuffleNetConfig) -> tuple[int, ...]:
    """Spatial size of each stage's output at the deployment resolution."""
    sizes = []
    for spec in unit_specs(config):
        if spec.unit == config.stage_depths[spec.stage] - 1:
            sizes.append(spec.output_size)
    return tuple(sizes)
