"""The claims of ``rows.yaml``'s families as comparisons: ``Expectation`` (``a > b``, ``a ≥ b``, ``a ≈ b``).

Read by ``spec`` (checked when rows.yaml is loaded) and decided by ``results`` (with intervals).
"""

from __future__ import annotations

from dataclasses import dataclass

# COCO rows carry AP_M / AP_L (area), CrowdPose rows AP_easy / AP_medium / AP_hard (crowd index,
# hhrnet.evaluation.CROWD_METRIC_NAMES); a row without a key has None there
METRIC_KEYS = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AP_easy", "AP_medium", "AP_hard")
OPERATORS = (">", "≥", "≈")  # higher; not lower beyond noise; within noise


@dataclass(frozen=True)
class Expectation:
    """One comparison a claim implies: ``a > b`` (higher AP), ``a ≥ b`` (not lower beyond noise), ``a ≈ b``.

    A side may name another metric of the summary row: ``crowdpose_w32_512_ss.AP_easy >
    crowdpose_w32_512_ss.AP_hard`` compares two metrics of one row (``metric_a``, ``metric_b``).
    """

    a: str
    op: str
    b: str
    metric_a: str = "AP"
    metric_b: str = "AP"

    @classmethod
    def parse(cls, text: str) -> "Expectation":
        parts = text.split()
        if len(parts) != 3 or parts[1] not in OPERATORS:
            raise ValueError(f"expectation {text!r} is not 'evaluation >|≥|≈ evaluation'")
        (a, ma), (b, mb) = (_side(parts[0], text), _side(parts[2], text))
        return cls(a, parts[1], b, ma, mb)

    @property
    def text(self) -> str:
        def side(name: str, metric: str) -> str:
            return name if metric == "AP" else f"{name}.{metric}"
        return f"{side(self.a, self.metric_a)} {self.op} {side(self.b, self.metric_b)}"

    @property
    def of_ap(self) -> bool:
        """Both sides are AP: a comparison of two rows on the same images, which has an interval."""
        return self.metric_a == self.metric_b == "AP"


def _side(side: str, text: str) -> tuple[str, str]:
    """``evaluation`` (its AP) or ``evaluation.METRIC`` (a key of ``METRIC_KEYS``)."""
    name, _, metric = side.partition(".")
    if metric and metric not in METRIC_KEYS:
        raise ValueError(f"expectation {text!r}: unknown metric {metric!r} (metrics: {', '.join(METRIC_KEYS)})")
    return name, metric or "AP"
