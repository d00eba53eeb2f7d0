"""The content spec: the example loads, and each invalid field stops the load naming the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from factory_dagster.campaign.spec import SpecError, load_spec
from factory_dagster.content.spec import ContentSpec, load_content_spec
from factory_dagster.settings import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "campaigns" / "content_brightwave.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def load_changed(tmp_path: Path, change: Any) -> ContentSpec:
    data = example()
    change(data)
    path = tmp_path / "content_bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_content_spec(path)


def error_of(tmp_path: Path, change: Any) -> str:
    with pytest.raises(SpecError) as info:
        load_changed(tmp_path, change)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'content_bad.yaml'}: invalid content spec: "), message
    return message


def test_example_loads_with_every_part() -> None:
    spec = load_content_spec(EXAMPLE)
    assert spec.content_id == "brightwave-content" and spec.language == "en"
    assert spec.spec_version.startswith(f"{spec.version}+") and len(spec.spec_version) == len(spec.version) + 9
    assert spec.channels.names == ["linkedin_post", "email_subject", "headline"]
    post = spec.channel("linkedin_post")
    assert (post.max_chars, post.hook_limit, post.single_line) == (3000, 210, False)
    assert (spec.channel("email_subject").max_chars, spec.channel("headline").max_chars) == (60, 70)
    assert spec.channel("headline").hook_limit is None and spec.channel("headline").single_line
    assert all(c.source for c in spec.claims)
    assert [c.id for c in spec.claims_for("close_speed")] == ["close_4_days_faster", "nightly_reconciliation"]
    assert spec.claims_for("close_habits") == [] and len(spec.claims_for(None)) == len(spec.claims)
    assert spec.cadence.pieces_per_day >= 1 and spec.variants_per_piece >= 2 and 0 < spec.max_similarity < 1
    assert spec.brand.voice.checks.max_exclamation_marks == 0
    with pytest.raises(KeyError, match="'tiktok' is not in the spec"):
        spec.channel("tiktok")


def test_example_is_not_a_campaign_spec_and_says_so() -> None:
    """The outreach loader refuses it with its own message (nothing globs campaigns/ for campaign specs)."""
    with pytest.raises(SpecError, match=r"content_brightwave\.yaml: invalid campaign spec: field 'campaign_id': Field required"):
        load_spec(EXAMPLE)


def test_an_edit_is_a_new_spec_version(tmp_path: Path) -> None:
    first = load_changed(tmp_path, lambda d: None).spec_version
    second = load_changed(tmp_path, lambda d: d.update(max_similarity=0.5)).spec_version
    assert first != second and first.split("+")[0] == second.split("+")[0]


def test_missing_file_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=rf"{missing}: cannot read content spec"):
        load_content_spec(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("content_id: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match=rf"{broken}: not valid YAML"):
        load_content_spec(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(SpecError, match=rf"{listed}: a content spec must be a YAML mapping, got list"):
        load_content_spec(listed)


def _set(path: str, value: Any) -> Any:
    """A change that sets one nested key (dots; digits index lists)."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        (_set("channels.linkedin_post.max_chars", 4000), "channels.linkedin_post.max_chars", "less than or equal to 3000"),
        (
            _set("channels.linkedin_post.hook_max_chars", 300),
            "channels.linkedin_post.hook_max_chars",
            "less than or equal to 210",
        ),
        (_set("channels.linkedin_post", {"max_chars": 100, "hook_max_chars": 150}), "channels.linkedin_post", "above max_chars"),
        (_set("channels.email_subject.max_chars", 61), "channels.email_subject.max_chars", "less than or equal to 60"),
        (_set("channels.headline.max_chars", 71), "channels.headline.max_chars", "less than or equal to 70"),
        (_set("channels.headline.hook_max_chars", 40), "channels.headline.hook_max_chars", "Extra inputs are not permitted"),
        (_set("channels.tiktok", {"max_chars": 100}), "channels.tiktok", "Extra inputs are not permitted"),
        (_set("channels", {}), "channels", "at least one channel"),
        (_drop("claims.0.source"), "claims.0.source", "Field required"),
        (_set("claims.1.source", "https://"), "claims.1.source", "not a full http(s) URL"),
        (_set("claims.1.id", "close_4_days_faster"), "claims", "repeated: ['close_4_days_faster']"),
        (_set("topics.1.claims", ["same_day_flags", "invented_claim"]), "topics", "topics.1.claims: topic 'catching_errors'"),
        (_set("topics.0.name", "Close Speed"), "topics.0.name", "String should match pattern"),
        (_set("segments.1.name", "general"), "segments", "repeated: ['general']"),
        (_set("segments.0.rules", {"industry_in": "Software"}), "segments.0.rules.industry_in", "valid list"),
        (_set("brand.voice.checks.max_we_words", -1), "brand.voice.checks.max_we_words", "greater than or equal to 0"),
        (_set("brand.website", "brightwave"), "brand.website", "String should match pattern"),
        (_drop("brand.voice"), "brand.voice", "Field required"),
        (_set("reading_grade_max", 40), "reading_grade_max", "less than or equal to 20"),
        (_set("cadence.pieces_per_day", 0), "cadence.pieces_per_day", "greater than or equal to 1"),
        (_set("variants_per_piece", 11), "variants_per_piece", "less than or equal to 10"),
        (_set("max_similarity", 0), "max_similarity", "greater than 0"),
        (_set("banned_phrases", ["fine", "  "]), "banned_phrases", "entries [1] have no words"),
        (_set("language", "english"), "language", "String should match pattern"),
        (_set("surprise", 1), "surprise", "Extra inputs are not permitted"),
    ],
)
def test_each_invalid_field_names_the_field(tmp_path: Path, change: Any, field: str, says: str) -> None:
    message = error_of(tmp_path, change)
    assert f"field '{field}'" in message and says in message, message
