"""Clean and backdoor metrics from per-image predictions (fractions in [0, 1]), and the training log's
loss of the clean and of the poisoned rows of a batch."""
import numpy as np
import torch.nn.functional as F
from sklearn.metrics import f1_score


def clean_metrics(labels, pred, per_class=False):
    """Dassl's classification metrics of clean predictions, as fractions: ``accuracy``, ``error_rate``,
    ``macro_f1`` over the labels present and, with ``per_class``, ``perclass_accuracy`` (their mean)."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    present = np.unique(labels)
    accuracy = float((labels == pred).mean())
    out = {"accuracy": accuracy, "error_rate": 1.0 - accuracy,
           "macro_f1": float(f1_score(labels, pred, average="macro", labels=present))}
    if per_class:
        out["perclass_accuracy"] = float(np.mean([(pred[labels == c] == c).mean() for c in present]))
    return out


def backdoor_metrics(labels, clean_pred, triggered_pred, target):
    """Metrics of a triggered test set, every image carrying the trigger.

    - ``accuracy``: the paper's backdoor accuracy (BA): triggered images predicted as ``target``,
      over all test images (those already of the target class included, so chance is about 1/C).
    - ``asr_non_target``: the same over images whose true class is not the target (BackdoorBench's ASR).
    - ``macro_f1``: macro F1 of triggered predictions against all-target labels over the labels present
      in those (i.e. the target class), as the reference code reports it through Dassl's evaluator.
    - ``agreement``: triggered prediction equals the clean prediction.
    """
    labels, clean_pred, triggered_pred = (np.asarray(a) for a in (labels, clean_pred, triggered_pred))
    hit = triggered_pred == target
    non_target = labels != target
    return {
        "accuracy": float(hit.mean()),
        "asr_non_target": float(hit[non_target].mean()) if non_target.any() else None,
        "macro_f1": float(f1_score(np.full_like(labels, target), triggered_pred, average="macro", labels=[target])),
        "agreement": float((triggered_pred == clean_pred).mean()),
    }


def split_losses(logits, labels, poisoned):
    """Mean cross-entropy of the clean and of the poisoned rows, for logging (NaN-free: absent -> skipped)."""
    out = {}
    for name, rows in (("loss_clean", ~poisoned), ("loss_poison", poisoned)):
        if rows.any():
            out[name] = F.cross_entropy(logits[rows], labels[rows]).item()
    return out
