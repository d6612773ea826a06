"""Reads of a study's registered protocol, and whether the data match it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from studyapp.models import Study, StudyProtocol
from studyapp.services.protocol import DATA_SECTIONS, protocol_sha256, study_protocol_document


def study_protocol_get(*, study: Study) -> StudyProtocol | None:
    return StudyProtocol.objects.filter(study=study).first()


@dataclass(frozen=True)
class ProtocolCheck:
    """The outcome of comparing the data with the registered protocol; ``problems`` empty = they match."""

    sha256: str
    format: str
    written_at: str
    retrospective: bool
    intact: bool  # the stored document still hashes to the stored sha256
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    document: dict = field(default_factory=dict, repr=False)

    @property
    def matches(self) -> bool:
        return self.intact and not self.problems


def protocol_check(*, study: Study, protocol: StudyProtocol, items: Iterable[str] | None = None,
                   conditions: Iterable[str] | None = None) -> ProtocolCheck:
    """Compare the registered protocol with the database now and with the data a report uses.

    The document is rebuilt from the database and its data sections (dataset, design, texts, classes, items with
    their content hashes, shots per condition, attention-check pool) compared with the registered ones; then every
    item and condition of the report's trial table (``items``: item codes, ``conditions``: names) must be one the
    protocol lists. The triggers of studyapp/frozen.py make a mismatch impossible short of dropping them, so a
    mismatch says the database was tampered with or restored from elsewhere.
    """
    registered = json.loads(protocol.document)
    current = study_protocol_document(study=study)
    problems = []
    intact = protocol_sha256(protocol.document) == protocol.sha256
    if not intact:
        problems.append("the stored document no longer hashes to its registered sha256")
    for section in DATA_SECTIONS:
        now = current.get(section)
        if section == "design" and isinstance(registered.get(section), dict):
            # Only what was registered: a setting added to the app later is not part of an older protocol.
            now = {key: now.get(key) for key in registered[section]}
        if registered.get(section) != now:
            problems.append(_difference(section, registered.get(section), now))
    listed = {row["item"] for row in registered.get("items", {}).get("list", [])}
    checked = [f"{len(listed)} test items with their content hashes",
               f"{sum(len(v) for v in registered.get('shots', {}).values())} shot examples",
               f"{len(registered.get('classes', []))} classes", "design and texts"]
    if items is not None:
        used = set(map(str, items))
        unknown = sorted(used - listed)
        if unknown:
            problems.append(f"{len(unknown)} item(s) of the trial table are not in the protocol (e.g. {unknown[0]})")
        checked.append(f"the trial table's {len(used)} items")
    if conditions is not None:
        used = set(conditions)
        unknown = sorted(used - set(registered.get("design", {}).get("conditions", [])))
        if unknown:
            problems.append(f"condition(s) {', '.join(unknown)} of the trial table are not in the protocol")
        checked.append(f"the trial table's {len(used)} condition(s)")
    return ProtocolCheck(sha256=protocol.sha256, format=protocol.format, written_at=protocol.written_at.isoformat(),
                         retrospective=protocol.retrospective, intact=intact, problems=problems, checked=checked,
                         document=registered)


def _difference(section: str, registered, current) -> str:
    if section == "items" and isinstance(registered, dict) and isinstance(current, dict):
        before = {r["item"]: r for r in registered.get("list", [])}
        now = {r["item"]: r for r in current.get("list", [])}
        changed = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
        return (f"items differ from the protocol: {len(before.keys() - now.keys())} missing, "
                f"{len(now.keys() - before.keys())} added, {len(changed)} changed (content hash or class)")
    if section == "shots" and isinstance(registered, dict) and isinstance(current, dict):
        names = sorted(c for c in registered.keys() | current.keys() if registered.get(c) != current.get(c))
        return f"shot examples differ from the protocol in {', '.join(names)}"
    if isinstance(registered, dict) and isinstance(current, dict):
        keys = sorted(k for k in registered.keys() | current.keys() if registered.get(k) != current.get(k))
        return f"{section} differs from the protocol ({', '.join(keys)})"
    return f"{section} differs from the protocol"
