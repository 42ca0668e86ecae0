import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from queueing import health, metrics


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database, every queue's broker and every queue's cluster are alive;
    503 naming what is not. For load balancers and uptime checks: no login, no secrets."""
    report = health.liveness()
    health.log_change(report)
    response = JsonResponse(report.as_dict(), status=503 if report.status == health.DOWN else 200)
    # Django's request logger would log every 503 as an error; log_change logs each change once.
    response._has_been_logged = True
    return response


@never_cache
@require_GET
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        return HttpResponse("Metrics are off: set METRICS_TOKEN.\n", status=404, content_type="text/plain")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode()):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
