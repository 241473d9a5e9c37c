"""Why Kueue holds a workload, in plain words: pure functions over its Workload objects (as dicts).

On clusters that run Kueue, it makes a Workload for each Job it queues, and one for each pod of a
server or of a scraper's Deployment, labelled with the uid of what it stands for
(``kueue.x-k8s.io/job-uid``). While Kueue holds it, the Workload's ``QuotaReserved`` condition is
False and its message says why, in Kueue's words (its ``pkg/scheduler/flavorassigner``), e.g.
"couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor
default-flavor, 4 more needed". Those words are read here; a message not known here still reads as
held by the cluster's queue, with the cluster's words left for admins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from jhub_ext.core.catalog.quantities import format_memory
from jhub_ext.kubernetes.quantities import parse_quantity

Json = dict[str, Any]

GROUP = "kueue.x-k8s.io"
#: the Workload API versions read, newest first (Kueue serves v1beta2 since v0.15, v1beta1 before)
VERSIONS = ("v1beta2", "v1beta1")
#: the label Kueue puts on a Workload: the uid of the Job or pod it stands for
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
#: the generic words for a workload the cluster's queue holds
HELD = "held by the cluster's queue: it starts by itself when the queue admits it"
_ADMITS = "it starts by itself when the queue admits it"

_RESOURCE = r"([\w./-]+)"
_UNUSED = re.compile(rf"insufficient unused quota for {_RESOURCE} in flavor \S+, (\S+) more needed")
_NEVER = re.compile(
    rf"insufficient quota for {_RESOURCE} in flavor \S+,.*?current podset request \((\S+)\)"
    r" > maximum capacity \((\S+)\)"
)
_UNAVAILABLE = re.compile(rf"resource {_RESOURCE} unavailable in ClusterQueue")
_NO_QUEUE = re.compile(r"\b(?:LocalQueue|ClusterQueue) \S+ (?:doesn't exist|is inactive|not found)")
_UNSUITED = re.compile(r"untolerated taint|doesn't match node affinity|flavor \S+ not found")
_PREEMPTING = re.compile(r"Pending the preemption of (\d+) workload")


def by_owner(workloads: Iterable[Json]) -> dict[str, Json]:
    """Kueue's Workloads by the uid of the Job or pod each stands for (the newest, should there be more)."""
    found: dict[str, Json] = {}
    for workload in sorted(workloads, key=lambda w: (w.get("metadata") or {}).get("creationTimestamp") or ""):
        uid = ((workload.get("metadata") or {}).get("labels") or {}).get(JOB_UID_LABEL)
        if uid:
            found[uid] = workload
    return found


def _condition(workload: Json, kind: str) -> Json | None:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition  # type: ignore[no-any-return]
    return None


def held_because(workload: Json | None) -> str | None:
    """Why Kueue holds ``workload``, in plain words; None when it does not (it is admitted, or Kueue
    has not looked at it yet), or says nothing a researcher can use."""
    if workload is None:
        return None
    admitted = _condition(workload, "Admitted")
    if admitted is not None and admitted.get("status") == "True":
        return None
    reserved = _condition(workload, "QuotaReserved")
    if reserved is None or reserved.get("status") != "False":
        return None
    said = str(reserved.get("message") or "")
    evicted = _condition(workload, "Evicted")
    again = evicted is not None and evicted.get("status") == "True"
    words = queue_words(said)
    if words is None:
        return None
    return f"{'put back in' if again else 'held by'} the cluster's queue: {words}"


def queue_words(said: str) -> str | None:
    """Kueue's reason for holding a workload (its QuotaReserved message) in plain words."""
    never = [(resource, ask, most) for resource, ask, most in _NEVER.findall(said)]
    if never:
        resource, ask, most = never[0]
        return (
            f"it asks for {_amount(resource, ask)} and the queue's whole share is {_amount(resource, most)},"
            " so it can never start there: choose a smaller profile, or ask an admin for a larger share"
        )
    unavailable = _UNAVAILABLE.findall(said)
    if unavailable:
        return f"the queue has no share of {_noun(unavailable[0])} at all: ask an admin"
    if _NO_QUEUE.search(said):
        return "the queue it was given does not exist or is switched off: ask an admin"
    short = _shortfall(_UNUSED.findall(said))
    if short:
        making_room = _PREEMPTING.search(said)
        if making_room:
            count = int(making_room.group(1))
            return f"it needs {short} than its share has free; {_others(count)} to make room"
        return f"its share has no room for it now (it needs {short}); {_ADMITS}"
    if _UNSUITED.search(said):
        return "none of the queue's kinds of machine suit it: ask an admin"
    return None


def _others(count: int) -> str:
    return (
        "1 other job is being put back in the queue"
        if count == 1
        else f"{count} other jobs are being put back"
    )


def _shortfall(found: Iterable[tuple[str, str]]) -> str:
    """What is short, per resource the least any flavor needs: "4 more CPUs and 2 GiB more memory"."""
    least: dict[str, Decimal] = {}
    for resource, needed in found:
        try:
            amount = parse_quantity(needed)
        except ValueError:
            continue
        least[resource] = min(amount, least.get(resource, amount))
    return " and ".join(_more(resource, amount) for resource, amount in least.items())


def _more(resource: str, amount: Decimal) -> str:
    if resource == "memory":
        return f"{format_memory(int(amount))} more memory"
    if resource == "pods":
        return f"room for {_count(amount)} more {_noun(resource, amount)}"
    return f"{_count(amount)} more {_noun(resource, amount)}"


def _amount(resource: str, quantity: str) -> str:
    """A Kueue quantity of ``resource`` in words: "24 CPUs", "64 GiB of memory", "1 GPU"."""
    try:
        amount = parse_quantity(quantity)
    except ValueError:
        return f"{quantity} of {_noun(resource)}"
    if resource == "memory":
        return f"{format_memory(int(amount))} of memory"
    return f"{_count(amount)} {_noun(resource, amount)}"


def _count(amount: Decimal) -> str:
    return f"{float(amount):g}"


def _noun(resource: str, amount: Decimal = Decimal(2)) -> str:
    """What a resource is called for people, singular for one."""
    one = amount == 1
    if resource == "cpu":
        return "CPU" if one else "CPUs"
    if resource == "memory":
        return "memory"
    if resource == "pods":
        return "program" if one else "programs"
    if "gpu" in resource.lower():
        return "GPU" if one else "GPUs"
    return resource.rsplit("/", 1)[-1]
