from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.views.decorators.http import require_safe

from broadcasts import clicks
from broadcasts.models import Click, Delivery, url_buttons
from broadcasts.variants import Versions


@require_safe
def follow_click(request: HttpRequest, token: str) -> HttpResponseRedirect:
    """A member pressed a tracked button: count it (GET only; HEAD is a link checker) and
    send them on with 302 to that button of the delivery's own version."""
    target = clicks.target_of(token)
    if target is None:
        raise Http404("No such link.")
    delivery = Delivery.objects.select_related("broadcast__template").filter(pk=target.delivery_id).first()
    if delivery is None:
        raise Http404("No such link.")
    sent = url_buttons(Versions(delivery.broadcast).of(delivery).buttons)
    if target.button >= len(sent):
        raise Http404("No such link.")
    if request.method == "GET":
        Click.record(target.delivery_id, target.button)
    return HttpResponseRedirect(sent[target.button]["url"])
