"""Publish a day's approved content: a bulk-upload CSV for a social scheduler and a JSON of the same pieces.

Why files and not an API: a social scheduler (Hootsuite, Buffer, SocialBee...) takes a bulk CSV,
and an operator or a later job uploads it; the line stays free of scheduler credentials.

The CSV follows Hootsuite's bulk composer shape, the layout most schedulers copy: no header row,
three columns per post (date and time in 24-hour `DD/MM/YYYY HH:MM` at five-minute steps, the
message, the link). Only pieces a scheduler posts are in it: LinkedIn posts and headlines (a
headline goes out as a link share whose text is the headline). E-mail subject lines go out with
the e-mail line, so they are in the JSON only. The JSON (`pieces.json`) holds every piece with
its channel, segment, slot and link, and is what the engagement importers and the simulated
audience read back.

Every variant's link carries utm_source, utm_medium, utm_campaign and `utm_content=<variant_id>`,
so GA4 sessions map back to the variant. Re-publishing a day writes the same bytes (input order
does not matter, nothing depends on the clock); files are replaced atomically (temp file + rename).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pandas as pd

from factory_dagster import atomic

CHANNELS = ("linkedin_post", "headline", "email_subject")
SCHEDULED_CHANNELS = ("linkedin_post", "headline")  # what goes into the scheduler's CSV
CHANNEL_UTM: dict[str, tuple[str, str]] = {  # channel -> (utm_source, utm_medium)
    "linkedin_post": ("linkedin", "social"),
    "headline": ("linkedin", "social"),
    "email_subject": ("newsletter", "email"),
}
REQUIRED_COLUMNS = ("piece_id", "variant_id", "channel", "text")
DEFAULT_LANDING_URL = "https://example.com/"
CSV_NAME = "bulk_upload.csv"
JSON_NAME = "pieces.json"
SHARES_NAME = "allocation.csv"  # the day's split of each live piece's audience over its variants
FIRST_SLOT = time(9, 0)
SLOT_MINUTES = 5  # Hootsuite accepts times that end in 0 or 5 only
# Variant ids travel in URLs and in exports that other tools write: keep them plain.
_VARIANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PublishError(ValueError):
    """Pieces that cannot be published; the message names the row and the column."""


@dataclass(frozen=True)
class PublishResult:
    folder: Path
    csv_path: Path
    json_path: Path
    pieces: int  # variants in the JSON
    scheduled: int  # rows in the scheduler CSV
    changed: bool  # False when both files already held these exact bytes


def utm_link(url: str, variant_id: str, channel: str, campaign: str) -> str:
    """`url` with the four UTM parameters set (replacing any already there), URL-encoded."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PublishError(f"link {url!r} is not an http(s) URL")
    source, medium = CHANNEL_UTM[channel]
    utm = {"utm_source": source, "utm_medium": medium, "utm_campaign": campaign, "utm_content": variant_id}
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in utm]
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(kept + list(utm.items())), parts.fragment))


def variant_from_link(link: str) -> str | None:
    """The utm_content of a link, or None: how a click or session finds its variant again."""
    values = [v for k, v in parse_qsl(urlsplit(link).query) if k == "utm_content"]
    return values[0] if values else None


def _check(pieces: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in pieces.columns]
    if missing:
        raise PublishError(f"pieces lack column(s) {', '.join(missing)}; found {', '.join(map(str, pieces.columns))}")
    frame = pieces.reset_index(drop=True)
    seen: dict[str, int] = {}
    for i, row in frame.iterrows():
        where = f"pieces row {int(i) + 1}"
        for column in REQUIRED_COLUMNS:
            if pd.isna(row[column]) or not str(row[column]).strip():
                raise PublishError(f"{where}, column {column}: empty")
        variant = str(row["variant_id"])
        if not _VARIANT_ID.match(variant):
            raise PublishError(f"{where}, column variant_id: {variant!r} must be letters, digits, '.', '_' or '-' (64 at most)")
        if variant in seen:
            raise PublishError(f"{where}, column variant_id: {variant!r} repeats row {seen[variant]}")
        seen[variant] = int(i) + 1
        if row["channel"] not in CHANNELS:
            raise PublishError(f"{where}, column channel: {row['channel']!r} is not one of {', '.join(CHANNELS)}")
    return frame


def _records(frame: pd.DataFrame, day: date, landing_url: str, campaign: str) -> list[dict]:
    """One record per variant, sorted by piece and variant, with its slot and link."""
    frame = frame.sort_values(["piece_id", "variant_id"], kind="stable").reset_index(drop=True)
    records, slot = [], datetime.combine(day, FIRST_SLOT)
    for _, row in frame.iterrows():
        url = row["url"] if "url" in frame.columns and pd.notna(row["url"]) and str(row["url"]).strip() else landing_url
        try:
            link = utm_link(str(url), str(row["variant_id"]), row["channel"], campaign)
        except PublishError as exc:
            raise PublishError(f"variant {row['variant_id']}, column url: {exc}") from exc
        scheduled = row["channel"] in SCHEDULED_CHANNELS
        record = {
            "piece_id": str(row["piece_id"]),
            "variant_id": str(row["variant_id"]),
            "channel": row["channel"],
            "segment": str(row["segment"]) if "segment" in frame.columns and pd.notna(row["segment"]) else None,
            "text": str(row["text"]),
            "link": link,
            "scheduled_at": slot.strftime("%Y-%m-%dT%H:%M") if scheduled else None,
        }
        if scheduled:
            slot += timedelta(minutes=SLOT_MINUTES)
        records.append(record)
    return records


def _csv_bytes(records: list[dict]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    for record in records:
        if record["scheduled_at"]:
            when = datetime.strptime(record["scheduled_at"], "%Y-%m-%dT%H:%M").strftime("%d/%m/%Y %H:%M")
            writer.writerow([when, record["text"], record["link"]])
    return buffer.getvalue().encode("utf-8")


def _json_bytes(day: date, campaign: str, records: list[dict]) -> bytes:
    document = {"day": day.isoformat(), "campaign": campaign, "pieces": records}
    return (json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_atomically(path: Path, data: bytes) -> bool:
    """Replace `path` with `data` via a temp file and rename; False (file untouched) when it already holds them."""
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_atomically(path, data)
    return True


def publish_day(
    pieces: pd.DataFrame,
    day: date,
    out_dir: Path,
    *,
    campaign: str = "factory-content",
    landing_url: str = DEFAULT_LANDING_URL,
) -> PublishResult:
    """Write `out_dir/<day>/bulk_upload.csv` and `pieces.json` for the day's approved variants.

    `pieces` needs piece_id, variant_id, channel and text; `segment` and `url` (the page a link
    points to, else `landing_url`) are optional. Scheduler slots start at 09:00 and step by five
    minutes in piece and variant order.
    """
    records = _records(_check(pieces), day, landing_url, campaign)
    folder = Path(out_dir) / day.isoformat()
    csv_path, json_path = folder / CSV_NAME, folder / JSON_NAME
    changed = write_atomically(csv_path, _csv_bytes(records))
    changed = write_atomically(json_path, _json_bytes(day, campaign, records)) or changed
    scheduled = sum(r["scheduled_at"] is not None for r in records)
    return PublishResult(folder, csv_path, json_path, len(records), scheduled, changed)


def publish_shares(shares: pd.DataFrame, day: date, out_dir: Path) -> Path:
    """Write `out_dir/<day>/allocation.csv`: each live variant's share of its piece's audience that day.

    What a landing-page A/B tool, an ESP's subject test or an ads manager's budget split takes as
    weights (a piece published days ago is live again here until its test ends). Byte-identical on a re-run.
    """
    columns = ["piece_id", "variant_id", "experiment_id", "share"]
    frame = shares.sort_values(["piece_id", "variant_id"], kind="stable")[columns].assign(share=lambda f: f["share"].round(6))
    path = Path(out_dir) / day.isoformat() / SHARES_NAME
    write_atomically(path, frame.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    return path


def published_days(out_dir: Path) -> list[tuple[date, pd.DataFrame]]:
    """Every published day under `out_dir` with its pieces, oldest first (a day folder without pieces is skipped)."""
    days = sorted(p.parent for p in Path(out_dir).glob(f"*/{JSON_NAME}"))
    return [(date.fromisoformat(d.name), read_published(d)) for d in days]


def read_published(folder: Path) -> pd.DataFrame:
    """The pieces of one published day (its `pieces.json`), one row per variant."""
    path = Path(folder) / JSON_NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return pd.DataFrame(
            document["pieces"], columns=["piece_id", "variant_id", "channel", "segment", "text", "link", "scheduled_at"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PublishError(f"{path}: not a published day ({exc})") from exc
