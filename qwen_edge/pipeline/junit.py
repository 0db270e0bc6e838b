"""The pipeline report as JUnit XML: one test case per (checkpoint, target, stage), for CI dashboards."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

STAGES = ("fingerprint", "build", "integrity", "gate")


def junit_tree(report: dict[str, Any]) -> ET.ElementTree:
    suites = ET.Element("testsuites", name="qwen-edge pipeline")
    cases, failures = [], 0
    for cell in report["cells"]:
        for stage in STAGES:
            record = cell["stages"].get(stage)
            case = ET.Element("testcase", classname=f"{cell['checkpoint']}.{cell['target']}", name=stage,
                              time=f"{record['seconds'] if record else 0:.4f}")
            if record is None:
                reason = "not configured" if stage == "gate" and cell["passed"] else "not run: an earlier stage failed"
                ET.SubElement(case, "skipped", message=reason)
            elif not record.get("passed", False):
                failures += 1
                message = record.get("failure") or record.get("error") or "failed"
                failure = ET.SubElement(case, "failure", message=message, type=stage)
                failure.text = "\n".join(record.get("problems") or [message])
            elif stage == "build":
                ET.SubElement(case, "system-out").text = f"status: {cell['status']}; key: {cell['key']}"
            cases.append(case)
    suite = ET.SubElement(suites, "testsuite", name="qwen-edge pipeline", tests=str(len(cases)),
                          failures=str(failures), errors="0",
                          skipped=str(sum(c.find("skipped") is not None for c in cases)),
                          time=f"{report['seconds']:.4f}")
    suite.extend(cases)
    suites.set("tests", str(len(cases)))
    suites.set("failures", str(failures))
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(report: dict[str, Any], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    junit_tree(report).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
