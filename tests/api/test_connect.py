"""The registration answer tells the device where to connect: the configured edge's host,
ports, protocol and TLS CA, from the settings."""

from __future__ import annotations

import asyncio

import httpx

from core.config import DeviceConnectSettings, Settings
from stack.services import MosquittoBroker
from tests.api.conftest import serve
from tests.api.test_devices import new_device


async def test_the_answer_names_the_broker_of_mqtt_url_by_default(
    client: httpx.AsyncClient, settings: Settings, unique: str
) -> None:
    device_id = f"conn-{unique}"
    response = await client.post("/api/v1/devices", json=new_device(device_id))
    assert response.status_code == 201, response.text
    connect = response.json()["connect"]
    assert connect == {
        "edge": "mosquitto",
        "host": settings.mqtt.host,
        "ports": {"mqtt": settings.mqtt.port, "mqtts": None},
        "nodes": [f"{settings.mqtt.host}:{settings.mqtt.port}"],
        "protocol": "5",
        "client_id": device_id,
        "tls_ca_pem": None,
        "tls_ca_url": None,
        "errors_topic": f"alatau/air/{device_id}/errors",
    }


async def test_a_configured_tls_listener_and_ca_are_in_every_registration_answer(
    settings: Settings, broker: MosquittoBroker, admin_headers: dict[str, str], unique: str
) -> None:
    assert broker.tls_port is not None
    assert broker.tls_dir is not None
    ca = broker.tls_dir / "ca.crt"
    pem = await asyncio.to_thread(ca.read_text)
    own = settings.model_copy(
        update={
            "device_connect": DeviceConnectSettings(
                host="localhost", mqtts_port=broker.tls_port, ca_file=str(ca)
            )
        }
    )
    async with serve(own, admin_headers) as (_, client):
        one = await client.post("/api/v1/devices", json=new_device(f"conn-{unique}-tls"))
        many = await client.post(
            "/api/v1/devices/bulk",
            content=f"device_id,kind,district\nconn-{unique}-csv,energy,green\n",
            headers={"Content-Type": "text/csv"},
        )
    assert one.status_code == 201, one.text
    assert many.status_code == 201, many.text
    [created] = many.json()["created"]
    for connect, kind, device_id in [
        (one.json()["connect"], "air", f"conn-{unique}-tls"),
        (created["connect"], "energy", f"conn-{unique}-csv"),
    ]:
        assert connect["host"] == "localhost"
        assert connect["ports"] == {"mqtt": settings.mqtt.port, "mqtts": broker.tls_port}
        assert connect["tls_ca_pem"] == pem
        assert connect["tls_ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
        assert connect["errors_topic"] == f"alatau/{kind}/{device_id}/errors"
