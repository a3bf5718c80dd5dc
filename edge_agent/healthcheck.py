"""Container health check: scrape the agent's metrics endpoint and fail when it is down or a
machine has no audio. ``python3 -m edge_agent.healthcheck [--url URL]`` (exit 0 healthy, 1 not)."""
from __future__ import annotations

import argparse
import sys
import urllib.request


def check(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode()
    except OSError as e:
        return False, f"metrics endpoint {url} unreachable: {e}"
    from prometheus_client.parser import text_string_to_metric_families

    dead = []
    for fam in text_string_to_metric_families(text):
        if fam.name == "edge_agent_state":
            dead += [s.labels["machine"] for s in fam.samples if s.labels.get("state") == "no_audio" and s.value == 1.0]
    if dead:
        return False, f"no audio from: {', '.join(dead)}"
    return True, "ok"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:9108/metrics")
    ok, msg = check(p.parse_args(argv).url)
    print(msg)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
