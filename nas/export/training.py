"""``nas export --train-epochs N``: train the chosen config longer, so what ships is usable.

It reuses the search's trainer and recipe (``nas.evaluation.training``) on the whole training split of
the data set, shows a progress bar, and measures the held-out test split once at the end.
The card records the recipe and the exact preprocessing (resolution, mean, std) a user must
apply before feeding the exported model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nas.errors import UserError
from shufflenet_core import ShuffleNetConfig

if TYPE_CHECKING:
    from torch import nn

__all__ = ["train_for_export"]


def train_for_export(
    config: ShuffleNetConfig,
    *,
    epochs: int,
    data_spec: str,
    seed: int = 0,
    base_recipe: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    accelerator: str = "cpu",
    train_precision: str = "auto",
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``config`` for ``epochs`` on ``data_spec``; return the model and the card's record.

    The returned model keeps ``config``'s deployment ``input_size`` (complexity is counted
    there); its classes and input channels are the data set's.
    """

    from nas.evaluation.accelerator import placement
    from nas.evaluation.data import load_data
    from nas.evaluation.training import Recipe, evaluate, evaluated_on_split, on_device, prepare_data, train_config
    from shufflenet_core import build_model

    dataset = load_data(data_spec)
    known = {f.name for f in dataclasses.fields(Recipe)}
    settings = {k: v for k, v in (base_recipe or {}).items() if k in known}
    settings.update(epochs=epochs, train_size=None, val_size=None)
    try:
        recipe = Recipe(**settings)
    except (TypeError, ValueError) as error:
        raise UserError(f"cannot train with the study's recipe: {error}") from None
    log(f"training {config.short_name} for {epochs} epoch(s) on {dataset.describe()} at {recipe.resolution}px")
    data = prepare_data(dataset, recipe)
    with _progress(log) as (on_step, on_epoch):
        place = placement(accelerator, train_precision)
        result = train_config(config, data, recipe, seed=seed, on_step=on_step, on_epoch=on_epoch, place=place)
    if result.diverged:
        raise UserError(f"training diverged after {len(result.val_accuracy_per_epoch)} epoch(s); nothing exported")

    test = evaluated_on_split(data, dataset, "test")
    assert data.mean is not None and data.std is not None
    test_labels = test.val_labels
    on_place = on_device(test, place.device)
    test_accuracy = evaluate(result.model, on_place.val_images, on_place.val_labels, place=place)
    log(f"held-out test accuracy: {100 * test_accuracy:.2f}% on {len(test_labels)} images")

    trained = result.model.config
    model = build_model(trained.replace(input_size=config.input_size))
    model.load_state_dict({k: v.cpu() for k, v in result.model.state_dict().items()})
    record = {
        "data": dataset.spec,
        "classes": list(dataset.class_names),
        "epochs": epochs,
        "seed": seed,
        "recipe": recipe.to_dict(),
        "trained_on": place.to_dict(),
        "train_images": int(len(data.train_labels)),
        "val_images": int(len(data.val_labels)),
        "test_images": int(len(test_labels)),
        "val_accuracy_per_epoch": [round(a, 6) for a in result.val_accuracy_per_epoch],
        "test_accuracy": round(test_accuracy, 6),
        "seconds": round(result.seconds, 1),
        "preprocessing": {
            "resize_to": recipe.resolution,
            "scale": "pixel / 255",
            "mean": [round(float(v), 6) for v in data.mean.flatten()],
            "std": [round(float(v), 6) for v in data.std.flatten()],
        },
    }
    return model.eval(), record


class _progress:
    """A rich progress bar on stderr over training steps, with the last validation accuracy."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log

    def __enter__(self):  # noqa: ANN204
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), console=Console(stderr=True), transient=False,
        )
        self._task = self._bar.add_task("train", total=None, status="")
        self._bar.start()

        def on_step(done: int, total: int) -> None:
            self._bar.update(self._task, completed=done, total=total)

        def on_epoch(epoch: int, accuracy: float) -> None:
            self._bar.update(self._task, status=f"epoch {epoch + 1}: val {100 * accuracy:.2f}%")

        return on_step, on_epoch

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()
