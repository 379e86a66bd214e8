"""Early stopping for the Pareto search: successive halving among trials of similar MFLOPs.

Optuna's pruners refuse multi-objective studies. A trial there is compared after each epoch
with *peers*: finished trials whose MACs are within ``mac_ratio`` of its own (so a small
model is never stopped for losing to a big one). If at least ``min_peers`` peers reached that
epoch and the trial's accuracy is below the top ``1/eta`` of theirs, it is stopped (PRUNED)
and its remaining epochs go to other candidates. Single-objective searches use Optuna's own
SuccessiveHalvingPruner instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nas import records as R

if TYPE_CHECKING:
    import optuna

__all__ = ["HalvingRule", "below_top_fraction"]


def below_top_fraction(value: float, peer_values: Sequence[float], eta: float) -> bool:
    """True when ``value`` would not make the top ``1/eta`` of ``peer_values`` plus itself."""
    ranked = sorted([*peer_values, value], reverse=True)
    keep = max(1, math.floor(len(ranked) / eta))
    return value < ranked[keep - 1]


@dataclass(frozen=True)
class HalvingRule:
    eta: float = 3.0
    min_peers: int = 3
    mac_ratio: float = 1.25

    def peers_at(self, study: optuna.Study, number: int, macs: int, epoch: int) -> list[float]:
        """Accuracies at ``epoch`` of other finished trials of similar MACs."""
        import optuna

        values = []
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)):
            if trial.number == number:
                continue
            other = trial.user_attrs.get(R.MACS)
            curve = trial.user_attrs.get(R.LEARNING_CURVE) or []
            if other and len(curve) > epoch and abs(math.log(other / macs)) <= math.log(self.mac_ratio):
                values.append(float(curve[epoch]))
        return values

    def should_stop(self, study: optuna.Study, number: int, macs: int, epoch: int, accuracy: float) -> bool:
        peers = self.peers_at(study, number, macs, epoch)
        return len(peers) >= self.min_peers and below_top_fraction(accuracy, peers, self.eta)
