from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.views.decorators.http import require_safe

from broadcasts import clicks
from broadcasts.models import Broadcast, Click, Delivery, url_buttons
from broadcasts.variants import Versions


@require_safe
def follow_click(request: HttpRequest, token: str) -> HttpResponseRedirect:
    """A member pressed a tracked button: count it (GET only; HEAD is a link checker) and
    send them on with 302 to that button of the delivery's own version."""
    target = clicks.target_of(token)
    if target is None:
        raise Http404("No such link.")
    sent = url_buttons(_buttons_of(target.delivery_id))
    if target.button >= len(sent):
        raise Http404("No such link.")
    if request.method == "GET":
        Click.record(target.delivery_id, target.button)
    return HttpResponseRedirect(sent[target.button]["url"])


def _buttons_of(delivery_id: int) -> list[dict]:
    """The buttons the delivery was sent with. One indexed read for arm A in the fallback
    language, whose version is the broadcast's own message; the broadcast and its versions
    besides for any other."""
    row = Delivery.objects.filter(pk=delivery_id).values("arm", "language", "broadcast_id", "broadcast__buttons")
    found = row.first()
    if found is None:
        raise Http404("No such link.")
    if (found["arm"] or "A", found["language"]) == ("A", ""):
        return found["broadcast__buttons"]
    broadcast = Broadcast.objects.select_related("template").get(pk=found["broadcast_id"])
    return Versions(broadcast).of(Delivery(arm=found["arm"], language=found["language"])).buttons
