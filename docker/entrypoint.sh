#!/bin/sh
# Container entry point: build the TensorRT engine on first start when the config asks for the
# native TensorRT backend and no engine is cached yet, then run the agent.
set -eu
CONFIG="${EDGE_AGENT_CONFIG:-/etc/edge-agent/config.yaml}"
if grep -Eq '^engine:[[:space:]]*trt' "$CONFIG"; then
  MODEL=$(sed -n 's/^model:[[:space:]]*//p' "$CONFIG" | tr -d '"' | head -n1)
  MODEL="${MODEL:-default}"
  if ! find "${CACHE_DIRECTORY}" -name '*.engine' 2>/dev/null | grep -q .; then
    echo "edge-agent: no TensorRT engine in ${CACHE_DIRECTORY}; building one for ${MODEL} (a few minutes, once)"
    edge-agent build-engine "$MODEL" --fp16 --cache-dir "${CACHE_DIRECTORY}"
  fi
fi
exec edge-agent run --config "$CONFIG" "$@"
