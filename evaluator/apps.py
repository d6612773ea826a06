from django.apps import AppConfig


class EvaluatorConfig(AppConfig):
    name = "evaluator"
    verbose_name = "Model scoring"

    def ready(self) -> None:
        # Registers the tasks with the Celery app in every process (web, commands, workers): the services
        # send them by name (evaluator.services.queue) and never import evaluator.tasks themselves.
        import evaluator.tasks  # noqa: F401
