from django.apps import AppConfig


class StudyappConfig(AppConfig):
    name = "studyapp"
    verbose_name = "Studies"

    def ready(self) -> None:
        from studyapp import throttle  # noqa: F401  (connects the failed-login counter)
