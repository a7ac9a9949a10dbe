"""Where the checkout's own folders are: every module that finds config/ or workflow/ (or
names a path relative to the checkout) starts from this one root."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
