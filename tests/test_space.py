"""The Space deploys as it is: its front matter, the same text where the docs quote it, the
gradio pin it names, and Git LFS rules for every binary file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from huggingface_hub import SpaceCard

REPO = Path(__file__).resolve().parents[1]


def front_matter(text: str) -> str:
    return re.match(r"---\n(.*?\n)---\n", text, re.S).group(1)


def test_the_front_matter_has_what_the_space_page_shows():
    card = SpaceCard.load(REPO / "README.md")
    data = card.data.to_dict()
    assert data["sdk"] == "gradio" and data["app_file"] == "app.py" and data["license"] == "mit"
    assert data["suggested_hardware"] == "cpu-basic"
    assert {"medical-imaging", "image-classification"} <= set(data["tags"])
    assert 0 < len(data["short_description"]) <= 60  # the Hub refuses a longer one


def test_sdk_version_is_the_gradio_pin_in_requirements():
    sdk = SpaceCard.load(REPO / "README.md").data.to_dict()["sdk_version"]
    pins = re.findall(r"^gradio(?:\[[^\]]*\])?==([\w.]+)\s*$", (REPO / "requirements.txt").read_text(), re.M)
    assert pins == [sdk], f"requirements.txt pins gradio {pins}, the Space runs {sdk}"


def test_the_docs_quote_the_readmes_front_matter():
    docs = (REPO / "docs" / "workbench.md").read_text(encoding="utf-8")
    quoted = re.search(r"```yaml\n(---\n.*?---\n)```", docs, re.S).group(1)
    assert front_matter(quoted) == front_matter((REPO / "README.md").read_text(encoding="utf-8"))


def test_every_tracked_binary_file_goes_through_lfs():
    tracked = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=REPO, check=True).stdout.decode()
    binary = [name for name in tracked.split("\0") if name and (REPO / name).is_file()
              and b"\0" in (REPO / name).read_bytes()[:8000]]
    assert len(binary) > 20  # weights, packs, examples
    attrs = subprocess.run(["git", "check-attr", "filter", "--", *binary], capture_output=True, text=True, cwd=REPO,
                           check=True).stdout.splitlines()
    outside = [line.split(":")[0] for line in attrs if not line.endswith(": filter: lfs")]
    assert outside == [], f"binary files without an LFS rule in .gitattributes: {outside}"
