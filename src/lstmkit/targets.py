"""The kinds of output a task asks of its model (one list for the models, the tasks, the exporters and
the torch-free runtime, which is why this module imports nothing).

* at the last valid step of each sequence -> (B, output_size): ``class_last`` (classification),
  ``regress_last`` (one value), ``regress_horizon`` (several values ahead);
* at every step -> (B, T, output_size): ``class_steps`` (per-step classes, a language model),
  ``multilabel_steps`` (independent labels), ``regress_steps`` (values, e.g. forecast quantiles).
"""

from __future__ import annotations

LAST_TARGETS = ("class_last", "regress_last", "regress_horizon")
STEP_TARGETS = ("class_steps", "multilabel_steps", "regress_steps")
TARGETS = LAST_TARGETS + STEP_TARGETS
