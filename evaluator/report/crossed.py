"""Two-way weighted sums of one row of a crossed design (participants x items): the core of every bootstrap.

Table 2's rows (:class:`.bootstrap.RowLayout`), the risk-coverage, alignment and combination analyses all
resample through :class:`CrossedSums`, with the weights drawn by :class:`.bootstrap.WeightSampler`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_DENSE_CELLS = 40_000_000  # participants x items of one row above which W @ A becomes a gather


class CrossedSums:
    """Two-way weighted sums of one row of a crossed design (participants x items), per class of its items.

    Answer values x_pi (e.g. right, guessed) are summed as sum_i V_i sum_p W_p x_pi; item values y_i (e.g. a
    majority vote's outcome, fixed on the original answers) as sum_i V_i u_i y_i with u_i = the mean W of
    item i's answerers. ``w=None`` holds participants fixed (all W_p = 1, so u_i = 1): model rows, or items-only
    resampling. Table 2's rows (:class:`RowLayout`), the risk-coverage, alignment and combination analyses all
    resample through this one class.
    """

    def __init__(self, *, n_items: int, item_codes: np.ndarray, item_class: np.ndarray, subject: np.ndarray,
                 item: np.ndarray, answer_values: Mapping[str, np.ndarray],
                 item_values: Mapping[str, np.ndarray] | None = None):
        order = np.argsort(item_class, kind="stable")
        self.item_codes = np.asarray(item_codes, dtype=np.int64)[order]
        cls = np.asarray(item_class)[order]
        self.class_starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]]) if len(cls) else np.zeros(0, int)
        self.class_codes = cls[self.class_starts]
        self.item_values = {name: np.asarray(y, dtype=float)[order] for name, y in (item_values or {}).items()}
        local = np.full(n_items, -1, dtype=np.int64)
        local[self.item_codes] = np.arange(len(self.item_codes))
        self.subject_codes, person = np.unique(subject, return_inverse=True)
        item_local = local[item]
        if (item_local < 0).any():
            raise ValueError("an answer's item is not among the row's items")
        values = {"answered": np.ones(len(item_local)), **{n: np.asarray(x, dtype=float) for n, x in answer_values.items()}}
        n_local = len(self.item_codes)
        self.k = np.bincount(item_local, minlength=n_local).astype(float)
        self._fixed = {name: np.bincount(item_local, weights=x, minlength=n_local) for name, x in values.items()}
        self.cells = len(self.subject_codes) * n_local
        self.dense = self.cells <= _DENSE_CELLS
        self.width = n_local if self.dense else len(item_local)
        if self.dense:
            self._matrices = {}
            for name, x in values.items():
                m = np.zeros((len(self.subject_codes), n_local), dtype=np.float32)
                m[person, item_local] = x
                self._matrices[name] = m
        else:  # answers sorted by item: per-item sums of W are segment sums of a gather
            order = np.argsort(item_local, kind="stable")
            self._person = person[order]
            self._starts = np.flatnonzero(np.r_[True, item_local[order][1:] != item_local[order][:-1]])
            self._values = {name: x[order] for name, x in values.items()}

    @property
    def n_items(self) -> int:
        return len(self.item_codes)

    def person_sums(self, w: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per item (in the row's class order): sum_p W_p x_pi for each answer value (1 x items when w is None)."""
        if w is None:
            return {name: x[None, :] for name, x in self._fixed.items()}
        w = w[:, self.subject_codes]
        if self.dense:
            w32 = w.astype(np.float32)
            return {name: (w32 @ m).astype(float) for name, m in self._matrices.items()}
        gathered = w[:, self._person]
        return {name: np.add.reduceat(gathered * x, self._starts, axis=1) for name, x in self._values.items()}

    def item_weights(self, w: np.ndarray | None) -> np.ndarray:
        """u_i, the mean participant weight of item i's answerers (1 when w is None)."""
        if w is None:
            return np.ones((1, self.n_items))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.person_sums(w)["answered"] / self.k

    def per_class(self, x: np.ndarray, v_local: np.ndarray) -> np.ndarray:
        """resamples x classes: sum over each class's items of V_i x_i (x broadcast to V's shape)."""
        return np.add.reduceat(np.broadcast_to(x, v_local.shape) * v_local, self.class_starts, axis=1)

    def sums(self, v: np.ndarray, w: np.ndarray | None) -> dict[str, np.ndarray]:
        """resamples x classes: ``items`` (sum V u), every answer value and every item value (sum V u y)."""
        v = v[:, self.item_codes]
        person = self.person_sums(w)
        if w is None:
            u = np.ones((1, self.n_items))
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                u = person["answered"] / self.k
        vu = v * u  # V_i u_i: an item's weight in the item sums (a majority vote, the item count)
        out = {"items": np.add.reduceat(vu, self.class_starts, axis=1)}
        for name, x in person.items():
            out[name] = self.per_class(x, v)
        for name, y in self.item_values.items():
            out[name] = self.per_class(y, vu)
        return out
