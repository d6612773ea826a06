from django.urls import path

from evaluator import views, views_dashboard

app_name = "evaluator"
urlpatterns: list = [
    path("runs/<uuid:code>/", views.run_progress_page, name="run_progress"),
    path("runs/<uuid:code>/progress.json", views.run_progress_json, name="run_progress_json"),
    path("studies/<uuid:code>/protocol.json", views_dashboard.study_protocol_download, name="study_protocol"),
    path("studies/<uuid:code>/protocol/write", views_dashboard.study_protocol_write_view, name="study_protocol_write"),
]
