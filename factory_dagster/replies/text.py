"""A reply's own words: quoted text, forwarded originals, signatures and our own texts removed.

Why: a reply quotes the message it answers, and ours ends with an unsubscribe footer. If the
rules or a model read the quote, "Sounds good, call me Tuesday" above our quoted footer would
look like an unsubscribe request. So every reader of a reply (rules and models) sees only what
the person wrote. Supported reply conventions, in English, German, French, Spanish and Dutch:

- lines quoted with `>` (a quoted block under an attribution line is dropped, text after it kept:
  bottom-posting);
- attribution lines ("On … wrote:", "Am … schrieb …:", "Le … a écrit :", "El … escribió:",
  "Op … schreef …:"), also when the client wrapped them over two lines; an attribution followed by
  unquoted text starts the original: everything after it goes;
- Outlook-style original and forwarded headers ("-----Original Message-----", a "From:" line with
  a "Sent:"/"Date:" line right after it, in the five languages, "---------- Forwarded message");
- signatures: the RFC 3676 delimiter `-- `, a sign-off line ("Best regards", "Mit freundlichen
  Grüßen", "Cordialement", "Saludos", "Met vriendelijke groet", …) followed only by a few short
  lines, "Sent from my iPhone" lines, and confidentiality disclaimers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_QUOTED = re.compile(r"^\s*>")
_WROTE = r"(?:wrote|schrieb|a\s+écrit|escribió|escribio|schreef|ha\s+scritto)"
# An attribution line: "On <date>, <name> wrote:" and its equivalents (may hold an address in <>).
_ATTRIBUTION = re.compile(
    rf"^\s*(?:On|Am|Le|El|Op|Il)\b.{{0,240}}\b{_WROTE}\b.{{0,120}}:\s*$|^.{{0,200}}<[^<>@\s]+@[^<>\s]+>\s*{_WROTE}\s*:?\s*$",
    re.IGNORECASE,
)
_ORIGINAL_MARKER = re.compile(
    r"^\s*-{2,}\s*(?:original message|ursprüngliche nachricht|originalnachricht|message d'origine|message original|"
    r"mensaje original|oorspronkelijk bericht|origineel bericht|forwarded message|weitergeleitete nachricht|"
    r"message transféré|mensaje reenviado|doorgestuurd bericht)\s*-{2,}\s*$"
    r"|^\s*(?:begin forwarded message|anfang der weitergeleiteten nachricht|début du message réexpédié)\s*:\s*$"
    r"|^\s*_{10,}\s*$",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"^\s*\*?(?:from|von|de|van|da)\s*\*?\s*:\s*\S", re.IGNORECASE)
_HEADER_NEXT = re.compile(
    r"^\s*\*?(?:sent|date|gesendet|datum|envoyé|date d'envoi|enviado(?: el)?|fecha|verzonden|verstuurd|inviato|to|an|à|para|aan)"
    r"\s*\*?\s*:",
    re.IGNORECASE,
)
_SIG_DELIMITER = re.compile(r"^--\s?$")
_SIGN_OFF = re.compile(
    r"^\s*(?:best(?:\s+(?:regards|wishes))?|kind(?:est)?\s+regards|warm(?:est)?\s+regards|regards|many\s+thanks|thanks(?:\s+again)?|"
    r"thank\s+you|cheers|all\s+the\s+best|sincerely|yours(?:\s+sincerely|\s+truly)?|"
    r"mit\s+freundlichen\s+grüßen|mit\s+freundlichen\s+grüssen|freundliche\s+grüße|viele\s+grüße|beste\s+grüße|liebe\s+grüße|"
    r"schöne\s+grüße|herzliche\s+grüße|(?:viele\s+)?grüße|gruß|mfg|vg|lg|danke|"
    r"cordialement|bien\s+cordialement|bien\s+à\s+vous|sincères\s+salutations|salutations|merci(?:\s+beaucoup)?|bonne\s+journée|"
    r"saludos(?:\s+cordiales)?|un\s+saludo|atentamente|gracias|un\s+abrazo|"
    r"met\s+vriendelijke\s+groet(?:en)?|vriendelijke\s+groet(?:en)?|hartelijke\s+groet(?:en)?|groet(?:en|jes)?|mvg|bedankt)"
    r"\s*[,.!]*\s*$",
    re.IGNORECASE,
)
_MOBILE_FOOTER = re.compile(
    r"^\s*(?:sent\s+from\s+my\s+\w+|get\s+outlook\s+for\s+\w+|von\s+meinem\s+\w+\s+gesendet|gesendet\s+von\s+meinem\s+\w+|"
    r"envoyé\s+de\s+mon\s+\w+|enviado\s+desde\s+mi\s+\w+|verzonden\s+(?:vanaf|met)\s+mijn\s+\w+)\b.*$",
    re.IGNORECASE,
)
_DISCLAIMER = re.compile(
    r"^\s*(?:confidentiality\s+notice|disclaimer\s*:|this\s+(?:e-?mail|message)\s+(?:and\s+any\s+attachments?\s+)?"
    r"(?:is|are|may\s+be)\s+(?:confidential|intended)|diese\s+e-?mail\s+(?:enthält|ist)\s+(?:vertrauliche|vertraulich)|"
    r"ce\s+message\s+(?:et\s+toutes\s+les\s+pièces\s+jointes\s+)?(?:est|sont)\s+confidentiel|"
    r"este\s+(?:mensaje|correo)\s+(?:y\s+sus\s+anexos\s+)?(?:es|son|contiene)\s+(?:confidencial|información\s+confidencial)|"
    r"dit\s+(?:e-?mail)?bericht\s+is\s+(?:uitsluitend|vertrouwelijk))",
    re.IGNORECASE,
)
# A signature after a sign-off: this many lines at most, each this short.
SIGNATURE_MAX_LINES = 8
SIGNATURE_MAX_CHARS = 90


def _attribution_at(lines: list[str], i: int) -> int:
    """How many lines the attribution starting at line i takes (0: none; 2: wrapped by the client)."""
    if _ATTRIBUTION.match(lines[i]):
        return 1
    if i + 1 < len(lines) and lines[i + 1].strip() and _ATTRIBUTION.match(f"{lines[i].rstrip()} {lines[i + 1].strip()}"):
        return 2
    return 0


def _next_content(lines: list[str], start: int) -> int | None:
    """The index of the first non-blank line from `start` (None: only blanks follow)."""
    return next((k for k in range(start, len(lines)) if lines[k].strip()), None)


def strip_quoted(text: str) -> str:
    """The reply without quoted lines, attributions, original/forwarded messages (see the module docstring)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _ORIGINAL_MARKER.match(line):
            break
        if _HEADER_FROM.match(line) and any(_HEADER_NEXT.match(lines[k]) for k in range(i + 1, min(i + 3, len(lines)))):
            break
        width = _attribution_at(lines, i)
        if width:
            following = _next_content(lines, i + width)
            if following is None or not _QUOTED.match(lines[following]):
                break  # the original follows unquoted: nothing after this is the person's own
            i += width
            continue
        if not _QUOTED.match(line):
            kept.append(line)
        i += 1
    return "\n".join(kept)


def _is_sentence(line: str) -> bool:
    """Prose, not a signature line (a name, a title, a phone number, a company)."""
    return len(line) > SIGNATURE_MAX_CHARS or "?" in line or (len(line.split()) >= 5 and line.endswith((".", "!", ":")))


def strip_signature(text: str) -> str:
    """The reply without its signature, mobile footer and disclaimer (the first line is never a signature)."""
    lines = [line for line in text.split("\n") if not _MOBILE_FOOTER.match(line)]
    content = [k for k, line in enumerate(lines) if line.strip()]
    if not content:
        return ""
    first = content[0]
    for k in range(first + 1, len(lines)):
        if _SIG_DELIMITER.match(lines[k]) or _DISCLAIMER.match(lines[k]):
            lines = lines[:k]
            break
        if _SIGN_OFF.match(lines[k]):
            rest = [line.strip() for line in lines[k + 1 :] if line.strip()]
            if len(rest) <= SIGNATURE_MAX_LINES and not any(_is_sentence(line) for line in rest):
                lines = lines[:k]
                break
    return "\n".join(lines)


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def strip_own_texts(text: str, own_texts: Iterable[str]) -> str:
    """The reply without our own fixed texts pasted into it unquoted (e.g. the unsubscribe footer), case and spacing ignored."""
    for own in own_texts:
        words = own.split()
        if not words:
            continue
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE)
        text = pattern.sub(" ", text)
    return text


def clean_reply(text: str, own_texts: Iterable[str] = ()) -> str:
    """What the person wrote: no quotes, no signature, none of our own texts; blank runs collapsed."""
    cleaned = strip_own_texts(strip_signature(strip_quoted(text or "")), own_texts)
    lines = [line.rstrip() for line in cleaned.split("\n")]
    collapsed: list[str] = []
    for line in lines:
        if line.strip() or (collapsed and collapsed[-1].strip()):
            collapsed.append(line)
    return "\n".join(collapsed).strip()
