"""What the bot does with each kind of update. Every handler answers politely or not at
all; none lets an unexpected update shape become an error."""

from collections.abc import Callable
from dataclasses import dataclass

import telegram
from django.utils import translation
from django.utils.translation import gettext, gettext_lazy

from bots.languages import language_for
from bots.models import Bot, OperatorLink, TelegramUser, Update
from bots.pacing import departing, pause_after_429, wait_for_reply_slot
from bots.telegram_api import call
from bots.updates import is_id
from queueing.errors import PermanentError
from queueing.registry import Registry

HELP = gettext_lazy(
    "I keep you up to date with the campaign.\n"
    "/start – subscribe to updates\n"
    "/pledge – see your pledge; /pledge 250 records a new one\n"
    "/stop – stop receiving broadcasts\n"
    "Send me a link to a video and I will send you the file."
)


@dataclass
class Context:
    bot: Bot
    update: telegram.Update
    member: TelegramUser | None
    # Taken before the handler changes anything, so waiting for it never repeats a change.
    slot_taken: bool = False

    @property
    def chat_id(self) -> int:
        return self.update.effective_chat.id

    def reply(self, text: str) -> telegram.Message:
        if self.slot_taken:
            self.slot_taken = False
        else:
            wait_for_reply_slot(self.bot, self.chat_id)
        try:
            with departing(self.bot):
                # str(): a lazy translation (HELP) is translated now, in the member's language.
                return call(self.bot, "send_message", chat_id=self.chat_id, text=str(text))
        except telegram.error.RetryAfter as exc:
            pause_after_429(self.bot, exc)
            raise
        except telegram.error.Forbidden:
            if self.member:
                self.member.mark_blocked()
            raise


# What the bot answers a member's message with, by what the message is: a command by its name
# ("/start"), a message with a link by LINK. Bots' own commands are registered below; the
# answers of the parts above this module are registered from their AppConfig.ready() (bots:
# a link, bots.download_requests; broadcasts: /pledge), so this module imports neither.
Answer = Callable[[Context, str], None]
answers: Registry[Answer] = Registry("answer to a member's message")
LINK = "link"
# What the bot does when a member presses an inline button, by the prefix of its callback_data
# ("stop" in "stop:123"; the rest is the argument): returns the short text the press is answered
# with, or None. Registered, like `answers`, from the AppConfig.ready() of the app whose
# message carries the button (broadcasts: Stop these messages).
Press = Callable[[Context, str], str | None]
presses: Registry[Press] = Registry("answer to a pressed inline button")
# What else /start does for a member, by the app that needs it (broadcasts: attach the pledges
# imported for them).
starting: Registry[Callable[[TelegramUser], object]] = Registry("part of /start")

# What the bot reads of the updates it acts on: when python-telegram-bot cannot read a whole
# update (a shape from another Bot API version than its own), these fields alone still can be.
_READ = {
    "message": ("message_id", "date", "chat", "from", "text", "caption", "entities", "caption_entities"),
    "my_chat_member": ("chat", "from", "date", "old_chat_member", "new_chat_member"),
    "callback_query": ("id", "from", "chat_instance", "data"),
}
# What a member sends; any other message (a pin, a payment, a shared chat...) is a service
# message that needs no answer.
_MEMBER_CONTENT = (
    "text",
    "animation",
    "audio",
    "checklist",
    "contact",
    "dice",
    "document",
    "location",
    "paid_media",
    "photo",
    "poll",
    "sticker",
    "story",
    "venue",
    "video",
    "video_note",
    "voice",
)
# What a surprising shape raises in python-telegram-bot or a handler; handling it again cannot help.
_SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError)


def handle(bot: Bot, update: Update) -> str:
    """Act on one update; returns the status to record: processed, or ignored for what the bot
    does not act on (channel posts, reactions, boosts, polls, edits, group chatter, business
    messages, kinds it does not know).

    The bot acts on private messages from members, its membership in private chats and
    callback queries; which one an update is, is read from the raw JSON, so an update that
    python-telegram-bot cannot parse matters only if the bot would act on it. An update whose
    shape the bot cannot handle fails at once (PermanentError), never retried."""
    try:
        return _dispatch(bot, update.payload)
    except _SHAPE_ERRORS as exc:
        raise PermanentError(f"the update has a shape the bot cannot handle: {type(exc).__name__}: {exc}") from exc


def _dispatch(bot: Bot, payload: dict) -> str:
    if _in_private_chat(payload.get("my_chat_member")):
        on_membership_change(_context(bot, payload, "my_chat_member"))
    elif isinstance(query := payload.get("callback_query"), dict) and isinstance(query.get("id"), str):
        on_button_pressed(_context(bot, payload, "callback_query"))
    elif _is_member_message(payload.get("message")):
        context = _context(bot, payload, "message")
        wait_for_reply_slot(bot, context.chat_id)
        context.slot_taken = True
        on_private_message(context, context.update.message)
    else:
        return Update.Status.IGNORED
    return Update.Status.PROCESSED


def _in_private_chat(carrier: object) -> bool:
    chat = carrier.get("chat") if isinstance(carrier, dict) else None
    return isinstance(chat, dict) and chat.get("type") == "private" and is_id(chat.get("id"))


def _is_member_message(message: object) -> bool:
    """Sent by a person (not a bot) in a private chat, with something a person sends."""
    if not _in_private_chat(message):
        return False
    sender = message.get("from")
    return (
        isinstance(sender, dict)
        and sender.get("is_bot") is False
        and is_id(sender.get("id"))
        and any(key in message for key in _MEMBER_CONTENT)
    )


def _context(bot: Bot, payload: dict, kind: str) -> Context:
    parsed = parse(payload, kind)
    user = parsed.effective_user
    member = TelegramUser.objects.seen(bot, user) if user and not user.is_bot and is_id(user.id) else None
    return Context(bot, parsed, member)


def parse(payload: dict, kind: str) -> telegram.Update:
    """The update as python-telegram-bot reads it, or if it cannot, the fields the bot reads of
    it (`_READ`); PermanentError if even those are unreadable."""
    try:
        return telegram.Update.de_json(payload, None)
    except _SHAPE_ERRORS as exc:
        carrier = payload[kind]
        essentials = {key: carrier[key] for key in _READ[kind] if key in carrier}
        try:
            return telegram.Update.de_json({"update_id": payload["update_id"], kind: essentials}, None)
        except _SHAPE_ERRORS:
            raise PermanentError(
                f"python-telegram-bot {telegram.__version__} cannot read this {kind}: {type(exc).__name__}: {exc}"
            ) from exc


def on_membership_change(context: Context) -> None:
    status = context.update.my_chat_member.new_chat_member.status
    if context.member is None or context.update.effective_chat.type != "private":
        return
    if status == "kicked":
        context.member.mark_blocked()
    elif status == "member":
        context.member.mark_unblocked()


def on_button_pressed(context: Context) -> None:
    """Telegram shows a pressed button as loading until the press is answered: answer every
    one, with the registered handler's text when there is one."""
    query = context.update.callback_query
    prefix, _, argument = (query.data or "").partition(":")
    press = presses.get(prefix) if context.member else None
    with translation.override(language_for(context.member)):
        text = str(press(context, argument)) if press else None
    call(context.bot, "answer_callback_query", callback_query_id=query.id, text=text)


def on_private_message(context: Context, message: telegram.Message) -> None:
    with translation.override(language_for(context.member)):
        answer_message(context, message)


def answer_message(context: Context, message: telegram.Message) -> None:
    text = message.text or message.caption or ""
    command, _, argument = text.partition(" ")
    command = command.split("@", 1)[0].lower() if command.startswith("/") else ""
    if answer := answers.get(command):
        answer(context, argument.strip())
    elif (links := links_in(message)) and context.member:
        answers[LINK](context, links[0])
    else:
        context.reply(gettext("Sorry, I didn't understand that.\n\n%(help)s") % {"help": HELP})


def links_in(message: telegram.Message) -> list[str]:
    entities = message.parse_entities([telegram.MessageEntity.URL, telegram.MessageEntity.TEXT_LINK])
    entities |= message.parse_caption_entities([telegram.MessageEntity.URL, telegram.MessageEntity.TEXT_LINK])
    links = [entity.url or text for entity, text in entities.items()]
    return [link if "://" in link else f"https://{link}" for link in links]


def start(context: Context, payload: str) -> None:
    """Subscribe; with a payload from "Link my Telegram" in the admin, also link the operator."""
    member = context.member
    member.subscribe()
    for on_start in starting.values():
        on_start(member)
    if payload.startswith(OperatorLink.CODE_PREFIX):
        link = OperatorLink.objects.redeem(context.bot, payload, member)
        context.reply(
            gettext("Linked to %(username)s in the admin: tests of broadcasts will come here.")
            % {"username": link.user.get_username()}
            if link
            else gettext("This link has expired or was used already. Make a new one in the admin: Link my Telegram.")
        )
        return
    if member.first_name:
        greeting = gettext("Hi %(name)s! You're subscribed to campaign updates.") % {"name": member.first_name}
    else:
        greeting = gettext("Hi there! You're subscribed to campaign updates.")
    context.reply(greeting + "\n" + gettext("Send /pledge to see your pledge, /help for more."))


def stop(context: Context, argument: str) -> None:
    context.member.opt_out()
    context.reply(gettext("You won't receive broadcasts any more. Send /start whenever you want them back."))


def show_help(context: Context, argument: str) -> None:
    context.reply(HELP)


answers.register("/start", start)
answers.register("/stop", stop)
answers.register("/help", show_help)
