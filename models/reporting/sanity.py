"""The report's sanity guards: results that a reviewer would stop at before reading any comparison.

- **below chance**: a method whose interval of a metric lies wholly below that metric's chance level
  (an AUC interval below 0.5, a ranking metric below k/n): a sign or label error, a collapse, or a
  genuine anti-signal, to be ruled out before its numbers are read;
- **degenerate**: a constant scorer on a frame, or two methods with identical scores (or identical
  rankings of every list): their comparisons are no test;
- **no candidate named**: a generation that names no candidate in most lists, so its generated
  metrics measure the answer format, not the recommendation.

Each finding is a sentence; the report prints them and the `evaluation_report` asset turns each kind
into a WARN check. No Dagster here.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

CHECKS = {
    "below_chance": "no method's interval lies below the chance level",
    "degenerate": "no constant scorer and no two methods with identical scores",
    "no_candidate_named": "every generation names a candidate in most lists",
}


def below_chance(frame: str, short: str, result: dict, chance: dict, counts: dict | None = None) -> list[dict]:
    """One finding per method of a frame with metrics whose 95 % interval on all of the frame lies
    below chance. (Warm and cold are not read: a CF model's cold rows are at chance or just below by
    construction, a zero vector beside warm candidates' scores; the report says so. The generated
    metrics of a generation that names no candidate in most lists are `no_candidate_named`'s.)"""
    silent = {f["methods"][0] for f in no_candidate_named(frame, short, counts or {})}
    out = []
    for method, subsets in result.items():
        low = []
        for subset, ests in subsets.items():
            if subset != "all":
                continue
            for metric, est in ests.items():
                if method in silent and metric.startswith("generated_"):
                    continue
                hi, level = est.get("ci_high"), chance.get(subset, {}).get(metric)
                if est.get("not_applicable") or hi is None or level is None or math.isnan(hi):
                    continue
                if hi < level:
                    low.append(f"{metric} {est['value']:.4f} [{est['ci_low']:.3f}, {hi:.3f}] against chance "
                               f"{level:.4f}")
        if low:
            out.append({"check": "below_chance", "frame": frame, "methods": [method],
                        "text": f"{method} lies below chance on {short}: " + "; ".join(low)})
    return out


def degenerate(frame: str, short: str, signatures: dict[str, np.ndarray], constant: dict[str, bool]) -> list[dict]:
    """Constant scorers, and pairs of methods whose signatures (scores on the frame's rows, or their
    ranks of every list) are identical."""
    out = [{"check": "degenerate", "frame": frame, "methods": [m],
            "text": f"{m} is constant on {short}: it ranks nothing (its metrics are the chance level)"}
           for m, is_constant in constant.items() if is_constant]
    for a, b in combinations(signatures, 2):
        if not constant.get(a) and np.array_equal(signatures[a], signatures[b]):
            out.append({"check": "degenerate", "frame": frame, "methods": [a, b],
                        "text": f"{a} and {b} score {short} identically: their comparison is no test"})
    return out


def no_candidate_named(frame: str, short: str, counts: dict) -> list[dict]:
    """Generations that name no candidate in more than half of a frame's lists: one finding per
    method (the report prints those with the same counts on one line)."""
    out = []
    for method, subsets in counts.items():
        c = subsets.get("all")
        if c and c["lists"] and c["no_candidate_named"] > c["lists"] / 2:
            out.append({"check": "no_candidate_named", "frame": frame, "methods": [method],
                        "text": f"{method}'s generation names no candidate in {c['no_candidate_named']} of "
                                f"{c['lists']} lists of {short}: its generated metrics measure the answer format",
                        "short": f"names no candidate in {c['no_candidate_named']} of {c['lists']} lists of {short}"})
    return out


def markdown(findings: list[dict]) -> list[str]:
    lines = ["## Sanity checks", "",
             "What a reviewer checks before reading a comparison: " + "; ".join(CHECKS.values()) + ". Each kind is a "
             "WARN check of the `evaluation_report` asset. An estimate without an interval (fewer than "
             "`evaluation.min_subset_rows` users, ‡) is not read against chance: it cannot be told from it.", ""]
    if not findings:
        return lines + ["No finding.", ""]
    grouped: dict[tuple, list[str]] = {}
    for f in findings:  # the same finding of several methods on one line
        key = (f["check"], f.get("short") or f["text"])
        grouped.setdefault(key, []).extend(f["methods"])
    out = []
    for (check, text), methods in grouped.items():
        if check == "no_candidate_named":
            text = f"{', '.join(methods)}: the generation {text}; their generated metrics measure the answer format"
        out.append(f"- **{check.replace('_', ' ')}**: {text}.")
    return lines + out + [""]
