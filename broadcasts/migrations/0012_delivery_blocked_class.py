"""Deliveries used to say "blocked" as a "blocked: " prefix of their error text, and held a
sender's claim as "claimed by <id>" in it; the error class and the claim columns say so now."""

from django.db import migrations
from django.db.models import Value
from django.db.models.functions import Concat, Substr

BLOCKED_PREFIX = "blocked: "
CLAIM_PREFIX = "claimed by "


def blocked_into_error_class(apps, schema_editor):
    Delivery = apps.get_model("broadcasts", "Delivery")
    Delivery.objects.filter(error__startswith=BLOCKED_PREFIX).update(
        error_class="blocked",
        error=Concat(Value("The member blocked the bot ("), Substr("error", len(BLOCKED_PREFIX) + 1), Value(")")),
    )
    Delivery.objects.filter(error__startswith=CLAIM_PREFIX).update(error="")


def error_class_into_blocked(apps, schema_editor):
    Delivery = apps.get_model("broadcasts", "Delivery")
    for delivery in Delivery.objects.filter(error_class="blocked").iterator(chunk_size=1000):
        reason = delivery.error.removeprefix("The member blocked the bot (").removesuffix(")")
        Delivery.objects.filter(pk=delivery.pk).update(error_class="permanent", error=BLOCKED_PREFIX + reason)


class Migration(migrations.Migration):
    dependencies = [("broadcasts", "0011_delivery_claim_and_blocked")]

    operations = [migrations.RunPython(blocked_into_error_class, error_class_into_blocked)]
