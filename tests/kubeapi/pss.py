"""The "restricted" Pod Security Standard, as pure checks on a pod spec (a plain dict).

Used by the emulator's admission and by tests of the manifests the product generates.
Messages follow the API server's ("allowPrivilegeEscalation != false (container "x" must
set securityContext.allowPrivilegeEscalation=false)").
"""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *spec.get("initContainers", []),
        *spec.get("containers", []),
        *spec.get("ephemeralContainers", []),
    ]


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Every rule of the restricted profile (latest) that ``spec`` breaks; empty when it complies."""
    problems: list[str] = []
    pod_context = spec.get("securityContext") or {}
    containers = _containers(spec)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"host namespaces ({field}=true)")
    for container in containers:
        context = container.get("securityContext") or {}
        name = container.get("name", "?")
        if context.get("privileged"):
            problems.append(f'privileged (container "{name}" must not set securityContext.privileged=true)')
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(
                f'allowPrivilegeEscalation != false (container "{name}" must set '
                "securityContext.allowPrivilegeEscalation=false)"
            )
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(
                f'unrestricted capabilities (container "{name}" must set '
                'securityContext.capabilities.drop=["ALL"])'
            )
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f'unrestricted capabilities (container "{name}" must not add {sorted(added)})')
        if any(port.get("hostPort") for port in container.get("ports") or []):
            problems.append(f'hostPort (container "{name}" uses hostPort)')
        if context.get("procMount") not in (None, "Default"):
            problems.append(f'procMount (container "{name}" must not set securityContext.procMount)')
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f'hostProcess (container "{name}" must not set hostProcess=true)')
        if context.get("runAsUser") == 0:
            problems.append(f'runAsUser=0 (container "{name}" must not set runAsUser=0)')
        if (context.get("seLinuxOptions") or {}).get("type") not in (
            None,
            "",
            "container_t",
            "container_init_t",
            "container_kvm_t",
        ):
            problems.append(f'seLinuxOptions (container "{name}" sets a forbidden SELinux type)')
    if pod_context.get("runAsUser") == 0:
        problems.append("runAsUser=0 (pod must not set runAsUser=0)")
    if not pod_context.get("runAsNonRoot") and any(
        (c.get("securityContext") or {}).get("runAsNonRoot") is not True for c in containers
    ):
        problems.append("runAsNonRoot != true (pod or containers must set securityContext.runAsNonRoot=true)")
    if any((c.get("securityContext") or {}).get("runAsNonRoot") is False for c in containers):
        problems.append("runAsNonRoot != true (a container sets securityContext.runAsNonRoot=false)")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    for container in containers:
        seccomp = ((container.get("securityContext") or {}).get("seccompProfile") or {}).get(
            "type"
        ) or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(
                f'seccompProfile (pod or container "{container.get("name", "?")}" must set '
                'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
            )
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(
                f'restricted volume types (volume "{volume.get("name")}" '
                f"uses {sorted(kinds - ALLOWED_VOLUMES)})"
            )
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"forbidden sysctls ({sysctl.get('name')})")
    return problems
