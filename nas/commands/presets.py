"""``nas presets``: the paper's and the official code's models with their exact complexity."""

from __future__ import annotations

import json
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("presets")(presets)


def presets(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    input_size: int = typer.Option(224, "--input-size", min=32, help="Resolution at which MFLOPs are counted."),
) -> None:
    """List the named models: groups, width, stem, MFLOPs (MACs) and parameters.

    MFLOPs follow the paper: multiply-accumulates of conv and FC layers. The 'conv' column leaves out the FC layer, as the paper's Table 1 does.
    """
    from rich.table import Table

    from nas.console import output_console
    from shufflenet_core import PRESETS, complexity

    rows: list[dict[str, Any]] = []
    for preset in PRESETS.values():
        config = preset.config.replace(input_size=input_size)
        cost = complexity(config)
        rows.append(
            {
                "name": preset.name,
                "groups": preset.groups,
                "width": preset.width,
                "stem": config.stem_channels,
                "stage_out_channels": list(config.stage_out_channels),
                "mflops": round(cost.mflops, 3),
                "conv_mflops": round(cost.conv_macs / 1e6, 3),
                "mparams": round(cost.mparams, 4),
                "paper_top1_error": preset.paper_top1_error,
                "source": preset.source,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"ShuffleNet v1 presets (MFLOPs = MACs at {input_size}x{input_size})")
    for column, justify in (
        ("name", "left"), ("g", "right"), ("width", "right"), ("stem", "right"), ("stage channels", "left"),
        ("MFLOPs", "right"), ("conv only", "right"), ("params (M)", "right"), ("paper err %", "right"),
        ("source", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            row["name"], str(row["groups"]), f"{row['width']}x", str(row["stem"]),
            "/".join(str(c) for c in row["stage_out_channels"]), f"{row['mflops']:.3f}",
            f"{row['conv_mflops']:.1f}", f"{row['mparams']:.4f}",
            "" if row["paper_top1_error"] is None else f"{row['paper_top1_error']:.1f}", row["source"],
        )
    output_console(200).print(table)
