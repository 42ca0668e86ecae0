"""The bot speaks the member's language: which language a Telegram language_code gets, the
replies of each command and the download messages in French, and the catalogues themselves
(every text a member reads translated, the compiled .mo the .po's copy)."""

import ast
import gettext
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import translation

from bots import handlers, pacing
from bots.downloads import job, messages
from bots.languages import language_for
from bots.models import Download, TelegramUser, Update
from broadcasts.models import Pledge
from queueing.errors import PermanentError
from tests.fake_telegram.objects import make_user
from tests.fake_telegram.updates import text_message

ROOT = Path(settings.BASE_DIR)
FRENCH_ID, CANADIAN_ID, GERMAN_ID = 555_200_001, 555_200_002, 555_200_003
LANGUAGE_CODES = {FRENCH_ID: "fr", CANADIAN_ID: "fr-CA", GERMAN_ID: "de"}
FRENCH_MONTHS = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
]
HELP_FR = (
    "Je vous tiens au courant de la campagne.\n"
    "/start – vous abonner aux nouvelles\n"
    "/pledge – voir votre promesse de don ; /pledge 250 en enregistre une nouvelle\n"
    "/stop – ne plus recevoir les annonces\n"
    "Envoyez-moi le lien d'une vidéo et je vous enverrai le fichier."
)


@pytest.mark.parametrize(
    ("language_code", "language"),
    [("fr", "fr"), ("fr-CA", "fr"), ("FR", "fr"), ("fr_BE", "fr"), ("en-GB", "en"), ("de", "en"), ("pt-br", "en")],
)
def test_a_telegram_language_code_gets_the_bots_language_for_it_or_english(language_code, language):
    assert language_for(TelegramUser(language_code=language_code)) == language


def test_a_member_without_a_language_code_or_no_member_gets_english():
    assert language_for(TelegramUser(language_code="")) == "en"
    assert language_for(None) == "en"


@pytest.fixture
def say(telegram_bot, monkeypatch):
    """The member `user_id` (language from LANGUAGE_CODES) sends `text`, handled as a worker would."""
    monkeypatch.setattr(pacing, "PRIVATE_CHAT_RATE", 1000.0)

    def message(user_id: int, text: str) -> None:
        user = make_user(user_id, first_name="Anna", language_code=LANGUAGE_CODES[user_id])
        payload = text_message(telegram_bot.token, text, user=user)
        update = Update.objects.create(
            bot=telegram_bot, update_id=payload["update_id"], payload=payload, chat_id=user_id
        )
        assert handlers.handle(telegram_bot, update) == Update.Status.PROCESSED

    return message


@pytest.fixture
def received(fake_telegram):
    """What the member received, in order."""
    return lambda chat_id: [call.params["text"] for call in fake_telegram.calls("sendMessage", chat_id=chat_id)]


@pytest.mark.parametrize("user_id", [FRENCH_ID, CANADIAN_ID])
def test_a_french_speaking_member_gets_every_command_answered_in_french(say, received, user_id):
    for text in ["/start", "/help", "/pledge", "/pledge beaucoup", "/frobnicate", "/stop"]:
        say(user_id, text)

    assert received(user_id) == [
        "Bonjour Anna ! Vous recevrez désormais les nouvelles de la campagne.\n"
        "Envoyez /pledge pour voir votre promesse de don, /help pour en savoir plus.",
        HELP_FR,
        "Vous n'avez pas encore de promesse de don. Envoyez /pledge 250 pour promettre 250.",
        "Je ne comprends pas « beaucoup » comme un montant. Envoyez un nombre, par exemple /pledge 250.",
        f"Désolé, je n'ai pas compris.\n\n{HELP_FR}",
        "Vous ne recevrez plus les annonces. Envoyez /start quand vous voudrez les recevoir à nouveau.",
    ]
    assert translation.get_language() == "en", "the member's language ends with the update"


def test_a_french_member_reads_amounts_and_dates_the_french_way(say, received, telegram_bot):
    say(FRENCH_ID, "/pledge 1,250.50")
    member = TelegramUser.objects.get(telegram_id=FRENCH_ID)
    Pledge.objects.create(
        bot=telegram_bot,
        member=member,
        telegram_id=FRENCH_ID,
        amount=Decimal("1500"),
        paid_amount=Decimal("499.50"),
        campaign="Toit",
        due_date=date(2030, 7, 14),
    )
    Pledge.objects.create(
        bot=telegram_bot, member=member, telegram_id=FRENCH_ID, amount=Decimal("20"), due_date=date.today()
    )
    Pledge.objects.create(
        bot=telegram_bot, member=member, telegram_id=FRENCH_ID, amount=Decimal("9"), due_date=date(2020, 1, 2)
    )

    say(FRENCH_ID, "/pledge")

    days = (date(2030, 7, 14) - date.today()).days
    assert received(FRENCH_ID) == [
        "Merci ! J'ai enregistré votre promesse de don de 1\xa0250,50 USD.",
        "Promesse : 1\xa0250,50 USD\nVersé : 0 USD\nReste dû : 1\xa0250,50 USD\n\n"
        "Promesse : 1\xa0500 USD (Toit)\nVersé : 499,50 USD\nReste dû : 1\xa0000,50 USD\n"
        f"Échéance : 14 juillet 2030, {days} jours restants\n\n"
        f"Promesse : 20 USD\nVersé : 0 USD\nReste dû : 20 USD\nÉchéance : {in_french(date.today())}, 0 jour restant\n\n"
        "Promesse : 9 USD\nVersé : 0 USD\nReste dû : 9 USD\nÉchéance : 2 janvier 2020 (dépassée)",
    ]


def test_a_member_whose_language_the_bot_does_not_speak_gets_english(say, received):
    say(FRENCH_ID, "/start")

    say(GERMAN_ID, "/start")
    say(GERMAN_ID, "/pledge 1,250.50")

    assert received(GERMAN_ID) == [
        "Hi Anna! You're subscribed to campaign updates.\nSend /pledge to see your pledge, /help for more.",
        "Thank you! I recorded your pledge of 1,250.50 USD.",
    ]


def test_a_french_member_is_told_about_their_download_in_french(say, received, settings):
    say(FRENCH_ID, "look: https://media.example/clip.mp4")
    settings.DOWNLOADS_PER_MEMBER_DAILY = 1
    say(FRENCH_ID, "and https://media.example/other.mp4")

    assert received(FRENCH_ID) == [
        "Téléchargement…",
        "Vous avez atteint la limite de 1 téléchargement par jour. Réessayez demain.",
    ]


def test_the_download_job_tells_a_french_member_why_it_failed_in_french(say, fake_telegram, monkeypatch, settings):
    say(FRENCH_ID, "https://media.example/list")
    download = Download.objects.get()

    def playlist(url, folder, on_progress):
        on_progress({"status": "downloading", "downloaded_bytes": 4404019, "total_bytes": 10485760})
        raise PermanentError("a playlist", user_message=messages.PLAYLIST)

    monkeypatch.setattr(job, "fetch", playlist)
    settings.DOWNLOADS_PROGRESS_SECONDS = 0
    with pytest.raises(PermanentError):
        job.run(download.pk)

    edits = [call.params["text"] for call in fake_telegram.calls("editMessageText", chat_id=FRENCH_ID)]
    assert edits == [
        "Téléchargement… 42 % 4,2 Mo sur 10,0 Mo",
        "Envoyez le lien d'une seule vidéo ou d'un seul morceau, pas d'une liste de lecture.",
    ]
    assert translation.get_language() == "en"


def test_the_download_progress_reads_naturally_in_both_languages():
    status = {"downloaded_bytes": 4404019, "total_bytes": 10485760, "speed": 1572864}

    assert messages.progress(status) == "Downloading… 42% 4.2 MB of 10.0 MB at 1.5 MB/s"
    with translation.override("fr"):
        assert messages.progress(status) == "Téléchargement… 42 % 4,2 Mo sur 10,0 Mo à 1,5 Mo/s"


def test_download_messages_with_counts_agree_in_number_in_both_languages():
    assert messages.too_many_waiting(1).startswith("You have 1 download waiting.")
    assert messages.too_many_waiting(3).startswith("You have 3 downloads waiting.")
    with translation.override("fr"):
        assert messages.queued_behind(1) == "Dans la file : vous avez 1 téléchargement en attente. Téléchargement…"
        assert messages.queued_behind(2) == "Dans la file : vous avez 2 téléchargements en attente. Téléchargement…"
        assert messages.too_large() == (
            f"Ce fichier dépasse les {settings.DOWNLOADS_MAX_BYTES // 2**20} Mo que je peux envoyer sur Telegram."
        )


def in_french(day: date) -> str:
    return f"{day.day} {FRENCH_MONTHS[day.month - 1]} {day.year}"


# The catalogues: each app's texts (gettext calls with a literal) in <app>/locale/<lang>.

TRANSLATING = {"gettext", "gettext_lazy", "ngettext", "ngettext_lazy", "pgettext", "pgettext_lazy"}
APPS_WITH_CATALOGUES = sorted({path.parents[3] for path in ROOT.glob("*/locale/*/LC_MESSAGES/django.po")})


def test_the_apps_members_read_have_a_catalogue_for_every_other_language():
    languages = {code for code, _ in settings.LANGUAGES} - {settings.LANGUAGE_CODE}
    assert "fr" in languages
    for app in ("bots", "broadcasts"):
        assert texts_in(ROOT / app), app
        for language in languages:
            assert po_path(ROOT / app, language).exists(), (app, language)


@pytest.mark.parametrize("app", APPS_WITH_CATALOGUES, ids=lambda app: app.name)
def test_every_text_in_the_apps_code_has_a_translation_in_each_language(app):
    for language in languages_of(app):
        entries = {entry_key(entry): entry for entry in read_po(po_path(app, language))}
        for key in texts_in(app):
            entry = entries.get(key)
            assert entry is not None, f"{language}: no entry for {key!r}: run makemessages -l {language} in {app.name}"
            assert "fuzzy" not in entry["flags"], f"{language}: fuzzy: {key!r}"
            assert all(entry["msgstr"].values()), f"{language}: untranslated: {key!r}"


@pytest.mark.parametrize("app", APPS_WITH_CATALOGUES, ids=lambda app: app.name)
def test_the_compiled_catalogue_is_the_po_files_copy(app):
    for language in languages_of(app):
        po = po_path(app, language)
        with open(po.with_suffix(".mo"), "rb") as mo:
            compiled = gettext.GNUTranslations(mo)._catalog
        assert compiled == catalogue(read_po(po)), f"{po.with_suffix('.mo')} is stale: run compilemessages"


@pytest.mark.parametrize("app", APPS_WITH_CATALOGUES, ids=lambda app: app.name)
def test_a_translation_keeps_its_placeholders(app):
    for language in languages_of(app):
        for entry in read_po(po_path(app, language)):
            if "python-format" in entry["flags"]:
                wanted = placeholders(entry["msgid"])
                for text in entry["msgstr"].values():
                    assert placeholders(text) == wanted, (entry["msgid"], text)


def texts_in(app: Path) -> set[tuple[str, str, str]]:
    """(context, msgid, msgid_plural) of each translating call with literal arguments in the app's code."""
    texts = set()
    for source in app.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name not in TRANSLATING:
                continue
            args = [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
            context = args.pop(0) if name.startswith("p") else ""
            texts.add((context, args[0], args[1] if name.startswith("n") else ""))
    return texts


def read_po(path: Path) -> list[dict]:
    """The entries of a .po file (no header, no obsolete ones): msgctxt, msgid, msgid_plural,
    msgstr (by plural index, 0 for a singular) and flags."""
    entries, entry, field = [], None, None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip() or line.startswith("#~"):
            if entry is not None:
                entries.append(entry)
            entry = None
            continue
        if entry is None:
            entry = {"msgctxt": "", "msgid": "", "msgid_plural": "", "msgstr": {}, "flags": set()}
        if line.startswith("#,"):
            entry["flags"] |= {flag.strip() for flag in line[2:].split(",")}
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            append(entry, field, ast.literal_eval(line))
        else:
            keyword, _, value = line.partition(" ")
            field = keyword
            append(entry, field, ast.literal_eval(value))
    return entries


def append(entry: dict, field: str, text: str) -> None:
    if field.startswith("msgstr"):
        index = int(field[7:-1]) if "[" in field else 0
        entry["msgstr"][index] = entry["msgstr"].get(index, "") + text
    else:
        entry[field] += text


def entry_key(entry: dict) -> tuple[str, str, str]:
    return entry["msgctxt"], entry["msgid"], entry["msgid_plural"]


def catalogue(entries: list[dict]) -> dict:
    """The entries as Python's gettext holds a compiled catalogue: the header under "", a
    plural under (msgid, index), a context as "context\\x04msgid"; msgfmt leaves out fuzzy
    and untranslated entries."""
    compiled = {}
    for entry in entries:
        if entry["msgid"] and ("fuzzy" in entry["flags"] or not all(entry["msgstr"].values())):
            continue
        if not entry["msgid"]:  # the header, less the line msgfmt leaves out
            header = entry["msgstr"][0].splitlines(keepends=True)
            entry["msgstr"][0] = "".join(line for line in header if not line.startswith("POT-Creation-Date:"))
        msgid = f"{entry['msgctxt']}\x04{entry['msgid']}" if entry["msgctxt"] else entry["msgid"]
        if entry["msgid_plural"]:
            compiled.update({(msgid, index): text for index, text in entry["msgstr"].items()})
        else:
            compiled[msgid] = entry["msgstr"][0]
    return compiled


def placeholders(text: str) -> list[str]:
    return sorted(part.split(")", 1)[0] for part in text.split("%(")[1:])


def po_path(app: Path, language: str) -> Path:
    return app / "locale" / language / "LC_MESSAGES" / "django.po"


def languages_of(app: Path) -> list[str]:
    return sorted(path.parent.parent.name for path in app.glob("locale/*/LC_MESSAGES/django.po"))
