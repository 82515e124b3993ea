"""The fleet list as CSV, for people who take it elsewhere (a spreadsheet, a ticket).

The rows are the API's list with the same filters and sort (``listing``), every matching VM,
no paging. Names and findings come from guests and from oVirt: a spreadsheet would run a cell
that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return, which some strip
before looking) as a formula, so such a cell is written with a leading ``'`` (OWASP's advice
for CSV injection); the csv module quotes separators, quotes and line breaks.
"""

from __future__ import annotations

import csv
import datetime
import io
from typing import Any, Iterable, List, Mapping

from diag_protocol.vocabulary import worst_item

COLUMNS = ("vm_id", "name", "health", "worst_finding_status", "worst_finding_code",
           "worst_finding_message", "cluster", "host", "host_id", "last_report_utc")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    """One CSV cell: text, with formula-looking text neutralised."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def iso_utc(t: Any) -> str:
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        return ""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def csv_rows(vms: Iterable[Mapping[str, Any]]) -> List[List[str]]:
    out = []
    for vm in vms:
        worst = worst_item(vm.get("findings") or ()) or {}
        out.append([cell(v) for v in (
            vm.get("id"), vm.get("name"), vm.get("health"), worst.get("status"),
            worst.get("code"), worst.get("message"), vm.get("cluster"), vm.get("host_name"),
            vm.get("host_id"), iso_utc(vm.get("last_report_at")))])
    return out


def fleet_csv(vms: Iterable[Mapping[str, Any]]) -> str:
    """The CSV text (header first, CRLF line ends as RFC 4180 says)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(csv_rows(vms))
    return buffer.getvalue()


def filename(now: float, scope: str = "fleet") -> str:
    stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(
        "%Y%m%dT%H%M%SZ")
    return "vmdiag-%s-%s.csv" % (scope, stamp)
