from django.urls import path

from evaluator import views

app_name = "evaluator"
urlpatterns: list = [
    path("runs/<uuid:code>/", views.run_progress_page, name="run_progress"),
    path("runs/<uuid:code>/progress.json", views.run_progress_json, name="run_progress_json"),
]
