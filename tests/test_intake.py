"""Lead intake: the synthetic generator, the file reader and the validation gate."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from factory_dagster.campaign.spec import CampaignSpec, load_spec
from factory_dagster.intake.reading import (
    LEAD_COLUMNS,
    SOURCE_COLUMNS,
    LeadFileError,
    list_lead_files,
    read_lead_file,
)
from factory_dagster.intake.sample_leads import (
    DEFECT_KINDS,
    ROLES_BY_SENIORITY,
    generate_leads,
    planned_defects,
    team_rows,
    write_sample_file,
)
from factory_dagster.intake.validation import (
    ACCEPTED_COLUMNS,
    FAILURE_CASE_COLUMNS,
    QUARANTINE_COLUMNS,
    REGIONS,
    SENIORITIES,
    lead_id_for,
    lead_schema_failures,
    validate_leads,
)
from factory_dagster.settings import DEFAULT_SPEC_PATH
from factory_dagster.warehouse.file_registry import file_sha256

DAY = dt.date(2026, 3, 2)
LOOKBACK = 3  # cross-day duplicates copy a lead from up to this many days earlier
EXPECTED_CODE = {
    "invalid_email": "invalid_email",
    "duplicate_in_file": "duplicate",
    "duplicate_earlier_day": "duplicate",
    "missing_field": "missing_field",
    "encoding": "encoding",
    "invalid_company_size": "invalid_company_size",
    "invalid_value": "invalid_value",
}
GOOD = {
    "email": "anna.berg@northwind-labs.example",
    "first_name": "Anna",
    "last_name": "Berg",
    "company": "Northwind Labs AB",
    "industry": "Software",
    "company_size": "250",
    "role": "CFO",
    "seniority": "C-level",
    "region": "Nordics",
    "note": "Met at FinOps Summit; asked about NetSuite integration",
}


@pytest.fixture(scope="module")
def spec() -> CampaignSpec:
    return load_spec(DEFAULT_SPEC_PATH)


def _days(count: int, start: dt.date = DAY) -> list[dt.date]:
    return [start + dt.timedelta(days=k) for k in range(count)]


def _plain(email: str) -> str:
    """What intake will make of a generated address (the generator's noise is whitespace, case, zero-width)."""
    return re.sub(r"[\s\u200b\u200d\ufeff]", "", email).lower()


def _raw(*rows: dict[str, str], source_file: str = "inbox/leads_test.csv") -> pd.DataFrame:
    """A frame shaped like read_lead_file's output: GOOD with each row's overrides."""
    frame = pd.DataFrame([{**GOOD, **row} for row in rows], columns=list(LEAD_COLUMNS), dtype=object)
    frame["source_file"] = source_file
    frame["source_row"] = pd.Series(range(2, len(rows) + 2), dtype="int64")
    return frame


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


HEADER = ",".join(LEAD_COLUMNS)
GOOD_LINE = ",".join(f'"{GOOD[c]}"' for c in LEAD_COLUMNS)


# --- generator ------------------------------------------------------------------------------------


def test_generator_is_deterministic_per_day_and_seed() -> None:
    leads = generate_leads(DAY, n=50)
    assert list(leads.columns) == list(LEAD_COLUMNS)
    assert len(leads) == 50
    pd.testing.assert_frame_equal(leads, generate_leads(DAY, n=50))
    assert not leads.equals(generate_leads(DAY, n=50, seed=8))
    assert not leads.equals(generate_leads(DAY + dt.timedelta(days=1), n=50))
    assert leads.map(lambda v: isinstance(v, str)).all().all()


def test_generator_gives_varied_realistic_leads() -> None:
    frames = [generate_leads(day).drop(index=list(planned_defects(day))) for day in _days(3)]
    leads = pd.concat(frames, ignore_index=True)
    assert leads["first_name"].nunique() > 80
    assert leads["company"].nunique() > 300
    assert any(not name.isascii() for name in leads["first_name"])
    assert {s.casefold() for s in leads["industry"]} >= {
        "software",
        "fintech",
        "healthcare",
        "manufacturing",
        "logistics",
        "retail",
        "professional services",
    }
    assert {s.casefold() for s in leads["region"]} == {r.casefold() for r in REGIONS}
    canonical = {s.casefold(): s for s in SENIORITIES}
    for role, seniority in zip(leads["role"], leads["seniority"]):
        assert role.strip() in ROLES_BY_SENIORITY[canonical[seniority.casefold()]]
    sizes = leads["company_size"].astype(int)
    assert sizes.between(10, 5000).all()
    assert sizes.median() < sizes.mean()  # skewed: many small companies, a few large ones
    assert all(_plain(e).endswith(".example") for e in leads["email"])
    assert (leads["note"] != "").mean() > 0.6
    assert leads["note"].str.contains("\n").any()  # multi-line CRM notes exercise CSV quoting


def test_defects_come_at_the_configured_rate_and_mix() -> None:
    plans = [planned_defects(day) for day in _days(14)]
    kinds = [kind for plan in plans for kind in plan.values()]
    assert len(kinds) == round(0.04 * 200) * 14
    assert {kind: kinds.count(kind) for kind in DEFECT_KINDS} == {kind: 16 for kind in DEFECT_KINDS}
    assert len(planned_defects(DAY, defect_rate=0.1)) == 20
    assert planned_defects(DAY, defect_rate=0.0) == {}
    with pytest.raises(ValueError, match="defect_rate"):
        planned_defects(DAY, defect_rate=1.5)


def test_each_day_brings_new_leads() -> None:
    seen: set[str] = set()
    for day in _days(14):
        plan = planned_defects(day)
        emails = [_plain(e) for i, e in enumerate(generate_leads(day)["email"]) if i not in plan]
        assert len(set(emails)) == len(emails)
        assert not seen & set(emails), day
        seen |= set(emails)


def test_some_leads_come_with_a_colleague_in_the_same_file(spec: CampaignSpec) -> None:
    """About one row in ten shares its company (name and e-mail domain) with another row of the day's file."""
    for day in _days(3):
        raw = generate_leads(day, defect_rate=0.0).assign(source_file="f.csv", source_row=range(2, 202))
        clean, _ = validate_leads(raw, spec, set())  # harmless noise (case, padding, zero-width) repaired
        domains = clean.email.str.split("@").str[1]
        shared = clean[domains.duplicated(keep=False)]
        assert len(shared) >= team_rows(200), day
        for _, colleagues in shared.groupby(domains[shared.index]):
            assert colleagues.company.nunique() == 1 and colleagues.email.nunique() == len(colleagues)


def test_duplicates_repeat_a_clean_lead_of_this_file_or_a_recent_day() -> None:
    clean_by_day = {}
    for day in _days(LOOKBACK + 4, DAY - dt.timedelta(days=LOOKBACK)):
        plan = planned_defects(day)
        leads = generate_leads(day)
        clean_by_day[day] = {i: _plain(e) for i, e in enumerate(leads["email"]) if i not in plan}
        for index, kind in plan.items():
            email = _plain(leads.at[index, "email"])
            if kind == "duplicate_in_file":
                assert email in [e for i, e in clean_by_day[day].items() if i < index]
            if kind == "duplicate_earlier_day" and day - dt.timedelta(days=LOOKBACK) in clean_by_day:
                earlier = [day - dt.timedelta(days=k) for k in range(1, LOOKBACK + 1)]
                assert any(email in clean_by_day[d].values() for d in earlier)


def test_write_sample_file_never_overwrites(tmp_path: Path) -> None:
    path = write_sample_file(tmp_path / "inbox", DAY, n=20)
    assert path == tmp_path / "inbox" / "leads_2026-03-02.csv"
    assert path.read_text(encoding="utf-8").startswith(HEADER + "\n")
    path.write_text("operator's own file", encoding="utf-8")
    assert write_sample_file(tmp_path / "inbox", DAY, n=20) == path
    assert path.read_text(encoding="utf-8") == "operator's own file"
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == [path.name]


# --- reading --------------------------------------------------------------------------------------


def test_read_csv_gives_text_and_line_based_rows(tmp_path: Path) -> None:
    path = write_sample_file(tmp_path, DAY, n=60)
    leads = read_lead_file(path)
    assert list(leads.columns) == [*LEAD_COLUMNS, *SOURCE_COLUMNS]
    assert len(leads) == 60
    assert leads[list(LEAD_COLUMNS)].map(lambda v: isinstance(v, str)).all().all()
    assert (leads["source_file"] == str(path)).all()
    assert leads["source_row"].iloc[0] == 2
    pd.testing.assert_frame_equal(leads[list(LEAD_COLUMNS)], generate_leads(DAY, n=60))

    note = "Call notes:\n- runs Xero\n- close takes 9 days"
    multi = _write(tmp_path, "multi.csv", f"{HEADER}\n{GOOD_LINE}\n{GOOD_LINE.replace(GOOD['note'], note)}\n{GOOD_LINE}\n")
    assert list(read_lead_file(multi)["source_row"]) == [2, 3, 6]


def test_read_csv_is_lenient_about_layout(tmp_path: Path) -> None:
    """Excel-style exports: BOM, CRLF, semicolons, friendly headers, extra, missing optional and blank rows."""
    header = "\ufeffEmail;First Name;company;Industry;Company-Size;Role;Seniority; Region ;Owner"
    row = "anna@northwind.example;Anna;Northwind Labs;Software;250;CFO;C-level;Nordics;Maya"
    path = _write(tmp_path, "excel.CSV", "\r\n".join([header, row, ";;;;;;;;", "", "bo@x.example;Bo"]) + "\r\n")
    leads = read_lead_file(path)
    assert list(leads.columns) == [*LEAD_COLUMNS, *SOURCE_COLUMNS]
    assert list(leads["source_row"]) == [2, 5]
    assert leads.loc[0, ["email", "first_name", "company_size", "last_name", "note"]].tolist() == [
        "anna@northwind.example",
        "Anna",
        "250",
        "",
        "",
    ]
    assert leads.loc[1, ["email", "first_name", "company", "region"]].tolist() == ["bo@x.example", "Bo", "", ""]


def test_read_parquet_as_text_with_record_numbers(tmp_path: Path) -> None:
    path = tmp_path / "leads.parquet"
    frame = pd.DataFrame([GOOD, {**GOOD, "email": "bo@x.example", "last_name": None}])
    frame["company_size"] = pd.array([250, None], dtype="Int64")
    frame["extra"] = [1.5, 2.5]
    frame.to_parquet(path)
    leads = read_lead_file(path)
    assert list(leads.columns) == [*LEAD_COLUMNS, *SOURCE_COLUMNS]
    assert list(leads["source_row"]) == [1, 2]
    assert leads["company_size"].tolist() == ["250", ""]
    assert leads["last_name"].tolist() == ["Berg", ""]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("no_region.csv", HEADER.replace(",region", "") + "\n" + GOOD_LINE, r"missing required column\(s\) 'region'"),
        (
            "latin1.csv",
            f"{HEADER}\n{GOOD_LINE}\n".encode().replace(b'"Anna"', b'"Jos\xe9"'),
            r"row 2, column 'first_name': bytes b'\\xe9' are not valid UTF-8",
        ),
        ("leads.xlsx", b"PK\x03\x04", r"unsupported file type '.xlsx'"),
        ("empty.csv", b"", "the file is empty"),
        ("blank.csv", "\n  \n", "the file is empty"),
        ("header_only.csv", HEADER + "\n", "no data rows"),
        ("ragged.csv", f"{HEADER}\n{GOOD_LINE}\n{GOOD_LINE},surprise\n", "row 3 has 11 fields but the header has 10"),
        ("open_quote.csv", f'{HEADER}\n{GOOD_LINE}\n"anna@x.example,Anna\n', r"row 3: malformed CSV"),
        ("twice.csv", HEADER + ",Email\n" + GOOD_LINE + ",x\n", "columns 'email' and 'Email' both read as 'email'"),
        ("broken.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
        (
            "huge_field.csv",
            f"{HEADER}\n{GOOD_LINE}\n{GOOD_LINE.replace('Met at', 'x' * 200_000)}\n",
            "row 3: malformed CSV .*field larger than field limit",
        ),
    ],
)
def test_unreadable_files_name_file_row_and_column(tmp_path: Path, name: str, content: str | bytes, expected: str) -> None:
    path = _write(tmp_path, name, content)
    with pytest.raises(LeadFileError, match=expected) as error:
        read_lead_file(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_non_utf8_byte_on_a_later_row_is_located(tmp_path: Path) -> None:
    body = "\n".join([HEADER, GOOD_LINE, GOOD_LINE, GOOD_LINE.replace("Northwind Labs AB", "Café Ltd")]) + "\n"
    path = _write(tmp_path, "cp1252.csv", body.encode("cp1252"))
    with pytest.raises(LeadFileError, match=r"row 4, column 'company': bytes b'\\xe9'"):
        read_lead_file(path)


def test_missing_file_is_a_lead_file_error(tmp_path: Path) -> None:
    with pytest.raises(LeadFileError, match="cannot read file"):
        read_lead_file(tmp_path / "gone.csv")


def test_listing_and_hashing_the_inbox(tmp_path: Path) -> None:
    for name in ["b.parquet", "a.csv", "C.CSV", "notes.txt", ".a.csv.partial", ".hidden.csv"]:
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "dir.csv").mkdir()
    assert [p.name for p in list_lead_files(tmp_path)] == ["C.CSV", "a.csv", "b.parquet"]
    assert list_lead_files(tmp_path / "missing") == []
    assert file_sha256(tmp_path / "a.csv") == hashlib.sha256(b"a.csv").hexdigest()


# --- validation over generated days ---------------------------------------------------------------


@pytest.fixture(scope="module")
def daily_results(tmp_path_factory: pytest.TempPathFactory, spec: CampaignSpec) -> list[dict]:
    """Ten days through read + validate, as the daily intake runs them, with the emails it has kept."""
    inbox = tmp_path_factory.mktemp("inbox")
    known: set[str] = set()
    results = []
    for day in _days(10, DAY - dt.timedelta(days=LOOKBACK)):
        raw = read_lead_file(write_sample_file(inbox, day))
        accepted, quarantined = validate_leads(raw, spec, known)
        results.append(
            {"day": day, "raw": raw, "accepted": accepted, "quarantined": quarantined, "has_history": len(results) >= LOOKBACK}
        )
        known |= set(accepted["email"])
    return results


def test_every_input_row_lands_exactly_once(daily_results: list[dict]) -> None:
    for result in daily_results:
        raw, accepted, quarantined = result["raw"], result["accepted"], result["quarantined"]
        assert len(accepted) + len(quarantined) == len(raw)
        keys = list(zip(accepted["source_file"], accepted["source_row"])) + list(
            zip(quarantined["source_file"], quarantined["source_row"])
        )
        assert sorted(keys) == sorted(zip(raw["source_file"], raw["source_row"]))
        assert list(accepted.columns) == list(ACCEPTED_COLUMNS)
        assert list(quarantined.columns) == list(QUARANTINE_COLUMNS)


def test_each_defect_is_quarantined_with_its_reason_code(daily_results: list[dict]) -> None:
    for result in filter(lambda r: r["has_history"], daily_results):
        position = {row: i for i, row in enumerate(result["raw"]["source_row"])}
        found = {
            position[row]: code for row, code in zip(result["quarantined"]["source_row"], result["quarantined"]["reason_code"])
        }
        expected = {i: EXPECTED_CODE[kind] for i, kind in planned_defects(result["day"]).items()}
        assert found == expected, result["day"]
    codes = set(pd.concat([r["quarantined"] for r in daily_results])["reason_code"])
    assert codes == set(EXPECTED_CODE.values())


def test_accepted_leads_are_clean_typed_and_segmented(daily_results: list[dict], spec: CampaignSpec) -> None:
    accepted = pd.concat([r["accepted"] for r in daily_results], ignore_index=True)
    assert lead_schema_failures(accepted).empty
    assert accepted["lead_id"].is_unique
    assert (accepted["lead_id"] == accepted["email"].map(lead_id_for)).all()
    assert accepted["company_size"].dtype == "int64"
    assert (accepted["email"] == accepted["email"].str.lower()).all()
    for column in ["email", "first_name", "last_name", "company", "seniority", "region", "industry", "role"]:
        values = accepted[column].dropna()
        assert (values == values.str.strip()).all(), column
        assert not values.str.contains("[\u200b\u200d\ufeff]").any(), column
        assert (values == values.map(lambda v: unicodedata.normalize("NFC", v))).all(), column
    assert set(accepted["seniority"]) == set(SENIORITIES)
    for lead in accepted.sample(50, random_state=1).to_dict("records"):
        assert lead["segment"] == spec.segment_for(lead)
    assert accepted["segment"].nunique() == len(spec.segments)


def test_clean_file_is_accepted_whole(spec: CampaignSpec) -> None:
    raw = generate_leads(DAY, n=80, defect_rate=0.0).assign(source_file="f.csv", source_row=range(2, 82))
    accepted, quarantined = validate_leads(raw, spec, set())
    assert (len(accepted), len(quarantined)) == (80, 0)


# --- validation of hostile and odd rows -----------------------------------------------------------


def _one(raw: pd.DataFrame, spec: CampaignSpec, known: set[str] | None = None) -> dict:
    accepted, quarantined = validate_leads(raw, spec, known or set())
    assert accepted.empty and len(quarantined) == 1
    return quarantined.iloc[0].to_dict()


@pytest.mark.parametrize(
    ("override", "code", "column", "in_reason"),
    [
        ({"first_name": "JosÃ©"}, "encoding", "first_name", "probably 'José'"),
        ({"last_name": "Oâ€™Brien"}, "encoding", "last_name", "probably 'O’Brien'"),
        ({"company": "Northwind\x07 Labs"}, "encoding", "company", "U+0007"),
        ({"company": "Northwind \u202eLabs"}, "encoding", "company", "RIGHT-TO-LEFT OVERRIDE"),
        ({"first_name": "Jos\ufffd"}, "encoding", "first_name", "REPLACEMENT CHARACTER"),
        ({"role": "CFO\x00"}, "encoding", "role", "U+0000"),
        ({"first_name": ""}, "missing_field", "first_name", "first_name is empty"),
        ({"company": "North\twind"}, "encoding", "company", "U+0009"),
        ({"company": " \t\n "}, "missing_field", "company", "company is empty"),
        ({"email": ""}, "missing_field", "email", "email is empty"),
        ({"seniority": ""}, "missing_field", "seniority", "seniority is empty"),
        ({"email": "anna.berg.northwind.example"}, "invalid_email", "email", "not a valid e-mail"),
        ({"email": "anna berg@northwind.example"}, "invalid_email", "email", "'anna berg@"),
        ({"email": "anna@northwind"}, "invalid_email", "email", "not a valid e-mail"),
        ({"email": "anna@@northwind.example"}, "invalid_email", "email", "not a valid e-mail"),
        ({"email": "anna@northwind..example"}, "invalid_email", "email", "not a valid e-mail"),
        ({"email": "anna@northwind.example,"}, "invalid_email", "email", "not a valid e-mail"),
        ({"email": ".anna@northwind.example"}, "invalid_email", "email", "not a valid e-mail"),
        ({"company_size": "n/a"}, "invalid_company_size", "company_size", "'n/a' is not a whole number"),
        ({"company_size": "50-200"}, "invalid_company_size", "company_size", "50-200"),
        ({"company_size": "0"}, "invalid_company_size", "company_size", "from 1 to 1,000,000"),
        ({"company_size": "-12"}, "invalid_company_size", "company_size", "-12"),
        ({"company_size": "12000000"}, "invalid_company_size", "company_size", "12000000"),
        ({"company_size": "1e9"}, "invalid_company_size", "company_size", "1e9"),
        ({"company_size": "2.5k"}, "invalid_company_size", "company_size", "2.5k"),
        ({"seniority": "Boss"}, "invalid_value", "seniority", "'Boss' is not one of C-level, VP"),
        ({"region": "EMEA"}, "invalid_value", "region", "'EMEA' is not one of UK & Ireland"),
    ],
)
def test_bad_rows_get_a_reason_code_column_and_sentence(
    spec: CampaignSpec, override: dict[str, str], code: str, column: str, in_reason: str
) -> None:
    row = _one(_raw(override), spec)
    assert (row["reason_code"], row["column_name"]) == (code, column)
    assert in_reason in row["reason"]
    assert (row["source_file"], row["source_row"]) == ("inbox/leads_test.csv", 2)
    assert json.loads(row["raw_record"]) == {**GOOD, **override}


def test_harmless_noise_is_repaired_not_rejected(spec: CampaignSpec) -> None:
    raw = _raw(
        {
            "email": "  Anna.Berg@NorthWind-Labs.EXAMPLE\u200b ",
            "first_name": "Zoe\u0308",
            "company": "\ufeffNorthwind  Labs\u00a0AB",
        },
        {
            "email": "lukasz@x.example",
            "first_name": "Łukasz",
            "last_name": "Nguyễn",
            "seniority": "vp",
            "region": "uk & ireland",
            "industry": "fintech",
            "company_size": "1,200",
            "note": "",
        },
        {
            "email": "li@x.example",
            "first_name": "李",
            "last_name": "O’Brien",
            "company_size": " 250.0 ",
            "note": "Call notes:\n- 🚀 wants a demo\r\n- Robert'); DROP TABLE leads;--",
        },
        {"email": "o'neil+leads@x.example", "last_name": "", "company": '=HYPERLINK("x")'},
    )
    accepted, quarantined = validate_leads(raw, spec, set())
    assert quarantined.empty
    first, second, third, fourth = accepted.to_dict("records")
    assert (first["email"], first["first_name"], first["company"]) == (
        "anna.berg@northwind-labs.example",
        "Zoë",
        "Northwind Labs AB",
    )
    assert (second["seniority"], second["region"], second["industry"], second["company_size"]) == (
        "VP",
        "UK & Ireland",
        "Fintech",
        1200,
    )
    assert second["note"] is None and fourth["last_name"] is None
    assert third["company_size"] == 250 and third["note"].startswith("Call notes:\n- 🚀")
    assert fourth["email"] == "o'neil+leads@x.example"
    assert first["lead_id"] == lead_id_for("anna.berg@northwind-labs.example")
    assert lead_schema_failures(accepted).empty


def test_duplicates_first_valid_occurrence_wins(spec: CampaignSpec) -> None:
    raw = _raw(
        {"email": "anna@x.example", "company_size": "lots"},  # broken first copy
        {"email": "ANNA@x.example "},  # kept: the first valid one
        {"email": "anna@x.example", "note": "re-exported"},
        {"email": "known@x.example"},
        {"email": "bo@x.example"},
    )
    accepted, quarantined = validate_leads(raw, spec, {"Known@X.example"})
    assert list(accepted["source_row"]) == [3, 6]
    assert list(quarantined["source_row"]) == [2, 4, 5]
    assert list(quarantined["reason_code"]) == ["invalid_company_size", "duplicate", "duplicate"]
    assert "repeats row 3 of leads_test.csv" in quarantined["reason"].iloc[0]
    assert "repeats row 3 of leads_test.csv" in quarantined["reason"].iloc[1]
    assert "was already imported" in quarantined["reason"].iloc[2]


def test_a_row_with_many_problems_is_quarantined_once_with_all_reasons(spec: CampaignSpec) -> None:
    row = _one(
        _raw({"email": "not-an-email", "first_name": "", "company_size": "ten", "region": "Mars", "company": "JosÃ© GmbH"}), spec
    )
    assert (row["reason_code"], row["column_name"]) == ("encoding", "company")
    reasons = row["reason"].split("; ")
    assert len(reasons) == 5
    assert [r.split(" ")[0] for r in reasons] == ["company", "first_name", "email", "company_size", "region"]


def test_empty_and_malformed_frames(spec: CampaignSpec) -> None:
    accepted, quarantined = validate_leads(_raw().iloc[0:0], spec, set())
    assert accepted.empty and quarantined.empty
    assert list(accepted.columns) == list(ACCEPTED_COLUMNS)
    assert list(quarantined.columns) == list(QUARANTINE_COLUMNS)
    with pytest.raises(ValueError, match="read twice"):
        validate_leads(pd.concat([_raw({}), _raw({"email": "bo@x.example"})]), spec, set())
    with pytest.raises(ValueError, match="region"):
        validate_leads(_raw({}).drop(columns="region"), spec, set())


def test_lead_schema_failures_for_the_asset_check(spec: CampaignSpec) -> None:
    accepted, _ = validate_leads(_raw({}, {"email": "bo@x.example"}), spec, set())
    empty = lead_schema_failures(accepted)
    assert empty.empty and list(empty.columns) == list(FAILURE_CASE_COLUMNS)
    from_duckdb = accepted.astype({"company_size": "int32", "source_row": "int32"}).assign(run_id="r1")
    assert lead_schema_failures(from_duckdb).empty
    broken = accepted.copy()
    broken.loc[0, "email"] = "not an email"
    broken.loc[1, "company_size"] = 0
    broken.loc[1, "lead_id"] = broken.loc[0, "lead_id"]
    broken.loc[0, "company"] = "Jos\x07"
    failures = lead_schema_failures(broken)
    assert {"email", "company_size", "lead_id", "company"} <= set(failures["column"])
    assert set(failures["index"].dropna()) <= {0, 1}
