#!/usr/bin/env bash
# The deploy kit, validated offline: the compose file against the Compose
# Specification's schema (check-jsonschema's vendored copy), the Kubernetes
# manifests against the API's schemas (kubernetes-validate, strict: unknown
# fields fail), Prometheus' configuration with promtool, and the shutdown
# budget: terminationGracePeriodSeconds must exceed ORDERFLOW_SHUTDOWN_DELAY
# plus ORDERFLOW_SHUTDOWN_GRACE, or the kubelet kills draining pods.
# Tools: `pip install check-jsonschema kubernetes-validate`, promtool.
set -euo pipefail
cd "$(dirname "$0")/.."

check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
kubernetes-validate --kubernetes-version 1.30.0 --strict deploy/k8s/*.yaml
promtool check config deploy/prometheus/prometheus.yml >/dev/null
echo "promtool: deploy/prometheus/prometheus.yml is valid"
python3 - <<'PY'
import re, sys
text = open("deploy/k8s/deployment.yaml").read()
def seconds(name):
    m = re.search(r"- name: %s\n\s+value: (\d+)s" % name, text)
    if not m:
        sys.exit(f"deploy/k8s/deployment.yaml sets no {name} in seconds")
    return int(m.group(1))
period = int(re.search(r"terminationGracePeriodSeconds: (\d+)", text).group(1))
delay, grace = seconds("ORDERFLOW_SHUTDOWN_DELAY"), seconds("ORDERFLOW_SHUTDOWN_GRACE")
if period <= delay + grace:
    sys.exit(f"terminationGracePeriodSeconds {period} must exceed delay {delay} + grace {grace}")
print(f"shutdown budget: {period} s > delay {delay} s + grace {grace} s")
PY
