"""The Classification evaluator (Dassl's ``dassl.evaluation``), with scikit-learn metrics."""
from collections import OrderedDict

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score

from .registry import Registry

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)


@EVALUATOR_REGISTRY.register()
class Classification:
    """Accumulates predictions; ``evaluate`` prints ``* accuracy: X%`` lines and returns the metrics
    (in percent, accuracy first), optionally per-class accuracy and a row-normalised confusion matrix."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        self.cfg = cfg
        self._lab2cname = lab2cname
        self.reset()

    def reset(self):
        self._y_true = []
        self._y_pred = []

    def process(self, mo, gt):
        self._y_pred.extend(mo.max(1)[1].cpu().tolist())
        self._y_true.extend(gt.cpu().tolist())

    def evaluate(self):
        y_true, y_pred = np.asarray(self._y_true), np.asarray(self._y_pred)
        total = len(y_true)
        correct = int((y_true == y_pred).sum())
        acc = 100.0 * correct / total
        err = 100.0 - acc
        macro_f1 = 100.0 * f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))
        results = OrderedDict(accuracy=acc, error_rate=err, macro_f1=macro_f1)
        print("=> result\n"
              f"* total: {total:,}\n* correct: {correct:,}\n"
              f"* accuracy: {acc:.1f}%\n* error: {err:.1f}%\n* macro_f1: {macro_f1:.1f}%")

        if self.cfg.TEST.PER_CLASS_RESULT:
            print("=> per-class result")
            accs = []
            for label in np.unique(y_true):
                mask = y_true == label
                acc_i = 100.0 * float((y_pred[mask] == label).mean())
                accs.append(acc_i)
                name = self._lab2cname[label] if self._lab2cname else label
                print(f"* class: {label} ({name})\ttotal: {int(mask.sum()):,}\t"
                      f"correct: {int((y_pred[mask] == label).sum()):,}\tacc: {acc_i:.1f}%")
            mean_acc = float(np.mean(accs))
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc

        if self.cfg.TEST.COMPUTE_CMAT:
            cmat = confusion_matrix(y_true, y_pred, normalize="true")
            self.cmat = cmat
            torch.save({"cmat": torch.from_numpy(cmat)}, f"{self.cfg.OUTPUT_DIR}/cmat.pt")
            print(f"Confusion matrix is saved to {self.cfg.OUTPUT_DIR}/cmat.pt")
        return results
