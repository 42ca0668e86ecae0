"""A Sentry transport that keeps what would have been sent, for tests."""

from sentry_sdk.transport import Transport

DSN = "http://public@127.0.0.1/1"


class Capture(Transport):
    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

    @property
    def events(self) -> list[dict]:
        return [item.payload.json for envelope in self.envelopes for item in envelope.items if item.type == "event"]
