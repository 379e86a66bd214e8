"""Accuracy from real proxy training: a short, seeded training run on real images."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from nas.evaluation.accelerator import placement
from nas.evaluation.base import EpochCallback, Evaluation, EvaluatorOptions, StepCallback, register_evaluator
from nas.evaluation.data import DEFAULT_DATA, Dataset, load_data
from nas.evaluation.training import Recipe, prepare_data, train_config
from shufflenet_core import ShuffleNetConfig

__all__ = ["DEFAULT_RECIPE", "ProxyTrainingEvaluator"]

DEFAULT_RECIPE = Recipe(epochs=1, resolution=32)
"""The default proxy: one epoch over the 10k training images at 32x32 (see README for its
measured rank correlation with 4x longer training, from `nas proxy-check`)."""


DEFAULT_RECIPE_SEED_SD = 0.0073
"""Seed-to-seed sd of the default proxy's accuracy on the embedded data, pooled over 8 configs
(`nas proxy-check --configs 8 --seeds 2`, README). Gaps smaller than this are ties."""


@dataclass
class ProxyTrainingEvaluator:
    """Trains each candidate ``len(seeds)`` times and reports mean and spread of accuracy."""

    data_spec: str = DEFAULT_DATA
    recipe: Recipe = DEFAULT_RECIPE
    seeds: tuple[int, ...] = (0,)
    keep_weights: bool = False
    accelerator: str = "cpu"
    """Where to train (see :mod:`nas.evaluation.accelerator`); not part of :meth:`spec`: a study
    searched on a laptop may be resumed on a GPU box (results agree within seed noise)."""
    train_precision: str = "auto"
    int8_runtime: str | None = None
    """When set (``nas search --precision int8``), the first seed's trained model is also
    quantized for this runtime and scored (:mod:`nas.evaluation.int8`). Not part of
    :meth:`spec`: it adds a number beside the float32 accuracy and changes none."""
    name: str = "proxy"
    objective_name: str = "accuracy"
    _dataset: Dataset | None = field(default=None, init=False, repr=False)

    @property
    def epochs(self) -> int:
        return self.recipe.epochs

    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_data(self.data_spec)
        return self._dataset

    def with_dataset(self, dataset: Dataset | None) -> ProxyTrainingEvaluator:
        copy = dataclasses.replace(self)
        copy._dataset = dataset
        return copy

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data_spec, "recipe": self.recipe.to_dict(), "seeds": list(self.seeds)}

    def known_seed_sd(self) -> float | None:
        """The measured seed noise of this recipe on this data, when it is the default one."""
        return DEFAULT_RECIPE_SEED_SD if (self.recipe == DEFAULT_RECIPE and self.data_spec == DEFAULT_DATA) else None

    def evaluate(
        self, config: ShuffleNetConfig, *, on_epoch: EpochCallback | None = None, on_step: StepCallback | None = None
    ) -> Evaluation:
        data = prepare_data(self.dataset(), self.recipe)
        place = placement(self.accelerator, self.train_precision)
        started = time.perf_counter()
        per_seed, curve, diverged, state, int8 = [], [], False, None, None
        for index, seed in enumerate(self.seeds):
            # Only the first seed reports epochs (it drives early stopping); others add spread.
            result = train_config(
                config, data, self.recipe, seed=seed, on_epoch=on_epoch if index == 0 else None,
                on_step=_offset_steps(on_step, index, len(self.seeds)), place=place,
            )
            per_seed.append(result.accuracy)
            diverged = diverged or result.diverged
            if index == 0:
                curve = list(result.val_accuracy_per_epoch)
                state = {k: v.cpu() for k, v in result.model.state_dict().items()} if self.keep_weights else None
                if self.int8_runtime is not None and not result.diverged:
                    from nas.evaluation.int8 import int8_accuracy

                    int8 = int8_accuracy(result.model.config, result.model.state_dict(), data, self.int8_runtime).to_dict()
        return Evaluation(
            score=statistics.fmean(per_seed),
            score_std=statistics.stdev(per_seed) if len(per_seed) > 1 else None,
            per_seed=per_seed,
            learning_curve=curve,
            seconds=time.perf_counter() - started,
            diverged=diverged,
            state_dict=state,
            placement=place.to_dict(),
            int8=int8,
        )


def _offset_steps(on_step: StepCallback | None, run: int, runs: int) -> StepCallback | None:
    """Progress across all seeds' runs as one bar."""
    if on_step is None:
        return None
    return lambda done, total: on_step(run * total + done, runs * total)


@register_evaluator("proxy")
def _proxy(options: EvaluatorOptions) -> ProxyTrainingEvaluator:
    if options.method:
        raise ValueError(f"the proxy evaluator has no method {options.method!r}; use proxy")
    return ProxyTrainingEvaluator(
        data_spec=options.data_spec, recipe=options.recipe, seeds=options.seeds, keep_weights=options.keep_weights,
        accelerator=options.accelerator, train_precision=options.train_precision, int8_runtime=options.int8_runtime,
    )
