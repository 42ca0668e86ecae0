"""What the operator checks on the preview page before sending: the text as a few real
recipients get it, and who would get a text Telegram refuses or lacks the pledge data the
text uses. The admin only renders it."""

from dataclasses import dataclass
from typing import ClassVar

from bots.models import TelegramUser
from broadcasts.audiences import recipients
from broadcasts.models import Broadcast
from broadcasts.personalize import MAX_CAPTION, MAX_TEXT, longest_visible_length, needs_pledge, too_long
from broadcasts.summary import rendered_for, with_pledges, without_pledge


@dataclass
class Sample:
    member: TelegramUser
    text: str
    too_long: bool


@dataclass
class Preview:
    """What the operator checks before sending: texts for a few real recipients, and the
    recipients whose text Telegram would refuse or who lack the pledge data the text uses."""

    SAMPLES: ClassVar[int] = 5
    FULL_CHECK_LIMIT: ClassVar[int] = 5000

    recipients: int
    samples: list[Sample]
    needs_pledge: bool
    without_pledge: int
    too_long: int
    checked: int
    is_caption: bool
    limit: int

    @property
    def sampled(self) -> bool:
        return self.checked < self.recipients

    @classmethod
    def of(cls, broadcast: Broadcast) -> "Preview":
        members = recipients(broadcast)
        count = members.count()
        is_caption = bool(broadcast.photo or broadcast.document)
        prefetched = with_pledges(members)
        parse_mode = broadcast.effective_parse_mode
        longest = longest_visible_length(broadcast.body, parse_mode, broadcast.no_pledge_fallback)
        can_be_too_long = longest is None or longest > (MAX_CAPTION if is_caption else MAX_TEXT)
        checked = prefetched.order_by("pk") if count <= cls.FULL_CHECK_LIMIT else prefetched.order_by("?")
        texts = [
            (member, rendered_for(broadcast, member))
            for member in (checked[: cls.FULL_CHECK_LIMIT].iterator(chunk_size=1000) if can_be_too_long else [])
        ]
        long = {member.pk for member, text in texts if too_long(text, is_caption, parse_mode)}
        uses_pledge = needs_pledge(broadcast.body)
        samples = prefetched.order_by("pk")[: cls.SAMPLES]
        return cls(
            recipients=count,
            samples=[
                Sample(m, text := rendered_for(broadcast, m), m.pk in long or too_long(text, is_caption, parse_mode))
                for m in samples
            ],
            needs_pledge=uses_pledge,
            without_pledge=without_pledge(members) if uses_pledge else 0,
            too_long=len(long),
            checked=len(texts) if can_be_too_long else count,
            is_caption=is_caption,
            limit=MAX_CAPTION if is_caption else MAX_TEXT,
        )
