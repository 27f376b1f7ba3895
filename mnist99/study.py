"""One Optuna study shared by any number of workers (`hparams_search=optuna` with a storage): processes
or machines that run the same command on one database or journal file. `n_trials` is the study's
total; a worker that dies is found by the others through its trials' heartbeats (mnist99.study_storage),
and its trial run again; each worker samples with a seed of its own. Optuna is imported inside the
functions: Hydra loads the sweeper at every start-up."""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mnist99.errors import ConfigError
from mnist99.job_names import job_name, short_value, subdir_override
from mnist99.study_storage import Heartbeat, masked, open_storage
from mnist99.sweep import SEARCH_PICTURES

log = logging.getLogger("mnist99")

NOT_RUN = "mnist99.not_run"  # a trial asked in the same instant as another worker's last one: pruned, never run
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # who ran a trial: a user attribute of each


def tally(study) -> dict[str, Any]:
    """The trials that count toward n_trials: finished (complete or pruned, the never-run ones aside) and running."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
               and not t.user_attrs.get(NOT_RUN)]
    return {"done": sum(t.state != TrialState.RUNNING for t in counted), "running": sum(t.state == TrialState.RUNNING for t in counted),
            "numbers": sorted(t.number for t in counted)}


def search(impl: Any, arguments: list[str], settings: dict[str, Any]) -> None:
    """The search loop of one worker: ask as many trials as the study still lacks (n_jobs at a time), run
    them as Hydra jobs named by trial number and varying parameters, tell their values; wait while other
    workers' trials fill the total, and take over the trials of a worker that stops answering."""
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker's own lines say what happens
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, the pictures
    params = [f"{k!s}={v}" for k, v in (impl.params or {}).items()] + list(arguments)
    space, fixed, fixed_overrides = create_params_from_overrides(params)
    for name in fixed:
        space.pop(name, None)
    if isinstance(impl.sampler, functools.partial):  # GridSampler (hydra/sweeper/sampler=grid): its grid is the space
        grid = {name: grid_values(name, d) for name, d in space.items()}
        impl.sampler, impl.n_trials = impl.sampler(grid), min(impl.n_trials, math.prod(len(v) for v in grid.values()))
    url = impl.storage
    storage = open_storage(url, settings["heartbeat_interval"], settings["grace_period"], settings["max_retry"])
    directions = [getattr(d, "name", d) for d in (impl.direction if OmegaConf.is_list(impl.direction) or isinstance(impl.direction, list)
                                                   else [impl.direction])]
    try:
        study = optuna.create_study(study_name=impl.study_name, storage=storage, sampler=impl.sampler,
                                    directions=directions, load_if_exists=True)
    except Exception as e:  # noqa: BLE001 - e.g. a study of this name that optimizes the other way
        raise ConfigError(f"The study {impl.study_name} in {masked(url)} could not be created or loaded: "
                          f"{masked(str(e).splitlines()[0])}.") from None
    study_id = storage.get_study_id_from_name(study.study_name) if storage is not None else None
    n_trials, start, job, seed, waiting, failed = impl.n_trials, tally(study), 0, None, False, []
    metric = impl.config.get("optimized_metric", "the value")
    where = masked(url) if url else "memory (hydra.sweeper.storage=null: this worker alone)"
    log.info("Study %s in %s: %d of %d trials finished, %d running; this worker runs %d at a time until the total is "
             "finished or running.", study.study_name, where, start["done"], n_trials, start["running"], impl.n_jobs)
    while True:
        if storage is not None:
            optuna.storages.fail_stale_trials(study)
        count = tally(study)
        free = n_trials - count["done"] - count["running"]
        if count["done"] >= n_trials or (free <= 0 and storage is None):
            break
        if free <= 0:
            if not waiting:
                log.info("The study's last %s in other workers; waiting for %s (a trial whose worker gives no heartbeat "
                         "for %d s is run again here).", "trial runs" if count["running"] == 1 else f"{count['running']} trials run",
                         "it" if count["running"] == 1 else "them", settings["grace_period"])
            waiting = True
            time.sleep(1)  # a cheap query: this worker ends (or takes a trial over) within a second of the news
            continue
        waiting = False
        trials = [study.ask() for _ in range(min(impl.n_jobs, free))]
        ids = {t.number: storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials} if storage else {}
        for trial_id in ids.values():
            storage.record_heartbeat(trial_id)
        trials = drop_excess(study, trials, n_trials)
        if not trials:
            continue
        if seed is None:  # before the first trial samples anything
            seed = reseed(study, impl, settings.get("sampler"), trials[0].number)
        overrides = [configure(impl, trial, space, fixed, fixed_overrides) for trial in trials]
        varying = set(space)
        jobs, retries = [], {t.number: t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)}
        for trial, job_overrides in zip(trials, overrides):
            trial.set_user_attr("mnist99.worker", WORKER)
            trial.set_user_attr("mnist99.sampler_seed", seed)
            pairs = (o.partition("=") for o in job_overrides)
            retried = retries.get(trial.number)
            log.info("Trial %d%s: %s", trial.number, f" (trial {retried} again)" if retried is not None else "",
                     " ".join(f"{k}={short_value(v)}" for k, _, v in pairs if k in varying))
            jobs.append([*job_overrides, subdir_override(job_name(trial.number, job_overrides, varying))])
        with Heartbeat(storage, [ids[t.number] for t in trials if t.number in ids]):
            try:
                returns = impl.launcher.launch(jobs, initial_job_idx=job)
            except BaseException:  # Ctrl-C, SIGTERM: the trials go back to the study for another worker
                give_back(study, storage, trials)
                raise
        job += len(returns)
        for trial, ret in zip(trials, returns):
            try:
                failed = failed + [trial.number] if not tell(study, trial, ret, metric) else []
            except Exception as e:  # noqa: BLE001 - the storage went away: the trial's heartbeat stops, another worker reruns it
                log.warning("Trial %d's value could not be stored (%s); once its heartbeat is stale, a worker runs it again.",
                            trial.number, masked(str(e).splitlines()[0] if str(e) else type(e).__name__))
        if len(failed) >= 3:  # the same cause each time, most likely: stop rather than fail the whole study
            raise ConfigError(f"Trials {', '.join(map(str, failed))} in a row gave no value of optimized_metric={metric}. The "
                              "search stops here: check that the runs log that metric (val/acc_best, val/acc, test/acc, "
                              "val/loss...), and look at these trials' train.log.")
    finish(study, impl, seed, url, metric)


def grid_values(name: str, d: Any) -> list:
    from optuna.distributions import CategoricalDistribution

    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    if d.step is None:
        raise ConfigError(f"hydra.sweeper.params.{name}: the grid sampler needs a list of values, choice(...) or range(...), "
                          "not an interval.")
    count = round((d.high - d.low) / d.step) + 1
    return [d.low + i * d.step for i in range(count)]


def configure(impl: Any, trial: Any, space: dict, fixed: dict, fixed_overrides: list[str]) -> list[str]:
    """A trial's job overrides: its sampled (or, for a retry, given) parameters, then the fixed ones, as
    hydra-optuna-sweeper builds them; through Optuna's public suggest_* calls."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    for name, d in space.items():
        if isinstance(d, CategoricalDistribution):
            trial.suggest_categorical(name, d.choices)
        elif isinstance(d, FloatDistribution):
            trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        else:
            trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    for name, value in fixed.items():
        trial.set_user_attr(name, value)
    if impl.custom_search_space_extender:
        impl.custom_search_space_extender(impl.config, trial)
    return [*(f"{name}={value}" for name, value in {**trial.params, **fixed}.items()), *fixed_overrides]


def drop_excess(study, trials: list, n_trials: int) -> list:
    """Two workers that ask in the same instant could pass the total by one: the later trial (by number)
    of any that would is pruned before it runs, marked as never run, and not counted."""
    from optuna.trial import TrialState

    numbers = tally(study)["numbers"]
    kept = []
    for trial in trials:
        if sum(n < trial.number for n in numbers) >= n_trials:
            trial.set_user_attr(NOT_RUN, True)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            kept.append(trial)
    return kept


def reseed(study, impl: Any, sampler_cfg: Any, first: int) -> int | None:
    """This worker's sampler seed: `sampler.seed` for the worker that asks trial 0 (so a search run alone
    repeats from its seed), `sampler.seed + first trial's number` for any other: no two workers sample alike."""
    base = OmegaConf.select(sampler_cfg, "seed") if sampler_cfg is not None else None
    if base is None or OmegaConf.select(sampler_cfg, "_partial_"):  # the grid sampler shares out its grid itself
        return None
    seed = int(base) + first
    if first:
        from hydra.utils import instantiate

        cfg = OmegaConf.merge(sampler_cfg, {"seed": seed})
        study.sampler = instantiate(cfg, _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"))
        impl.sampler = study.sampler
    log.info("This worker's sampler seed: %d (sampler.seed %d + its first trial's number, %d).", seed, base, first)
    return seed


def tell(study, trial, ret, metric: str) -> bool:
    """Tell a job's value; a job that ended without one is a failed trial, said in one line. False for those."""
    from optuna.trial import TrialState

    try:
        value = ret.return_value
        value = float(value) if value is not None else None
    except Exception as e:  # noqa: BLE001 - the job raised: it says why in its own log
        log.warning("Trial %d failed: %s", trial.number, masked(str(e).splitlines()[0] if str(e) else type(e).__name__))
        value = None
    if value is None or math.isnan(value):
        log.warning("Trial %d gave no value of %s: failed.", trial.number, metric)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return False
    told = study.tell(trial, values=[value], skip_if_finished=True)
    if told.state != TrialState.COMPLETE:
        log.warning("Trial %d had already been failed by another worker (no heartbeat from this one for its grace period) and "
                    "run again there; its result here, %.4f, stays in its folder only.", trial.number, value)
    else:
        log.info("Trial %d: %s %.4f (the study's best so far: %.4f, trial %d).", trial.number, metric, value, study.best_value,
                 study.best_trial.number)
    return True


def give_back(study, storage, trials: list) -> None:
    """This worker stops: its unfinished trials are failed and queued again for the workers that go on."""
    from optuna.trial import TrialState

    retry = storage.get_heartbeat_stale_trial_callback() if storage is not None else None
    callback = getattr(retry, "queue", retry)
    for trial in trials:
        try:
            told = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            if callback is not None and told.state == TrialState.FAIL:
                callback(study, told)
                log.warning("Trial %d stopped with this worker: queued to run again by the study's other workers.", trial.number)
        except Exception as e:  # noqa: BLE001 - the database may be what went away; the heartbeat then does it
            log.warning("Trial %d could not be given back (%s); other workers retry it once its heartbeat is stale.",
                        trial.number, masked(e))


def finish(study, impl: Any, seed: int | None, url: str | None, metric: str) -> None:
    """optimization_results.yaml (the best of the whole study) and its two pictures, in this worker's sweep folder."""
    from optuna.trial import TrialState

    sweep_dir = Path(impl.config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "storage": masked(url) if url else None,
                               "n_trials": impl.n_trials, "complete_trials": len(complete), "sampler_seed": seed}
    if complete and len(study.directions) == 1:
        best = study.best_trial
        results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
        log.info("Best of %d trials: trial %d, %.4f with %s", len(complete), best.number, best.value, best.params)
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    pictures(study, sweep_dir, metric)


def pictures(study, sweep_dir: Path, metric: str) -> None:
    """Optuna's optimization history and parameter importances, drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as draw

    for file, (what, plot) in zip(SEARCH_PICTURES, [("history", draw.plot_optimization_history), ("importances", draw.plot_param_importances)]):
        try:
            ax = plot(study, target_name=metric)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(7, 4.2)
            fig.tight_layout()
            fig.savefig(sweep_dir / file, dpi=100)
            plt.close(fig)
        except Exception as e:  # noqa: BLE001 - e.g. importances from fewer than two finished trials
            log.info("No %s picture: %s", what, str(e).splitlines()[0] if str(e) else type(e).__name__)
