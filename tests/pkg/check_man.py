#!/usr/bin/env python3
"""check_man.py -- the man pages say what --help says, and nothing else.

    check_man.py MANDIR SPACEFS SPACECTL SPACEBENCH      (TAP on stdout)

A man page drifts silently: an option is added to --help and never to the
page, or dropped from the program and left in the page.  For each program
this compares the two both ways:
  forward   every option in --help (long, short, and spacefs's "-o NAME")
            and every command appears in the rendered man page;
  backward  every option the man page defines (in SYNOPSIS, in a .TP item
            or in a .SS heading) and every command heading exists in --help.
spacectl's help is its main --help plus `spacectl COMMAND --help` for each
command the main help lists; the commands are compared as words ("disk
replace") against the .SS headings of the page's COMMANDS section.
The pages are also rendered with groff warnings on: any warning fails.
"""
import os
import re
import subprocess
import sys

OPT = re.compile(r"(?<![\w/.=-])(-o [a-z_][a-z0-9_-]*|--[a-z][a-z0-9-]*|-[a-zA-Z](?![\w-]))")


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def opts(text):
    return set(OPT.findall(text))


def render(page):
    """The page as one line of plain ASCII text, and groff's warnings."""
    r = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", "-ww", "-rLL=2000n", page],
                       capture_output=True, text=True, check=False)
    return " ".join(r.stdout.split()), r.stderr.strip()


def strip(line):
    line = re.sub(r"^\.\w+\s*", "", line)
    line = re.sub(r"\\f[BIRP]", "", line).replace("\\-", "-").replace('"', " ")
    return line


def defined(page, prog):
    """Options and command headings the page itself defines.  A SYNOPSIS
    line of another program (spacefs's "mount -t fuse.spacefs") is not
    the page's own."""
    found, heads, section, after_tp, other = set(), [], "", False, False
    for line in open(page, encoding="utf-8"):
        line = line.rstrip("\n")
        if section == "SYNOPSIS" and re.match(r"\.B [a-z]", line):
            other = line.split()[1] != prog
        if line.startswith(".br") or line.startswith(".SH"):
            other = False
        if other:
            continue
        if line.startswith(".SH"):
            section = strip(line).strip()
        elif line.startswith(".SS"):
            text = strip(line).strip()
            heads.append(text)
            found |= opts(text)
        elif line.startswith(".TP"):
            after_tp = True
            continue
        elif after_tp or section == "SYNOPSIS":
            found |= opts(strip(line))
        after_tp = False
    return found, heads


def head_command(head):
    """The command words of a heading: "disk replace SOURCE ..." -> "disk replace"."""
    words = []
    for w in head.split():
        if not re.fullmatch(r"[a-z][a-z0-9-]*", w):
            break
        words.append(w)
    return " ".join(words)


def spacectl_commands(main_help):
    cmds, inside = [], False
    for line in main_help.splitlines():
        if line.startswith("commands:"):
            inside = True
            continue
        if inside and not line.strip():
            break
        if inside:
            words = head_command(line.replace("|", " | ").replace(" | ", "|")).split()
            first = line.split()
            # "owner move|balance|prefer ..." -> owner move, owner balance, ...
            if len(first) > 1 and "|" in first[1]:
                cmds += [first[0] + " " + v for v in first[1].split("|")]
            else:
                cmds.append(" ".join(words))
    return cmds


class Tap:
    def __init__(self):
        self.n = self.failed = 0

    def check(self, ok, what, detail=""):
        self.n += 1
        print(("ok" if ok else "not ok") + " %d - %s" % (self.n, what))
        if not ok:
            self.failed += 1
            for d in str(detail).splitlines():
                print("# " + d)


def compare(tap, name, page, help_text, commands=None):
    text, warnings = render(page)
    tap.check(not warnings, "%s: groff renders it without warnings" % name, warnings)
    missing = sorted(o for o in opts(help_text) if o not in text)
    tap.check(not missing, "%s: every option of --help is in the man page" % name,
              "missing: %s" % " ".join(missing))
    found, heads = defined(page, name.split("(")[0])
    extra = sorted(o for o in found if o not in opts(help_text))
    tap.check(not extra, "%s: every option the man page defines is in --help" % name,
              "not in --help: %s" % " ".join(extra))
    if commands is not None:
        man_cmds = {head_command(h) for h in heads}
        tap.check(set(commands) <= man_cmds, "%s: every command of --help has a section" % name,
                  "missing: %s" % " ".join(sorted(set(commands) - man_cmds)))
        tap.check(man_cmds <= set(commands), "%s: every command section exists in --help" % name,
                  "not in --help: %s" % " ".join(sorted(man_cmds - set(commands))))


def main():
    mandir, spacefs, spacectl, spacebench = sys.argv[1:5]
    tap = Tap()

    compare(tap, "spacefs(8)", os.path.join(mandir, "spacefs.8"), run(spacefs, "--help"))

    main_help = run(spacectl, "--help")
    cmds = spacectl_commands(main_help)
    tap.check(len(cmds) >= 15, "spacectl: the command list parsed from --help",
              " / ".join(cmds))
    helps = [main_help] + [run(spacectl, *c.split(), "--help") for c in cmds]
    compare(tap, "spacectl(8)", os.path.join(mandir, "spacectl.8"), "\n".join(helps), cmds)

    sb_help = run(spacebench, "--help")
    sb_cmds = sorted(set(re.findall(r"spacebench (\w+) FILE", sb_help)))
    compare(tap, "spacebench(1)", os.path.join(mandir, "spacebench.1"), sb_help, sb_cmds)
    text, _ = render(os.path.join(mandir, "spacebench.1"))
    workloads = re.findall(r"^\s+(?:-w, --workload W\s+)?\s*(\w+\d\w*|vhdx)\s{2,}", sb_help, re.M)
    tap.check(len(workloads) == 5 and all(w in text for w in workloads),
              "spacebench(1): every workload of --help is in the man page", workloads)

    print("1..%d" % tap.n)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
