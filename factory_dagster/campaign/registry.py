"""Which campaigns exist: every outreach spec file in the campaigns folder is one, keyed by its file name.

Why the file name and not the spec's `campaign_id`: a spec that does not parse has no readable id, yet
its campaign must still show up (and fail, naming the file and field) beside the others instead of
vanishing. Content specs (a top-level `content_id`) live in the same folder and belong to the content
line, not here.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from factory_dagster.campaign.spec import CampaignSpec, SpecError, load_spec

SPEC_SUFFIXES = (".yaml", ".yml")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a Dagster partition key without the `|` of campaign|day


class CampaignFolderError(ValueError):
    """The campaigns folder cannot be read, or a spec file's name cannot be a campaign key."""


def campaign_key(path: Path) -> str:
    """A spec file's campaign key: its name without the suffix."""
    key = Path(path).stem
    if not KEY_PATTERN.match(key):
        raise CampaignFolderError(
            f"{path}: a campaign spec's file name must be letters, digits, '_', '-' or '.' (it is the campaign's key)"
        )
    return key


def _is_content_spec(path: Path) -> bool:
    """A file whose top level names a `content_id` is the content line's; an unreadable one counts as a campaign."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(document, dict) and "content_id" in document and "campaign_id" not in document


def campaign_specs(folder: Path) -> dict[str, Path]:
    """{campaign key: spec file} for every outreach spec in the folder, sorted by key."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CampaignFolderError(f"the campaigns folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SPEC_SUFFIXES and not p.name.startswith("."))
    specs: dict[str, Path] = {}
    for path in files:
        if _is_content_spec(path):
            continue
        key = campaign_key(path)
        if key in specs:
            raise CampaignFolderError(f"{specs[key]} and {path} both name the campaign {key!r}: keep one")
        specs[key] = path
    return specs


def spec_file(folder: Path, key: str) -> Path:
    """The spec file of a campaign key, or an error naming the folder and the keys it has.

    Every stage of a run loads its campaign's spec, so the key's own file is looked at first; the whole
    folder is read only to say what is wrong (no such campaign, a content spec, or two files for one key).
    """
    found = [path for path in (Path(folder) / f"{key}{suffix}" for suffix in SPEC_SUFFIXES) if path.is_file()]
    if len(found) == 1 and KEY_PATTERN.match(key) and not _is_content_spec(found[0]):
        return found[0]
    specs = campaign_specs(folder)
    if key not in specs:
        raise CampaignFolderError(f"no campaign {key!r} in {folder} (campaigns there: {', '.join(specs) or 'none'})")
    return specs[key]


def spec_for_campaign(folder: Path, campaign_id: str, default: Path) -> CampaignSpec:
    """The spec whose `campaign_id` is this one: the default campaign's first, then the folder's (an invalid
    spec is passed over).

    Why: operators name campaigns by id (`--campaign`, a job's config); files are keyed by name.
    """
    for path in [Path(default), *campaign_specs(folder).values()]:
        try:
            spec = load_spec(path)
        except SpecError:
            continue
        if spec.campaign_id == campaign_id:
            return spec
    raise CampaignFolderError(f"no spec in {folder} is for campaign {campaign_id!r}")
