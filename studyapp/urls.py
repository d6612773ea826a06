from django.conf import settings
from django.urls import path

from studyapp import views

app_name = "studyapp"

# Participant pages live under PARTICIPANT_URL_PREFIX, where the middleware forbids caching.
_s = settings.PARTICIPANT_URL_PREFIX.strip("/") + "/<uuid:study_code>/"

urlpatterns = [
    path("", views.home, name="home"),
    path(_s + "join", views.join, name="join"),
    path(_s + "instructions", views.instructions, name="instructions"),
    path(_s + "next", views.next_trial, name="next"),
    path(_s + "practice/<int:number>", views.practice, name="practice"),
    path(_s + "practice/<int:number>/image", views.practice_image, name="practice_image"),
    path(_s + "leave", views.leave, name="leave"),
    path(_s + "left", views.left, name="left"),
    path(_s + "t/<uuid:assignment_code>", views.trial, name="trial"),
    path(_s + "t/<uuid:assignment_code>/image", views.trial_image, name="trial_image"),
    path(_s + "examples/<uuid:example_code>", views.example_image, name="example_image"),
    path(_s + "done", views.done, name="done"),
    path(_s + "declined", views.declined, name="declined"),
    path(_s + "full", views.full, name="full"),
]
