"""How the offline models read a reply to our email (task `classify_reply`): a keyword judgement, not a lookup.

No language model runs here. The reader scores the reply's own words against cue phrases for
each class, in English, German, French, Spanish and Dutch, the way a model leans on what a
reply says: "sounds good, Tuesday?" is interest, "not before Q3" is timing, "we already use X"
is a no. It is deliberately a separate judgement from the line's rules (`replies.rules`): the
rules decide only certain cases; this reader guesses at everything, and is unsure when cues
point two ways or there are none, which is when the line escalates to the premium model.

Cues are matched in a fixed order and each match blanks its words, so "not interested" is
read as a no and its "interested" is not counted again as interest.

Two depths of reading:

- a *quick* reader (the cheap tier): counts every question mark as a question and reads
  every clause alike;
- a *careful* reader (models with a defect rate of at most `CAREFUL_DEFECT_RATE`, the premium
  tier): also hears sarcasm ("yet another tool, just what we needed"), gives the clause after
  "but"/"aber"/"mais"/"pero"/"maar" more weight ("interesting, but not before Q3" is timing), and
  does not count a question mark in a sentence that proposes a meeting ("Tuesday at 10?").

At its registry defect rate a model slips, as real models do: it names a neighbouring class
(positive for a question, negative for not-now, …) with a plausible confidence, or answers
something unusable (a class outside the list, a missing field, prose). Seeded like every
offline answer, so the same reply gets the same answer.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

CAREFUL_DEFECT_RATE = 0.05
DEFAULT_CLASSES = ("positive", "question", "not_now", "negative", "unsubscribe", "out_of_office", "auto_reply")
# Whom a slip confuses with whom: the class a hurried reader would take it for.
NEIGHBOURS = {
    "positive": "question",
    "question": "positive",
    "not_now": "negative",
    "negative": "not_now",
    "unsubscribe": "negative",
    "out_of_office": "auto_reply",
    "auto_reply": "out_of_office",
}
_DAYS = (
    r"monday|tuesday|wednesday|thursday|friday|montag|dienstag|mittwoch|donnerstag|freitag|lundi|mardi|mercredi|jeudi|"
    r"vendredi|lunes|martes|miércoles|miercoles|jueves|viernes|maandag|dinsdag|woensdag|donderdag|vrijdag"
)
_MONTHS = (
    r"january|february|march|april|june|july|august|september|october|november|december|januar|februar|märz|juni|juli|"
    r"oktober|dezember|janvier|février|mars|avril|juin|juillet|août|septembre|octobre|novembre|décembre|enero|febrero|"
    r"marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|diciembre|januari|februari|maart|mei|augustus"
)

# (class, pattern, weight), matched in this order; a match blanks its span for the cues after it.
_CUES: tuple[tuple[str, str, float], ...] = (
    # -- asking to stop ---------------------------------------------------------------------------------------------
    ("unsubscribe", r"un-?subscri\w*|opt[\s-]?out|take (?:me|us) off|off (?:your|the) (?:\w+ )?list|remove (?:me|us|my)", 3.0),
    (
        "unsubscribe",
        r"(?:stop|quit) (?:e-?mailing|mailing|contacting|sending|writing|spamming)|no (?:more|further) e-?mails",
        3.0,
    ),
    (
        "unsubscribe",
        r"(?:don'?t|do not|never) (?:e-?mail|contact|write to|message) (?:me|us)|delete my (?:data|details|e-?mail)",
        3.0,
    ),
    (
        "unsubscribe",
        r"abmelden|abbestell\w*|austragen|(?:entfernen|löschen) sie|keine (?:weiteren )?(?:e-?mails|mails|nachrichten)",
        3.0,
    ),
    ("unsubscribe", r"nicht mehr (?:kontaktieren|anschreiben|schreiben|mailen)|kontaktieren sie mich nicht", 3.0),
    (
        "unsubscribe",
        r"d[ée]sabonn\w*|d[ée]sinscri\w*|retirez|supprimez|ne plus recevoir|ne (?:me )?(?:contactez|écrivez) plus",
        3.0,
    ),
    (
        "unsubscribe",
        r"(?:arrêtez|cessez) de m\W|dar(?:me|nos)? de baja|den(?:me)? de baja|eliminen|no me (?:escriban|contacten)",
        3.0,
    ),
    ("unsubscribe", r"dej(?:e|en) de (?:escribir|enviar|contactar)|no (?:quiero|deseo) recibir|afmelden|uitschrijven", 3.0),
    ("unsubscribe", r"verwijder (?:mij|me|mijn)|geen (?:e-?mails|mails|berichten) meer|stop met (?:mailen|e-?mailen)", 3.0),
    (
        "unsubscribe",
        r"opt (?:me|us) out|(?:mailing|distribution) ?list|verteiler|liste de diffusion|mailinglijst|lista de correo",
        2.5,
    ),
    (
        "unsubscribe",
        r"nicht (?:mehr|weiter) (?:\w+ )?(?:ange)?(?:schrieben|kontaktiert|gemailt)|ne plus (?:m'|me )?(?:envoy|écri)\w*",
        3.0,
    ),
    ("unsubscribe", r"niet meer (?:ge)?(?:maild|mailen|benaderd)|no (?:\w+ )?más (?:correos|comunicaciones|mensajes)", 3.0),
    (
        "unsubscribe",
        r"(?:delete|erase) me|(?:off|from) (?:\w+ ){0,3}list|uit te schrijven|af te melden|auszutragen|abzumelden",
        2.5,
    ),
    # -- machines ---------------------------------------------------------------------------------------------------
    ("auto_reply", r"undeliverable|could not be delivered|delivery (?:has )?failed|delivery status|mailer-daemon|5\.\d\.\d", 3.0),
    (
        "auto_reply",
        r"address (?:not found|rejected)|(?:user|mailbox|recipient) (?:unknown|unavailable|not found)|does not exist",
        2.5,
    ),
    ("auto_reply", r"unzustellbar|nicht zugestellt|non remis|n'a pas pu être remis|no se pudo entregar|onbestelbaar", 3.0),
    ("auto_reply", r"automat\w* (?:reply|response|message|acknowledg\w*)|do not reply|no-?reply|not (?:being )?monitored", 2.5),
    ("auto_reply", r"(?:ticket|case|reference|request) (?:number|no\.?|#|id)|#\s?\d{4,}|we(?: have|'ve) received your", 2.0),
    ("auto_reply", r"automat\w* (?:confirmation|notification|receipt)|auto-?generated|(?:i|he|she) (?:have|has) left \w+", 2.5),
    (
        "auto_reply",
        r"(?:postfach|mailbox|inbox|address|adresse|adres|buzón|boîte) (?:\w+ ){0,3}(?:nicht mehr|no longer|not|niet meer|n'est plus|ya no)",
        2.5,
    ),
    ("auto_reply", r"no longer (?:with|at|works?|employed|part of)|(?:has|have) left (?:the|our)|left the company", 2.5),
    ("auto_reply", r"automatische (?:antwort|nachricht|benachrichtigung)|nicht mehr (?:im unternehmen|bei uns|für)", 2.5),
    ("auto_reply", r"(?:hat|haben) das unternehmen verlassen|wir haben ihre (?:nachricht|anfrage|e-?mail) erhalten", 2.5),
    ("auto_reply", r"r[ée]ponse automatique|message automatique|ne fait plus partie|a quitté|nous avons bien reçu", 2.5),
    ("auto_reply", r"respuesta automática|mensaje automático|ya no (?:trabaja|forma parte)|hemos recibido su", 2.5),
    ("auto_reply", r"automatisch (?:antwoord|bericht|gegenereerd)|niet (?:meer|langer) werkzaam|hebben uw \w+ ontvangen", 2.5),
    ("auto_reply", r"ticketnummer|número de (?:ticket|caso|incidencia)|numéro de (?:ticket|dossier)", 2.0),
    (
        "auto_reply",
        r"no longer (?:in use|active)|nicht mehr aktiv|plus (?:utilisée|active)|ya no está en uso|niet meer in gebruik",
        2.5,
    ),
    (
        "auto_reply",
        r"(?:has been|was|been) (?:logged|registered)|registriert|enregistrée?|registrada|geregistreerd|ref\W{0,2}[a-z]{2,}-\d{3,}",
        1.8,
    ),
    (
        "auto_reply",
        r"processed automatically|automatisch (?:verarbeitet|verwerkt)|traitée? automatiquement|procesa automáticamente",
        2.5,
    ),
    (
        "auto_reply",
        r"automati\w* (?:generiert\w*|erstellt\w*|generated|généré\w*|generad[oa]|gegenereerd)|introuvable|bestaat niet",
        2.5,
    ),
    (
        "auto_reply",
        r"pas pu être (?:remis|distribué)|niet (?:worden )?afgeleverd|antworten sie nicht|ne pas répondre|no responda",
        2.5,
    ),
    (
        "auto_reply",
        r"ticket \w*\d{3,}|(?:are|is) not (?:read|checked)|no se (?:revisa|lee)|niet gelezen|nicht gelesen|n'est pas lue?|unattended",
        2.2,
    ),
    # -- absence ----------------------------------------------------------------------------------------------------
    ("out_of_office", r"out of (?:the )?office|\booo\b|on (?:annual |parental |maternity |paternity |sick )?leave", 2.5),
    (
        "out_of_office",
        r"on (?:holiday|vacation)|away (?:until|till|from the office)|limited access|back (?:in the office )?on",
        2.0,
    ),
    ("out_of_office", r"abwesen\w*|nicht im büro|im urlaub|urlaub|elternzeit|wieder (?:im büro|erreichbar)|außer haus", 2.0),
    ("out_of_office", r"absente?|en congés?|en vacances|de retour le|hors du bureau|congé (?:maternité|parental)", 2.0),
    (
        "out_of_office",
        r"fuera de (?:la )?oficina|de vacaciones|ausente|de vuelta el|de regreso el|baja (?:por|de) (?:maternidad|paternidad)",
        2.0,
    ),
    ("out_of_office", r"afwezig|(?:met|op) vakantie|verlof|weer aanwezig|terug op|niet op kantoor", 2.0),
    (
        "out_of_office",
        r"on a (?:flight|plane|business trip)|im flugzeug|en vol|en un vuelo|in het vliegtuig|replies will be (?:slow|delayed)",
        1.8,
    ),
    (
        "out_of_office",
        r"(?:i'?m|i am) (?:currently )?away|estoy fuera|fuera hasta|en (?:formation|déplacement)|auf (?:dienstreise|schulung)",
        2.0,
    ),
    (
        "out_of_office",
        r"back (?:on|in)|à mon retour|a mi (?:vuelta|regreso)|nach meiner rückkehr|bij terugkomst|until \d|jusqu'au \d|hasta el \d|tot en met",
        1.5,
    ),
    ("out_of_office", r"urgent|dringend|dringende|urgence|urgente", 0.8),
    # -- timing -----------------------------------------------------------------------------------------------------
    ("not_now", r"not (?:right )?now|not at (?:the|this) (?:moment|time|stage)|not this (?:year|quarter|month)|not yet", 2.2),
    ("not_now", r"(?:maybe|perhaps|possibly) (?:later|next)|later (?:this|in the) year|bad time|not the right time|timing", 2.0),
    ("not_now", r"next (?:year|quarter|month|fiscal|spring|summer|autumn|fall|winter)|\bq[1-4]\b|\bh[12]\b", 1.8),
    ("not_now", r"in (?:a few|a couple of|two|three|four|six|\d+) (?:months|weeks)|after (?:the|our) \w+", 1.5),
    ("not_now", r"(?:reach out|get back|circle back|follow up|check back|come back|try (?:me|us|again)|revisit|ping me)", 1.5),
    ("not_now", r"budget (?:is )?(?:frozen|freeze|locked|spent|allocated|closed)|no budget|hiring freeze|in the middle of", 1.8),
    ("not_now", r"keep (?:me|us) (?:in mind|posted)|on (?:the|my|our) radar|bookmark", 1.2),
    (
        "not_now",
        r"not (?:before|until)|give it (?:a few |a couple of |\w+ )?(?:months|weeks)|(?:six|three|two|few|\d+) months",
        1.8,
    ),
    ("not_now", r"this (?:financial|fiscal|calendar) year|(?:might|may|could) be (?:\w+ ){0,3}(?:next|later)", 1.5),
    (
        "not_now",
        r"nicht vor|halbes jahr|pas avant|quelques mois|no antes de|medio año|unos meses|niet voor|half jaar|paar maanden",
        1.8,
    ),
    (
        "not_now",
        r"(?:derzeit|momentan|im moment|aktuell|zurzeit|gerade) (?:nicht|kein)|später|nächste[ns]? (?:jahr|quartal)",
        2.0,
    ),
    (
        "not_now",
        r"in ein paar monaten|im (?:herbst|frühjahr|sommer|winter|neuen jahr)|melden sie sich (?:gerne )?(?:im|in|nach|wieder)",
        2.0,
    ),
    ("not_now", r"pas (?:pour le moment|maintenant|en ce moment|tout de suite|cette année)|pas le bon moment|plus tard", 2.0),
    (
        "not_now",
        r"l'année prochaine|(?:le )?trimestre prochain|dans (?:quelques|deux|trois|six) mois|recontacte\w*|revenez vers",
        2.0,
    ),
    ("not_now", r"ahora no|(?:en este momento|por ahora|de momento|ahora mismo) no|no es (?:el )?(?:buen|mejor) momento", 2.0),
    (
        "not_now",
        r"más adelante|el (?:próximo|proximo) (?:año|trimestre|mes)|el año que viene|dentro de (?:unos|dos|tres|seis) meses",
        2.0,
    ),
    ("not_now", r"vuelva a (?:contactar|escribir)|nu niet|op dit moment niet|momenteel niet|niet het juiste moment", 2.0),
    ("not_now", r"volgend (?:jaar|kwartaal)|over (?:een paar|twee|drie|zes) maanden|later dit jaar|neem .{0,30}contact op", 2.0),
    ("not_now", rf"\b(?:{_MONTHS})\b", 0.6),
    (
        "not_now",
        r"not (?:for|in|within) the (?:next|coming)|nicht in den nächsten|pas dans les prochains|no en los próximos|niet de komende",
        1.8,
    ),
    (
        "not_now",
        r"(?:kommenden|nächsten) jahr|prochaine année|próximo año|komend jaar|\berst (?:im|nach|ab|in)\b|park (?:this|it)",
        1.8,
    ),
    ("not_now", r"quarters|quartale\w*|trimestres|kwartalen|(?:few|couple of) months", 1.2),
    (
        "not_now",
        r"not (?:ready|there) yet|noch nicht|pas encore|todavía no|aún no|nog niet|down the line|at some point|eventually",
        1.8,
    ),
    ("not_now", r"(?:keine|no|pas de|geen|sin) (?:capacity|kapazität\w*|capacité|capacidad|capaciteit|bandwidth)", 1.8),
    (
        "not_now",
        r"autumn|(?:in the )?fall|spring|summer|winter|herbst|frühjahr|frühling|sommer\w*|automne|printemps|été|hiver|rentrée",
        1.2,
    ),
    (
        "not_now",
        r"otoño|primavera|verano|invierno|najaar|voorjaar|zomer|hablamos en|on en reparle|sprechen wir (?:uns )?(?:im|in|nach)",
        1.2,
    ),
    # -- no ---------------------------------------------------------------------------------------------------------
    ("negative", r"not interested|no interest|not for us|not a (?:fit|priority|need)|no need|(?:don'?t|do not) need", 2.2),
    (
        "negative",
        r"we(?:'re| are) (?:good|fine|all set|covered|happy)|happy with (?:our|what|the)|already (?:use|have|using)",
        2.0,
    ),
    ("negative", r"not looking|no,? thanks?|no,? thank you|we'?ll pass|not relevant|irrelevant|wrong person", 2.0),
    ("negative", r"not the right (?:person|contact)|spam|waste of (?:my|our) time|how did you get|who gave you", 2.0),
    ("negative", r"annoying|ridiculous|useless|garbage|scam|pathetic|\blol\b|🙄|seriously\b", 1.5),
    ("negative", r"kein (?:interesse|bedarf)|nicht interessiert|brauchen wir nicht|benötigen wir nicht|nein,? danke", 2.2),
    (
        "negative",
        r"(?:haben|nutzen|verwenden) (?:bereits|schon)|sind (?:sehr )?zufrieden|nicht relevant|unverschämt|belästigung",
        2.0,
    ),
    ("negative", r"pas intéressée?|ne (?:m|nous)'intéresse pas|aucun intérêt|pas besoin|non,? merci|déjà équipée?s?", 2.2),
    ("negative", r"nous (?:avons|utilisons) déjà|satisfaits|pas pertinent|pas la bonne personne|harcèlement", 2.0),
    ("negative", r"no (?:me|nos) interesa|no (?:estoy|estamos) interesad[oa]s?|no necesitamos|no,? gracias|sin interés", 2.2),
    (
        "negative",
        r"ya (?:tenemos|usamos|utilizamos|trabajamos)|no es relevante|no soy la persona|contentos con|pérdida de tiempo",
        2.0,
    ),
    ("negative", r"geen (?:interesse|behoefte)|niet ge[ïi]nteresseerd|nee,? bedankt|niet relevant|niet de juiste persoon", 2.2),
    ("negative", r"(?:hebben|gebruiken) (?:al|reeds)|tevreden met|tijdverspilling|belachelijk|irritant", 2.0),
    ("negative", r"^\W*(?:no|nope|nah|nein|non|nee)\W*$", 2.0),
    (
        "negative",
        r"not for us|niet voor ons|nicht für uns|pas pour nous|no es para nosotros|doesn'?t fit|does not fit|passt nicht",
        2.2,
    ),
    (
        "negative",
        r"ne correspond pas|no encaja|past niet|not a problem we have|(?:don'?t|do not) have (?:this|that|a|the) problem",
        2.0,
    ),
    (
        "negative",
        r"decided against|beschlossen,? (?:das )?nicht|décidé de ne pas|decidimos no|besloten (?:om )?(?:het )?niet",
        2.0,
    ),
    ("negative", r"we(?:'re| are) fine|we(?:'re| are) good|(?:isn'?t|is not) a problem (?:for us|we have)", 1.8),
    # -- asking -----------------------------------------------------------------------------------------------------
    ("question", r"how much|pricing|price|cost[s]?\b|quote|per (?:user|seat|month|entity)|licen[cs]e", 1.3),
    ("question", r"integrat\w*|connect (?:to|with)|work with|compatible|support (?:for )?\w+|api\b", 1.2),
    ("question", r"netsuite|\bsap\b|xero|quickbooks|\bsage\b|dynamics|datev|exact online|odoo|oracle|workday", 0.6),
    ("question", r"security|soc ?2|iso ?27001|gdpr|data (?:residency|hosting|stored)|hosted|encrypt\w*", 1.0),
    ("question", r"how (?:does|do|long|many|would)|what (?:is|does|are|would)|which|who (?:are|is)|can you|could you", 1.0),
    (
        "question",
        r"do you (?:have|offer|support)|is there|does it|more (?:info|information|details)|case stud\w*|references?",
        1.0,
    ),
    ("question", r"wie viel|was kostet|preis\w*|kosten|lizenz\w*|schnittstelle|anbindung|kompatibel|unterstützt", 1.2),
    ("question", r"wie funktioniert|gibt es|können sie|haben sie|welche[nrs]?|wer sind|datenschutz|dsgvo", 1.0),
    ("question", r"combien|prix|tarif\w*|coût\w*|compatible|intégr\w*|est-ce que|comment|pouvez-vous|avez-vous|quel\w*", 1.1),
    ("question", r"cuánto|precio\w*|coste|costo|tarifa\w*|integra\w*|conecta\w*|cómo|pueden|tienen|cuál\w*", 1.1),
    ("question", r"hoeveel|prijs|prijzen|kosten|tarie\w*|koppel\w*|integr\w*|hoe werkt|kunnen jullie|hebben jullie|welke", 1.1),
    # -- yes --------------------------------------------------------------------------------------------------------
    ("positive", r"interested|interesting|sounds? (?:good|great|interesting|promising)|worth a (?:call|chat|look)", 1.6),
    (
        "positive",
        r"let'?s (?:talk|chat|connect|do|set|book|schedule|find|meet|have)|(?:happy|glad|keen|open) to (?:talk|chat|meet|hear)",
        2.0,
    ),
    (
        "positive",
        r"(?:book|schedule|set up|arrange|set)\b.{0,25}\b(?:call|meeting|demo|time|slot|chat)|calendly|calendar|invite",
        1.8,
    ),
    ("positive", r"(?:i'?d|we'?d) (?:love|like) to|count (?:me|us) in|works for me|give me a (?:call|ring)|call me", 1.6),
    ("positive", r"loop(?:ing|ed)? in|cc'?d|copied|forward(?:ed|ing)? (?:this|it|your)|(?:my|our) colleague", 1.4),
    ("positive", r"find a time|(?:what|which) (?:times?|slots?|days?)|your availability|when (?:are|can|would) you|slots", 1.6),
    (
        "positive",
        r"pass(?:ing|ed)? (?:this|it) (?:on )?to|over to you|doorgestuurd|weitergeleitet|transmis|reenviado|en copia|in kopie|en copie",
        1.4,
    ),
    (
        "positive",
        r"agenda\w*|schedule|inplannen|einplanen|caler|programar|uitnodiging|invitation|einladung|invitación|make time|tijd vrij",
        1.6,
    ),
    ("positive", r"keen to|up for a|see it in action|in aktion|en action|en acción|in actie", 1.6),
    ("positive", r"go ahead|go on then|adelante|allez-y|nur zu|ga je gang|(?:is|sounds|seems) relevant|got my attention", 1.6),
    (
        "positive",
        r"exactly (?:what|this)|looking for (?:exactly |something like )?(?:this|that|a solution)|we(?:'re| are) looking",
        1.4,
    ),
    (
        "positive",
        r"wann (?:können|haben|hätten) sie|genau so etwas|suchen (?:\w+ ){0,2}nach|créneaux?|disponibilités?|cherchons",
        1.6,
    ),
    (
        "positive",
        r"horarios?|disponibilidad|justo (?:lo que|estamos buscando)|buscando algo así|bel (?:me|mij)|leuk|precies zoiets",
        1.6,
    ),
    ("positive", r"^\W*(?:yes|yep|yeah|sure|absolutely|definitely|ok|okay|gladly)\b", 1.6),
    ("positive", rf"\b(?:{_DAYS})\b|\b\d{{1,2}}(?::\d{{2}})?\s?(?:am|pm|uhr|h)\b|\b\d{{1,2}}[:h.]\d{{2}}\b", 1.0),
    (
        "positive",
        r"interess\w*|klingt (?:gut|interessant|spannend)|gerne?|termin|telefonat|lassen sie uns|passt (?:mir|gut|uns)",
        1.6,
    ),
    ("positive", r"intéress\w*|volontiers|avec plaisir|rendez-vous|appel|échanger|ça me va|d'accord|démo", 1.6),
    ("positive", r"me interesa|interesad[oa]|con gusto|encantad[oa]|reunión|llamada|me parece bien|hablemos|demo", 1.6),
    ("positive", r"ge[ïi]nteresseerd|interessant|graag|afspraak|belletje|bellen|klinkt goed|laten we|prima", 1.6),
)
# A cue starts at a word's start: "termin" is not heard inside "determine".
_COMPILED = tuple(
    (label, re.compile(rf"(?<!\w)(?:{pattern})", re.IGNORECASE | re.MULTILINE), weight) for label, pattern, weight in _CUES
)
# Heard only by a careful reader.
_SARCASM = re.compile(
    r"(?:wow|oh great|oh wow|oh joy|amazing|groundbreaking|fantastic),? (?:another|yet another|just what)|yet another|"
    r"just what (?:i|we) (?:needed|wanted)|said no one|sure,? because|right,? because|because (?:that|this) (?:always|has)|"
    r"schon wieder ein|noch ein(?:e|en)? (?:\w+ )?(?:tool|lösung|anbieter|software)|encore une? (?:\w+ )?(?:outil|solution|logiciel)|"
    r"otr[oa] (?:\w+ )?más|nog een (?:\w+ )?(?:tool|oplossing|platform)",
    re.IGNORECASE,
)
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|aw|antw|sv|rv|r|fw|fwd|wg|tr)\s*:", re.IGNORECASE)
_BUT = re.compile(r"\b(?:but|however|aber|jedoch|allerdings|mais|cependant|pero|sin embargo|maar|echter)\b", re.IGNORECASE)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_MEETING = re.compile(
    rf"\b(?:{_DAYS})\b|\b\d{{1,2}}(?::\d{{2}})?\s?(?:am|pm|uhr|h)\b|call|meeting|demo|a time|slots?|invite|termin|wann|"
    r"rendez|créneau|reunión|horario|afspraak|wanneer",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Reading:
    label: str
    confidence: float
    cues: tuple[str, ...]


def _score(text: str, careful: bool) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Weighted cue counts per class, and the words that counted."""
    scores: dict[str, float] = {label: 0.0 for label in DEFAULT_CLASSES}
    heard: dict[str, list[str]] = {label: [] for label in DEFAULT_CLASSES}
    emphasis_from = len(text)
    if careful and (match := _BUT.search(text)):
        emphasis_from = match.end()
    if careful:
        for match in _SARCASM.finditer(text):
            scores["negative"] += 2.5
            heard["negative"].append(match.group(0))
    working = text
    for label, pattern, weight in _COMPILED:
        matches = list(pattern.finditer(working))
        for match in matches:
            factor = 1.5 if match.start() >= emphasis_from else 1.0
            scores[label] += weight * factor
            heard[label].append(match.group(0).strip())
        for match in reversed(matches):  # blank what was heard, keeping every other position where it was
            working = working[: match.start()] + " " * (match.end() - match.start()) + working[match.end() :]
    for sentence in _SENTENCES.split(text):
        marks = min(2, sentence.count("?") + sentence.count("¿"))
        if marks and not (careful and _MEETING.search(sentence)):
            scores["question"] += 0.9 * marks
            heard["question"].append("?")
    return scores, heard


def read_reply(subject: str, text: str, careful: bool, classes: tuple[str, ...] = DEFAULT_CLASSES) -> Reading:
    """The reader's class for a reply, its confidence (low when cues disagree or are few) and the cues it heard.

    A subject that answers ours ("Re: …", "AW: …") is the thread's subject, our words: only the
    reply's text is read then. Any other subject ("Unsubscribe", "Automatic reply: …") is read too.
    """
    if subject and not _REPLY_SUBJECT.match(subject):
        text = f"{subject.replace('?', ' ')}\n{text}"
    scores, heard = _score(text, careful)
    ranked = sorted((s, label) for label, s in scores.items() if label in classes)[::-1]
    (top, label), (second, _) = ranked[0], ranked[1]
    if top == 0:  # nothing to go on: a question if it asks anything, else a polite no
        label = "question" if "?" in text else ("negative" if "negative" in classes else ranked[0][1])
        return Reading(label, 0.35, ())
    margin = (top - second) / (top + 1.0)
    confidence = 0.5 + 0.48 * margin
    if top < 1.5:
        confidence -= 0.1
    return Reading(label, round(min(0.97, max(0.3, confidence)), 2), tuple(dict.fromkeys(heard[label]))[:4])


def classify_answer(brief: dict[str, Any], reply: dict[str, Any], rng: random.Random, defect_rate: float) -> str:
    """The model's JSON answer to a `classify_reply` brief (or, at its defect rate, a slip)."""
    classes = tuple(brief.get("classes") or DEFAULT_CLASSES)
    careful = defect_rate <= CAREFUL_DEFECT_RATE
    reading = read_reply(str(reply.get("subject") or ""), str(reply.get("text") or ""), careful, classes)
    reason = f"the reply says {', '.join(repr(c) for c in reading.cues)}" if reading.cues else "the reply gives little to go on"
    if rng.random() < defect_rate:
        slip = rng.random()
        if slip < 0.65:  # a confident-sounding wrong neighbour
            wrong = NEIGHBOURS.get(reading.label, reading.label)
            return json.dumps(
                {"class": wrong, "confidence": round(rng.uniform(0.5, 0.9), 2), "reason": reason}, ensure_ascii=False
            )
        if slip < 0.85:  # a class of its own invention
            invented = {"positive": "interested", "negative": "rejection", "not_now": "later", "question": "inquiry"}
            label = invented.get(reading.label, "other")
            return json.dumps({"class": label, "confidence": reading.confidence, "reason": reason}, ensure_ascii=False)
        return f"This reply looks like {reading.label.replace('_', ' ')} to me."
    return json.dumps({"class": reading.label, "confidence": reading.confidence, "reason": reason}, ensure_ascii=False)
