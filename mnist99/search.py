"""Helpers of `hparams_search=optuna` (the sweeper itself is in hydra_plugins/mnist99_search,
because Hydra only instantiates sweepers defined in the hydra_plugins package)."""

from __future__ import annotations


def finished_trials(storage: str, study_name: str) -> int:
    """Trials of a stored study that ran to an end (complete or pruned). Trials left RUNNING by a
    search that was killed are marked failed, so samplers ignore them; they were never evaluated,
    and like failed ones they are not counted."""
    import optuna  # here, not at the top: Hydra imports plugin modules at every start-up
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
