"""Signals the task loop sends inside its own transaction, for the quality and fraud engines.

Receivers run in the sender's transaction: what they write commits or rolls back with the
judgment. They must not commit, and they must take locks only after the sender's (task row,
then the job's money).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A worker's answer was recorded (status submitted, or accepted/rejected for gold), before
#: the task's consensus is decided. Sent with the Assignment; keywords `job` and `task`.
judgment_submitted = _signals.signal("judgment-submitted")
