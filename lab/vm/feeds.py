"""Where the VM tests read the guest's reports on the host.

``ChannelFeed`` reads the VM's channel socket directly with ``diag_protocol.LineDecoder``;
``RelayFeed`` (relay_feed.py) runs the real relay daemon and reads what it received. Tests use
one interface, so the same assertions hold whichever path is wired in.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from .channel_client import ChannelClient

Message = Dict[str, Any]
Predicate = Callable[[Message], bool]


def is_report(msg: Message) -> bool:
    return msg.get("type") == "report"


class ChannelFeed:
    """Reports read straight from the channel socket (no relay)."""

    name = "channel"

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.client = ChannelClient(socket_path)

    def wait_report(self, predicate: Predicate = lambda _m: True,
                    timeout: float = 120.0) -> Message:
        """The first report (since the feed started) that matches ``predicate``."""
        return self.client.wait_for(lambda m: is_report(m) and predicate(m), timeout)

    def restart(self) -> None:
        """Drop the connection and connect again, as a restarted relay would."""
        self.client.close()
        self.client = ChannelClient(self.socket_path)

    def close(self) -> None:
        self.client.close()
