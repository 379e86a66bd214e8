"""``--accelerator`` and ``--train-precision``: one definition for every command that trains."""

from __future__ import annotations

import typer

ACCELERATOR = typer.Option("auto", "--accelerator", help=(
    "Where to train: auto (a CUDA GPU when torch sees one, else MPS, else CPU), cpu, cuda, cuda:N or mps. "
    "With cuda, worker processes are spread over the visible GPUs."
))
TRAIN_PRECISION = typer.Option("auto", "--train-precision", help=(
    "Training precision: auto (bf16 on GPUs that have it, fp16 on older ones, fp32 on CPU), bf16, fp16 or fp32."
))
