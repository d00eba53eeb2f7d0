"""Rules first: the cases that need no model, because the evidence is certain.

Checked in this order (the first that fires decides, with confidence 1):

1. `auto_submitted_header`: RFC 3834 `Auto-Submitted` other than `no` (or `X-Autoreply`,
   `X-Autorespond`, `Precedence: auto_reply`); out_of_office when the notice speaks of an
   absence or says when its writer is back ("until 16 March", "bis zum", "jusqu'au"), else
   auto_reply. A delivery-status report (`multipart/report; report-type=delivery-status`) is an
   auto_reply.
2. `delivery_status_notice`: a bounce (mailer-daemon/postmaster sender, a DSN subject such as
   "Undeliverable:" or "Mail delivery failed", or RFC 3464 fields / an SMTP 5.x.x status in the body).
3. `auto_reply_subject`: the subject of an automatic reply ("Automatic reply:", "Out of Office:",
   "Abwesenheitsnotiz:", "Réponse automatique :", "Respuesta automática:", "Afwezig:", …).
4. `unsubscribe_request`: the person's own words (quotes, signature and our footer removed) ask
   to stop the emails, in English, German, French, Spanish or Dutch: the explicit verbs in their
   inflected forms (austragen, ausgetragen, uit te schrijven, …), a stop word next to a mailing
   verb ("nicht weiter angeschrieben", "ne plus m'envoyer", "niet meer gemaild"), a mailing list
   next to a way off it, and emphatic one-word runs ("Stop. Emailing. Me."). Deliberately broad:
   an unsubscribe request must never be missed, so "not interested, stop emailing me" is an
   unsubscribe, not a negative. A new wording can still slip past the rules; the models then read
   it, told that any request to stop is an unsubscribe.
5. `out_of_office_notice` / `auto_reply_notice`: a body that is unmistakably machine-written: an
   absence together with the notice's own formula (limited access to email, urgent matters go to
   someone else), or "this is an automated reply", "this mailbox is not monitored".

Everything else goes to the models. Rules never see quoted text: `text.clean_reply` runs first
(the body checks for bounces read the raw text, since a bounce quotes the failed message).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RuleDecision:
    label: str
    rule: str
    reason: str


_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|antw|sv|vs|r|rif|tr|wg|fw|fwd|rv)\s*:\s*)+", re.IGNORECASE)
_ABSENCE = re.compile(
    r"out\s+of\s+(?:the\s+)?office|\booo\b|on\s+(?:annual\s+|parental\s+|sick\s+|maternity\s+|paternity\s+)?leave|on\s+holiday|"
    r"on\s+vacation|\baway\b|on\s+a\s+(?:flight|plane|business\s+trip)|travell?ing|at\s+a\s+(?:conference|training)|abwesen|nicht\s+im\s+büro|außer\s+haus|urlaub|elternzeit|dienstreise|"
    r"absen(?:t|te|ce)|en\s+congés?|en\s+vacances|hors\s+du\s+bureau|en\s+déplacement|"
    r"fuera\s+(?:de\s+(?:la\s+)?oficina|hasta)|estoy\s+fuera|de\s+vacaciones|ausente|de\s+viaje|"
    r"afwezig|(?:met|op)\s+vakantie|niet\s+op\s+kantoor|verlof",
    re.IGNORECASE,
)
# An automatic reply that names when its writer is back is an absence notice (in the five languages).
_RETURN = re.compile(
    r"\b(?:until|till|back\s+(?:on|in)|return(?:ing)?\s+on|bis(?:\s+(?:zum|einschließlich))?|ab\s+dem|wieder\s+(?:im\s+büro|da|erreichbar)|"
    r"jusqu'?(?:au|à)|de\s+retour|à\s+mon\s+retour|hasta(?:\s+el)?|de\s+(?:vuelta|regreso)|a\s+mi\s+(?:vuelta|regreso)|"
    r"tot(?:\s+en\s+met)?|terug\s+op|weer\s+(?:aanwezig|op\s+kantoor))\b",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:automatic\s+reply|auto(?:matic)?[\s-]*(?:reply|response)|autoreply|out\s+of\s+(?:the\s+)?office|ooo\b|"
    r"abwesenheitsnotiz|automatische\s+antwort|abwesend|réponse\s+automatique|absence\s+du\s+bureau|absent|"
    r"respuesta\s+automática|respuesta\s+automatica|fuera\s+de\s+la\s+oficina|ausente|"
    r"automatisch\s+antwoord|afwezig|afwezigheidsbericht)\b",
    re.IGNORECASE,
)
_DSN_SENDER = re.compile(r"mailer-daemon|postmaster@|mail\s+delivery\s+(?:subsystem|system)", re.IGNORECASE)
_DSN_SUBJECT = re.compile(
    r"undeliverable|undelivered\s+mail|delivery\s+status\s+notification|mail\s+delivery\s+failed|delivery\s+failure|"
    r"returned\s+mail|failure\s+notice|message\s+not\s+delivered|unzustellbar|nicht\s+zustellbar|"
    r"non\s+remis|échec\s+de\s+la\s+remise|no\s+se\s+puede\s+entregar|no\s+entregado|onbestelbaar|niet\s+bezorgd",
    re.IGNORECASE,
)
_DSN_BODY = re.compile(
    r"could(?:\s+not|n't)\s+be\s+delivered|delivery\s+to\s+the\s+following\s+recipients?\s+failed|"
    r"n'a\s+pas\s+pu\s+être\s+(?:remis|distribué)|konnte\s+nicht\s+zugestellt\s+werden|"
    r"no\s+(?:se\s+)?(?:pudo|ha\s+podido)\s+(?:ser\s+)?entregar|kon\s+niet\s+(?:worden\s+)?(?:afgeleverd|bezorgd)|"
    r"^\s*(?:diagnostic-code|final-recipient|action:\s*failed|status:\s*5\.\d+\.\d+)|\b(?:550|551|552|553|554)[\s-]+5\.\d\.\d+\b|"
    r"\b5\.(?:1\.[0-9]|2\.[0-2]|4\.[0-7]|7\.1)\b.{0,80}(?:not\s+found|does\s+not\s+exist|unknown|rejected|unavailable|disabled)",
    re.IGNORECASE | re.MULTILINE,
)
_UNSUBSCRIBE = re.compile(
    # A one-word reply that is a command to stop, in any of the languages.
    r"^\W*(?:un-?subscribe|unsub|remove|stop|opt[\s-]?out|abmelden|austragen|stopp|désabonnement|désinscription|"
    r"désabonner|baja|afmelden|uitschrijven)\W*$|"
    # English
    r"\bun-?subscri|\bunsub\b|\bopt(?:ed|ing)?[\s-]?(?:(?:me|us|him|her|this\s+\w+)\s+)?out\b|"
    # A mailing list and a way off it, in either order, in any of the languages.
    r"\b(?:mailing\s*list|distribution\s+list|mailing|verteiler|mailingliste|e-?mail-?liste|liste\s+de\s+diffusion|lista\s+de\s+"
    r"(?:correo|distribución|envío)|mailinglijst|verzendlijst)\b[^.!?\n,;]{0,40}\b(?:off|remove\w*|delete\w*|entfern\w*|lösch\w*|streich\w*|"
    r"nehm\w*|retir\w*|supprim\w*|sac\w*|quit\w*|elimin\w*|borr\w*|halen|afhalen|verwijder\w*)|"
    r"\b(?:remove|delete|take|entfernen|löschen|streichen|nehmen|retirer|retirez|supprimer|supprimez|sacar|sáquenme|quitar|"
    r"quítenme|eliminar|elimínenme|borrar|halen|haal|verwijder\w*)\b[^.!?\n,;]{0,40}\b(?:mailing\s*list|distribution\s+list|"
    r"verteiler|mailingliste|liste\s+de\s+diffusion|lista\s+de\s+(?:correo|distribución|envío)|mailinglijst|verzendlijst)\b|"
    r"\bremove\s+(?:me|us|my\s+\w+(?:\s+\w+)?|our\s+\w+|this\s+(?:e-?mail|address))\b|"
    r"\b(?:take|get)\s+(?:me|us|my\s+\w+(?:\s+\w+)?)\s+off\b|\b(?:be|been|being|get|got)\s+taken\s+off\b|"
    r"\boff\s+(?:your|the|this)\s+(?:\w+\s+)?(?:list|database|distribution|system)|"
    r"\b(?:stop|quit|cease)\s+(?:e-?mailing|mailing|contacting|messaging|spamming|sending|writing|reaching\s+out)\b|"
    r"\bstop\s+(?:with\s+)?(?:the|your|these|this|all)?\s*(?:cold\s+)?(?:outreach|e-?mails?|messages|spam|mailings?)\b|"
    r"\bcease\s+and\s+desist\b|"
    r"\b(?:don'?t|do\s+not|never)\s+(?:ever\s+)?(?:e-?mail|contact|write\s+to|message|mail|spam|reach\s+out\s+to)\s+(?:me|us)\b|"
    r"\b(?:don'?t|do\s+not)\s+reach\s+out\s+again\b|\bdo\s+not\s+contact\b|"
    r"\bno\s+(?:more|further)\s+(?:e-?mails?|messages|contact|communication)\b|"
    r"\b(?:don'?t|do\s+not|no\s+longer)\s+(?:want|wish|need|care)\s+(?:to\s+(?:receive|get)\s+)?(?:any\s+)?(?:more|further|these|your)\s+"
    r"(?:e-?mails?|messages|mails)\b|\b(?:no\s+longer\s+wish|rather\s+not)\s+(?:to\s+)?(?:receive|get)\b|"
    r"\b(?:delete|erase)\s+(?:all\s+)?(?:my|our)\s+(?:personal\s+)?(?:data|details|e-?mail|address|contact|information)|"
    r"\bright\s+to\s+(?:erasure|be\s+forgotten)\b|\bleave\s+me\s+alone\b|\bnot\s+to\s+(?:contact|e-?mail)\s+me\b|"
    r"\blose\s+my\s+(?:e-?mail|address|number)\b|\b(?:delete|erase|scrub)\s+(?:me|us)\b|"
    r"\b(?:delete|remove|take|get|want|scrub|erase)\s+(?:me\s+|us\s+)?(?:off|from|out\s+of)\s+(?:\w+\s+){0,3}"
    r"(?:lists?|database|mailings?|distribution|system)\b|"
    # German
    r"\babmelden\b|\babmeldung\b|\babbestell|\baustragen\b|\bab(?:zu|ge)meld\w*|\baus(?:zu|ge)trag\w*|\babzubestell\w*|\btragen\s+sie\s+(?:mich|uns)\b.{0,40}\baus\b|"
    r"\b(?:entfernen|löschen|streichen|nehmen)\s+sie\s+(?:mich|uns|meine)\b|\baus\s+(?:ihrem|dem|ihrer|der)\s+(?:\w+\s+)?"
    r"(?:verteiler|liste|datenbank|newsletter)|\bmeine\s+(?:daten|adresse|e-?mail-adresse)\s+(?:zu\s+)?löschen\b|"
    r"\bkeine\s+weiteren\s+(?:e-?mails?|mails|nachrichten|zusendungen)\b|"
    r"\bkeine\s+(?:e-?mails?|mails|nachrichten|werbung|zusendungen)\s+mehr\b|\bbitte\s+keine\s+(?:e-?mails?|mails|nachrichten|werbung)\b|"
    r"\bnicht\s+(?:mehr|wieder)\s+(?:kontaktier\w*|anschreiben|angeschrieben|schreiben|mailen|anmailen|zu\s+kontaktieren|zu\s+schreiben)\b|"
    r"\b(?:kontaktieren|schreiben|mailen)\s+sie\s+(?:mich|mir|uns)\s+(?:\w+\s+){0,2}nicht\b|\bhören\s+sie\s+(?:\w+\s+)?auf\b|"
    r"\baufhören\b|\bunterlassen\s+sie\b|\bmich\s+(?:\w+\s+){0,4}(?:zu\s+entfernen|auszutragen|abzumelden|zu\s+löschen|zu\s+streichen)\b|"
    r"\bwidersprech\w*|\bwiderspreche\b|"
    r"\bnicht\s+(?:mehr|weiter|länger)\b[^.!?\n,;]{0,40}\b(?:\w*schreib\w*|\w*schrieb\w*|kontaktier\w*|\w*mail\w*|angerufen|belästig\w*|"
    r"zugeschickt)\b|\b(?:\w*schreib\w*|kontaktier\w*|\w*mail\w*)\s+(?:\w+\s+){0,3}nicht\s+(?:mehr|weiter)\b|"
    # French
    r"\bd[ée]sabonn|\bd[ée]sinscri|\bretirez[\s-]+(?:moi|nous|mon|mes|notre)\b|\b(?:me|nous)\s+retirer\s+de\b|"
    r"\bretirer\s+(?:mon|mes|notre)\s+|\bsupprim\w*[\s-]+(?:moi|mon|mes|nos|notre)\b|"
    r"\bne\s+(?:\w+\s+){0,2}plus\s+(?:me\s+|nous\s+)?(?:recevoir|contacter|écrire|solliciter|envoyer)\b|"
    r"\bne\s+(?:me|nous)\s+(?:contactez|écrivez|sollicitez|envoyez)\s+plus\b|\bne\s+m'écrivez\s+plus\b|"
    r"\b(?:arrêtez|cessez)\s+(?:de|d')|\b(?:cesser|arrêter)\s+(?:\w+\s+){0,2}(?:envois?|mails?|e-?mails?|messages|courriels?|sollicitations)\b|"
    r"\bplus\s+(?:de|d')\s*(?:e-?mails?|mails?|messages|courriels?|sollicitations)\b|"
    r"\b(?:rayez|radiez|enlevez)[\s-]+moi\b|\bm'enlever\s+de\b|\bje\s+m'oppose\b|"
    r"\bne\s+(?:\w+\s+){0,2}plus\s+(?:me\s+|m'|nous\s+)?(?:envoy\w*|écri\w*|contact\w*|sollicit\w*|recev\w*|mail\w*)|"
    r"\bne\s+(?:me\s+|m'|nous\s+)(?:envoy|écri|contact|sollicit)\w*\s+plus\b|"
    # Spanish
    r"\b(?:dar|darme|darnos|darse|den|denme|dé|deme)\s+de\s+baja\b|\bsolicit\w*\s+(?:la\s+|mi\s+)?baja\b|\bmi\s+baja\b|\bdesuscrib|"
    r"\bcancelar\s+(?:la\s+|mi\s+)?suscripción\b|"
    r"\b(?:eliminen|borren|quiten|saquen|eliminar|borrar|quitar|sacar)(?:me|nos)?\s+(?:de|mi|mis|nuestr)|"
    r"\b(?:bórren|quítenme|sáquenme|elimínenme|bórrenme)|"
    r"\bno\s+(?:me|nos)\s+(?:vuelvan?\s+a\s+)?(?:contact|escrib|envíe|envie|mand)\w*|\bno\s+vuelvan?\s+a\s+(?:contact|escrib|envi)\w*|"
    r"\bdej(?:e|en|ar)\s+de\s+(?:escribir|enviar|contactar|mandar)|\bno\s+(?:quiero|deseo|queremos)\s+recibir\b|"
    r"\bno\s+(?:quiero|deseo|queremos)\s+más\s+(?:correos|e-?mails|mensajes)\b|"
    r"\bno\s+(?:\w+\s+){0,3}(?:más|mas)\s+(?:correos?|e-?mails?|mensajes|comunicaciones|publicidad)\b|"
    r"\b(?:quitar|borrar|sacar|eliminar|excluir)me\s+de\b|"
    # Dutch
    r"\bafmelden\b|\bafmelding\b|\buitschrijven\b|\bschrijf\s+(?:mij|me|ons)\s+uit\b|\bmeld\s+(?:mij|me|ons)\s+af\b|"
    r"\b(?:verwijder|haal)\s+(?:mij|me|ons|mijn)\b|\buit\s+(?:jullie|uw|het|de)\s+(?:\w+\s+)?(?:bestand|database|mailinglijst|lijst)\b|"
    r"\bgeen\s+(?:e-?mails?|mails?|berichten|mailtjes)\s+meer\b|\bwil\s+geen\s+(?:e-?mails?|mails?|berichten)\b|"
    r"\b(?:stop|stopt|stoppen)\s+met\s+(?:mailen|e-?mailen|sturen|me\s+te\s+mailen|mij\s+te\s+mailen|contact|benaderen)|"
    r"\bniet\s+meer\s+(?:benaderen|contacteren|mailen|e-?mailen)\b|\bneem\s+geen\s+contact\s+meer\b|"
    r"\bbenader\s+(?:mij|me|ons)\s+niet\s+meer\b|\b(?:mij|me|ons)\s+(?:\w+\s+){0,3}(?:uit\s+te\s+schrijven|af\s+te\s+melden|te\s+verwijderen)\b|"
    r"\b(?:mij|me|ons)\s+uitschrijven\b|\buitgeschreven\b|\bafgemeld\b|"
    r"\b(?:niet|geen)\s+(?:\w+\s+){0,2}meer\s+(?:\w+\s+){0,2}(?:ge)?(?:mail\w*|e-?mail\w*|benader\w*|contact\w*|stuur\w*|ontvang\w*)|"
    r"\b(?:niet|geen)\s+meer\s+(?:\w+\s+){0,2}(?:ge)?(?:maild|mailen|benaderd|gecontacteerd)\s+worden\b",
    re.IGNORECASE | re.MULTILINE,
)
_NOTICE_FORMULA = re.compile(
    r"limited\s+(?:access\s+to\s+(?:my\s+)?e-?mails?|e-?mail\s+access)|(?:for|in\s+case\s+of)\s+urgent\s+(?:matters|requests|issues|enquiries|inquiries)|"
    r"(?:respond|reply|get\s+back\s+to\s+you)\s+(?:to\s+your\s+(?:e-?mail|message)\s+)?(?:up)?on\s+my\s+return|"
    r"in\s+dringenden\s+fällen|keinen\s+zugriff\s+auf\s+(?:meine\s+)?e-?mails|nach\s+meiner\s+rückkehr|"
    r"en\s+cas\s+d'urgence|accès\s+limité|à\s+mon\s+retour|dès\s+mon\s+retour|"
    r"para\s+(?:asuntos|temas|casos)\s+urgentes|en\s+caso\s+de\s+urgencia|acceso\s+limitado|a\s+mi\s+regreso|a\s+mi\s+vuelta|"
    r"in\s+dringende\s+gevallen|voor\s+dringende\s+zaken|beperkt\s+toegang|na\s+mijn\s+terugkeer|bij\s+terugkomst",
    re.IGNORECASE,
)
_AUTOMATED = re.compile(
    r"this\s+is\s+an\s+automat(?:ed|ic)\s+(?:reply|response|message|notification|acknowledg)|"
    r"this\s+(?:mailbox|inbox|address)\s+is\s+(?:no\s+longer\s+|not\s+)(?:monitored|in\s+use|active)|"
    r"(?:please\s+)?do\s+not\s+reply\s+to\s+this\s+(?:e-?mail|message)|"
    r"dies\s+ist\s+eine\s+automatische\s+(?:antwort|nachricht|benachrichtigung)|"
    r"(?:ceci\s+est\s+une|ce\s+message\s+est\s+une)\s+réponse\s+automatique|message\s+automatique|"
    r"(?:esta\s+es\s+una|este\s+es\s+un)\s+(?:respuesta|mensaje)\s+automátic[oa]|"
    r"dit\s+is\s+een\s+automatisch\s+(?:antwoord|bericht|gegenereerd)|"
    r"automati\w*\s+(?:generiert\w*|erstellt\w*|generated|généré\w*|generad[oa]|gegenereerd)|"
    r"(?:antworten\s+sie\s+nicht|ne\s+pas\s+répondre|no\s+responda|niet\s+(?:op\s+dit\s+bericht\s+)?(?:beantwoorden|reageren))",
    re.IGNORECASE,
)
_AUTO_HEADERS = (("auto-submitted", None), ("x-autoreply", None), ("x-autorespond", None), ("precedence", "auto_reply"))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.strip().lower() == name:
            return str(value).strip()
    return None


def _automatic_by_header(headers: Mapping[str, str]) -> str | None:
    """The header that marks the message as automatic (None: none does)."""
    for name, wanted in _AUTO_HEADERS:
        value = _header(headers, name)
        if value is None or not value or value.lower() == "no":
            continue
        if wanted is None or value.lower() == wanted:
            return f"{name}: {value}"
    return None


def _one_word_runs(text: str) -> str:
    """Runs of one-word sentences joined into phrases, one per line: "Stop. Emailing. Me." reads "Stop Emailing Me"."""
    runs, current = [], []
    for segment in re.split(r"[.!,;:?\n]+", text):
        words = segment.split()
        if len(words) == 1:
            current.append(words[0])
            continue
        if len(current) > 1:
            runs.append(" ".join(current))
        current = []
    if len(current) > 1:
        runs.append(" ".join(current))
    return "\n".join(runs)


def base_subject(subject: str) -> str:
    """The subject without its reply/forward prefixes (Re:, AW:, Fwd:, …)."""
    return _REPLY_PREFIX.sub("", subject or "").strip()


def decide(
    subject: str, raw_text: str, clean_text: str, headers: Mapping[str, str] | None = None, sender: str | None = None
) -> RuleDecision | None:
    """The rule that decides this reply's class, or None: the models must read it."""
    headers = headers or {}
    subject = subject or ""
    absence = bool(_ABSENCE.search(subject) or _ABSENCE.search(clean_text))
    away = absence or bool(_RETURN.search(clean_text))  # an automatic reply saying when its writer is back
    content_type = _header(headers, "content-type") or ""
    if "report-type=delivery-status" in content_type.replace(" ", "").lower():
        return RuleDecision("auto_reply", "delivery_status_notice", "a delivery-status report (RFC 3464)")
    if marker := _automatic_by_header(headers):
        label = "out_of_office" if away else "auto_reply"
        return RuleDecision(label, "auto_submitted_header", f"marked automatic by its header ({marker}, RFC 3834)")
    if (sender and _DSN_SENDER.search(sender)) or _DSN_SUBJECT.search(subject) or _DSN_BODY.search(raw_text or ""):
        return RuleDecision("auto_reply", "delivery_status_notice", "a delivery-failure notice (bounce)")
    if _AUTO_SUBJECT.match(subject):
        label = "out_of_office" if away else "auto_reply"
        return RuleDecision(label, "auto_reply_subject", f"the subject of an automatic reply: {subject.strip()[:80]!r}")
    emphatic = _one_word_runs(clean_text)
    if match := (_UNSUBSCRIBE.search(clean_text) or _UNSUBSCRIBE.search(emphatic) or _UNSUBSCRIBE.search(base_subject(subject))):
        return RuleDecision("unsubscribe", "unsubscribe_request", f"asks to stop the emails: {match.group(0).strip()!r}")
    if absence and _NOTICE_FORMULA.search(clean_text):
        return RuleDecision("out_of_office", "out_of_office_notice", "an absence notice in the wording of an automatic reply")
    if _AUTOMATED.search(clean_text):
        return RuleDecision("auto_reply", "auto_reply_notice", "says it is an automated message")
    return None
