"""Reading a reply: quoted text and signatures stripped, then the rules that decide the certain cases.

Pure functions on text written here (not the labelled set): each rule in several languages, and
the traps a real reply sets — our own quoted unsubscribe footer under a positive reply, a
bottom-posted answer under the quote, a "Thanks," line that is not a sign-off.
"""

from __future__ import annotations

import pytest

from factory_dagster.campaign.spec import load_spec
from factory_dagster.replies.rules import base_subject, decide
from factory_dagster.replies.text import clean_reply, strip_quoted, strip_signature
from factory_dagster.settings import DEFAULT_SPEC_PATH

FOOTER = load_spec(DEFAULT_SPEC_PATH).required.unsubscribe_footer
OURS = (
    "Hi Jo,\n\nMonth-end at Contoso probably still means late nights for the finance team.\n\n"
    f"Would a 20-minute call next week be useful?\n\nBest,\nMaya Okafor\nBrightwave Ledger\n\n{FOOTER}\n"
    "Brightwave Ledger Ltd, 41 Harbour Street, Edinburgh EH6 6PN, United Kingdom"
)


def quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def rule_for(text: str, subject: str = "Re: A calmer close for Contoso", headers=None, sender=None):
    return decide(subject, text, clean_reply(text, [FOOTER]), headers, sender)


# -- stripping ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attribution",
    [
        "On Tue, 3 Mar 2026 at 09:14, Maya Okafor <maya@brightwave-ledger.example> wrote:",
        "On Mon, Mar 9, 2026 at 8:02 AM Maya Okafor <\nmaya@brightwave-ledger.example> wrote:",  # wrapped by the client
        "Am Di., 3. März 2026 um 09:14 Uhr schrieb Maya Okafor <maya@brightwave-ledger.example>:",
        "Le mar. 3 mars 2026 à 09:14, Maya Okafor <maya@brightwave-ledger.example> a écrit :",
        "El mar, 3 mar 2026 a las 9:14, Maya Okafor (<maya@brightwave-ledger.example>) escribió:",
        "Op di 3 mrt 2026 om 09:14 schreef Maya Okafor <maya@brightwave-ledger.example>:",
    ],
)
def test_a_quoted_thread_is_cut_at_its_attribution_in_five_languages(attribution):
    reply = f"Sounds good, Tuesday at 10 works.\n\n{attribution}\n{quoted(OURS)}"
    assert clean_reply(reply) == "Sounds good, Tuesday at 10 works."


@pytest.mark.parametrize(
    ("lines", "language"),
    [
        (["From: Maya Okafor <maya@brightwave-ledger.example>", "Sent: Tuesday, March 3, 2026 9:14 AM"], "en"),
        (["Von: Maya Okafor <maya@brightwave-ledger.example>", "Gesendet: Dienstag, 3. März 2026 09:14"], "de"),
        (["De : Maya Okafor <maya@brightwave-ledger.example>", "Envoyé : mardi 3 mars 2026 09:14"], "fr"),
        (["De: Maya Okafor <maya@brightwave-ledger.example>", "Enviado el: martes, 3 de marzo de 2026 9:14"], "es"),
        (["Van: Maya Okafor <maya@brightwave-ledger.example>", "Verzonden: dinsdag 3 maart 2026 09:14"], "nl"),
        (["-----Original Message-----", "From: Maya Okafor"], "en"),
    ],
)
def test_an_outlook_style_original_below_the_reply_is_cut(lines, language):
    reply = "Happy to talk next week.\n\n________________________________\n" + "\n".join(lines) + f"\nSubject: x\n\n{OURS}"
    assert clean_reply(reply) == "Happy to talk next week.", language


def test_a_bottom_posted_reply_keeps_the_words_under_the_quote():
    reply = (
        f"On Tue, 3 Mar 2026 at 09:14, Maya Okafor <maya@brightwave-ledger.example> wrote:\n{quoted(OURS)}\n\nPlease remove me."
    )
    assert strip_quoted(reply).strip() == "Please remove me."


def test_signatures_go_but_a_thanks_line_followed_by_prose_stays():
    signed = "Let's talk on Friday.\n\nKind regards,\nJo Bloggs\nFinance Director | Contoso\nT +44 20 7946 0000"
    assert strip_signature(signed).strip() == "Let's talk on Friday."
    assert clean_reply("Yes, book it.\n\n-- \nJo Bloggs\nContoso") == "Yes, book it."
    assert clean_reply("Ja, gerne.\n\nVon meinem iPhone gesendet") == "Ja, gerne."
    not_a_signature = "Hi Maya,\nThanks,\nI would like to book a call for next week, can you send times?"
    assert "book a call" in clean_reply(not_a_signature)
    disclaimer = "Not for us.\n\nThis email and any attachments are confidential and intended solely for the addressee."
    assert clean_reply(disclaimer) == "Not for us."


def test_our_own_footer_pasted_unquoted_is_removed():
    reply = f"Sounds interesting, call me Monday.\n\n{FOOTER.upper()}"
    assert clean_reply(reply, [FOOTER]) == "Sounds interesting, call me Monday."


def test_reply_prefixes_are_taken_off_the_subject():
    assert base_subject("RE: AW: Fwd: Remove me") == "Remove me"


# -- the rules ------------------------------------------------------------------------------------------


def test_our_quoted_unsubscribe_footer_never_makes_a_reply_an_unsubscribe():
    for attribution in (
        "On Tue, 3 Mar 2026 at 09:14, Maya Okafor <maya@brightwave-ledger.example> wrote:",
        "Am Di., 3. März 2026 um 09:14 Uhr schrieb Maya Okafor <maya@brightwave-ledger.example>:",
    ):
        reply = f"Yes please, let's do Thursday at 2pm.\n\n{attribution}\n{quoted(OURS)}"
        assert rule_for(reply) is None  # nothing certain: the models read "yes please"
    outlook = f"Sounds good.\n\n-----Original Message-----\nFrom: Maya Okafor\nSent: Tuesday\n\n{OURS}"
    assert rule_for(outlook) is None


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("unsubscribe", "en"),
        ("Please take me off your list.", "en"),
        ("Not interested, and please don't contact me again.", "en"),
        ("Stop emailing my team, this is the fourth time.", "en"),
        ("I'd like to be taken off it, whatever list this is.", "en"),
        ("Bitte nehmen Sie mich aus Ihrem Verteiler.", "de"),
        ("Kein Interesse. Bitte keine weiteren E-Mails.", "de"),
        ("Kontaktieren Sie mich bitte nicht mehr.", "de"),
        ("Merci de me désinscrire.", "fr"),
        ("Je ne souhaite plus recevoir vos messages.", "fr"),
        ("Por favor, denme de baja.", "es"),
        ("No me vuelvan a escribir.", "es"),
        ("Graag afmelden voor deze mails.", "nl"),
        ("Verwijder mij uit jullie bestand.", "nl"),
    ],
)
def test_unsubscribe_requests_in_five_languages(text, language):
    decision = rule_for(f"{text}\n\nOn Tue, 3 Mar 2026, Maya Okafor <maya@brightwave-ledger.example> wrote:\n{quoted(OURS)}")
    assert decision is not None and (decision.label, decision.rule) == ("unsubscribe", "unsubscribe_request"), language


def test_a_bottom_posted_unsubscribe_under_the_quote_is_still_heard():
    reply = f"Am Di., 3. März 2026 schrieb Maya Okafor <maya@brightwave-ledger.example>:\n{quoted(OURS)}\n\nBitte austragen."
    assert rule_for(reply).label == "unsubscribe"


def test_an_unsubscribe_subject_with_an_empty_body_is_an_unsubscribe():
    assert rule_for("", subject="Re: Remove me").label == "unsubscribe"


@pytest.mark.parametrize(
    ("subject", "text", "label"),
    [
        ("Automatic reply: A calmer close", "I am out of the office until Monday.", "out_of_office"),
        ("Abwesenheitsnotiz: Ihr Monatsabschluss", "Ich bin bis zum 6. April im Urlaub.", "out_of_office"),
        ("Réponse automatique : votre clôture", "Je suis absente jusqu'au 27 mars.", "out_of_office"),
        ("Respuesta automática: su cierre", "Estoy de vacaciones hasta el 8 de abril.", "out_of_office"),
        ("Automatisch antwoord: uw afsluiting", "Ik ben met vakantie tot 6 april.", "out_of_office"),
        ("Automatic reply: A calmer close", "Thank you, your message was received. Ticket 44821.", "auto_reply"),
    ],
)
def test_automatic_reply_subjects_decide_between_absence_and_other_automatic_replies(subject, text, label):
    decision = rule_for(text, subject=subject)
    assert (decision.label, decision.rule) == (label, "auto_reply_subject")


def test_the_rfc_3834_header_marks_a_reply_automatic_and_auto_submitted_no_does_not():
    text = "I'm on parental leave until May."
    assert rule_for(text, headers={"Auto-Submitted": "auto-replied"}).label == "out_of_office"
    assert rule_for("We received your request #5521.", headers={"auto-submitted": "auto-generated"}).label == "auto_reply"
    assert rule_for("Let's talk on Monday.", headers={"Auto-Submitted": "no"}) is None


@pytest.mark.parametrize(
    ("subject", "text", "sender"),
    [
        ("Undeliverable: A calmer close", "Delivery has failed to these recipients.", None),
        ("Mail delivery failed: returning message to sender", "A message that you sent could not be delivered.", None),
        ("Unzustellbar: Ihr Abschluss", "Die E-Mail-Adresse wurde nicht gefunden.", None),
        ("Re: x", "Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'", None),
        ("failure", "Sorry, we were unable to deliver your message.", "MAILER-DAEMON@mx.contoso.example"),
    ],
)
def test_bounces_are_auto_replies_even_when_they_quote_our_footer(subject, text, sender):
    decision = rule_for(f"{text}\n\n---------- Forwarded message ----------\n{OURS}", subject=subject, sender=sender)
    assert (decision.label, decision.rule) == ("auto_reply", "delivery_status_notice")


def test_absence_and_automation_notices_in_the_body_need_the_notice_wording():
    notice = "Thank you for your email. I am out of the office with limited access to email until 16 March."
    assert rule_for(notice).rule == "out_of_office_notice"
    assert (
        rule_for("Ik ben afwezig tot en met 27 maart. Voor dringende zaken: finance@tailspin.example.").label == "out_of_office"
    )
    person = "I was out of the office last week, sorry for the slow reply. Happy to talk on Tuesday."
    assert rule_for(person) is None  # a person writing about an absence: the models decide
    assert rule_for("Dies ist eine automatische Antwort. Ihre Nachricht wurde weitergeleitet.").rule == "auto_reply_notice"


@pytest.mark.parametrize(
    "text",
    [
        "Sounds interesting, can we talk on Tuesday?",
        "How much does it cost per entity?",
        "Not right now, try me in Q3.",
        "We already use BlackLine, not interested.",
        "I just got off the phone with our auditors - let's talk.",
        "Wir sind gerade mitten im Abschluss, melden Sie sich im Juni.",
    ],
)
def test_everything_else_is_left_to_the_models(text):
    assert rule_for(text) is None
