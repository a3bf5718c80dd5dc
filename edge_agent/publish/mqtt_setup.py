"""Setting up the MQTT client from the config: credentials (never from the YAML) and TLS."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Optional

from edge_agent.config import MQTTConfig
from edge_agent.credentials import read_secret
from edge_agent.errors import UserError


class MQTTConfigError(UserError):
    pass


def read_password(cfg: MQTTConfig) -> Optional[str]:
    """From ``password_file``, else systemd's ``$CREDENTIALS_DIRECTORY/mqtt_password``; never from YAML."""
    try:
        return read_secret(cfg.password_file, "mqtt_password", "mqtt.password_file")
    except UserError as e:
        raise MQTTConfigError(str(e)) from None


def secure(c, mq: MQTTConfig) -> None:
    """Username and password, and TLS, on paho client ``c``; a file that cannot be used is an error
    that names its key."""
    if mq.username:
        c.username_pw_set(mq.username, read_password(mq))
    if mq.tls is not None:
        t = mq.tls
        for key in ("ca_file", "cert_file", "key_file"):
            v = getattr(t, key)
            if v is not None and not Path(v).is_file():
                raise MQTTConfigError(f"mqtt.tls.{key}: {v} does not exist")
        try:
            c.tls_set(
                ca_certs=str(t.ca_file) if t.ca_file else None,
                certfile=str(t.cert_file) if t.cert_file else None,
                keyfile=str(t.key_file) if t.key_file else None,
            )
        except (ssl.SSLError, OSError, ValueError) as e:
            raise MQTTConfigError(
                f"mqtt.tls: cannot use the CA, certificate or key ({e}); they must be PEM files "
                "(ca_file: the CA certificate that signed the broker's; cert_file and key_file: the agent's own)"
            ) from None
        if t.insecure:
            c.tls_insecure_set(True)
