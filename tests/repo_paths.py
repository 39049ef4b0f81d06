"""Where the repository and the optional real TOFU data are (tests skip what is absent)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_TOFU = REPO.parent / "shared" / "data" / "tofu"
