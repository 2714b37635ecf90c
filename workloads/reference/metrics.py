"""Hold-out metrics for a rare-positive problem: PR-AUC (average precision) and recall at a fixed false-positive rate.

ROC-AUC flatters a model when fraud is 1 % of traffic; what a fraud team buys is how much fraud it catches for the
alert volume it can review, i.e. recall at a false-positive budget (1 % of genuine transactions flagged).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_curve


def pr_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    return float(average_precision_score(y_true, scores))


def recall_at_fpr(y_true: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    """Highest recall (TPR) over thresholds whose false-positive rate does not exceed `max_fpr`."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    allowed = fpr <= max_fpr
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def evaluate(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {"pr_auc": pr_auc(y_true, scores), "recall_at_1pct_fpr": recall_at_fpr(y_true, scores, 0.01)}
