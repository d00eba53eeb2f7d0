"""Prompt-injection and language gates: a draft must not carry what a lead's fields planted.

Lead fields are untrusted data. The prompts put them inside <lead> tags as JSON and tell
the model never to follow them, but a cheap model sometimes does anyway; these rules catch
the result in the draft, whatever the model was told:

- `planted_text`: a run of `PLANTED_RUN_WORDS` (5) or more consecutive words of the lead's
  note, role, company, industry or last name appears in the draft. The lead's company name
  and first name are exempt (the message must use them), and so are runs that the spec's
  own texts contain (claims, call to action, footer, address, sender).
- `injected_instruction`: instruction-like or AI-meta text ("ignore previous instructions",
  "as an AI", "system prompt", "<lead>", "</brief>", role markers such as "assistant:" at
  a line start, chat-template tokens, the same requests in German, Spanish and French).
- `markup`: HTML tags, `javascript:` and Markdown links, emphasis or headings; the message is
  plain text.
- `unsupported_contact`: an e-mail address, phone number, messenger channel or obfuscated
  address ("name [at] host [dot] com", "evil[.]com") that the spec's texts do not contain;
  only the sender's own channels may appear.
- `offensive_language`: insults and profanity.

Every check runs on the draft after NFKC normalisation with invisible format characters
(zero-width spaces and joiners, bidi controls, soft hyphens) removed, so "ｉｇｎｏｒｅ" and
"ig\u200bnore" read as "ignore". Homoglyphs (Cyrillic "о" for Latin "o") are not folded.

The lead's own names are exempt from the word rules only while they are *trusted*: a name
that itself carries an instruction, a link, an address, markup or is implausibly long (a
first name over 4 words, a company over 8) is treated as planted text, so a lead whose
company field is an injection can never pass and ends in quarantine.

`language_violations` checks `spec.language` with stopword counts (see its docstring).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from factory_dagster.gates.rules import Violation

PLANTED_RUN_WORDS = 5
# The free-text fields a lead's source can plant text in (first name and company are exempt while trusted).
PLANTED_FIELDS: tuple[str, ...] = ("note", "role", "company", "industry", "last_name")
MAX_TRUSTED_WORDS = {"first_name": 4, "company": 8}

_WORD = re.compile(r"[^\W_]+")
# The tags prompts use to delimit data (a draft never needs them).
_PROMPT_TAGS = "lead|brief|system|user|assistant|instructions?|message|prompt|context|data"
_INSTRUCTION_PARTS = (
    # "ignore all previous instructions", "disregard the brief", "forget your rules"
    r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:(?:all|any|every|the|your|my|these|those|of|everything)\s+)*"
    r"(?:(?:previous|prior|above|earlier|preceding|system|original|other|following)\s+)?"
    r"(?:instructions?|rules|prompts?|guidelines|directions|directives|context|brief|constraints)\b",
    r"\bignore\s+(?:all\s+|everything\s+)?(?:previous|prior|above|earlier)\b",
    r"\b(?:new|updated|real|hidden|secret)\s+instructions?\b",
    r"\bsystem\s+(?:prompt|message|instructions?|override)\b",
    r"\bas\s+an?\s+(?:ai|a\.i\.|artificial\s+intelligence|language\s+model|llm|chat\s*bot|ai\s+assistant)\b(?!-)",
    r"\bi\s*(?:am|'m)\s+(?:just\s+)?an?\s+(?:ai|language\s+model|llm|chat\s*bot|bot)\b(?!-)",
    r"\b(?:large\s+)?language\s+models?\b",
    r"\byou\s+are\s+(?:now\s+)?(?:chat\s*gpt|gpt-?\d|claude|gemini|llama|an?\s+(?:ai|llm|language\s+model|assistant|chat\s*bot))\b",
    r"\bchat\s*gpt\b",
    r"\b(?:jailbreak|jailbroken|prompt\s+injection|developer\s+mode|dan\s+mode|do\s+anything\s+now)\b",
    r"\b(?:reveal|print|repeat|show|output)\s+(?:me\s+)?(?:your|the)\s+(?:system\s+)?(?:prompt|instructions)\b",
    # Delimiters and chat-template tokens of prompts.
    rf"<\s*/?\s*(?:{_PROMPT_TAGS})\s*/?\s*>",
    r"<\|[a-z_]+\|>",
    r"\[/?inst\]",
    r"<<\s*/?\s*sys\s*>>",
    r"^\s*#{2,}\s*(?:instruction|system|response)",
    # A role marker at the start of a line: "assistant: Sure! ..."
    r"^\s*(?:system|assistant|user|human|ai|model|developer)\s*:",
    # The answer's own JSON keys leaking into the text.
    r"\"(?:subject|body|task|brief)\"\s*:",
    # The same requests in German, Spanish and French.
    r"\bignorier(?:e|en|t)?\b",
    r"\bignora(?:r)?\s+(?:todas\s+)?(?:las\s+)?(?:instrucciones|reglas)\b",
    r"\bignorez\b",
    r"\b(?:anweisungen|instrucciones|consignes)\b",
)
_INSTRUCTION = re.compile("|".join(f"(?:{p})" for p in _INSTRUCTION_PARTS), re.IGNORECASE | re.MULTILINE)
# What every match of _INSTRUCTION contains, in lower case (" " + a word the pattern puts after whitespace, in the
# text with its ASCII whitespace made spaces; ":" for the role markers and JSON keys). On ASCII text, where lower
# case is exactly what IGNORECASE matches, looking for these first spares most drafts the pattern's 24 alternatives
# at every character.
_INSTRUCTION_MARKS = (
    *"ignor disregard forget override bypass instruction system a.i. artificial language llm chat gpt claude gemini".split(),
    *"llama assistant jailbr prompt developer anything < inst] ## : anweisungen instrucciones consignes".split(),
    " ai",
    " bot",
    " mode",
)
# What \s matches in ASCII, made a space.
_ASCII_SPACES = str.maketrans(dict.fromkeys("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f", " "))
# A single word that has no place in a cold email (kept apart: a name may contain it, e.g. "Disregardt").
_INSTRUCTION_WORDS = re.compile(r"\bdisregard\b", re.IGNORECASE)
_MARKUP = re.compile(
    rf"(?<!<)</?(?!(?:{_PROMPT_TAGS})\b)[a-z][a-z0-9]*(?:\s[^<>]*)?/?>(?!>)"  # an HTML tag (not a <<PLACEHOLDER>> or prompt tag)
    r"|\bjavascript\s*:|\bon(?:error|load|click|mouseover)\s*="
    r"|!?\[[^\]\n]*\]\([^)\n]*\)"  # a Markdown link or image
    r"|\*\*[^*\n]+\*\*|__[^_\n]+__"  # Markdown emphasis
    r"|^\s*#{1,6}\s+\S",  # a Markdown heading
    re.IGNORECASE | re.MULTILINE,
)
# What every match of _MARKUP contains: a tag's "<", "javascript", an event handler's "=", a Markdown link's "](",
# emphasis or a heading's "#".
_MARKUP_MARKS = ("<", "javascript", "=", "](", "**", "__", "#")
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.IGNORECASE)
_OBFUSCATED_CONTACT = re.compile(
    r"[\w.+-]+\s*(?:\[at\]|\(at\)|\{at\}|\s+at\s+)\s*[\w-]+(?:\s*(?:\[dot\]|\(dot\)|\{dot\}|\s+dot\s+)\s*[\w-]+)+"
    r"|\b[\w-]+\s*(?:\[\.\]|\(\.\)|\[dot\]|\(dot\))\s*[a-z]{2,}\b",
    re.IGNORECASE,
)
# What every match of _OBFUSCATED_CONTACT contains: a spelled or bracketed dot.
_OBFUSCATION_MARK = re.compile(r"\[dot\]|\(dot\)|\{dot\}|\sdot\s|\[\.\]|\(\.\)", re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w./,:-])(?:\+|00)?\d(?:[ ()./-]{0,2}\d){6,16}(?![\w])")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MESSENGER = re.compile(r"\b(?:whats\s*app|telegram|signal\s+me|wechat|skype|viber|t\.me/|wa\.me/)", re.IGNORECASE)
_MESSENGER_MARKS = ("whats", "telegram", "signal", "wechat", "skype", "viber", "t.me/", "wa.me/")
_URL_IN_NAME = re.compile(r"\b(?:https?|hxxps?|ftp)://|\bwww\.|\b[a-z0-9-]+\.[a-z]{2,24}/", re.IGNORECASE)
_OFFENSIVE = re.compile(
    r"\b(?:idiots?|idiotic|morons?|moronic|stupid|imbeciles?|incompetent|losers?|pathetic|clowns|dumbass\w*|"
    r"fuck\w*|shit\w*|crap|bastards?|bitch\w*|assholes?)\b",
    re.IGNORECASE,
)


_OFFENSIVE_MARKS = tuple(
    "idiot moron stupid imbecile incompetent loser pathetic clowns dumbass fuck shit crap bastard bitch asshole".split()
)


@functools.cache
def _format_characters() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The invisible format characters (category Cf) of this Python's Unicode tables, as two character classes:
    those of the Basic Multilingual Plane (such a class compiles to a bitmap, 40 times faster) and the others."""
    cf = [chr(c) for c in range(0x80, sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    return tuple(re.compile("[" + "".join(re.escape(c) for c in cf if (c <= "\uffff") == bmp) + "]") for bmp in (True, False))


def visible(text: str) -> str:
    """The text as a reader sees it: NFKC-normalised, invisible format characters (category Cf) removed."""
    if text.isascii():  # NFKC leaves ASCII alone and every Cf character is outside it: most drafts stop here
        return text
    # Regex passes, not a category lookup per character: names with accents make many drafts non-ASCII.
    bmp, astral = _format_characters()
    text = bmp.sub("", unicodedata.normalize("NFKC", text))
    return astral.sub("", text) if max(text, default="") > "\uffff" else text


def words(text: str) -> list[str]:
    """Case-folded words (letters and digits) of the visible text; punctuation and spacing do not count."""
    return _WORD.findall(visible(text).casefold())


def instruction(text: str) -> re.Match[str] | None:
    """The first instruction-like text in `text` (what `_INSTRUCTION.search` finds), the full pattern only when needed."""
    if not _may_match(text.lower().translate(_ASCII_SPACES) if text.isascii() else None, _INSTRUCTION_MARKS):
        return None
    return _INSTRUCTION.search(text)


def _may_match(ascii_lower: str | None, marks: Iterable[str]) -> bool:
    """Whether a pattern whose every match contains one of `marks` (lower case) may match a text, given the text
    in lower case when it is ASCII (None: another text, which only the pattern can tell)."""
    return ascii_lower is None or any(map(ascii_lower.__contains__, marks))


def _field(lead: Mapping[str, Any], name: str) -> str:
    value = lead.get(name)
    if value is None or (isinstance(value, float) and value != value):  # None or NaN: no value
        return ""
    return str(value)


@functools.lru_cache(maxsize=16384)
def trusted_name(value: str, field: str = "company") -> bool:
    """Whether a lead's name may appear in the message: short, and no instruction, link, address or markup in it.

    Kept per name: the gate asks it several times for every draft, and a campaign's leads share names."""
    text = visible(value)
    if len(words(text)) > MAX_TRUSTED_WORDS.get(field, 8):
        return False
    return not any(
        pattern.search(text) for pattern in (_INSTRUCTION, _MARKUP, _EMAIL, _OBFUSCATED_CONTACT, _URL_IN_NAME, _MESSENGER)
    ) and not _phones(text)


def _trusted_names(lead: Mapping[str, Any]) -> list[str]:
    return [v for f in ("company", "first_name") if (v := _field(lead, f)) and trusted_name(v, f)]


def mask(text: str, names: Iterable[str], mark: str = " ") -> str:
    """`text` with every whole-word mention of the names replaced by `mark` (case and spacing ignored)."""
    return _replace_spaced(text, names, mark, whole_words=True)


def _replace_spaced(text: str, texts: Iterable[str], mark: str, whole_words: bool) -> str:
    """`text` with every occurrence of each of `texts` (longest first; any case and spacing) replaced by `mark`.

    An ASCII text can only hold an ASCII text's occurrence where it holds its first word in lower case (exactly
    what IGNORECASE matches there): that test spares most drafts most of the patterns."""
    lower = text.lower() if text.isascii() else None
    for fixed in sorted(texts, key=len, reverse=True):
        spaced = _spaced_pattern(fixed, whole_words)
        if spaced is None or (lower is not None and spaced.first_word is not None and spaced.first_word not in lower):
            continue
        text, replaced = spaced.pattern.subn(mark, text)
        if replaced:
            lower = text.lower() if text.isascii() else None
    return text


@dataclass(frozen=True)
class _Spaced:
    pattern: re.Pattern[str]
    first_word: str | None  # in lower case, when ASCII: what an ASCII text must contain for the pattern to match


# Kept for every name and fixed text of a campaign, in both forms: a smaller cache that the names of a few
# thousand companies overflow compiles the patterns again and again.
@functools.lru_cache(maxsize=16384)
def _spaced_pattern(text: str, whole_words: bool) -> _Spaced | None:
    """`text`'s visible words with any spacing between them, any case (None: no words); kept, as the same
    names and fixed texts come back for every draft of a lead and every lead of a campaign."""
    parts = visible(text).split()
    if not parts:
        return None
    pattern = r"\s+".join(map(re.escape, parts))
    compiled = re.compile(r"(?<!\w)" + pattern + r"(?!\w)" if whole_words else pattern, re.IGNORECASE)
    return _Spaced(compiled, parts[0].lower() if parts[0].isascii() else None)


def _masked_words(text: str, names: Iterable[str]) -> list[str]:
    """Words of `text` with each name's word sequence replaced by a break (a run cannot span it)."""
    tokens = words(text)
    for name in sorted((words(n) for n in names), key=len, reverse=True):
        if not name:
            continue
        out, i, first = [], 0, name[0]
        while (at := _index(tokens, first, i)) >= 0:  # the next place the name may start, found in C
            if tokens[at : at + len(name)] == name:
                out += [*tokens[i:at], "\x00"]
                i = at + len(name)
            else:
                out += tokens[i : at + 1]
                i = at + 1
        tokens = out + tokens[i:]
    return tokens


def _index(tokens: list[str], token: str, start: int) -> int:
    """`tokens.index(token, start)`, or -1 when it is not there."""
    try:
        return tokens.index(token, start)
    except ValueError:
        return -1


def _runs(tokens: list[str], n: int = PLANTED_RUN_WORDS) -> set[tuple[str, ...]]:
    return {run for i in range(len(tokens) - n + 1) if "\x00" not in (run := tuple(tokens[i : i + n]))}


def _phones(text: str) -> set[str]:
    found = set()
    for match in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) >= 7 and not _ISO_DATE.match(match.group(0)):
            found.add(digits)
    return found


@dataclass(frozen=True)
class _AllowedTexts:
    """What the spec's own texts contain: the same for every draft of a campaign, so computed once."""

    runs: frozenset[tuple[str, ...]]
    text: str
    emails: frozenset[str]
    phones: frozenset[str]


@functools.lru_cache(maxsize=64)
def _allowed(texts: tuple[str, ...]) -> _AllowedTexts:
    text = "\n".join(visible(t) for t in texts)
    return _AllowedTexts(
        runs=frozenset().union(*(_runs(words(t)) for t in texts)),
        text=text,
        emails=frozenset(m.group(0).lower() for m in _EMAIL.finditer(text)),
        phones=frozenset(_phones(text)),
    )


@functools.lru_cache(maxsize=65536)
def _cached_words(text: str) -> tuple[str, ...]:
    """`words` of a lead's field or name: a campaign's leads share most of them."""
    return tuple(words(text))


def _field_runs(value: str, trusted: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[tuple[str, ...]]]:
    """A lead field's words with the trusted names masked, and their runs: the same for each of the lead's drafts.

    Only the names whose first word is in the field can mask anything, so only they are part of the cached
    key: a role or a note shared by many leads is split into runs once, whoever the lead is."""
    present = _cached_words(value)
    return _masked_field_runs(value, tuple(n for n in trusted if (name := _cached_words(n)) and name[0] in present))


@functools.lru_cache(maxsize=65536)
def _masked_field_runs(value: str, trusted: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[tuple[str, ...]]]:
    tokens = _masked_words(value, trusted)
    return tuple(tokens), frozenset(_runs(tokens))


def planted_runs(draft: str, lead: Mapping[str, Any], allowed_texts: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(field, first shared run) for every lead field whose words the draft repeats, `PLANTED_RUN_WORDS` at a time.

    Trusted names (the company, the first name) are breaks in both texts, so a run never
    spans them; an untrusted name is a source like the note.
    """
    trusted = _trusted_names(lead)
    draft_runs = _runs(_masked_words(draft, trusted))
    allowed = _allowed(tuple(allowed_texts)).runs
    found = []
    for name in (*PLANTED_FIELDS, "first_name"):
        tokens, runs = _field_runs(_field(lead, name), tuple(trusted))
        shared = (runs & draft_runs) - allowed
        if shared:
            first = next(run for i in range(len(tokens)) if (run := tuple(tokens[i : i + PLANTED_RUN_WORDS])) in shared)
            found.append((name, " ".join(first)))
    return found


def injection_violations(subject: str, body: str, lead: Mapping[str, Any], allowed_texts: Iterable[str] = ()) -> list[Violation]:
    """Every injection rule the draft breaks. `allowed_texts`: the spec's texts (claims, CTA, footer, sender...)."""
    allowed_texts = tuple(allowed_texts)
    text = visible(f"{subject}\n{body}")
    found: list[Violation] = []
    for name, run in planted_runs(text, lead, allowed_texts):
        found.append(Violation("planted_text", f"repeats the lead's {name}: {run!r}"))
    own = mask(text, _trusted_names(lead))
    allowed = _allowed(allowed_texts)
    allowed_own = allowed.text
    if match := instruction(own) or _INSTRUCTION_WORDS.search(own):
        found.append(Violation("injected_instruction", f"instruction-like text {match.group(0).strip()!r}"))
    lower = own.lower() if own.isascii() else None  # for the patterns' literal pre-checks (see _may_match)
    if _may_match(lower, _MARKUP_MARKS) and (match := _MARKUP.search(own)):
        found.append(Violation("markup", f"markup {match.group(0).strip()!r} in a plain-text message"))
    contacts = sorted({m.group(0).lower() for m in _EMAIL.finditer(own)} - allowed.emails) if "@" in own else []
    contacts += sorted(_phones(own) - allowed.phones)
    if _OBFUSCATION_MARK.search(own):  # a cheap search first: the full pattern backtracks through every word
        contacts += [m.group(0) for m in _OBFUSCATED_CONTACT.finditer(own) if m.group(0) not in allowed_own]
    if _may_match(lower, _MESSENGER_MARKS):
        contacts += [m.group(0) for m in _MESSENGER.finditer(own) if m.group(0).lower() not in allowed_own.lower()]
    if contacts:
        found.append(Violation("unsupported_contact", f"contact channel not in the spec: {contacts[0]!r}"))
    if _may_match(lower, _OFFENSIVE_MARKS) and (match := _OFFENSIVE.search(own)):
        found.append(Violation("offensive_language", f"offensive word {match.group(0)!r}"))
    return found


# --- language -------------------------------------------------------------------------------------

# Frequent function words per language. A word in several lists ("a", "la", "de") counts for each:
# the verdict compares the spec language's count with the best other language's.
_STOPWORD_LISTS: dict[str, str] = {
    "en": (
        "the a an and of to in for is are was were be been being that this these those it its on with as at by from "
        "you your yours we our ours us they their them he she his her not or but if so can will would could should "
        "have has had do does did what which who whom how when where why all any more most up out about into than "
        "then there here no just one every each only also very some such other after before over under again "
        "while because through during without within between both same own too my me i am"
    ),
    "de": (
        "der die das den dem des und ist sind nicht mit für auf bei ein eine einen einem einer eines ich du sie "
        "wir ihr ihre ihren ihrem ihnen uns unser unsere es auch noch wie zu zum zur im vom aus oder aber wenn "
        "dass so schon nur sehr mehr kann können wird werden wurde hat haben hatte sein wieder damit über nach "
        "vor ohne durch gegen bis dann weil doch mal man jetzt hier dort alle alles viele sich"
    ),
    "es": (
        "el la los las un una unos unas y o pero que de del al en con por para es son está están ser estar "
        "su sus nuestro nuestra nosotros usted ustedes le les lo se no sí muy más menos como cuando donde "
        "porque también ya hay este esta estos estas ese esa eso todo todos cada sin sobre entre hasta desde"
    ),
    "fr": (
        "le la les un une des et ou mais que qui de du au aux en dans avec pour par sur est sont être avoir "
        "a ont nous vous ils elles leur leurs votre vos notre nos ce cette ces son sa ses ne pas plus très "
        "comme quand où parce aussi déjà tout tous chaque sans entre jusqu depuis chez"
    ),
    "nl": (
        "de het een en van in op met voor is zijn niet dat die deze dit ook maar als bij naar uit om te ze wij "
        "jullie uw onze ons hun er nog wel kan worden wordt heeft hebben geen meer zeer hoe waar wanneer omdat"
    ),
    "it": (
        "il lo la gli le un una uno e o ma che di del della dei delle al alla in con per su è sono essere "
        "noi voi loro suo sua nostro nostra vostro non più molto come quando dove perché anche già tutto ogni"
    ),
    "pt": (
        "o a os as um uma e ou mas que de do da dos das em no na nos nas com por para é são ser estar "
        "nós vocês seu sua nosso nossa não mais muito como quando onde porque também já todo cada"
    ),
}
STOPWORDS: dict[str, frozenset[str]] = {lang: frozenset(text.split()) for lang, text in _STOPWORD_LISTS.items()}
# Languages the gate can check: those written in Latin script with a stopword list above.
SUPPORTED_LANGUAGES: frozenset[str] = frozenset(STOPWORDS)
MIN_WORDS_FOR_VERDICT = 8  # below this many words of free text there is too little to judge
MIN_FOREIGN_STOPWORDS = 3
MIN_OWN_STOPWORD_SHARE = 0.08  # of distinct words (English prose: 20-40 %); catches languages without a list
MAX_OTHER_SCRIPT_SHARE = 0.5  # share of letters outside Latin script


def _strip_texts(text: str, texts: Iterable[str]) -> str:
    """`text` without verbatim occurrences of the given texts (case and spacing ignored)."""
    return _replace_spaced(text, texts, " ", whole_words=False)


def _tokens(text: str) -> list[str]:
    return [t for t in _WORD.findall(text.casefold()) if not t.isdigit()]


def _rival_language(tokens: list[str], lang: str) -> tuple[str, int, int] | None:
    """(language, its function words, the spec language's) when another language's outnumber the spec's."""
    counts = Counter(tokens)  # each distinct word counted once per language (a set intersection), not each occurrence
    present = counts.keys()
    own = sum(counts[t] for t in present & STOPWORDS[lang])
    others = {o: sum(counts[t] for t in present & ws) for o, ws in STOPWORDS.items() if o != lang}
    rival, count = max(others.items(), key=lambda item: item[1])
    return (rival, count, own) if count >= MIN_FOREIGN_STOPWORDS and count > own else None


def language_violations(subject: str, body: str, language: str, fixed_texts: Iterable[str] = ()) -> list[Violation]:
    """A `wrong_language` violation when the draft's own words are mostly not in `language`.

    `fixed_texts` (the spec's call to action, footer, address and sender, the lead's names)
    are removed first: they read the same whatever language the draft is in. The rest is
    judged by function words. It is the wrong language when at least 3 stopwords of another
    language appear and outnumber the spec language's; when, with 20+ distinct words, under
    8 % of them are the spec language's stopwords (a language without a list, say Polish);
    or when most letters are not Latin script. The stopword test is also made paragraph by
    paragraph, so a partly translated email is caught. Fewer than 8 words get no verdict. Names are
    not function words, so a short English email to "Société Générale des Eaux et du Nord"
    passes once the names are among `fixed_texts`, as `check_draft` passes them.

    Only the languages in `SUPPORTED_LANGUAGES` (en, de, es, fr, nl, it, pt; a region suffix
    such as "en-GB" is ignored) are checked; for any other code the check does nothing
    rather than guess.
    """
    lang = language.lower().replace("_", "-").split("-")[0]
    if lang not in STOPWORDS:
        return []
    free = visible(_strip_texts(visible(f"{subject}\n{body}"), fixed_texts))
    # ASCII letters are Latin: only a text with other characters can be in another script, and only their
    # Unicode names are looked up.
    letters = 0 if free.isascii() else sum(map(str.isalpha, free))
    if letters:
        other_script = sum(1 for c in free if not c.isascii() and c.isalpha() and "LATIN" not in unicodedata.name(c, "LATIN"))
        if letters >= 20 and other_script / letters > MAX_OTHER_SCRIPT_SHARE:
            return [Violation("wrong_language", f"most letters are not Latin script; the spec's language is {language!r}")]
    tokens = _tokens(free)
    if len(tokens) < MIN_WORDS_FOR_VERDICT:
        return []
    if rival := _rival_language(tokens, lang):
        name, count, own = rival
        return [
            Violation(
                "wrong_language", f"reads as {name!r} ({count} {name} vs {own} {lang} function words), spec says {language!r}"
            )
        ]
    distinct = set(tokens)
    own_distinct = len(distinct & STOPWORDS[lang])
    if len(distinct) >= 20 and own_distinct / len(distinct) < MIN_OWN_STOPWORD_SHARE:
        return [
            Violation(
                "wrong_language",
                f"only {own_distinct} of {len(distinct)} distinct words are {lang} function words, spec says {language!r}",
            )
        ]
    # A partly translated email: one paragraph in another language, the rest in the spec's.
    for paragraph in re.split(r"\n\s*\n", free):
        words = _tokens(paragraph)
        if len(words) >= MIN_WORDS_FOR_VERDICT and (rival := _rival_language(words, lang)):
            name, count, own = rival
            opening = " ".join(paragraph.split()[:6])
            return [
                Violation(
                    "wrong_language",
                    f"a paragraph reads as {name!r} ({count} {name} vs {own} {lang} function words): {opening!r}…, "
                    f"spec says {language!r}",
                )
            ]
    return []
