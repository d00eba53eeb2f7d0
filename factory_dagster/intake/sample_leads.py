"""Synthetic B2B leads, so the line runs end to end without a CRM export.

Each day brings new people from a fixed universe of fictional companies (a company keeps
its industry, size, region and e-mail convention across days). About one row in ten comes
with a colleague from the same company in the same file, as real exports have them. A small
share of rows is broken the way real exports break; which rows and how is deterministic for
(day, seed) and exposed by `planned_defects`, so tests can check that intake catches exactly
those rows.
Some clean rows also carry harmless noise (padding, zero-width characters, odd case,
decomposed accents) that intake must repair rather than reject. Every domain uses the
reserved `.example` TLD so no generated address can reach a real inbox.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import unicodedata
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path

import pandas as pd

from factory_dagster.intake.reading import LEAD_COLUMNS

Lead = dict[str, str]

REGION_WEIGHTS: dict[str, int] = {
    "UK & Ireland": 25,
    "DACH": 20,
    "Nordics": 15,
    "Benelux": 15,
    "North America": 25,
}

_FIRST_NAMES: dict[str, tuple[str, ...]] = {
    "UK & Ireland": (
        "Oliver",
        "Amelia",
        "Harry",
        "Isla",
        "George",
        "Niamh",
        "Siobhán",
        "Aoife",
        "Ciarán",
        "Rhys",
        "Eleanor",
        "Callum",
        "Fiona",
        "Hamish",
        "Imogen",
        "Declan",
    ),
    "DACH": (
        "Jürgen",
        "Lena",
        "Matthias",
        "Anja",
        "Lukas",
        "Sophie",
        "Maximilian",
        "Hannah",
        "Stefan",
        "Katrin",
        "Tobias",
        "Jörg",
        "Ursula",
        "Felix",
        "Mia",
        "Dominik",
    ),
    "Nordics": (
        "Søren",
        "Astrid",
        "Björn",
        "Freya",
        "Lars",
        "Ingrid",
        "Mikael",
        "Sanna",
        "Eero",
        "Aino",
        "Jonas",
        "Sigrid",
        "Henrik",
        "Maja",
        "Oskar",
        "Linnéa",
    ),
    "Benelux": (
        "Pieter",
        "Sanne",
        "Bram",
        "Femke",
        "Joost",
        "Lotte",
        "Thijs",
        "Anouk",
        "Maarten",
        "Elise",
        "Wouter",
        "Inge",
        "Koen",
        "Fleur",
        "Lucas",
        "Zoë",
    ),
    "North America": (
        "James",
        "Olivia",
        "Michael",
        "Emma",
        "Daniel",
        "Ava",
        "Ethan",
        "Madison",
        "Tyler",
        "Chloé",
        "Marcus",
        "Jasmine",
        "Brandon",
        "Kayla",
        "Noah",
        "Grace",
    ),
    "global": (
        "José",
        "María",
        "Łukasz",
        "Małgorzata",
        "Priya",
        "Arjun",
        "Wei",
        "Mei",
        "Oluwaseun",
        "Chiamaka",
        "Kwame",
        "Fatima",
        "Mohammed",
        "Yusuf",
        "Hiroshi",
        "Yuki",
        "João",
        "Giulia",
        "Marco",
        "Émilie",
        "François",
        "Sofía",
        "Mateo",
        "Aleksandra",
        "Dmitri",
        "Zeynep",
        "Emre",
        "Nadia",
        "Tomás",
        "Ngozi",
        "Anh",
        "Ravi",
    ),
}

_LAST_NAMES: dict[str, tuple[str, ...]] = {
    "UK & Ireland": (
        "Smith",
        "Jones",
        "Taylor",
        "Brown",
        "Williams",
        "Wilson",
        "Evans",
        "Thomas",
        "O'Brien",
        "Murphy",
        "Kelly",
        "MacLeod",
        "Campbell",
        "Hughes",
        "Byrne",
        "Fitzgerald",
    ),
    "DACH": (
        "Müller",
        "Schmidt",
        "Schneider",
        "Fischer",
        "Weber",
        "Meyer",
        "Wagner",
        "Becker",
        "Hoffmann",
        "Schäfer",
        "Koch",
        "Huber",
        "Gruber",
        "Keller",
        "Brunner",
        "Zimmermann",
    ),
    "Nordics": (
        "Andersen",
        "Nielsen",
        "Johansson",
        "Lindqvist",
        "Karlsson",
        "Eriksson",
        "Virtanen",
        "Korhonen",
        "Hansen",
        "Larsen",
        "Berg",
        "Halvorsen",
        "Nyström",
        "Sørensen",
        "Holm",
        "Åberg",
    ),
    "Benelux": (
        "de Jong",
        "Jansen",
        "de Vries",
        "van den Berg",
        "Bakker",
        "Visser",
        "Smit",
        "Mulder",
        "Peeters",
        "Janssens",
        "Maes",
        "Willems",
        "van Dijk",
        "Dekker",
        "Claes",
        "Vermeulen",
    ),
    "North America": (
        "Johnson",
        "Miller",
        "Davis",
        "Rodriguez",
        "Martinez",
        "Anderson",
        "Thompson",
        "White",
        "Harris",
        "Clark",
        "Lewis",
        "Robinson",
        "Walker",
        "Young",
        "Allen",
        "King",
    ),
    "global": (
        "García",
        "Kowalski",
        "Nowak",
        "Sharma",
        "Patel",
        "Chen",
        "Wang",
        "Okafor",
        "Adeyemi",
        "Mensah",
        "Haddad",
        "Rahman",
        "Tanaka",
        "Sato",
        "Rossi",
        "Bianchi",
        "Dubois",
        "Lefèvre",
        "Fernández",
        "Silva",
        "Yılmaz",
        "Ivanova",
        "Nguyen",
        "Kim",
        "Novák",
        "Horvat",
        "Costa",
        "Moreau",
        "Ali",
        "Khan",
        "Singh",
        "Osei",
    ),
}

_COMPANY_PREFIXES: tuple[str, ...] = (
    "Northwind",
    "Bluefin",
    "Copperleaf",
    "Halden",
    "Ostara",
    "Kestrel",
    "Meridian",
    "Lumen",
    "Harbour",
    "Fjordline",
    "Alder",
    "Brightstone",
    "Cobalt",
    "Granite",
    "Juniper",
    "Larkspur",
    "Nimbus",
    "Oakridge",
    "Pinecrest",
    "Quillon",
    "Redwater",
    "Saltmarsh",
    "Tidewater",
    "Umbra",
    "Vantage",
    "Westerly",
    "Yarrow",
    "Zephyr",
    "Arcadia",
    "Beacon",
    "Cinder",
    "Driftwood",
    "Ember",
    "Foxglove",
    "Glasshouse",
    "Heron",
    "Ironbark",
    "Jadeport",
    "Kingfisher",
    "Lodestar",
    "Mariner",
    "Northgate",
    "Orchard",
    "Pebblebrook",
    "Quarry",
    "Riverbend",
    "Silverline",
    "Thistle",
    "Upland",
    "Sølvberg",
    "Willow",
    "Ashgrove",
    "Birchwood",
    "Crestline",
    "Dunmore",
    "Elmstead",
    "Fernhill",
    "Greystone",
    "Höhenweg",
    "Kalmar",
    "Lindholm",
    "Marlow",
    "Nordvik",
    "Åsgard",
)

# The second word of a company name decides its industry; more words, more companies.
_INDUSTRY_WORDS: dict[str, tuple[str, ...]] = {
    "Software": ("Labs", "Cloud", "Systems", "Software", "Analytics", "Data"),
    "Fintech": ("Pay", "Capital", "Ledger", "Payments"),
    "Healthcare": ("Health", "Care", "Medical", "Diagnostics"),
    "Manufacturing": ("Industries", "Manufacturing", "Components", "Engineering", "Fabrication"),
    "Logistics": ("Logistics", "Freight", "Shipping", "Transport"),
    "Retail": ("Retail", "Outfitters", "Market", "Home & Garden"),
    "Professional Services": ("Partners", "Advisory", "Consulting", "Associates"),
}
_COMPANY_WORDS: tuple[tuple[str, str], ...] = tuple(
    (industry, word) for industry, words in _INDUSTRY_WORDS.items() for word in words
)
COMPANY_UNIVERSE_SIZE = len(_COMPANY_PREFIXES) * len(_COMPANY_WORDS)
# Each company has a fixed roster of distinct people; each day's leads are fresh roster slots.
# Most come one per company, spread over the universe; a share comes as small teams, colleagues
# in the same file, as a CRM export or an event list has them. The two pools use separate slots.
_ROSTER_SIZE = 64
_TEAM_SLOTS = 8  # slots 56..63 of each roster: the team pool
_SPREAD_SLOTS = _ROSTER_SIZE - _TEAM_SLOTS
TEAM_SIZE = 2
TEAM_SHARE = 0.1  # of a day's rows
_SPREAD_PEOPLE = COMPANY_UNIVERSE_SIZE * _SPREAD_SLOTS
_TEAMS = COMPANY_UNIVERSE_SIZE * (_TEAM_SLOTS // TEAM_SIZE)


def _coprime_step(size: int) -> int:
    """A step coprime with `size`: `step * k + offset` (mod size) is then a permutation of range(size), so the
    consecutive blocks of k that successive days use never share an item until it wraps (about 680 days for
    the spread pool at 180 leads a day, 880 for the team pool)."""
    return next(s for s in range(int(size * 0.618), size) if math.gcd(s, size) == 1)


_SPREAD_STEP = _coprime_step(_SPREAD_PEOPLE)
_TEAM_STEP = _coprime_step(_TEAMS)

_LEGAL_SUFFIXES: dict[str, tuple[str, ...]] = {
    "UK & Ireland": ("Ltd", "Limited", ""),
    "DACH": ("GmbH", "AG", ""),
    "Nordics": ("AB", "AS", "Oy", "A/S", ""),
    "Benelux": ("B.V.", "N.V.", "BV", ""),
    "North America": ("Inc.", "LLC", "Corp.", ""),
}

ROLES_BY_SENIORITY: dict[str, tuple[str, ...]] = {
    "C-level": ("CFO", "Chief Financial Officer", "CEO", "COO", "Chief Accounting Officer"),
    "VP": ("VP Finance", "VP of Finance", "VP Accounting", "SVP Finance", "VP Financial Planning & Analysis"),
    "Director": ("Finance Director", "Director of Finance", "Head of Finance", "Director of Accounting", "Head of FP&A"),
    "Manager": (
        "Financial Controller",
        "Accounting Manager",
        "Finance Manager",
        "Accounts Payable Manager",
        "Group Reporting Manager",
        "Payroll Manager",
    ),
    "Individual Contributor": (
        "Senior Accountant",
        "Accountant",
        "Financial Analyst",
        "Management Accountant",
        "Accounts Payable Specialist",
        "Billing Specialist",
    ),
}
_SENIORITY_WEIGHTS = (15, 15, 25, 30, 15)
_SMALL_COMPANY_SENIORITY_WEIGHTS = (40, 5, 20, 25, 10)  # small firms: the founder or CFO picks up

_EMAIL_PATTERNS = ("{first}.{last}", "{f}{last}", "{first}{l}", "{first}_{last}", "{f}.{last}")

_EVENTS = (
    "FinOps Summit",
    "CFO Forum London",
    "Nordic Finance Week",
    "DACH Controlling Days",
    "Benelux Accounting Expo",
    "SaaS Finance Live",
    "Close Faster Roadshow",
)
_ERPS = (
    "NetSuite",
    "Xero",
    "SAP Business One",
    "Sage Intacct",
    "Dynamics 365",
    "QuickBooks",
    "Exact",
    "Visma",
    "DATEV",
    "Fortnox",
)
_GUIDES = ("Month-end close checklist", "Reconciliation playbook", "Audit readiness in 30 days")
_WEBINARS = ("Closing the books in 5 days", "Automating bank reconciliations", "Accruals without spreadsheets")
_NOTE_TEMPLATES: tuple[tuple[str, int], ...] = (
    ("", 20),
    ("Met at {event}; asked about {erp} integration", 14),
    ('Downloaded the "{guide}" guide', 12),
    ("Inbound demo request via website. Close currently takes {days} days.", 10),
    ("Referred by {partner} Advisory", 8),
    ("Webinar attendee: {webinar}", 10),
    ("On {erp}, month-end close takes {days} days, wants to cut it", 10),
    ("Spoke briefly at {event}, follow up after Q{quarter} close", 10),
    ("Call notes:\n- runs {erp}\n- close takes {days} days\n- budget owner: CFO", 3),
)

DEFECT_KINDS: tuple[str, ...] = (
    "invalid_email",
    "duplicate_in_file",
    "missing_field",
    "encoding",
    "duplicate_earlier_day",
    "invalid_company_size",
    "invalid_value",
)
# Names whose UTF-8 bytes read as Windows-1252 give the classic mojibake ("JosÃ©").
_MOJIBAKE_VICTIMS = (
    "José",
    "Zoë",
    "Søren",
    "Björn",
    "Jürgen",
    "Chloé",
    "Siobhán",
    "François",
    "Müller",
    "Schäfer",
    "Sørensen",
    "Lefèvre",
    "García",
    "O’Brien",
    "Nyström",
)
_BAD_CHARACTERS = ("\x00", "\x07", "\x0b", "\x1b", "\u202e", "\ufffd")
_BAD_SIZES = ("n/a", "unknown", "about 50", "50-200", "-12", "0", "12000000", "2.5k", "ten", "1e9")
_BAD_SENIORITIES = ("Boss", "Intern", "Head honcho", "Exec")
_BAD_REGIONS = ("EMEA", "APAC", "Europe", "Mars")
_CROSS_DAY_LOOKBACK = 3
_NOISE_RATE = 0.06


def generate_leads(day: dt.date, n: int = 200, seed: int = 7, defect_rate: float = 0.04) -> pd.DataFrame:
    """One day's lead export as text columns, deterministic for (day, seed, n, defect_rate)."""
    rows = [_clean_lead(day, i, n, seed) for i in range(n)]
    defects = planned_defects(day, n, seed, defect_rate)
    rng = _rng(seed, day, "defect-details")
    for index, kind in defects.items():
        rows[index] = _DEFECT_MAKERS[kind](rows, index, rng, day, n, seed, defect_rate)
    noise = _rng(seed, day, "noise")
    for index, row in enumerate(rows):
        if index not in defects and noise.random() < _NOISE_RATE:
            noise.choice(_NOISES)(row, noise)
    return pd.DataFrame(rows, columns=list(LEAD_COLUMNS), dtype=object)


def planned_defects(day: dt.date, n: int = 200, seed: int = 7, defect_rate: float = 0.04) -> dict[int, str]:
    """Row position -> defect kind for that day's file: the ground truth intake should find.

    Row 0 is never defective, so an in-file duplicate always has an earlier original and a
    cross-day duplicate always has a clean lead to copy on the earlier day.
    """
    if n < 0 or not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"need n >= 0 and 0 <= defect_rate <= 1, got n={n}, defect_rate={defect_rate}")
    rng = _rng(seed, day, "defects")
    count = min(max(n - 1, 0), int(n * defect_rate + 0.5))
    rows = sorted(rng.sample(range(1, n), count)) if count else []
    # The kinds go round robin and carry on from one day to the next, so a week has an even mix.
    offset = day.toordinal() * count
    return {row: DEFECT_KINDS[(offset + k) % len(DEFECT_KINDS)] for k, row in enumerate(rows)}


def write_sample_file(inbox: Path, day: dt.date, n: int = 200, seed: int = 7, defect_rate: float = 0.04) -> Path:
    """Write `leads_<day>.csv` into the inbox; an existing file is left alone (it may be real data)."""
    path = Path(inbox) / f"leads_{day.isoformat()}.csv"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write aside and rename, so a reader polling the inbox never sees half a file.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    generate_leads(day, n, seed, defect_rate).to_csv(partial, index=False, encoding="utf-8", lineterminator="\n")
    partial.replace(path)
    return path


def _rng(seed: int, day: dt.date, stream: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so streams are stable across runs and platforms.
    return random.Random(f"{seed}:{day.isoformat()}:{stream}")


@cache  # bounded by COMPANY_UNIVERSE_SIZE
def _company(seed: int, index: int) -> tuple[str, str, str, int, str]:
    """(name, domain, industry, size, region) of company `index`: fixed for a seed, whatever the day."""
    rng = random.Random(f"{seed}:company:{index}")
    prefix = _COMPANY_PREFIXES[index % len(_COMPANY_PREFIXES)]
    industry, word = _COMPANY_WORDS[index // len(_COMPANY_PREFIXES)]
    region = rng.choices(list(REGION_WEIGHTS), weights=list(REGION_WEIGHTS.values()))[0]
    legal = rng.choice(_LEGAL_SUFFIXES[region])
    name = f"{prefix} {word} {legal}".strip()
    joiner = rng.choice(("", "", "-"))
    domain = f"{_ascii_slug(prefix)}{joiner}{_ascii_slug(word)}.example"
    # Log-normal headcount (median ~120) clipped to 10..5000: many small firms, a few large ones.
    size = int(min(5000, max(10, rng.lognormvariate(4.8, 1.2))))
    return name, domain, industry, size, region


@cache  # bounded by COMPANY_UNIVERSE_SIZE
def _roster(seed: int, company_index: int) -> tuple[tuple[str, str, str], ...]:
    """(first, last, e-mail local part) of the company's people, unique under its e-mail convention."""
    region = _company(seed, company_index)[4]
    rng = random.Random(f"{seed}:roster:{company_index}")
    pattern = rng.choice(_EMAIL_PATTERNS)
    people: dict[str, tuple[str, str, str]] = {}
    # Every pattern allows hundreds of distinct addresses per region, so this loop ends quickly.
    while len(people) < _ROSTER_SIZE:
        first = _pick_name(rng, _FIRST_NAMES, region, 0.7)
        last = _pick_name(rng, _LAST_NAMES, region, 0.6)
        first_slug, last_slug = _ascii_slug(first), _ascii_slug(last)
        local = pattern.format(first=first_slug, last=last_slug, f=first_slug[0], l=last_slug[0])
        people.setdefault(local, (first, last, local))
    return tuple(people.values())


def team_rows(n: int) -> int:
    """How many of a day's n rows come as teams of colleagues (whole teams)."""
    return int(n * TEAM_SHARE / TEAM_SIZE) * TEAM_SIZE


@lru_cache(maxsize=256)
def _day_people(day: dt.date, n: int, seed: int) -> tuple[int, ...]:
    """The day's n people (company * _ROSTER_SIZE + slot), disjoint from other days', in shuffled order."""
    offset = random.Random(f"{seed}:people").randrange(_SPREAD_PEOPLE)
    spread = n - team_rows(n)
    first = day.toordinal() * spread
    people = []
    for i in range(spread):
        company, slot = divmod((_SPREAD_STEP * (first + i) + offset) % _SPREAD_PEOPLE, _SPREAD_SLOTS)
        people.append(company * _ROSTER_SIZE + slot)
    teams = team_rows(n) // TEAM_SIZE
    team_offset = random.Random(f"{seed}:teams").randrange(_TEAMS)
    for i in range(teams):
        team = (_TEAM_STEP * (day.toordinal() * teams + i) + team_offset) % _TEAMS
        number, company = divmod(team, COMPANY_UNIVERSE_SIZE)
        first_slot = _SPREAD_SLOTS + number * TEAM_SIZE
        people += [company * _ROSTER_SIZE + first_slot + k for k in range(TEAM_SIZE)]
    _rng(seed, day, "order").shuffle(people)
    return tuple(people)


def _clean_lead(day: dt.date, index: int, n: int, seed: int) -> Lead:
    """Row `index` of the day's file before any defect or noise."""
    company_index, slot = divmod(_day_people(day, n, seed)[index], _ROSTER_SIZE)
    company, domain, industry, size, region = _company(seed, company_index)
    first, last, local = _roster(seed, company_index)[slot]
    rng = _rng(seed, day, f"lead:{index}")
    weights = _SMALL_COMPANY_SENIORITY_WEIGHTS if size < 50 else _SENIORITY_WEIGHTS
    seniority = rng.choices(list(ROLES_BY_SENIORITY), weights=weights)[0]
    return {
        "email": f"{local}@{domain}",
        "first_name": first,
        "last_name": last,
        "company": company,
        "industry": industry,
        "company_size": str(size),
        "role": rng.choice(ROLES_BY_SENIORITY[seniority]),
        "seniority": seniority,
        "region": region,
        "note": _note(rng),
    }


def _pick_name(rng: random.Random, pools: dict[str, tuple[str, ...]], region: str, local_share: float) -> str:
    pool = pools[region] if rng.random() < local_share else pools["global"]
    return rng.choice(pool)


def _note(rng: random.Random) -> str:
    templates, weights = zip(*_NOTE_TEMPLATES)
    return rng.choices(templates, weights=weights)[0].format(
        event=rng.choice(_EVENTS),
        erp=rng.choice(_ERPS),
        guide=rng.choice(_GUIDES),
        webinar=rng.choice(_WEBINARS),
        partner=rng.choice(_COMPANY_PREFIXES),
        days=rng.randint(5, 15),
        quarter=rng.randint(1, 4),
    )


_TRANSLITERATION = str.maketrans({"ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "ß": "ss", "æ": "ae", "ı": "i", "đ": "d"})


def _ascii_slug(text: str) -> str:
    """'Søren' -> 'soren', "O'Brien" -> 'obrien', 'van den Berg' -> 'vandenberg' (for e-mail addresses)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATION))
    return "".join(c for c in decomposed if c.isascii() and c.isalnum()).lower()


# --- defects: each returns the broken row that replaces rows[index] ---------------------------------

DefectMaker = Callable[[list[Lead], int, random.Random, dt.date, int, int, float], Lead]


def _invalid_email(rows: list[Lead], index: int, rng: random.Random, *_: object) -> Lead:
    row = dict(rows[index])
    local, domain = row["email"].split("@")
    row["email"] = rng.choice(
        (
            f"{local}{domain}",  # missing @
            f"{local[:1]} {local[1:]}@{domain}",  # space inside
            f"{local}@{domain.rsplit('.', 1)[0]}",  # no top-level domain
            f"{local}@{domain.replace('.', '..')}",  # empty domain label
            f"{local}@@{domain}",
            f"{local}@{domain},",
        )
    )
    return row


def _missing_field(rows: list[Lead], index: int, rng: random.Random, *_: object) -> Lead:
    row = dict(rows[index])
    row[rng.choice(("email", "first_name", "company"))] = rng.choice(("", "  "))
    return row


def _encoding(rows: list[Lead], index: int, rng: random.Random, *_: object) -> Lead:
    row = dict(rows[index])
    if rng.random() < 0.5:
        column = rng.choice(("first_name", "last_name"))
        row[column] = rng.choice(_MOJIBAKE_VICTIMS).encode("utf-8").decode("cp1252")
    else:
        column = rng.choice(("first_name", "company", "role"))
        at = rng.randint(1, len(row[column]))
        row[column] = row[column][:at] + rng.choice(_BAD_CHARACTERS) + row[column][at:]
    return row


def _invalid_company_size(rows: list[Lead], index: int, rng: random.Random, *_: object) -> Lead:
    return {**rows[index], "company_size": rng.choice(_BAD_SIZES)}


def _invalid_value(rows: list[Lead], index: int, rng: random.Random, *_: object) -> Lead:
    if rng.random() < 0.5:
        return {**rows[index], "seniority": rng.choice(_BAD_SENIORITIES)}
    return {**rows[index], "region": rng.choice(_BAD_REGIONS)}


def _duplicate_in_file(
    rows: list[Lead], index: int, rng: random.Random, day: dt.date, n: int, seed: int, defect_rate: float
) -> Lead:
    """A clean earlier row exported twice, sometimes with the address in another case."""
    defects = planned_defects(day, n, seed, defect_rate)
    original = rows[rng.choice([i for i in range(index) if i not in defects])]
    email = original["email"]
    return {**original, "email": email.title() if rng.random() < 0.5 else email, "note": _note(rng)}


def _duplicate_earlier_day(
    rows: list[Lead], index: int, rng: random.Random, day: dt.date, n: int, seed: int, defect_rate: float
) -> Lead:
    """A lead that a recent day's file already delivered clean, re-exported with a fresh note."""
    earlier = day - dt.timedelta(days=rng.randint(1, _CROSS_DAY_LOOKBACK))
    defects = planned_defects(earlier, n, seed, defect_rate)
    original = _clean_lead(earlier, rng.choice([i for i in range(n) if i not in defects]), n, seed)
    return {**original, "note": _note(rng)}


_DEFECT_MAKERS: dict[str, DefectMaker] = {
    "invalid_email": _invalid_email,
    "duplicate_in_file": _duplicate_in_file,
    "missing_field": _missing_field,
    "encoding": _encoding,
    "duplicate_earlier_day": _duplicate_earlier_day,
    "invalid_company_size": _invalid_company_size,
    "invalid_value": _invalid_value,
}


# --- noise: harmless mess intake must repair, applied in place to clean rows ----------------------


def _pad(row: Lead, rng: random.Random) -> None:
    column = rng.choice(("email", "company", "role"))
    row[column] = f"  {row[column]} "


def _zero_width(row: Lead, rng: random.Random) -> None:
    column = rng.choice(("email", "first_name", "company"))
    row[column] = row[column][:2] + rng.choice(("\u200b", "\u200d", "\ufeff")) + row[column][2:]


def _shouting_email(row: Lead, rng: random.Random) -> None:
    row["email"] = row["email"].upper() if rng.random() < 0.5 else row["email"].title()


def _decomposed_accents(row: Lead, rng: random.Random) -> None:
    row["first_name"] = unicodedata.normalize("NFD", row["first_name"])
    row["last_name"] = unicodedata.normalize("NFD", row["last_name"])


def _lower_case_labels(row: Lead, rng: random.Random) -> None:
    column = rng.choice(("seniority", "region", "industry"))
    row[column] = row[column].lower()


_NOISES: tuple[Callable[[Lead, random.Random], None], ...] = (
    _pad,
    _zero_width,
    _shouting_email,
    _decomposed_accents,
    _lower_case_labels,
)
