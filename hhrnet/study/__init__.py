"""The study driver: expand ``experiments/rows.yaml`` for a profile and run what is missing or stale.

A *training* run executes ``experiments/train.ipynb`` and leaves a checkpoint in the cache; an
*evaluation* run executes ``experiments/evaluate.ipynb`` on that checkpoint (or on published weights).
Both write ``experiments/results/<profile>/<run>/`` (``metrics.json``, the executed notebook, figures).

* ``spec``: rows.yaml as typed dataclasses, checked on load;
* ``plan``: ``Study``, from the definition to configurations and runs;
* ``runner``: stamps, locks, papermill, publishing a finished run;
* ``provenance``: which code produced a result (the sources a run imported, file by file);
* ``notebook``: what the notebooks call (``train_for_study``, ``evaluate_for_study``, ``write_metrics``);
* ``claims``: a family's expectations (``Expectation``), as rows.yaml writes them;
* ``results``: ``gather``, ``summary_rows``, and the intervals, A/A calibration and verdicts of the families;
* ``preregistration``: when each family's expectations last changed, beside its first result.

``python -m hhrnet study --profile P`` (parsed in ``hhrnet.cli``) runs it.
"""

from .errors import RunFailed, SpecError, StudyError, StudyLocked
from .notebook import config_from_yaml, evaluate_for_study, model_size, train_for_study, write_metrics
from .plan import Run, Study
from .claims import METRIC_KEYS, Expectation
from .preregistration import Registration, preregistration
from .results import DIAGNOSTIC_KEYS, NOISE_TOLERANCE, diagnostic_metrics, gather, summary_rows
from .provenance import code_changes, code_used, result_id
from .runner import execute, gather_current, generate_synthetic, run_stamp, run_status, run_study, run_workers
from .spec import StudySpec, load_spec

__all__ = ["DIAGNOSTIC_KEYS", "METRIC_KEYS", "NOISE_TOLERANCE", "Expectation", "Registration", "Run", "RunFailed",
           "SpecError", "Study", "StudyError", "StudyLocked", "StudySpec", "code_changes", "code_used",
           "config_from_yaml", "diagnostic_metrics", "evaluate_for_study", "execute", "gather", "gather_current",
           "generate_synthetic",
           "load_spec", "model_size", "preregistration", "result_id", "run_stamp", "run_status", "run_study",
           "run_workers", "summary_rows", "train_for_study", "write_metrics"]
