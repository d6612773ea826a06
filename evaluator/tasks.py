"""Celery tasks: they take ids, delegate to evaluator.services and own only the retry/failure policy.

Services send these tasks by name (evaluator.services.queue), so this module is the only one that imports both.
"""

import logging
import os
import threading

from celery import Task
from celery.signals import worker_init, worker_ready, worker_shutting_down
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from evaluator.celery_app import HOUSE_TRAINING_TASK, PLAN_STUDY_TASK, SCORE_CHUNK_TASK, app
from evaluator.services.chunks import model_run_score_chunk
from evaluator.services.recovery import house_trainings_sweep, model_runs_sweep
from evaluator.services.runs import model_run_fail
from evaluator.services.training import house_training_fail, house_training_run

logger = logging.getLogger(__name__)

# Worth another try after a pause: the database or Redis was briefly unreachable or locked.
TRANSIENT = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, BrokerOperationalError)


class ScoringTask(Task):
    """Failure callback: a chunk that fails for good (retries used up, model unavailable, a bug) fails its run."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from evaluator.models import ScoringChunk

        chunk_id = kwargs.get("chunk_id", args[0] if args else None)
        run_id = ScoringChunk.objects.filter(pk=chunk_id).values_list("run_id", flat=True).first()
        if run_id is not None:
            model_run_fail(run_id=run_id, chunk_id=chunk_id, error=f"{type(exc).__name__}: {exc}")


def worker_label(hostname: str | None) -> str:
    return f"{hostname or 'worker'}:{os.getpid()}"


@app.task(
    base=ScoringTask, bind=True, name=SCORE_CHUNK_TASK, acks_late=True, reject_on_worker_lost=True,
    autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=8,
    soft_time_limit=settings.SCORING_SOFT_TIME_LIMIT_S, time_limit=settings.SCORING_TIME_LIMIT_S,
)
def score_chunk(self, chunk_id: int) -> str:
    return model_run_score_chunk(chunk_id=chunk_id, task_id=self.request.id or "", worker=worker_label(self.request.hostname),
                                 retries=self.request.retries or 0)


class HouseTrainingTask(Task):
    """Failure callback: a training that fails for good (retries used up, a bug) is marked failed with the error."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        house_training_fail(training_id=kwargs.get("training_id", args[0] if args else None),
                            error=f"{type(exc).__name__}: {exc}")


# No time limit: training takes minutes to half an hour on a CPU, and its heartbeats tell sweepers it is alive.
@app.task(
    base=HouseTrainingTask, bind=True, name=HOUSE_TRAINING_TASK, acks_late=True, reject_on_worker_lost=True,
    autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=60, max_retries=8, soft_time_limit=None, time_limit=None,
)
def house_training(self, training_id: int) -> str:
    return house_training_run(training_id=training_id, worker=worker_label(self.request.hostname))


@app.task(name="evaluator.sweep", acks_late=True, autoretry_for=TRANSIENT, retry_backoff=2, max_retries=3)
def sweep() -> dict:
    """Also runnable by hand or from celery beat: `celery -A config call evaluator.sweep`."""
    return model_runs_sweep()


@app.task(bind=True, name=PLAN_STUDY_TASK, acks_late=True, reject_on_worker_lost=True,
          autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=60, max_retries=5)
def plan_study(self, plan_id: int) -> str:
    """A planning simulation (evaluator.services.planning); its result is stored on the StudyPlan."""
    # Imported here: every web process loads this module (evaluator.apps, for the task registry), and planning
    # brings the report stack (pandas, numpy, plotly) that only workers need.
    from evaluator.services.planning import study_plan_compute

    return study_plan_compute(plan_id=plan_id, task_id=self.request.id or "", worker=worker_label(self.request.hostname))


class Sweeper(threading.Thread):
    """Runs the sweeps (evaluator.services.recovery) every SCORING_SWEEP_S seconds inside each worker, so recovery
    needs no beat."""

    def __init__(self, *, worker: str):
        super().__init__(name="scoring-sweeper", daemon=True)
        self.worker = worker
        self.stopped = threading.Event()

    def run(self) -> None:
        restarted = True
        while not self.stopped.wait(0 if restarted else settings.SCORING_SWEEP_S):
            try:
                close_old_connections()
                result = model_runs_sweep(worker=self.worker, restarted=restarted)
                result["trainings_resent"] = house_trainings_sweep()
                if any(result.values()):
                    logger.info("sweep: %s", result)
                restarted = False
            except Exception:  # the sweeper must outlive database and broker outages
                logger.exception("scoring sweep failed; retrying in %ss", settings.SCORING_SWEEP_S)
                restarted = False
            finally:
                connections.close_all()


_sweeper: Sweeper | None = None


@worker_init.connect
def _preload_torch(**kwargs) -> None:
    # torch + open_clip take seconds to import; pay that at start-up, not in the first chunk (the web
    # process never imports evaluator.scoring). Before the pool forks, so prefork children inherit it.
    import evaluator.scoring  # noqa: F401


@worker_ready.connect
def _start_sweeper(sender=None, **kwargs) -> None:
    global _sweeper
    _sweeper = Sweeper(worker=worker_label(getattr(sender, "hostname", None)))
    _sweeper.start()


@worker_shutting_down.connect
def _stop_sweeper(**kwargs) -> None:
    if _sweeper is not None:
        _sweeper.stopped.set()
