"""MQTT topic names and Home Assistant discovery payloads (one device per node; a binary_sensor,
a score sensor and a sound-level sensor per machine)."""

from __future__ import annotations

from .. import __version__


class Topics:
    def __init__(self, prefix: str, node: str, discovery_prefix: str = "homeassistant"):
        self.prefix, self.node, self.discovery = prefix.rstrip("/"), node, discovery_prefix.rstrip("/")

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.node}/status"

    def machine(self, machine: str, kind: str) -> str:
        return f"{self.prefix}/{self.node}/{machine}/{kind}"

    def discovery_config(self, component: str, machine: str, entity: str = "") -> str:
        """``entity`` tells apart several entities of one component per machine (its object id)."""
        return f"{self.discovery}/{component}/{self.node}/{machine}{'_' + entity if entity else ''}/config"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery}/status"


def discovery_payloads(topics: Topics, machine: str, model_name: str) -> dict[str, dict]:
    """Home Assistant MQTT discovery configs for one machine: {topic: config}."""
    node = topics.node
    device = {
        "identifiers": [f"edge_agent_{node}"],
        "name": f"edge-agent {node}",
        "manufacturer": "edge-agent",
        "model": f"edge-agent ({model_name})",
        "sw_version": __version__,
    }
    avail = {"availability_topic": topics.status, "payload_available": "online", "payload_not_available": "offline"}
    return {
        topics.discovery_config("binary_sensor", machine): {
            "name": f"{machine} abnormal sound",
            "unique_id": f"edge_agent_{node}_{machine}_problem",
            "device_class": "problem",
            "state_topic": topics.machine(machine, "state"),
            "value_template": "{{ 'ON' if value_json.state == 'anomaly' else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "json_attributes_topic": topics.machine(machine, "state"),
            "qos": 1,
            "device": device,
            **avail,
        },
        topics.discovery_config("sensor", machine): {
            "name": f"{machine} anomaly score",
            "unique_id": f"edge_agent_{node}_{machine}_score",
            "state_topic": topics.machine(machine, "score"),
            "value_template": "{{ value_json.score }}",
            "state_class": "measurement",
            "json_attributes_topic": topics.machine(machine, "score"),
            "device": device,
            **avail,
        },
        # the RMS level of the windows already computed: a microphone that went quiet, or a machine
        # that got louder, shows here before it shows in the score
        topics.discovery_config("sensor", machine, "level"): {
            "name": f"{machine} sound level",
            "unique_id": f"edge_agent_{node}_{machine}_level",
            "state_topic": topics.machine(machine, "score"),
            "value_template": "{{ value_json.level_dbfs }}",
            "unit_of_measurement": "dBFS",
            "state_class": "measurement",
            "device": device,
            **avail,
        },
    }
