#!/usr/bin/env python3
"""Print the run's totals, "N passed, N failed", from meson's JUnit logs.

Meson writes one JUnit file per `meson test` run (testlog*.junit.xml).  For
TAP tests every test case is its own <testcase>, so the count is of test
cases, not of test programs.  A skipped case is reported separately.
"""
import glob
import os
import sys
import xml.etree.ElementTree as ET


def count(dirs):
    passed = failed = skipped = 0
    for d in dirs:
        for f in sorted(glob.glob(os.path.join(d, "testlog*.junit.xml"))):
            root = ET.parse(f).getroot()
            for suite in root.iter("testsuite"):
                cases = list(suite.iter("testcase"))
                bad = 0
                for tc in cases:
                    tags = {c.tag for c in tc}
                    if tags & {"failure", "error"}:
                        bad += 1
                    elif "skipped" in tags:
                        skipped += 1
                    else:
                        passed += 1
                # A program that failed as a whole (a crash, a sanitizer or
                # valgrind exit status) with every case passing still fails.
                whole = int(suite.get("errors", 0) or 0) + int(suite.get("failures", 0) or 0)
                failed += max(bad, whole)
    return passed, failed, skipped


def main():
    p, f, s = count(sys.argv[1:])
    line = f"{p} passed, {f} failed"
    if s:
        line += f", {s} skipped"
    print(line)


if __name__ == "__main__":
    main()
