"""Layout of the monitor's home directory (``$VERTICORE_HOME/finance_sentiment`` by default)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"
APP_DIR_NAME = "finance_sentiment"


def verticore_home() -> Path:
    """``$VERTICORE_HOME`` or the core's default (``<repo>/.verticore``)."""
    try:
        from verticore.dashboard import home

        return home()
    except ImportError:  # pragma: no cover - older core
        from verticore.settings import get_settings

        return get_settings().home or Path(".verticore")


@dataclass(frozen=True)
class AppPaths:
    """Files of one monitor installation."""

    root: Path

    @classmethod
    def default(cls) -> "AppPaths":
        return cls(verticore_home() / APP_DIR_NAME)

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
    def watchlist(self) -> Path:
        return self.root / "watchlist.csv"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"
