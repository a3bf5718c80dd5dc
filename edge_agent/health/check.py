"""Container health check: scrape the agent's metrics endpoint and fail when it is down, a machine
has no audio, one of its threads died, or the MQTT broker has been out of reach for longer than a
grace period (alarms are then piling up in the outbox, unseen). ``python3 -m edge_agent.health.check [--url URL]
[--broker-grace SECONDS]`` prints one line and exits 0 healthy, 1 not."""

from __future__ import annotations

import argparse
import sys
import urllib.request


def check(url: str, timeout: float = 5.0, broker_grace: float = 120.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode()
    except OSError as e:
        return False, f"metrics endpoint {url} unreachable: {e}"
    from prometheus_client.parser import text_string_to_metric_families

    dead, waiting, connected, down, threads = [], 0.0, None, 0.0, []
    for fam in text_string_to_metric_families(text):
        if fam.name == "edge_agent_state":
            dead += [s.labels["machine"] for s in fam.samples if s.labels.get("state") == "no_audio" and s.value == 1.0]
        elif fam.name == "edge_agent_outbox_depth":
            waiting = sum(s.value for s in fam.samples)
        elif fam.name == "edge_agent_mqtt_connected":
            connected = fam.samples[0].value == 1.0
        elif fam.name == "edge_agent_mqtt_disconnected_seconds":
            down = fam.samples[0].value
        elif fam.name == "edge_agent_thread_dead":
            threads += [s.labels["thread"] for s in fam.samples if s.value == 1.0]
    broker = (
        "mqtt not configured"
        if connected is None
        else "mqtt connected"
        if connected
        else f"mqtt NOT CONNECTED for {down:.0f} s"
    ) + f", outbox {waiting:.0f}"
    problems = []
    if dead:
        problems.append(f"no audio from: {', '.join(dead)}")
    if threads:
        problems.append(f"thread(s) ended by an exception: {', '.join(threads)} (see the agent's log)")
    if connected is False and down > broker_grace:
        problems.append(
            f"the MQTT broker has been unreachable for {down:.0f} s; {waiting:.0f} event(s) waiting in the outbox"
        )
    if problems:
        return False, "; ".join(problems) + f" ({broker})"
    return True, f"ok ({broker})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--url", default="http://127.0.0.1:9108/metrics", help="the agent's metrics endpoint (metrics.listen)"
    )
    p.add_argument(
        "--broker-grace",
        type=float,
        default=120.0,
        help="seconds without a broker connection before the agent counts as unhealthy (default 120)",
    )
    a = p.parse_args(argv)
    ok, msg = check(a.url, broker_grace=a.broker_grace)
    print(msg)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
