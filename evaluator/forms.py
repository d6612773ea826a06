"""Forms of the staff study pages (dashboard and planning). No report stack here: the views pass its defaults."""

from django import forms


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
    """What to simulate: the expected values per condition (``expected``: condition -> ConditionPlan, the CLIP
    paper's Table 2 by default) and the simulation's size."""

    n_studies = forms.IntegerField(min_value=2, max_value=100, label="Simulated studies per size")
    n_resamples = forms.IntegerField(min_value=50, max_value=2000, label="Bootstrap resamples per study")

    def __init__(self, *args, conditions: list[str], allow_idk: bool, expected: dict, n_studies: int,
                 n_resamples: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.conditions = conditions
        self.fields["n_studies"].initial, self.fields["n_resamples"].initial = n_studies, n_resamples
        for name in conditions:
            base = expected.get(name)
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
