"""QoS 1 messages received without a Task each and acknowledged in bulk after their commit.

gmqtt, told to acknowledge after the handler (``optimistic_acknowledgement=False``), runs
``on_message`` in an asyncio Task per message and writes each PUBACK with its own send; on a
draining ingester that was ~27% of the samples. ``BulkAckHandler`` replaces gmqtt's packet handler
on one client: a QoS 1 PUBLISH is parsed here and handed to a plain function at once, with an ack
token; ``acknowledge`` later writes the PUBACKs of many tokens in one socket write. Nothing is
acknowledged unless ``acknowledge`` is called, so the caller decides when (after its commit).

gmqtt has no public hook for this; the private parts used are checked at import
(``_check_gmqtt``), so a gmqtt release that changes them fails loudly at start-up instead of
silently acknowledging early or never.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final

import gmqtt
import structlog
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.mqtt.handler import MqttPackageHandler
from gmqtt.mqtt.package import Package

from ingest import metrics

log = structlog.get_logger(__name__)

# A received message: topic, payload, and its ack token (None at QoS 0: nothing to acknowledge).
MessageSink = Callable[[str, bytes, int | None], None]

# PUBACK with Success: fixed header 0x40, remaining length 2, then the packet id. MQTT 5 lets the
# reason code and properties be omitted when the reason is Success (§3.4.2.1), and 3.1.1 has
# neither, so these 4 bytes are the same packet in both versions: one big-endian uint32 each.
_PUBACK_PREFIX: Final = 0x4002_0000
_PUBLISH: Final = 0x30
# PUBLISH at QoS 1 whatever its DUP and RETAIN flags: bits 1-2 of the fixed header are the QoS.
_QOS_MASK: Final = 0xF6
_PUBLISH_QOS1: Final = _PUBLISH | 0x02
_MID_BITS: Final = 16
_MID_MASK: Final = 0xFFFF


class GmqttDriftError(ImportError):
    """The installed gmqtt no longer has the private parts bulk acknowledgement relies on."""


def _check_gmqtt() -> None:
    """Fail at import, not in production traffic, when gmqtt's internals moved."""
    expected: dict[object, dict[str, tuple[str, ...]]] = {
        MqttPackageHandler: {
            "__call__": ("self", "package"),
            "set_connection": ("self", "connection"),
            "_handle_qos_1_publish_packet": ("self", "mid", "packet", "print_topic", "properties"),
            "_parse_properties": ("self", "packet"),
        },
        MQTTConnection: {
            "send_package": ("self", "package"),
            "is_closing": ("self",),
            "put_package": ("self", "pkg"),
        },
    }
    problems = []
    for owner, methods in expected.items():
        for name, params in methods.items():
            method = getattr(owner, name, None)
            if method is None:
                problems.append(f"{owner.__name__}.{name} is missing")  # type: ignore[attr-defined]
                continue
            found = tuple(inspect.signature(method).parameters)
            if found != params:
                problems.append(
                    f"{owner.__name__}.{name}{found} is not {params}"  # type: ignore[attr-defined]
                )
    source = inspect.getsource(gmqtt.Client.__init__)
    if "self._package_handler = MqttPackageHandler(" not in source:
        problems.append("gmqtt.Client no longer builds its handler as self._package_handler")
    if set(getattr(Package, "__slots__", ())) != {"cmd", "data"}:
        problems.append("gmqtt Package is no longer (cmd, data)")
    for attribute in ("_connection", "_connection_state", "_server_topics_aliases"):
        if attribute not in inspect.getsource(MqttPackageHandler.__init__):
            problems.append(f"MqttPackageHandler no longer sets {attribute}")
    if problems:
        raise GmqttDriftError(
            f"gmqtt {getattr(gmqtt, '__version__', '?')} changed the internals ingest's bulk "
            "acknowledgement uses (ingest/bulkack.py): " + "; ".join(problems)
        )


_check_gmqtt()


class BulkAckHandler(MqttPackageHandler):  # type: ignore[misc]  # gmqtt is untyped
    """gmqtt's packet handler, except that QoS 1 messages go to ``sink`` synchronously and are
    acknowledged only by ``acknowledge``.

    An ack token is ``generation << 16 | packet id``; the generation counts connections. A token
    of an earlier connection is never acknowledged: the broker resends every unacknowledged
    message of the session on the new connection, with the same packet ids, and a stale PUBACK
    could acknowledge a newer message that took its id before that one is committed.
    """

    _sink: MessageSink
    _generation: int

    @classmethod
    def install(cls, client: gmqtt.Client, sink: MessageSink) -> BulkAckHandler:
        """Turn ``client``'s handler into a bulk-ack one; call before ``connect``."""
        handler = client._package_handler
        if type(handler) is not MqttPackageHandler:
            raise TypeError(f"expected gmqtt's own handler, found {type(handler).__name__}")
        if handler._connection is not None:
            raise RuntimeError("install the bulk-ack handler before the client connects")
        # The client built the handler with a dozen callbacks of its own; changing its class
        # keeps all of them and adds only the fast path (no state of the base class changes).
        handler.__class__ = cls
        handler._sink = sink
        handler._generation = 0
        # QoS 0 messages still go through gmqtt's parser to on_message (a plain function, so no
        # Task): they need no acknowledgement. QoS 1 never reaches on_message.
        client.on_message = lambda _client, topic, payload, qos, properties: sink(
            topic, payload, None
        )
        assert isinstance(handler, cls)
        return handler

    def set_connection(self, connection: MQTTConnection) -> None:
        super().set_connection(connection)
        self._generation += 1

    def __call__(self, package: Package) -> None:
        cmd = package.cmd
        if cmd & _QOS_MASK != _PUBLISH_QOS1:
            super().__call__(package)
            return
        try:
            self._publish_qos1(cmd, package.data)
        except Exception:
            # As gmqtt does for any packet: the message stays unacknowledged and the broker
            # delivers it again on the next connection.
            log.exception("could not handle a PUBLISH packet")

    def _publish_qos1(self, cmd: int, data: bytes) -> None:
        # The common case parsed inline: MQTT 5 with no properties (a property length of 0).
        # Anything else (properties, topic aliases, 3.1.1) goes through gmqtt's own parser,
        # which ends in _handle_qos_1_publish_packet below.
        topic_end = 2 + ((data[0] << 8) | data[1])
        properties_at = topic_end + 2
        if (
            len(data) <= properties_at
            or data[properties_at] != 0
            or topic_end == 2
            or self._connection_state.protocol_version < MQTTv50
        ):
            self._handle_publish_packet(cmd, data)
            return
        mid = (data[topic_end] << 8) | data[topic_end + 1]
        topic = data[2:topic_end].decode("utf-8", "replace")
        self._sink(topic, data[properties_at + 1 :], (self._generation << _MID_BITS) | mid)

    def _handle_qos_1_publish_packet(
        self, mid: int, packet: bytes, print_topic: str | bytes, properties: Any
    ) -> None:
        # gmqtt passes the raw bytes of a topic that is not UTF-8; the parser then refuses it.
        if isinstance(print_topic, bytes):
            print_topic = print_topic.decode("utf-8", "replace")
        topic = print_topic
        self._sink(topic, packet, (self._generation << _MID_BITS) | mid)

    def acknowledge(self, tokens: Sequence[int]) -> int:
        """Write the PUBACKs of ``tokens`` in one send; returns how many were written.

        Tokens of an earlier connection are dropped (their messages are redelivered), and so is
        everything while the connection is down.
        """
        if not tokens:
            return 0
        connection = self._connection
        generation = self._generation
        if connection is None or connection.is_closing():
            metrics.ACKS_DROPPED.inc(len(tokens))
            log.info("connection down, acknowledgements dropped", messages=len(tokens))
            return 0
        mids = [token & _MID_MASK for token in tokens if token >> _MID_BITS == generation]
        if len(mids) != len(tokens):
            metrics.ACKS_DROPPED.inc(len(tokens) - len(mids))
            log.info(
                "acknowledgements of an earlier connection dropped",
                messages=len(tokens) - len(mids),
                generation=generation,
                theirs=sorted({token >> _MID_BITS for token in tokens}),
            )
        if mids:
            connection.send_package(
                struct.pack(f"!{len(mids)}I", *[_PUBACK_PREFIX | mid for mid in mids])
            )
        return len(mids)
