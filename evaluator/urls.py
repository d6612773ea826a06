from django.urls import path

app_name = "evaluator"
urlpatterns: list = []
