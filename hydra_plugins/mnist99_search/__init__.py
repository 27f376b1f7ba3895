"""`hparams_search=optuna`: hydra-optuna-sweeper's Optuna sweeper, resumable to a total.

With a storage URL (`hydra.sweeper.storage=sqlite:///outputs/optuna.db`) the study outlives the
command. Started again with the same command, the search runs only the trials still missing to
reach `hydra.sweeper.n_trials` in total, instead of that many more.
"""

from __future__ import annotations

import logging
from typing import List

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger("mnist99")


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: List[str]) -> None:
        from mnist99.search import finished_trials

        impl = self.sweeper
        if impl.storage:
            done = finished_trials(impl.storage, impl.study_name)
            if done:
                log.info("Study %s already has %d finished trials; running %d more to reach n_trials=%d.",
                         impl.study_name, done, max(impl.n_trials - done, 0), impl.n_trials)
            impl.n_trials = max(impl.n_trials - done, 0)
        return impl.sweep(arguments)
