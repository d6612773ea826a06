"""The definitions printed in the report page (docs/reports.md has the long form)."""

DEFINITIONS = (
    ("Averaging",
     "Default: mean per-class accuracy (Parkhi et al. 2012; the paper's metric). Each metric is computed per "
     "class (the items' true class) and the classes are averaged with equal weight. With --average micro every "
     "metric is a plain mean over answers (accuracies) or items (majority votes)."),
    ("Accuracy",
     "Over all answers; an 'idk' (I don't know) answer counts as wrong. Per class: correct answers / answers "
     "to that class's items (answer-level mean within the class)."),
    ("Accuracy on guesses",
     "Over the answers other than 'idk'. Per class: correct / non-idk answers; a class with no guesses is left "
     "out of the mean over classes."),
    ("Majority vote, full dataset",
     "Per item, the unique most frequent answer among all its answers, 'idk' included. A tie for the top, or "
     "an 'idk' majority, counts as wrong. Per class: the share of its items whose vote is right."),
    ("Majority vote on guesses",
     "The same after dropping the 'idk' answers; an item with no guesses, or a tie, counts as wrong."),
    ("Models",
     "A model gives one answer per item, so its four values coincide unless it abstains ('idk'). Each model "
     "run is scored in the condition it is listed under."),
    ("Humans",
     "All human participants of a condition are pooled into one row. Simulated and attention-failed "
     "participants are excluded unless the report was asked to include them (see the header)."),
    ("95% CI",
     "Percentile bootstrap (2.5 and 97.5 % of the resampled values). Default (two-way): participants and items "
     "are both drawn with replacement (items within each class, so every class keeps its number of items); "
     "an answer weighs W_p·V_i (participant and item draw counts); a majority vote keeps each item's outcome "
     "and weighs it V_i times the mean W of its answerers. Model rows resample items. With --resample items, "
     "items only; with --resample participants, participants only, votes recomputed (a model row then has no "
     "spread)."),
    ("Paired differences",
     "Human minus each model of the same condition, and each row's gain from an earlier to a later condition, "
     "in percentage points; the CI is taken over the differences within each resample (the same draws for both "
     "rows)."),
    ("McNemar",
     "Human majority vote (full dataset) against each model in the same condition, on the items both have; "
     "exact two-sided binomial test on the discordant items (p = min(1, 2·P[X ≤ min(b, c)]), X ~ Bin(b + c, ½))."),
    ("Fleiss' kappa",
     "Agreement among humans per condition; the categories are the answers, 'idk' included. Generalised for "
     "unequal numbers of raters: per-item agreement P_i = Σ n_ij(n_ij−1) / (n_i(n_i−1)) over items with at "
     "least two answers, P̄ their unweighted mean, P_e = Σ p_j² with p_j the category shares; "
     "κ = (P̄ − P_e)/(1 − P_e). With equal raters this is Fleiss (1971)."),
    ("Error consistency",
     "Geirhos et al. (2020)'s κ = (c_obs − c_exp)/(1 − c_exp), c_exp = p_a·p_b + (1−p_a)(1−p_b), in a form that "
     "holds when people share few items: p = each subject's accuracy over all of their answers in the "
     "condition, c_obs over a pair's common items, and pairs weighted by their number of common items "
     "(EC = Σ n_ab·κ_ab / Σ n_ab). With everyone answering every item this is the plain mean of per-pair κ "
     "(model-vs-human's definition). human-human: all pairs of participants; human-model: each participant "
     "against that model; noise ceiling: each participant against the majority of the other answers to the "
     "same items (ties and an 'idk' majority count as wrong). Two conventions: 'idk' counted as an error, and "
     "'idk' answers dropped. CIs: two-way bootstrap of participants and items. Pairs with undefined κ "
     "(c_exp = 1) are left out."),
    ("Know what they don't know",
     "The zero-shot → one-shot gain in plain accuracy, split by the zero-shot 'idk' answers. Within-subject "
     "(someone answered an item in both): per participant-item pair, by that participant's own zero-shot idk. "
     "Otherwise per item, split by a majority (> ½) of idk answers and by any idk answer."),
    ("Calibration",
     "Expected calibration error over 15 equal-width bins of the model's probability of its answer "
     "(p_response): Σ_b (n_b / N)·|accuracy_b − mean confidence_b|. 'idk' answers are skipped."),
    ("Response times",
     "Median and interquartile range (linear-interpolated quartiles) of rt_ms; whiskers at the most extreme "
     "values within 1.5 IQR of the box."),
    ("Risk-coverage (\"I don't know\" as abstention)",
     "A model abstains when its confidence (its top probability) is below a threshold; coverage = share of "
     "its items it keeps, accuracy = accuracy on the kept items (mean over classes of per-class values, as "
     "Table 2). The humans of a condition are one point: coverage = share of non-idk answers, accuracy = "
     "accuracy on guesses. The model's accuracy at the humans' coverage is interpolated linearly between the "
     "two nearest thresholds; its CI and the difference model − humans come from the two-way bootstrap (the "
     "humans' coverage is recomputed in each resample and the model's curve read there)."),
    ("Soft labels",
     "Per condition and item, the distribution of the human answers (soft_labels.csv; CIFAR-10H style): "
     "share of all answers, and the soft label = share of the guesses (idk left out)."),
    ("Cross-entropy, KL, human entropy",
     "Per item with guesses and a model probability vector: H(h, m) = −Σ_c h_c log m_c, the entropy "
     "H(h) = −Σ_c h_c log h_c of the soft label h, and KL(h‖m) = H(h, m) − H(h), in nats, averaged over "
     "items; m is floored at 1e-12. With few answers per item h is noisy and KL stays above 0 even for a model "
     "that knows the people's true distribution: compare models and conditions."),
    ("Difficulty alignment (Spearman)",
     "Spearman's ρ between human accuracy (idk = wrong) and the model's probability of the true class, over "
     "items and over classes (the paper's Fig. 16 as a number); each human condition against the model of the "
     "same condition and against its zero-shot row. CIs: items (two-way, each item's values fixed, weight "
     "V_i·u_i) or classes (drawn with replacement)."),
    ("People and model together",
     "The model's temperature-scaled probabilities combined with the human answers through a confusion "
     "matrix Θ[c, a] = P(answer a | true class c) (Kerrigan et al. 2021; Steyvers et al. 2022): score(c) = "
     "log m_c / T + Σ_j log Θ[c, a_j], argmax (a tie counts as wrong). Θ (Dirichlet-smoothed) and T are "
     "fitted on the other folds' items only (5 folds within each class). Compared on the same items with "
     "humans alone (one answer; majority vote; the same confusion-model vote without the model) and the model "
     "alone; model + one human combines the model with each single answer. CIs: two-way bootstrap with the "
     "combined outcomes held fixed (the fitting is not redone per resample)."),
)
