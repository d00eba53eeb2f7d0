"""Campaign spec: the example loads, versions follow the file, and every invalid spec names file and field."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from factory_dagster.campaign.spec import Angle, CampaignSpec, SpecError, load_spec
from factory_dagster.settings import DEFAULT_SPEC_PATH


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_SPEC_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: Any, name: str = "campaign.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


def test_example_spec_loads() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert isinstance(spec, CampaignSpec)
    assert spec.campaign_id == "brightwave-close"
    assert [s.name for s in spec.segments][-1] == "general"
    assert spec.segments[-1].rules.is_catch_all
    assert {a.name for a in spec.angles} == {"close_speed", "fewer_errors", "team_time"}
    assert (
        {"plan", "draft", "escalate"} <= spec.routing.keys()
        and spec.chain("draft") == ["gpt-4o-mini", "gpt-4o"]
        and spec.chain("escalate") == ["gpt-4o"]
    )
    assert spec.limits.min_words < spec.limits.max_words
    assert spec.drafting.prompt_versions == ["draft-v1", "draft-v2"]


def test_spec_version_is_version_plus_file_hash(tmp_path: Path) -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert re.fullmatch(re.escape(spec.version) + r"\+[0-9a-f]{8}", spec.spec_version)
    # Same text in another file: same version.
    copy_path = tmp_path / "same.yaml"
    copy_path.write_text(DEFAULT_SPEC_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_spec(copy_path).spec_version == spec.spec_version
    # Any edit, even a comment, is a new spec version with the same declared version.
    edited = tmp_path / "edited.yaml"
    edited.write_text(DEFAULT_SPEC_PATH.read_text(encoding="utf-8") + "\n# tweaked\n", encoding="utf-8")
    edited_spec = load_spec(edited)
    assert edited_spec.version == spec.version
    assert edited_spec.spec_version.startswith(spec.version + "+")
    assert edited_spec.spec_version != spec.spec_version


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    data[last] = value


def _delete(data: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    del data[last]


@pytest.mark.parametrize(
    ("edit", "field", "hint"),
    [
        (lambda d: _set(d, "limits.max_words", "lots"), "limits.max_words", "integer"),
        (lambda d: _set(d, "drafting.candidates", 0), "drafting.candidates", "greater than or equal"),
        (lambda d: _set(d, "segments", "everyone"), "segments", "list"),
        (lambda d: _set(d, "sender.email", "not-an-email"), "sender.email", "pattern"),
        (lambda d: _delete(d, "offer"), "offer", "required"),
        (lambda d: _delete(d, "sender.postal_address"), "sender.postal_address", "required"),
        (lambda d: _delete(d, "limits.daily_send_cap"), "limits.daily_send_cap", "required"),
        (lambda d: _set(d, "unexpected_field", 1), "unexpected_field", "extra"),
        (lambda d: _set(d, "limits.max_word", 100), "limits.max_word", "extra"),
        (lambda d: d["segments"].append({"name": "late", "rules": {"industry_in": ["Software"]}}), "segments", "last segment"),
        (lambda d: d["segments"].append(copy.deepcopy(d["segments"][-1])), "segments", "unique"),
        (lambda d: d["angles"].append(copy.deepcopy(d["angles"][0])), "angles", "unique"),
        (lambda d: _set(d, "routing.negotiate", "gpt-4o"), "routing", "negotiate"),
        (lambda d: _set(d, "limits.min_words", 140), "limits", "min_words must be below max_words"),
        (lambda d: _set(d, "limits.min_words", 200), "limits", "min_words must be below max_words"),
        (lambda d: _set(d, "angles", []), "angles", "at least 1"),
    ],
    ids=[
        "wrong_type",
        "out_of_range",
        "segments_not_list",
        "bad_email",
        "missing_top_level",
        "missing_nested",
        "missing_limit",
        "extra_top_level",
        "extra_nested",
        "last_segment_not_catch_all",
        "duplicate_segment",
        "duplicate_angle",
        "routing_unknown_stage",
        "min_equals_max_words",
        "min_above_max_words",
        "no_angles",
    ],
)
def test_invalid_spec_names_file_and_field(tmp_path: Path, raw: dict[str, Any], edit, field: str, hint: str) -> None:
    data = copy.deepcopy(raw)
    edit(data)
    path = _write(tmp_path, data)
    message = _error(path)
    assert str(path) in message
    assert f"field '{field}'" in message
    assert hint.lower() in message.lower()


def test_invalid_spec_reports_every_problem(tmp_path: Path, raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    _set(data, "limits.max_words", "lots")
    _delete(data, "offer")
    message = _error(_write(tmp_path, data))
    assert "field 'limits.max_words'" in message and "field 'offer'" in message


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("campaign_id: x\nsegments: [unclosed\n  - name: general\n", encoding="utf-8")
    message = _error(path)
    assert str(path) in message and "not valid YAML" in message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("", "NoneType")])
def test_non_mapping_yaml(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "notamap.yaml"
    path.write_text(text, encoding="utf-8")
    message = _error(path)
    assert str(path) in message and "mapping" in message and kind in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "campaign.yaml"
    message = _error(path)
    assert str(path) in message and "cannot read" in message


def test_spec_is_frozen() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    with pytest.raises(ValidationError):
        spec.campaign_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("lead", "segment"),
    [
        ({"industry": "Software", "seniority": "VP", "company_size": 200}, "scaleup_finance_leaders"),
        ({"industry": "Fintech", "seniority": "Director", "company_size": 50}, "scaleup_finance_leaders"),
        ({"industry": "Fintech", "seniority": "C-level", "company_size": 1000}, "scaleup_finance_leaders"),
        # Matches both scale-up industry and enterprise size: too big for the first, so the second.
        ({"industry": "Software", "seniority": "VP", "company_size": 1001}, "enterprise_finance"),
        # Matches enterprise and operations-heavy: the first matching segment wins.
        ({"industry": "Manufacturing", "seniority": "Manager", "company_size": 5000}, "enterprise_finance"),
        ({"industry": "Logistics", "seniority": "VP", "company_size": 100}, "operations_heavy"),
        ({"industry": "Software", "seniority": "Manager", "company_size": 200}, "general"),
        ({"industry": "Software", "seniority": "VP", "company_size": 49}, "general"),
        ({"industry": "Healthcare", "seniority": "VP", "company_size": 300}, "general"),
        # No size: no size rule can hold, so only the catch-all.
        ({"industry": "Software", "seniority": "VP"}, "general"),
        ({}, "general"),
    ],
)
def test_segment_for(lead: dict[str, Any], segment: str) -> None:
    assert load_spec(DEFAULT_SPEC_PATH).segment_for(lead) == segment


def test_angle_allowed_numbers() -> None:
    spec = load_spec(DEFAULT_SPEC_PATH)
    assert spec.angle("close_speed").allowed_numbers == frozenset({"4"})
    assert spec.angle("fewer_errors").allowed_numbers == frozenset()
    assert spec.angle("team_time").allowed_numbers == frozenset({"2"})
    angle = Angle(name="x", hypothesis="h", claims=["Saves 1,500 hours and 2.5 days.", "Used by 40 teams in 12 countries."])
    assert angle.allowed_numbers == frozenset({"1,500", "2.5", "40", "12"})
