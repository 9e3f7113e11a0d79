"""Loss-spike detection: a smoothed training loss far above its best after warm-up.

m_n is an exponential moving average of the per-step loss, m_n = d m_{n-1} + (1 - d) L_n with
d = 0.98 (about 50 steps), started at the first loss; m* is the least m_n since warm-up
ended. The run is *diverging* from the step where m_n > 4 m* until m_n < 2 m* (hysteresis,
so an average hovering near the threshold does not flap). One outlier batch moves m_n by
2% of its excess: a single batch at 100x the usual loss lifts m_n to about 3 m*, below the
threshold, while a loss that stays 10x higher crosses it within about 20 steps. The ratio
needs m* > 0: losses that can be negative (ism, ssm) are not checked once m* <= 0.
"""

from __future__ import annotations

from typing import Any

DECAY = 0.98
FACTOR = 4.0
RECOVER = 2.0


class LossSpikes:
    """The divergence rule of the module docstring, fed one finite loss per step."""

    def __init__(self) -> None:
        self.smoothed: float | None = None
        self.best: float | None = None
        self.diverging = False

    def update(self, loss: float, past_warmup: bool) -> bool:
        """Add one step's loss; True at the step where the run starts diverging."""
        m = loss if self.smoothed is None else DECAY * self.smoothed + (1 - DECAY) * loss
        self.smoothed = m
        if not past_warmup:
            return False
        if self.best is None or m < self.best:
            self.best = m
        if self.best <= 0:
            self.diverging = False
            return False
        if not self.diverging and m > FACTOR * self.best:
            self.diverging = True
            return True
        if self.diverging and m < RECOVER * self.best:
            self.diverging = False
        return False

    @property
    def ratio(self) -> float:
        """m_n / m* (nan before warm-up ends)."""
        if self.smoothed is None or not self.best:
            return float("nan")
        return self.smoothed / self.best

    def state_dict(self) -> dict[str, Any]:
        return {"smoothed": self.smoothed, "best": self.best, "diverging": self.diverging}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothed, self.best = state["smoothed"], state["best"]
        self.diverging = bool(state["diverging"])
