import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evaluator.errors import ScoringSetupError
from evaluator.house import HouseModelNotTrained, house_checkpoint
from evaluator.models import HouseTraining, ModelRun
from evaluator.selectors import model_run_progress
from evaluator.services.queue import QueueUnavailable
from evaluator.services.runs import RunExists, model_run_create, model_run_resume
from evaluator.services.specs import model_spec_resolve, read_templates_file
from evaluator.services.training import house_training_request
from studyapp.models import Condition
from studyapp.selectors.studies import StudyNotFound, study_get_by_code

CONDITIONS = {label: value for value, label in Condition.Shots.choices}
FINISHED = (ModelRun.Status.DONE, ModelRun.Status.FAILED, ModelRun.Status.CANCELLED)


class Command(BaseCommand):
    help = (
        "Score a study's items with a model, as one more subject (Celery workers on the 'scoring' queue do the "
        "work; this command queues the run and shows its progress). Without --model/--checkpoint: the house "
        "model; when it is not trained yet, a worker trains it first and then creates the run. Running it again "
        "with the same name scores only what is missing. A model "
        "trained on the study's test items or shots is refused unless --allow-trained-items."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="the study's public code (UUID)")
        parser.add_argument("--model", default="", help="open_clip architecture, e.g. ViT-B-32")
        parser.add_argument("--pretrained", default="", help="open_clip pretrained tag, e.g. openai")
        parser.add_argument("--checkpoint", default="", help="a local state dict or clipmodel checkpoint")
        parser.add_argument("--conditions", default="", help="comma-separated, e.g. zero-shot,one-shot (default: all)")
        parser.add_argument("--templates", type=Path, help="file of prompt templates, one per line with {}")
        parser.add_argument("--fewshot", default="linear-probe,zero-shot-prior",
                            help="comma-separated few-shot methods for one-/two-shot conditions, each a subject of "
                                 "its own (default: the paper's linear probe and the zero-shot prior; also prototype)")
        parser.add_argument("--allow-trained-items", action="store_true",
                            help="score even if the model was trained on some of the study's test items or shots "
                                 "(every report marks the run)")
        parser.add_argument("--name", default="", help="subject name in reports (default: says what the model is)")
        parser.add_argument("--device", default="auto", help="auto (GPU if the worker has one), cpu, cuda, cuda:1")
        parser.add_argument("--chunk-size", type=int, help="items per task (default: SCORING_CHUNK_SIZE)")
        parser.add_argument("--retry-failed", action="store_true", help="rescore items that got an error")
        wait = parser.add_mutually_exclusive_group()
        wait.add_argument("--wait", dest="wait", action="store_true", default=True,
                          help="show progress until the run finishes (the default)")
        wait.add_argument("--no-wait", dest="wait", action="store_false", help="queue the run and return")
        parser.add_argument("--worker-timeout", type=float, default=20.0,
                            help="seconds to wait for a worker to start the run before checking one exists")

    def handle(self, *args, study, model, pretrained, checkpoint, conditions, templates, fewshot, name, device,
               chunk_size, retry_failed, wait, worker_timeout, allow_trained_items, **options):
        try:
            study = study_get_by_code(code=study)
        except StudyNotFound as exc:
            raise CommandError(str(exc)) from None
        shots = self._shots(conditions)
        fewshot = [m.strip() for m in fewshot.split(",") if m.strip()]
        try:
            template_list = read_templates_file(templates) if templates else None
            options = {"name": name, "conditions": shots, "templates": list(template_list) if template_list else None,
                       "fewshot_methods": fewshot, "device": device, "chunk_size": chunk_size,
                       "allow_trained_items": allow_trained_items}
            spec = self._spec(study=study, model=model, pretrained=pretrained, checkpoint=checkpoint, options=options,
                              wait=wait, worker_timeout=worker_timeout)
            if spec is None:
                return  # a worker trains the house model, then creates the run
            run = model_run_create(study=study, spec=spec, name=name, conditions=shots, templates=template_list,
                                   fewshot_methods=fewshot, device=device, chunk_size=chunk_size,
                                   allow_trained_items=allow_trained_items)
            self.stdout.write(f"run {run.code} created: {run.name!r}, {run.items_total} predictions to make")
        except RunExists as exists:
            run = self._resume(exists.run, spec=spec, shots=shots, templates=template_list, fewshot=fewshot,
                               retry_failed=retry_failed)
        except QueueUnavailable as exc:
            raise CommandError(str(exc)) from None
        except (ScoringSetupError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
        if wait:
            self._wait(run, worker_timeout=worker_timeout)

    def _shots(self, conditions: str) -> list[int] | None:
        if not conditions.strip():
            return None
        names = [part.strip().lower() for part in conditions.split(",") if part.strip()]
        unknown = [n for n in names if n not in CONDITIONS]
        if unknown:
            raise CommandError(f"unknown condition(s) {', '.join(unknown)}; use {', '.join(CONDITIONS)}")
        return [CONDITIONS[n] for n in names]

    def _spec(self, *, study, model, pretrained, checkpoint, options, wait, worker_timeout):
        """The model to score with; None when the house model must be trained first and we do not wait for it."""
        if model or checkpoint or pretrained:
            return model_spec_resolve(model_name=model, pretrained=pretrained, checkpoint=checkpoint)
        self.stdout.write("no --model/--checkpoint: using the house model")
        try:
            path = house_checkpoint(train=False)
        except HouseModelNotTrained:
            training = house_training_request(study=study, options=options)
            self.stdout.write(f"the house model is not trained yet: a worker trains it (9-30 min on a CPU), then "
                              f"scores this study (training {training.code}; progress in the admin)")
            if not wait:
                return None
            path = self._wait_training(training, worker_timeout=worker_timeout)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CommandError(f"the house model is not available: {exc}") from None
        return model_spec_resolve(checkpoint=str(path))

    def _wait_training(self, training: HouseTraining, *, worker_timeout: float) -> Path:
        from tqdm import tqdm

        def poll() -> tuple[bool, bool]:
            training.refresh_from_db()
            bar.n = round(100 * training.progress, 1)
            bar.set_postfix_str(training.detail[:60], refresh=False)
            bar.refresh()
            finished = training.status in (HouseTraining.Status.DONE, HouseTraining.Status.FAILED)
            return finished, training.status == HouseTraining.Status.PENDING

        with tqdm(total=100, unit="%", desc="training the house model", file=self.stderr._out, dynamic_ncols=True,
                  bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}{postfix}]") as bar:
            self._follow(bar, poll=poll, worker_timeout=worker_timeout,
                         stopped=f"stopped watching; training {training.code} goes on in the worker")
        if training.status == HouseTraining.Status.FAILED:
            raise CommandError(f"training the house model failed: {training.error}")
        return Path(training.checkpoint)

    def _resume(self, run: ModelRun, *, spec, shots, templates, fewshot, retry_failed) -> ModelRun:
        same = (run.model_name, run.pretrained, run.checkpoint, run.fewshot_methods) == (
            spec.model_name, spec.pretrained, spec.checkpoint, list(dict.fromkeys(fewshot))
        ) and (shots is None or sorted(set(shots)) == run.condition_shots) and (
            templates is None or list(templates) == run.templates
        )
        if not same:
            raise CommandError(f"the study already has a run named {run.name!r} with other settings; pass --name")
        if run.status in (ModelRun.Status.PENDING, ModelRun.Status.RUNNING) and not retry_failed:
            self.stdout.write(f"run {run.code} ({run.name!r}) is already {run.status}; following it")
            return run
        try:
            queued = model_run_resume(run=run, retry_failed_items=retry_failed)
        except QueueUnavailable as exc:
            raise CommandError(str(exc)) from None
        run.refresh_from_db()
        if queued:
            self.stdout.write(f"run {run.code} ({run.name!r}) resumed: {queued} chunk(s) with missing predictions queued")
        else:
            self.stdout.write(f"run {run.code} ({run.name!r}) has no missing prediction: {run.status}")
        return run

    def _wait(self, run: ModelRun, *, worker_timeout: float) -> None:
        from tqdm import tqdm

        progress = model_run_progress(run=run)

        def poll() -> tuple[bool, bool]:
            nonlocal progress
            progress = model_run_progress(run=run)
            bar.n = progress["items_done"]
            bar.set_postfix(status=progress["status"], failed=progress["items_failed"], refresh=False)
            bar.refresh()
            return progress["status"] in FINISHED, progress["status"] == ModelRun.Status.PENDING

        with tqdm(total=progress["items_total"], unit="item", desc=run.name[:40], file=self.stderr._out,
                  dynamic_ncols=True) as bar:
            self._follow(bar, poll=poll, worker_timeout=worker_timeout,
                         stopped=f"stopped watching; run {run.code} goes on in the workers (cancel it in the admin)")
        self._report(progress, run)

    def _follow(self, bar, *, poll, worker_timeout: float, stopped: str) -> None:
        """Poll twice a second until poll() says finished; if the work is still pending after worker_timeout,
        check once that a worker consumes the queue (else the wait would never end)."""
        started = time.monotonic()
        checked_workers = False
        try:
            while True:
                finished, pending = poll()
                if finished:
                    return
                if not checked_workers and pending and time.monotonic() - started > worker_timeout:
                    checked_workers = True
                    self._require_worker()
                time.sleep(0.5)
        except KeyboardInterrupt:
            bar.close()
            raise CommandError(stopped) from None

    def _require_worker(self) -> None:
        from evaluator.celery_app import app

        try:
            queues = app.control.inspect(timeout=2).active_queues() or {}
        except Exception as exc:
            raise CommandError(f"cannot reach the broker to look for workers: {exc}") from None
        if not any(q.get("name") == settings.SCORING_QUEUE for qs in queues.values() for q in qs):
            raise CommandError(
                f"no worker consumes the {settings.SCORING_QUEUE!r} queue, so the run stays pending until one starts: "
                f"celery -A config worker -Q {settings.SCORING_QUEUE} -c 1 --pool solo"
            )

    def _report(self, progress: dict, run: ModelRun) -> None:
        status = progress["status"]
        if status == ModelRun.Status.FAILED:
            raise CommandError(f"run {run.code} failed: {progress['error']}")
        if status == ModelRun.Status.CANCELLED:
            raise CommandError(f"run {run.code} was cancelled ({progress['items_done']}/{progress['items_total']} done)")
        rate = f", {progress['rate_items_per_s']} items/s" if progress["rate_items_per_s"] else ""
        self.stdout.write(self.style.SUCCESS(
            f"run {run.code} done: {progress['items_done']}/{progress['items_total']} predictions, "
            f"{progress['items_failed']} failed item(s){rate}"
        ))
