"""Taking an update in: stored once, handed to the telegram queue, nothing else."""

from django.db import IntegrityError, transaction

from bots.models import Update
from bots.updates import chat_id_of, update_id_of


def accept_update(bot_pk: int, payload: dict) -> bool:
    """Store the update and enqueue its handling in one commit. False if Telegram had
    delivered this update_id before (it is then neither stored nor handled again)."""
    from bots.tasks import handle_update

    update_id = update_id_of(payload)
    chat_id = chat_id_of(payload)
    try:
        with transaction.atomic():
            update = Update.objects.create(bot_id=bot_pk, update_id=update_id, payload=payload, chat_id=chat_id)
            handle_update.enqueue_with(
                args=[update.pk],
                label=f"update {update_id}" + (f" chat {chat_id}" if chat_id is not None else ""),
                on_dispatch_failure=lambda: Update.objects.filter(pk=update.pk).update(status=Update.Status.RECEIVED),
            )
    except IntegrityError:
        return False
    return True
