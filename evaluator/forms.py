"""Forms of the staff study pages (dashboard and planning)."""

from django import forms

from evaluator.planning_service import N_RESAMPLES, N_STUDIES
from evaluator.report import paper_conditions


class TargetForm(forms.Form):
    """The dashboard's stopping rule: the CI half-width (percentage points) each cell should reach."""

    target = forms.FloatField(initial=3.0, min_value=0.1, max_value=50, label="Target half-width (points)")
    include_simulated = forms.BooleanField(required=False, label="Include simulated participants")
    include_attention_failed = forms.BooleanField(required=False, label="Include attention-failed participants")

    def values(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {"target_halfwidth": data.get("target") or 3.0,
                "include_simulated": bool(data.get("include_simulated")),
                "include_attention_failed": bool(data.get("include_attention_failed"))}


class PlanForm(forms.Form):
    """What to simulate: the expected values per condition (default: the CLIP paper's Table 2) and its size."""

    n_studies = forms.IntegerField(initial=N_STUDIES, min_value=2, max_value=100, label="Simulated studies per size")
    n_resamples = forms.IntegerField(initial=N_RESAMPLES, min_value=50, max_value=2000,
                                     label="Bootstrap resamples per study")

    def __init__(self, *args, conditions: list[str], allow_idk: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.conditions = conditions
        paper = {c.condition: c for c in paper_conditions()}
        for name in conditions:
            base = paper.get(name)
            self.fields[f"accuracy:{name}"] = forms.FloatField(
                label=f"{name}: expected human accuracy (%)", min_value=1, max_value=99,
                initial=base.accuracy if base else 50.0)
            if allow_idk:
                self.fields[f"idk:{name}"] = forms.FloatField(
                    label=f"{name}: expected \"I don't know\" (% of answers)", min_value=0, max_value=98,
                    required=False, help_text="Empty: the paper's share of the errors.")
            self.fields[f"model:{name}"] = forms.FloatField(
                label=f"{name}: expected model accuracy (%)", min_value=1, max_value=99,
                initial=base.model_accuracy if base else 93.5)

    def per_condition(self, prefix: str) -> dict[str, float]:
        return {name: self.cleaned_data[f"{prefix}:{name}"] for name in self.conditions
                if self.cleaned_data.get(f"{prefix}:{name}") is not None}


class PlanTargetForm(forms.Form):
    """Reading a stored plan: the target half-width and, optionally, a human - model difference to detect."""

    target = forms.FloatField(initial=3.0, min_value=0.1, max_value=50, label="Target half-width (points)")
    difference = forms.FloatField(required=False, min_value=0.5, max_value=99,
                                  label="Human - model difference to detect (points)")
    power = forms.FloatField(initial=0.8, min_value=0.5, max_value=0.99, required=False)

    def values(self) -> dict:
        data = self.cleaned_data if self.is_valid() else {}
        return {"target_halfwidth": data.get("target") or 3.0, "difference": data.get("difference"),
                "power": data.get("power") or 0.8}
