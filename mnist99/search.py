"""Helpers of `hparams_search=optuna` (the sweeper itself is in hydra_plugins/mnist99_search,
because Hydra only instantiates sweepers defined in the hydra_plugins package)."""

from __future__ import annotations

ABANDONED = "mnist99_abandoned"


def finished_trials(storage: str, study_name: str) -> int:
    """Trials of a stored study that ran to an end. Trials left RUNNING by a search that was killed
    are marked failed (so samplers ignore them) and not counted: they were never evaluated."""
    import optuna  # here, not at the top: Hydra imports plugin modules at every start-up
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return 0
    store = optuna.storages.get_storage(storage)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        store.set_trial_system_attr(t._trial_id, ABANDONED, True)
        store.set_trial_state(t._trial_id, TrialState.FAIL)
    study = optuna.load_study(study_name=study_name, storage=storage)
    return sum(t.state.is_finished() and not t.system_attrs.get(ABANDONED) for t in study.trials)
