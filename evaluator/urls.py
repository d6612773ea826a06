from django.urls import path

from evaluator import views, views_dashboard

app_name = "evaluator"
urlpatterns: list = [
    path("runs/<uuid:code>/", views.run_progress_page, name="run_progress"),
    path("runs/<uuid:code>/progress.json", views.run_progress_json, name="run_progress_json"),
    # Staff study pages (evaluator/views_dashboard.py).
    path("studies/<uuid:code>/dashboard/", views_dashboard.study_dashboard_page, name="study_dashboard"),
    path("studies/<uuid:code>/dashboard/precision", views_dashboard.study_precision_fragment, name="study_precision"),
    path("studies/<uuid:code>/protocol.json", views_dashboard.study_protocol_download, name="study_protocol"),
    path("studies/<uuid:code>/protocol/write", views_dashboard.study_protocol_write_view, name="study_protocol_write"),
    path("studies/<uuid:code>/plan/", views_dashboard.study_plan_page, name="study_plans"),
    path("studies/<uuid:code>/plan/<uuid:plan>/", views_dashboard.study_plan_result_page, name="study_plan"),
    path("studies/<uuid:code>/plan/<uuid:plan>/progress.json", views_dashboard.study_plan_progress_json,
         name="study_plan_progress"),
    path("studies/<uuid:code>/plan/<uuid:plan>/send", views_dashboard.study_plan_send_view, name="study_plan_send"),
]
