import pytest
import sentry_sdk

from queueing.queues import broker_for, queue_names
from queueing.sentry import init_sentry
from tests.sentry_capture import DSN, Capture


@pytest.fixture
def broker():
    """The queues' brokers, emptied before and after: Redis outlives the test's transaction."""
    for queue in queue_names():
        broker_for(queue).purge_queue()
    yield broker_for
    for queue in queue_names():
        broker_for(queue).purge_queue()


@pytest.fixture
def sentry():
    """Sentry on, its events captured instead of sent."""
    transport = Capture()
    assert init_sentry(DSN, transport=transport)
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)  # inactive again, as without SENTRY_DSN
