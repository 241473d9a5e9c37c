"""``jhub-jobs``: the jobs service from a terminal, with the verbs of the notebook magics.

    jhub-jobs submit NAME [--kind batch|scraper|scheduled] [--file F | --dir D] [--profile P]
                          [--schedule CRON] [--tz ZONE] [--env KEY=VALUE ...] -- COMMAND...
    jhub-jobs list | status NAME | logs NAME [-f] [--tail N] | stop NAME | restart NAME | delete NAME
    jhub-jobs usage [--since D] [--until D] [--by day,profile] [--group G] [--csv]
    jhub-jobs profiles | quota | settings [--email A] [--webhook URL] [--events E,...]

Human tables by default; ``--json`` for scripts. Exit codes: 0 done, 1 the service refused
(the message names the field), 2 the command line is wrong, 3 the service cannot be reached.
Shell completion: ``eval "$(register-python-argcomplete jhub-jobs)"``.
"""

# PYTHON_ARGCOMPLETE_OK
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import argcomplete

from jhub_ext.client import (
    STATUSES,
    Job,
    JobsClient,
    JobsError,
    QuotaLine,
    budget_lines,
    changed_settings,
    settings_text,
    snapshot,
    submit_options,
    usage_rows,
)

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def jobs_table(jobs: list[Job], show_user: bool = False) -> str:
    if not jobs:
        return "No jobs yet. Start one with: jhub-jobs submit NAME --file script.py"
    header = (["USER"] if show_user else []) + ["NAME", "KIND", "STATUS", "PROFILE", "AGE", "EXIT", "REASON"]
    rows = [
        ([job.user] if show_user else [])
        + [
            job.name,
            job.kind,
            job.status,
            job.profile or "-",
            job.age(),
            "" if job.exit_code is None else str(job.exit_code),
            (job.reason or "") + (f" #{job.queue_position}" if job.queue_position else ""),
        ]
        for job in jobs
    ]
    return table(rows, header)


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    if args.json:
        print(json.dumps(data, default=_json_default, indent=2))
    else:
        print(human)


def job_json(job: Job) -> dict[str, Any]:
    return {k: v for k, v in asdict(job).items()}


def describe(job: Job) -> str:
    lines = [
        f"{job.name}: {job.status}" + (f" (exit code {job.exit_code})" if job.exit_code is not None else ""),
        f"  kind      {job.kind}" + (f", schedule {job.schedule} ({job.timezone})" if job.schedule else ""),
        f"  profile   {job.profile or '-'}",
        f"  command   {' '.join(job.command)}",
        f"  submitted {job.created:%Y-%m-%d %H:%M:%S %Z} ({job.age()} ago)",
    ]
    if job.restarts:
        lines.append(f"  restarts  {job.restarts}")
    if job.message:
        lines.append(f"  why       {job.message}" + (f" ({job.reason})" if job.reason else ""))
    if job.detail:
        lines.append(f"  detail    {job.detail}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    common.add_argument("--url", help="the jobs service (default: $JHUB_EXT_JOBS_URL)")
    common.add_argument("--user", help="admins: act on this user's jobs ('*' with list: everyone's)")
    top = argparse.ArgumentParser(
        prog="jhub-jobs",
        description="Run and look after scrapers and batch jobs on the hub.",
        parents=[common],
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    submit = verbs.add_parser("submit", parents=[common], help="submit a job")
    submit.add_argument("name", help="the job's name: lowercase letters, digits and '-'")
    submit.add_argument(
        "--kind",
        choices=["batch", "scraper", "scheduled"],
        help="default: batch, or scheduled with --schedule",
    )
    source = submit.add_mutually_exclusive_group()
    source.add_argument("--file", help="a script to ship; runs as `python FILE` when no command is given")
    source.add_argument("--dir", help="a small directory to ship; the command runs inside it")
    submit.add_argument("--profile", help="a profile's slug (see `jhub-jobs profiles`)")
    submit.add_argument("--schedule", help='cron schedule, such as "0 6 * * *"')
    submit.add_argument("--tz", help="time zone of the schedule, such as Europe/Berlin")
    submit.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="an environment variable"
    )
    submit.add_argument("--retries", type=int, help="batch: retries of a failed run")
    submit.add_argument(
        "--no-wait",
        action="store_true",
        help="refuse it at once if your group's quota is full or no machine has room, not wait",
    )
    submit.add_argument(
        "--notify",
        metavar="EVENTS",
        help="what to be told of for this job: some of succeeded,failed,restarted,quiet, or none",
    )
    submit.add_argument(
        "--quiet-after",
        type=int,
        metavar="SECONDS",
        help="scrapers: tell me (event quiet) when it prints nothing for this long",
    )
    submit.epilog = "Give the command to run after --, e.g.: jhub-jobs submit news -- python scrape.py"

    verbs.add_parser("list", parents=[common], help="your jobs")
    for verb, text in (
        ("status", "one job in detail"),
        ("stop", "stop a job"),
        ("restart", "start a job again"),
        ("delete", "stop a job and delete it"),
    ):
        verbs.add_parser(verb, parents=[common], help=text).add_argument("name")
    logs = verbs.add_parser("logs", parents=[common], help="a job's output")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--tail", type=int, help="only the last N lines")
    verbs.add_parser("profiles", parents=[common], help="the profiles you can run jobs with")
    verbs.add_parser("quota", parents=[common], help="your groups' usage and limits")
    usage = verbs.add_parser("usage", parents=[common], help="what your servers and jobs cost")
    usage.add_argument(
        "--since", help="from this date, such as 2026-12-01 (default: the start of this month)"
    )
    usage.add_argument("--until", help="up to this date, included (default: now)")
    usage.add_argument("--by", default="day", help="day, user, profile or group, or several: day,profile")
    usage.add_argument("--group", help="the totals of one of your groups")
    usage.add_argument("--profile", help="only this profile's servers and jobs")
    usage.add_argument("--csv", action="store_true", help="print CSV, for a spreadsheet")
    settings = verbs.add_parser(
        "settings", parents=[common], help="whom you are told what about your jobs; with options, change it"
    )
    settings.add_argument("--email", help="the address to tell ('' for none)")
    settings.add_argument("--webhook", help="a URL to post to, Slack-compatible ('' for none)")
    settings.add_argument("--events", help="some of succeeded,failed,restarted,quiet,budget, or all, or none")
    return top


def submission(args: argparse.Namespace) -> dict[str, Any]:
    command = list(args.command)
    files: dict[str, str] | None = None
    if args.file:
        files = snapshot(args.file)
        command = command or ["python", next(iter(files))]
    elif args.dir:
        files = snapshot(args.dir)
    if not command:
        raise JobsError("give the command to run after --, or a script with --file", "command")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise JobsError(f"--env {item!r} is not KEY=VALUE", "env")
        env[key] = value
    kind = args.kind or ("scheduled" if args.schedule else "batch")
    body: dict[str, Any] = {"files": files, "profile": args.profile, "env": env or None}
    if args.schedule:
        body.update(schedule=args.schedule, timezone=args.tz)
    if args.retries is not None:
        body["retries"] = args.retries
    body.update(submit_options(args.no_wait, args.notify, args.quiet_after))
    return {"name": args.name, "kind": kind, "command": command, **body}


def _submit(client: JobsClient, args: argparse.Namespace) -> None:
    job = client.submit(**submission(args))
    human = f"Submitted {job.kind} job '{job.name}' ({job.state()}). Follow it: jhub-jobs logs {job.name} -f"
    emit(args, job_json(job), human)


def _list(client: JobsClient, args: argparse.Namespace) -> None:
    jobs = client.jobs(args.user)
    emit(args, [job_json(j) for j in jobs], jobs_table(jobs, show_user=bool(args.user)))


def _status(client: JobsClient, args: argparse.Namespace) -> None:
    job = client.job(args.name, args.user)
    emit(args, job_json(job), describe(job))


def _logs(client: JobsClient, args: argparse.Namespace) -> None:
    if args.follow:
        for chunk in client.follow(args.name, tail=args.tail, user=args.user):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        return
    text = client.logs(args.name, tail=args.tail, user=args.user)
    if args.json:
        print(json.dumps({"name": args.name, "logs": text}))
    else:
        sys.stdout.write(text)


def _stop_or_restart(client: JobsClient, args: argparse.Namespace) -> None:
    job = getattr(client, args.verb)(args.name, args.user)
    emit(args, job_json(job), f"{job.name}: {job.status}")


def _delete(client: JobsClient, args: argparse.Namespace) -> None:
    client.delete(args.name, args.user)
    emit(args, {"name": args.name, "deleted": True}, f"Deleted {args.name}.")


def _profiles(client: JobsClient, args: argparse.Namespace) -> None:
    profiles = client.profiles()
    rows = [
        [p.slug, p.display_name, p.summary, f"{p.cost_per_hour:.2f}", ",".join(p.kinds)] for p in profiles
    ]
    emit(
        args,
        [dict(p.raw) for p in profiles],
        table(rows, ["PROFILE", "NAME", "RESOURCES", "COST/H", "KINDS"]),
    )


def _quota(client: JobsClient, args: argparse.Namespace) -> None:
    groups = client.quota()
    rows = [
        [line.group, line.resource, line.in_use_text(), line.limit_text(), line.waiting_text()]
        for line in QuotaLine.from_json(groups)
    ]
    header = ["GROUP", "RESOURCE", "IN USE", "LIMIT", "QUEUED"]
    human = table(rows, header) if rows else "No quota applies to you."
    if budgets := budget_lines(groups):
        human += "\n" + "\n".join(said[0].upper() + said[1:] + "." for said in budgets)
    emit(args, groups, human)


def _usage(client: JobsClient, args: argparse.Namespace) -> None:
    query = {key: getattr(args, key) for key in ("since", "until", "by", "group", "profile", "user")}
    if args.csv:
        sys.stdout.write(client.usage_csv(**query))
        return
    report = client.usage(**query)
    header, rows = usage_rows(report)
    emit(args, report, table(rows, header))


def _settings(client: JobsClient, args: argparse.Namespace) -> None:
    notify = client.settings()["notify"]
    if (args.email, args.webhook, args.events) != (None, None, None):
        notify = client.save_settings(changed_settings(notify, args.email, args.webhook, args.events))[
            "notify"
        ]
    emit(args, {"notify": notify}, settings_text(notify))


#: what each verb does
VERBS: dict[str, Callable[[JobsClient, argparse.Namespace], None]] = {
    "submit": _submit,
    "list": _list,
    "status": _status,
    "logs": _logs,
    "stop": _stop_or_restart,
    "restart": _stop_or_restart,
    "delete": _delete,
    "profiles": _profiles,
    "quota": _quota,
    "settings": _settings,
    "usage": _usage,
}


def run(args: argparse.Namespace) -> int:
    """Run the parsed command ``args`` against the jobs service."""
    VERBS[args.verb](JobsClient(url=args.url), args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``jhub-jobs`` command and return its exit status; what follows ``--`` is the job's command."""
    top = parser()
    argcomplete.autocomplete(top)
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:  # everything after -- is the job's command, whatever it looks like
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    args = top.parse_args(argv)
    args.command = command
    try:
        return run(args)
    except JobsError as e:
        print(f"jhub-jobs: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE if e.status is None and e.field is None else EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


__all__ = ["STATUSES", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
