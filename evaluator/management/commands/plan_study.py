import os
import socket
import time

from django.core.management.base import BaseCommand, CommandError

from evaluator.models import StudyPlan
from evaluator.planning_results import plan_summary, study_plan_table
from evaluator.planning_selectors import study_plan_progress
from evaluator.report import ReportInputError
from evaluator.services.planning import (
    N_RESAMPLES,
    N_STUDIES,
    SEED,
    PlanUnavailable,
    parse_per_condition,
    study_design,
    study_plan_compute,
    study_plan_request,
    study_plan_send,
)
from studyapp.selectors.studies import StudyNotFound, study_get_by_code

COLUMNS = ["condition", "subject_kind", "metric", "target_halfwidth", "participants_per_condition",
           "participants_total", "answers_per_item", "within_design", "halfwidth_at_capacity", "capacity"]


class Command(BaseCommand):
    help = ("Simulate the study's own design (items, k, trials per person, conditions) and say how many participants "
            "bring every Table 2 cell to a target CI half-width, or detect a human - model difference with 80% power. "
            "The simulation is stored, so the planning page and a second run reuse it.")

    def add_arguments(self, parser):
        parser.add_argument("study", help="The study's public code.")
        parser.add_argument("--target-halfwidth", type=float, default=3.0, help="percentage points (default 3)")
        parser.add_argument("--expected-accuracy", default="",
                            help='percent per condition, "60,75,75" in shot order or "zero-shot=60,..." '
                                 "(default: the CLIP paper's Table 2)")
        parser.add_argument("--expected-model-accuracy", default="", help="percent per condition (default 93.5)")
        parser.add_argument("--idk-rate", default="",
                            help="percent of all answers per condition (default: the paper's share of the errors)")
        parser.add_argument("--difference", type=float, default=None,
                            help="a human - model accuracy difference (points) to detect")
        parser.add_argument("--power", type=float, default=0.8)
        parser.add_argument("--studies", type=int, default=N_STUDIES, help="simulated studies per size")
        parser.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples per study")
        parser.add_argument("--seed", type=int, default=SEED)
        parser.add_argument("--no-wait", action="store_true", help="queue it for a worker and exit")
        parser.add_argument("--csv", default="", help="also write the plan table to this file")

    def handle(self, *args, study, **o):
        try:
            study = study_get_by_code(code=study)
            names = list(c.name for c in study.conditions.order_by("shots"))
            design = study_design(
                study=study, accuracy=parse_per_condition(o["expected_accuracy"], names, what="--expected-accuracy"),
                model_accuracy=parse_per_condition(o["expected_model_accuracy"], names,
                                                   what="--expected-model-accuracy"),
                idk_rate=parse_per_condition(o["idk_rate"], names, what="--idk-rate"))
            plan = study_plan_request(study=study, design=design, n_studies=o["studies"],
                                      n_resamples=o["resamples"], seed=o["seed"], send=False)
            if o["no_wait"]:
                if plan.status == StudyPlan.Status.PENDING:
                    study_plan_send(plan_id=plan.pk)
                self.stdout.write(f"Plan {plan.code} {plan.status}; page: /studies/{study.code}/plan/{plan.code}/")
                return
            self._compute(plan)
            plan.refresh_from_db()
            if plan.status != StudyPlan.Status.DONE:
                raise CommandError(f"planning failed: {plan.error}")
            table = study_plan_table(plan=plan, target_halfwidth=o["target_halfwidth"], difference=o["difference"],
                                     power=o["power"])
        except (StudyNotFound, ReportInputError, PlanUnavailable) as exc:
            raise CommandError(str(exc)) from None
        self._report(plan, design, table, o)

    def _compute(self, plan: StudyPlan) -> None:
        started = time.monotonic()

        def step(done: int, total: int) -> None:
            self.stderr.write(f"  simulated {done}/{total} sizes ({time.monotonic() - started:.0f} s)")

        if plan.status == StudyPlan.Status.DONE:
            self.stderr.write("Reusing the stored simulation of this design.")
            return
        self.stderr.write(f"Simulating {len(plan.grid)} sizes per condition: {', '.join(map(str, plan.grid))} "
                          "participants ...")
        outcome = study_plan_compute(plan_id=plan.pk, task_id=f"command:{socket.gethostname()}:{os.getpid()}",
                                     worker=f"{socket.gethostname()}:{os.getpid()}", on_step=step)
        while outcome in ("skipped", "lost"):  # a worker holds it: follow its progress
            progress = study_plan_progress(plan=plan)
            if progress["status"] in (StudyPlan.Status.DONE, StudyPlan.Status.FAILED):
                return
            self.stderr.write(f"  a worker is on it: {progress['steps_done']}/{progress['steps_total']} sizes")
            time.sleep(2)

    def _report(self, plan, design, table, o) -> None:
        self.stdout.write(f"Design: {design.n_classes} classes x {design.items_per_class} items, k = {design.k}, "
                          f"{design.trials_per_person} trials per person and condition, {design.design} subjects; "
                          f"capacity {design.capacity} participants per condition")
        for c in design.conditions:
            self.stdout.write(f"  {c.condition}: expected accuracy {c.accuracy:g}%, idk {c.idk_rate:g}%, "
                              f"model {c.model_accuracy:g}%")
        self.stdout.write(table[COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        for line in plan_summary(table):
            self.stdout.write(line)
        if o["csv"]:
            table.to_csv(o["csv"], index=False)
            self.stdout.write(f"Wrote {o['csv']}")
        self.stdout.write(f"Plan {plan.code} (stored; the planning page shows it).")
