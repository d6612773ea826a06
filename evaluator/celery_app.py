"""The Celery application: broker, result backend, queue routing and the broker's transport options from Django
settings (the CELERY_* names in config/settings.py), tasks in evaluator.tasks.

Scoring runs on its own queue (SCORING_QUEUE, "scoring") so GPU machines can consume only that queue.
Reliability comes from the options below plus the claim in evaluator.services.chunks: a message is
acknowledged only after its chunk is written (acks_late), a killed worker's message goes back to the queue
(reject_on_worker_lost, and Redis redelivers unacknowledged messages after the visibility timeout), each
worker takes one message at a time (prefetch 1: a slow chunk never holds others hostage), and a worker keeps
retrying the broker when Redis restarts. These options are fixed behaviour, not settings; every setting
(queue name, visibility timeout, time limits, …) is in config/settings.py.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Services send tasks by these names (app.tasks[...]), so they need not import evaluator.tasks.
SCORE_CHUNK_TASK = "evaluator.score_chunk"
HOUSE_TRAINING_TASK = "evaluator.house_training"
PLAN_STUDY_TASK = "evaluator.plan_study"

app = Celery("humanclip")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
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
    result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
    redis_socket_connect_timeout=5,
    redis_socket_timeout=30,
    # Publishing gives up after ~2 s when Redis is down, so a web request or a command never hangs.
    task_publish_retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    worker_cancel_long_running_tasks_on_connection_loss=False,
)
app.autodiscover_tasks(["evaluator"])
