"""studyapp.forms.answer_parse: the answer form's rules, parsed by hand (a Form's CharField rules, without a Form)."""

import pytest
from django.http import QueryDict

from studyapp.forms import ANSWER_TIMINGS, answer_parse


def post(**fields) -> QueryDict:
    data = QueryDict(mutable=True)
    for name, value in fields.items():
        data.setlist(name, value if isinstance(value, list) else [value])
    return data


def test_an_answer_keeps_its_choice_exactly_and_reads_every_measurement_as_whole_milliseconds():
    parsed = answer_parse(post(choice="12", rt_client_ms="812.4", images_ready_ms=" 95 ", clock_start_ms="103",
                               blur_count="2", hidden_ms="0"))
    assert parsed.choice == "12"
    assert parsed.timings == {"rt_client_ms": 812, "images_ready_ms": 95, "clock_start_ms": 103, "blur_count": 2,
                              "hidden_ms": 0}


def test_missing_or_garbled_measurements_are_recorded_as_missing_and_cost_nothing():
    parsed = answer_parse(post(choice="idk", rt_client_ms="NaN", images_ready_ms="-5", clock_start_ms="1e400",
                               blur_count="x", hidden_ms=""))
    assert parsed.choice == "idk" and parsed.timings == dict.fromkeys(ANSWER_TIMINGS)
    assert answer_parse(post(choice="0")).timings == dict.fromkeys(ANSWER_TIMINGS)


@pytest.mark.parametrize("choice", ["", "x" * 21, "0\x00", "\x00"])
def test_no_choice_an_overlong_one_or_one_with_a_nul_is_not_an_answer(choice):
    assert answer_parse(post(choice=choice, rt_client_ms="900")) is None


def test_a_choice_is_not_stripped_the_service_decides_whether_it_was_offered():
    assert answer_parse(post(choice=" 1 ")).choice == " 1 "
    assert answer_parse(post(choice="x" * 20)).choice == "x" * 20


def test_no_choice_field_at_all_is_not_an_answer():
    assert answer_parse(post(rt_client_ms="900")) is None
    assert answer_parse(post(choices="0")) is None


@pytest.mark.parametrize("name", ANSWER_TIMINGS)
@pytest.mark.parametrize("value", ["9" * 21, "1\x00"])
def test_an_overlong_measurement_or_one_with_a_nul_makes_the_whole_post_no_answer(name, value):
    assert answer_parse(post(choice="0", **{name: value})) is None


def test_a_measurement_is_measured_after_stripping_its_spaces():
    assert answer_parse(post(choice="0", rt_client_ms=" " * 30 + "900")).timings["rt_client_ms"] == 900


def test_a_field_sent_twice_counts_with_its_last_value():
    parsed = answer_parse(post(choice=["0", "1"], rt_client_ms=["5", "7"]))
    assert (parsed.choice, parsed.timings["rt_client_ms"]) == ("1", 7)
