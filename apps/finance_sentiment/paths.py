"""Layout of the monitor's home directory (``$VERTICORE_HOME/finance_sentiment`` by default)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from verticore.paths import app_home, home

SAMPLES = Path(__file__).resolve().parent / "samples"
APP_DIR_NAME = "finance_sentiment"


def verticore_home() -> Path:
    """The Verticore home (``$VERTICORE_HOME``, else the core's default): :func:`verticore.paths.home`."""
    return home()


@dataclass(frozen=True)
class AppPaths:
    """Files of one monitor installation."""

    root: Path

    @classmethod
    def default(cls) -> "AppPaths":
        return cls(app_home(APP_DIR_NAME))

    @property
    def db(self) -> Path:
        return self.root / "monitor.db"

    @property
    def sentiment_model(self) -> Path:
        return self.root / "models" / "sentiment"

    @property
    def topic_model(self) -> Path:
        return self.root / "models" / "topics"

    @property
    def target_sentiment_model(self) -> Path:
        """The optional target-aware (entity-level) sentiment model (``finance-sentiment train-targets``)."""
        return self.root / "models" / "target_sentiment"

    @property
    def watchlist(self) -> Path:
        return self.root / "watchlist.csv"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"
