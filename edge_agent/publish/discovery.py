"""MQTT topic names and Home Assistant discovery payloads (one device per node; per machine a
binary_sensor, score, sound-level and alarm-state sensors and, with commands on, an acknowledge
button and a shelve switch)."""

from __future__ import annotations

import json
from typing import Optional

from edge_agent import __version__


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

    def command_machine(self, topic: str) -> Optional[str]:
        """The machine of a ``<prefix>/<node>/<machine>/command`` topic, else None."""
        head = f"{self.prefix}/{self.node}/"
        if not topic.startswith(head) or not topic.endswith("/command"):
            return None
        machine = topic[len(head) : -len("/command")]
        return machine if machine and "/" not in machine else None

    @property
    def ha_status(self) -> str:
        return f"{self.discovery}/status"


def discovery_payloads(
    topics: Topics, machine: str, model_name: str, commands: bool = False, shelve_minutes: float = 60.0
) -> dict[str, Optional[dict]]:
    """Home Assistant MQTT discovery configs for one machine: {topic: config}. None for the
    controls while commands are off: an empty retained config removes them from Home Assistant."""
    node = topics.node
    device = {
        "identifiers": [f"edge_agent_{node}"],
        "name": f"edge-agent {node}",
        "manufacturer": "edge-agent",
        "model": f"edge-agent ({model_name})",
        "sw_version": __version__,
    }
    avail = {"availability_topic": topics.status, "payload_available": "online", "payload_not_available": "offline"}

    def button(command: str, label: str, extra: Optional[dict] = None) -> Optional[dict]:
        """A button that publishes ``command`` to the machine's command topic (None: commands off)."""
        if not commands:
            return None
        return {
            "name": f"{machine} {label}",
            "unique_id": f"edge_agent_{node}_{machine}_{command}",
            **(extra or {}),
            "command_topic": topics.machine(machine, "command"),
            "payload_press": json.dumps({"command": command}),
            "qos": 1,
            "device": device,
            **avail,
        }

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
        # the input (a microphone, a camera's stream, a Wyoming mic): is audio coming in?
        topics.discovery_config("binary_sensor", machine, "input"): {
            "name": f"{machine} audio input",
            "unique_id": f"edge_agent_{node}_{machine}_input",
            "device_class": "connectivity",
            "state_topic": topics.machine(machine, "state"),
            "value_template": "{{ 'ON' if value_json.input is defined and value_json.input.online else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device": device,
            **avail,
        },
        # the trends' severity: "watch" while the normal score drifts toward the threshold over days
        topics.discovery_config("sensor", machine, "severity"): {
            "name": f"{machine} severity",
            "unique_id": f"edge_agent_{node}_{machine}_severity",
            "state_topic": topics.machine(machine, "state"),
            "value_template": "{{ value_json.severity if value_json.severity is defined else 'normal' }}",
            "device_class": "enum",
            "options": ["normal", "watch"],
            "json_attributes_topic": topics.machine(machine, "state"),
            "device": device,
            **avail,
        },
        # the latest alarm's ISA-18.2 state: normal, unacknowledged, acknowledged, returned_unacknowledged
        topics.discovery_config("sensor", machine, "alarm"): {
            "name": f"{machine} alarm state",
            "unique_id": f"edge_agent_{node}_{machine}_alarm_state",
            "state_topic": topics.machine(machine, "state"),
            "value_template": "{{ value_json.alarm.state if value_json.alarm is defined else 'normal' }}",
            "device_class": "enum",
            "options": ["normal", "unacknowledged", "acknowledged", "returned_unacknowledged"],
            "device": device,
            **avail,
        },
        topics.discovery_config("button", machine, "acknowledge"): button("acknowledge", "acknowledge alarm"),
        topics.discovery_config("button", machine, "normal"): button(
            "normal", "last alarm was normal", {"icon": "mdi:check-circle-outline"}
        ),
        topics.discovery_config("switch", machine, "shelve"): (
            {
                "name": f"{machine} shelved",
                "unique_id": f"edge_agent_{node}_{machine}_shelve",
                "icon": "mdi:bell-sleep",
                "command_topic": topics.machine(machine, "command"),
                "payload_on": json.dumps({"command": "shelve", "minutes": shelve_minutes}),
                "payload_off": json.dumps({"command": "unshelve"}),
                "state_topic": topics.machine(machine, "state"),
                "value_template": "{{ 'ON' if value_json.state == 'shelved' else 'OFF' }}",
                "state_on": "ON",
                "state_off": "OFF",
                "qos": 1,
                "device": device,
                **avail,
            }
            if commands
            else None
        ),
    }
