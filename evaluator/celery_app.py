"""The Celery application: broker and result backend from Django settings (REDIS_URL), tasks in evaluator.tasks.

Scoring runs on its own queue ("scoring") so GPU machines can consume only that queue. Reliability comes
from the settings below plus the claim in evaluator.services: a message is acknowledged only after its
chunk is written (acks_late), a killed worker's message goes back to the queue (reject_on_worker_lost,
and Redis redelivers unacknowledged messages after the visibility timeout), each worker takes one message
at a time (prefetch 1: a slow chunk never holds others hostage), and a worker keeps retrying the broker
when Redis restarts. Values set here are not read from Django settings, except the CELERY_* ones that
config.settings defines (broker/result URLs, always-eager): this module is imported while the settings
load, so its own tunables (SCORING_QUEUE, SCORING_VISIBILITY_TIMEOUT_S) come from the environment only.
"""

import os

from celery import Celery

from config.env import env_int

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

SCORING_QUEUE = os.environ.get("SCORING_QUEUE", "") or "scoring"

app = Celery("humanclip")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_routes={"evaluator.*": {"queue": SCORING_QUEUE}},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    # Results and errors live in the database (ModelPrediction, ScoringChunk, ModelRun.error), so a task never
    # needs the result backend (and a Redis outage cannot fail a finished chunk).
    task_ignore_result=True,
    task_store_errors_even_if_ignored=False,
    broker_connection_retry=True,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,  # a worker outlives any Redis restart
    broker_transport_options={
        # Must exceed the longest chunk, or a still-running chunk's message is delivered a second time
        # (harmless, the claim skips it, but wasted work). A killed worker's chunk is recovered sooner by the
        # sweeper (see evaluator.services.model_runs_sweep), not by this timeout.
        "visibility_timeout": env_int("SCORING_VISIBILITY_TIMEOUT_S", 3600, minimum=1),
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "socket_keepalive": True,
        # A consumer whose Redis died or restarted while it was busy can sit on the dead BRPOP connection for
        # brpop_timeout + 2 x this (51 s with kombu's default of 25); 5 s brings it back within ~11 s.
        "health_check_interval": 5,
        "retry_on_timeout": True,
    },
    result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
    redis_socket_connect_timeout=5,
    redis_socket_timeout=30,
    # Publishing gives up after ~2 s when Redis is down, so a web request or a command never hangs.
    task_publish_retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    worker_cancel_long_running_tasks_on_connection_loss=False,
)
app.autodiscover_tasks(["evaluator"])
