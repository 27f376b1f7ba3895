"""Where the workers of one Optuna study meet (mnist99.study): its storage, opened with Optuna's heartbeat
and retry of stale trials (the journal file gets a heartbeat of mnist99's, which Optuna lacks there),
the beat itself, and a storage URL's password kept out of everything a run writes. Optuna is imported
inside the functions: `masked` and `password_to_env` serve the start-up checks."""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mnist99.errors import ConfigError

log = logging.getLogger("mnist99")

STORAGE_ENV = "MNIST99_STORAGE"  # where a storage URL with a password is read from (conf/hparams_search/optuna.yaml)
BEAT = "mnist99.heartbeat"  # the journal storage's heartbeat: a running trial's system attribute


def masked(text: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`, wherever it stands in `text`."""
    return re.sub(r"(://[^/:@\s]*:)[^@/\s]+@", r"\1***@", str(text))


def password_to_env(argv: list[str]) -> list[str]:
    """A storage URL holding a password moves from the command line to $MNIST99_STORAGE (the jobs inherit
    it) and the override reads it from there: whatever Hydra saves shows `${oc.env:MNIST99_STORAGE}`."""
    out = []
    for arg in argv:
        key, _, value = arg.partition("=")
        url = value.strip("'\"")
        if key.lstrip("+") == "hydra.sweeper.storage" and "://" in url and urlsplit(url).password:
            os.environ[STORAGE_ENV] = url
            arg = f"{key}=${{oc.env:{STORAGE_ENV}}}"
        out.append(arg)
    return out


def open_storage(url: str | None, heartbeat_interval: int, grace_period: int, max_retry: int) -> Any:
    """None (in memory), an RDB URL (sqlite:///, postgresql://, mysql://) or `journal:<file>` (Optuna's
    journal file, for a shared filesystem with no database), with heartbeats and retries either way."""
    if not url:
        return None
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise ConfigError(f"hydra.sweeper.heartbeat_interval={heartbeat_interval} and grace_period={grace_period}: a worker "
                          "beats every heartbeat_interval seconds (at least 1) and is taken for dead after grace_period "
                          "seconds without a beat, so grace_period must be longer (e.g. 10 and 30).")
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    retry = Retry(RetryHeartbeatStaleTrialCallback(max_retry=max_retry), max_retry, grace_period)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return journal_storage(JournalFileBackend(str(path)), heartbeat_interval, grace_period, retry)
        for attempt in range(5):  # workers started together race to create the tables: the later ones find them made
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat_interval,
                                                  grace_period=grace_period, heartbeat_stale_trial_callback=retry)
            except ImportError:
                raise
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    except ImportError as e:
        raise ConfigError(f"hydra.sweeper.storage={masked(url)} needs a driver this environment lacks ({e.__cause__ or e}). For PostgreSQL: "
                          "pip install 'mnist99[postgres]' (psycopg).") from None
    except Exception as e:  # noqa: BLE001 - the server's answer, told in one paragraph
        first = masked(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise ConfigError(f"hydra.sweeper.storage={masked(url)} could not be opened: {first}. Check that the server runs and "
                          "answers on that host and port, and the user, password and database in the URL.") from None


def journal_storage(backend: Any, interval: int, grace: int, callback: Any) -> Any:
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.storages.journal import JournalStorage
    from optuna.trial import TrialState

    class _HeartbeatJournal(JournalStorage, BaseHeartbeat):
        """Optuna's journal storage with the heartbeat its RDB storage has: a running trial's latest beat
        is a system attribute, and a trial with none newer than grace_period (nor a newer start) is stale."""

        def __init__(self, backend, interval: int, grace: int, callback) -> None:
            super().__init__(backend)
            self._interval, self._grace, self._callback = interval, grace, callback

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, BEAT, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            return [self.get_trial_id_from_study_id_trial_number(study_id, t.number)
                    for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                    if BEAT in t.system_attrs and now - max(t.system_attrs[BEAT], t.datetime_start.timestamp()) > self._grace]

        def get_heartbeat_interval(self) -> int:
            return self._interval

        def get_heartbeat_stale_trial_callback(self):
            return self._callback

    return _HeartbeatJournal(backend, interval, grace, callback)


class Retry:
    """Optuna's RetryHeartbeatStaleTrialCallback (`queue`), which queues a stale trial again, saying so."""

    def __init__(self, queue: Any, max_retry: int, grace_period: int) -> None:
        self.queue, self.max_retry, self.grace_period = queue, max_retry, grace_period

    def __call__(self, study, trial) -> None:
        tries = len(trial.system_attrs.get("retry_history", [])) + 1
        what = ("queued to run again" if tries <= self.max_retry else
                f"not run again: it was tried {tries} times (hydra.sweeper.max_retry={self.max_retry})")
        log.warning("Trial %d gave no heartbeat for %d s: its worker (%s) is taken for dead, the trial failed and %s.",
                    trial.number, self.grace_period, trial.user_attrs.get("mnist99.worker", "unknown"), what)
        self.queue(study, trial)


class Heartbeat:
    """Beats for a batch of trials while their jobs run, as Optuna's `optimize` does for its own."""

    def __init__(self, storage: Any, trial_ids: list[int]) -> None:
        self.storage, self.trial_ids, self.stop = storage, trial_ids, threading.Event()
        self.thread = threading.Thread(target=self.beat, name="mnist99-heartbeat", daemon=True)

    def beat(self) -> None:
        while True:
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as e:  # noqa: BLE001 - a lost connection: the next beat tries again
                    log.warning("Heartbeat of trial id %d not recorded (%s); trying again.", trial_id, masked(e))
            if self.stop.wait(self.storage.get_heartbeat_interval()):
                return

    def __enter__(self) -> None:
        if self.storage is not None:
            self.thread.start()

    def __exit__(self, *exc) -> None:
        self.stop.set()
