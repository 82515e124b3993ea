"""Fleet patterns: the same finding on most VMs of one host or cluster, begun together.

When a DNS server, a gateway, an NTP source or a storage domain breaks, every VM behind it
raises the same finding at about the same time. The administrator needs the one shared cause,
not hundreds of verdicts. This module groups findings by what they are (their code, never the
VM) per host and per cluster, and names a **pattern** when (docs/ui.md, "Fleet patterns"):

* at least ``MIN_VMS`` (5) VMs of the host or cluster carry the finding, and
* they are at least ``MIN_SHARE`` (80 %) of that host's or cluster's VMs, and
* those VMs' onsets lie within ``ONSET_WINDOW_S`` (10 min) of each other: the largest group
  whose onsets fit in one 10-minute window is what counts, so VMs that raised the finding
  hours apart (each for its own reason) never make a pattern together.

The onset of a VM's finding is the verdict's ``since`` (when the VM's status became what it
is); a finding that joins a VM already warning for another reason carries that older time, and
then does not line up with the others: a missed pattern, never a pattern by chance. A cluster
pattern makes the same code's host patterns inside it redundant; they are dropped.

Everything here counts only the rows it is given: the pages give it the VMs the user may see,
so a pattern never reveals VMs the user may not see; the health pass gives it every VM.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

from diag_protocol.vocabulary import rank, worst

MIN_VMS = 5
MIN_SHARE = 0.8
ONSET_WINDOW_S = 600.0
#: Finding groups listed per answer (most shared first).
MAX_GROUPS = 20
#: Hosts and clusters named per finding group.
MAX_PLACES = 5

#: What a shared finding says and where to look, by the start of its code (without "check:").
MEANINGS: Tuple[Tuple[str, str, str], ...] = (
    ("net.gateway", "cannot reach their gateway", "look at the {scope}'s network"),
    ("net.dns", "cannot resolve names", "look at the DNS server they use"),
    ("dns", "cannot resolve names", "look at the DNS server they use"),
    ("net.", "have network trouble", "look at the {scope}'s network"),
    ("time.", "have clocks that drift", "look at the NTP source they use"),
    ("fs.", "have filesystems in trouble", "look at the storage they share"),
    ("forecast:fs.", "will fill their filesystems", "look at the storage they share"),
    ("agent.silent", "stopped reporting", "look at the {scope} (its relay, vdsm, the "
     "virtio-serial channels)"),
    ("cpu.steal", "wait for CPU time", "look at the {scope}'s CPU load"),
)


def meaning(code: str, scope: str) -> Tuple[str, str]:
    """(what the VMs have, where to look) for a finding code shared on a host or cluster."""
    bare = code[len("check:"):] if code.startswith("check:") else code
    for prefix, what, advice in MEANINGS:
        if bare.startswith(prefix):
            return what, advice.format(scope=scope)
    return "share the finding %s" % bare, "look at what they share on this %s" % scope


def _best_window(onsets: Sequence[Tuple[float, str]]) -> List[Tuple[float, str]]:
    """The largest run of (onset, vm_id) whose onsets fit in one window (earliest wins ties)."""
    ordered = sorted(onsets)
    best: List[Tuple[float, str]] = []
    start = 0
    for end in range(len(ordered)):
        while ordered[end][0] - ordered[start][0] > ONSET_WINDOW_S:
            start += 1
        if end - start + 1 > len(best):
            best = ordered[start:end + 1]
    return best


def find(rows: Sequence[Mapping[str, Any]], findings: Mapping[str, Sequence[Mapping[str, Any]]],
         onsets: Mapping[str, float | None],
         kinds: Sequence[str] = ("host", "cluster")) -> Dict[str, Any]:
    """``{"patterns": [...], "groups": [...]}`` over ``rows`` (VM summary rows in scope).

    ``findings[vm_id]``: every finding of the VM (code, status, message); ``onsets[vm_id]``:
    its verdict's ``since``; ``kinds``: which scopes to look at (a host's own list holds only
    part of its cluster, so it looks at the host alone). A pattern: ``{scope, id, name,
    code, status, message, what, advice, vms, of, since, vm_ids}``; a group: ``{code,
    status, message, vms, hosts, clusters}``.
    """
    scopes: Dict[Tuple[str, str], List[str]] = {}
    names: Dict[Tuple[str, str], str] = {}
    for row in rows:
        for kind, key, name in (("host", row.get("host_id"), row.get("host_name")),
                                ("cluster", row.get("cluster_id") or row.get("cluster"),
                                 row.get("cluster"))):
            if key and kind in kinds:
                scopes.setdefault((kind, key), []).append(row["id"])
                names[(kind, key)] = str(name or key)
    scope_of = {(kind, vm_id): key for (kind, key), ids in scopes.items() for vm_id in ids}

    by_code: Dict[str, List[str]] = {}
    detail: Dict[str, Tuple[str, Counter]] = {}
    for row in rows:
        seen = set()
        for f in findings.get(row["id"]) or ():
            code = str(f.get("code") or "")
            if not code or code in seen or rank(f.get("status")) == 0:
                continue
            seen.add(code)
            by_code.setdefault(code, []).append(row["id"])
            status, messages = detail.get(code, ("ok", Counter()))
            messages[str(f.get("message") or "")] += 1
            detail[code] = (worst((status, f.get("status"))), messages)

    groups = []
    patterns: List[Dict[str, Any]] = []
    for code, vm_ids in by_code.items():
        status, messages = detail[code]
        message = messages.most_common(1)[0][0]
        places: Dict[str, Counter] = {kind: Counter() for kind in ("host", "cluster")}
        for vm_id in vm_ids:
            for kind in places:
                key = scope_of.get((kind, vm_id))
                if key:
                    places[kind][key] += 1
        groups.append({"code": code, "status": status, "message": message,
                       "vms": len(vm_ids),
                       **{kind + "s": [{"id": key, "name": names[(kind, key)], "vms": n}
                                       for key, n in counter.most_common(MAX_PLACES)]
                          for kind, counter in places.items()}})
        for kind, counter in places.items():
            for key, n in counter.items():
                of = len(scopes[(kind, key)])
                if n < MIN_VMS or n < MIN_SHARE * of:
                    continue
                here = [(onset, v) for v in vm_ids if scope_of.get((kind, v)) == key
                        and isinstance(onset := onsets.get(v), (int, float))]
                window = _best_window(here)
                if len(window) < MIN_VMS or len(window) < MIN_SHARE * of:
                    continue
                what, advice = meaning(code, kind)
                patterns.append({
                    "scope": kind, "id": key, "name": names[(kind, key)], "code": code,
                    "status": status, "message": message, "what": what, "advice": advice,
                    "vms": len(window), "of": of, "since": window[0][0],
                    "vm_ids": sorted(v for _, v in window)})
    clusters = {(p["code"], p["id"]) for p in patterns if p["scope"] == "cluster"}
    host_cluster = {}
    for row in rows:
        if row.get("host_id"):
            host_cluster[row["host_id"]] = row.get("cluster_id") or row.get("cluster")
    patterns = [p for p in patterns if p["scope"] == "cluster"
                or (p["code"], host_cluster.get(p["id"])) not in clusters]
    patterns.sort(key=lambda p: (-rank(p["status"]), -p["vms"], p["scope"], p["name"],
                                 p["code"]))
    groups.sort(key=lambda g: (-g["vms"], -rank(g["status"]), g["code"]))
    return {"patterns": patterns, "groups": groups[:MAX_GROUPS]}


def sentence(pattern: Mapping[str, Any], since_text: str) -> str:
    """"42 of 45 VMs on host hv-03 cannot reach their gateway since 10:02: look at ..."."""
    return "%d of %d VMs on %s %s %s since %s: %s." % (
        pattern["vms"], pattern["of"], pattern["scope"], pattern["name"], pattern["what"],
        since_text, pattern["advice"])


def involving(patterns: Iterable[Mapping[str, Any]], vm_id: str) -> List[Mapping[str, Any]]:
    return [p for p in patterns if vm_id in p.get("vm_ids", ())]
