"""Trigger reconstruction in the manner of Neural Cleanse (Wang et al., S&P 2019): for every class,
the smallest trigger that sends clean images of the other classes to it; a class reached with an
abnormally small trigger is the likely backdoor target.

The trigger searched for is a universal additive perturbation delta (one image, added to every
input, clipped to [0, 1]) under an L-infinity budget, not Neural Cleanse's mask and pattern under
an L1 penalty. A prompt-learned backdoor leaves the image encoder untouched: the trigger can only
use directions the frozen encoder already has, and BAPLe finds its own trigger exactly as an
L-infinity-bounded universal perturbation (8/255 in the paper) beside a small patch. A mask-and-
pattern search has to pay the whole image's mask to express such full-image noise, so it measures
the patch part only; an L-infinity search measures the noise part, where BAPLe puts its budget.

Per class c the budget grows geometrically (``budgets``, in 1/255 units); at each budget delta is
refined by ``steps`` signed-gradient steps (starting from the previous budget's delta) on the
cross-entropy towards c over the trusted clean images not of class c. The search stops at the first
budget where at least ``success`` of them are predicted c; the minimal budget is interpolated in
log-budget between that budget and the previous one. Censored values: a class reached at the first
budget gets that budget (``below_first_budget``); a class not reached within the search's maximum is
stored as not reached (``min_budget`` null, ``censored`` true, ``search_max`` the largest budget tried),
never as a number, and drawn as a hatched bar at the maximum labelled "not reached".

Anomaly index per class (Neural Cleanse's): (median - x_c) / (1.4826 * MAD) over x = log minimal
budget (a censored class counts at the next budget up, ``censored_value``: it is at least that hard), so positive means easier to reach than the typical class; a class is flagged above 2.
The log makes the index independent of the budget unit and suits a geometric search. With two
classes the index is +-0.6745 whatever the budgets (the median is their mean), so it needs at
least three classes to say anything.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..display import save_figure
from .base import Defence, plot_grid, plot_title, progress, register_defence

MAD_CONSISTENCY = 1.4826  # MAD of a normal sample times this estimates its standard deviation
FLAG_ABOVE = 2.0


def _logits(trainer, images, delta, context):
    return trainer.model.eval_logits((images + delta).clamp(0, 1), context).float()


@torch.no_grad()
def success_rate(trainer, images, delta, target, context, batch_size):
    hits = 0
    for chunk in images.split(batch_size):
        hits += int((_logits(trainer, chunk.to(trainer.device), delta, context).argmax(1) == target).sum())
    return hits / len(images)


def search_class(trainer, images, target, budgets, steps, success, context, batch_size):
    """Minimal universal L-infinity budget (1/255 units) that sends ``success`` of ``images`` to ``target``."""
    delta = torch.zeros((1, *images.shape[1:]), device=trainer.device)
    curve = []
    for budget in budgets:
        eps = budget / 255
        step_size = 2.5 * eps / steps  # Madry et al.'s PGD step: the budget is crossed in ~steps/2.5 steps
        for _ in range(steps):
            delta.requires_grad_(True)
            grad = torch.zeros_like(delta)
            for chunk in images.split(batch_size):
                logits = _logits(trainer, chunk.to(trainer.device), delta, context)
                loss = F.cross_entropy(logits, torch.full((len(chunk),), target, device=trainer.device),
                                       reduction="sum")
                grad += torch.autograd.grad(loss, delta)[0]
            delta = (delta.detach() - step_size * grad.sign()).clamp(-eps, eps)
        curve.append({"budget": budget, "success": success_rate(trainer, images, delta, target, context,
                                                                batch_size)})
        if curve[-1]["success"] >= success:
            break
    reached = curve[-1]["success"] >= success
    return {"min_budget": interpolated_budget(curve, success), "reached": reached, "censored": not reached,
            "search_max": budgets[-1], "below_first_budget": reached and len(curve) == 1, "curve": curve}


def censored_value(budgets):
    """The budget a class not reached within ``budgets`` counts at in the anomaly index: the next one up
    (it needs at least the maximum; the index only ranks, and this keeps it above every reached class)."""
    growth = budgets[-1] / budgets[-2] if len(budgets) > 1 else 2.0
    return budgets[-1] * growth


def interpolated_budget(curve, success):
    """The budget where the success rate crosses ``success``, linear in log-budget between the last
    two budgets tried; the first budget when it already succeeds; None (censored: not reached within
    the search) when none does."""
    last = curve[-1]
    if last["success"] < success:
        return None
    if len(curve) == 1:
        return last["budget"]
    before = curve[-2]
    t = (success - before["success"]) / max(last["success"] - before["success"], 1e-12)
    t = min(max(t, 0.0), 1.0)
    return math.exp(math.log(before["budget"]) + t * (math.log(last["budget"]) - math.log(before["budget"])))


def anomaly_indices(values):
    """Neural Cleanse's anomaly index of each value (positive: smaller than the median); None for all
    when the values do not spread (MAD 0)."""
    x = np.log(np.asarray(values, dtype=np.float64))
    median = np.median(x)
    mad = MAD_CONSISTENCY * np.median(np.abs(x - median))
    if mad == 0:
        return [None] * len(x)
    return [float(v) for v in (median - x) / mad]


def reconstruct(trainer, images, labels, budgets, steps, success=0.9, max_images=64, seed=0, log=print,
                run_name=""):
    """Per class: minimal budget, whether it was reached, its success curve and anomaly index."""
    trainer.set_model_mode("eval")
    batch_size = trainer.cfg.DATALOADER.TEST.BATCH_SIZE
    generator = torch.Generator().manual_seed(seed)
    classes = []
    with trainer.autocast(trainer.precision()):
        with torch.no_grad():
            context = trainer.model.eval_context()
        for target in progress(range(trainer.num_classes), f"{run_name + ': ' if run_name else ''}reconstruct"):
            others = images[labels != target]
            others = others[torch.randperm(len(others), generator=generator)[:max_images]]
            result = search_class(trainer, others, target, budgets, steps, success, context, batch_size)
            log(f"  class {target}: " + (f"minimal budget {result['min_budget']:.2f}/255" if result["reached"]
                                         else f"not reached within {budgets[-1]:g}/255"))
            classes.append({"class": target, "name": trainer.lab2cname[target], "num_images": len(others), **result})
    ranked = [censored_value(budgets) if c["censored"] else c["min_budget"] for c in classes]
    for entry, index in zip(classes, anomaly_indices(ranked)):
        entry["anomaly_index"] = index
        entry["flagged"] = index is not None and index > FLAG_ABOVE
    return {"budgets": list(budgets), "steps": steps, "success": success, "flag_above": FLAG_ABOVE,
            "classes": classes, "flagged": [c["class"] for c in classes if c["flagged"]]}


@register_defence
class Reconstruct(Defence):
    """Per class the smallest universal L-infinity trigger found over the trusted clean images of the
    other classes, and Neural Cleanse's anomaly index of those budgets."""

    name = "reconstruct"
    summary_headers = ("flagged classes; target's anomaly index",)

    def measure(self, context):
        settings, trainer, log = context.settings, context.trainer, context.log
        trusted, trusted_labels = context.trusted()
        context.say(f"  reconstruct: {trainer.num_classes} classes, budgets "
                    f"{settings.budgets[0]}..{settings.budgets[-1]}/255")
        context.block(f"reconstruct: budgets {settings.budgets[0]:g}..{settings.budgets[-1]:g}/255, "
                      f"{settings.reconstruct_steps} steps each")
        return {"reconstruct": reconstruct(
            trainer, trusted, trusted_labels, settings.budgets, settings.reconstruct_steps,
            settings.reconstruct_success, settings.reconstruct_images, settings.seed,
            log=lambda line: print(line, file=log, flush=True), run_name=context.name)}

    def plot(self, report, path):
        if "reconstruct" not in report:
            return None
        fig, axes = plot_grid(2, width=4.2, height=3.4)
        classes = report["reconstruct"]["classes"]
        names = [c["name"][:12] for c in classes]
        target = report["target_class"]
        colours = ["C3" if c["class"] == target else "C0" for c in classes]
        search_max = report["reconstruct"]["budgets"][-1]
        heights = [search_max if c["min_budget"] is None else c["min_budget"] for c in classes]
        bars = axes[0].bar(names, heights, color=colours)
        for bar, c in zip(bars, classes):
            if c["min_budget"] is None:  # censored: drawn at the maximum, hatched, never as a measured value
                bar.set_hatch("//")
                bar.set_alpha(0.4)
                axes[0].annotate("not reached", (bar.get_x() + bar.get_width() / 2, search_max), ha="center",
                                 va="bottom", fontsize=6)
        axes[0].axhline(search_max, color="0.4", ls=":", lw=1, label=f"search maximum {search_max:g}/255")
        axes[0].legend(fontsize=6, loc="lower right")  # the "not reached" labels sit at the top
        axes[0].set_yscale("log")
        axes[0].yaxis.set_major_formatter("{x:g}")
        axes[0].yaxis.set_minor_formatter("{x:g}")
        axes[0].set_ylabel("minimal universal L-inf budget (/255)")
        axes[1].bar(names, [c["anomaly_index"] or 0 for c in classes], color=colours)
        axes[1].axhline(report["reconstruct"]["flag_above"], color="k", ls="--", lw=1)
        axes[1].set_ylabel("anomaly index")
        for ax in axes:
            ax.set_xlabel("class" + ("" if target is None else " (red: the backdoor target)"))
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        fig.suptitle(f"Trigger reconstruction: {plot_title(report)}", fontsize=9)
        return save_figure(fig, path)

    def csv_rows(self, report):
        for c in report.get("reconstruct", {}).get("classes", []):
            notes = [word for word, on in (("target", c["class"] == report["target_class"]), ("flagged", c["flagged"]))
                     if on]
            budget = (f"not reached within {c['search_max']:g}/255" if c["min_budget"] is None
                      else f"min budget {c['min_budget']:.3g}/255")
            yield {"defence": "reconstruct", "setting": f"class {c['class']} {budget}",
                   "value": c["anomaly_index"], "note": " ".join(notes)}

    def summary_cells(self, report):
        rec = report.get("reconstruct")
        if not rec:
            return ["-"]
        target = next((c for c in rec["classes"] if c["class"] == report["target_class"]), None)
        index = ("-" if target is None else
                 "n/a (no spread)" if target["anomaly_index"] is None else f"{target['anomaly_index']:.2f}")
        return [f"{', '.join(map(str, rec['flagged'])) or 'none'}; target {index}"]
