"""Model scoring services, a module per concern (each imports only the ones above it in this list):

- ``specs``: what a run scores with (ModelSpec), its subject name, its prompt templates;
- ``queue``: sending tasks to the scoring queue, and the queue's size;
- ``runs``: a run's lifecycle (create with chunks, cancel, fail, resume, finish);
- ``chunks``: scoring one chunk exactly once (claim, heartbeat, score what is missing, write);
- ``recovery``: the sweeper that requeues orphaned chunks and re-sends lost messages;
- ``training``: training the house model in a worker, then scoring the studies that wait for it;
- ``planning``: simulating a study's design before it opens (a task per plan, one grid size at a time).

The names below are re-exported for callers outside the evaluator's services (admin, views, commands).
"""

from evaluator.services.chunks import MAX_CHUNK_ATTEMPTS, model_run_score_chunk
from evaluator.services.queue import QueueUnavailable
from evaluator.services.recovery import model_runs_sweep
from evaluator.services.runs import (
    RunExists,
    model_run_cancel,
    model_run_create,
    model_run_fail,
    model_run_resume,
)
from evaluator.services.specs import (
    ModelSpec,
    default_templates,
    model_run_default_name,
    model_spec_resolve,
    read_templates_file,
    study_benchmark,
)

__all__ = [
    "MAX_CHUNK_ATTEMPTS", "ModelSpec", "QueueUnavailable", "RunExists", "default_templates", "model_run_cancel",
    "model_run_create", "model_run_default_name", "model_run_fail", "model_run_resume", "model_run_score_chunk",
    "model_runs_sweep", "model_spec_resolve", "read_templates_file", "study_benchmark",
]
