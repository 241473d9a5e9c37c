"""Notebook magics for the jobs service: ``%load_ext jhub_ext``.

    %%deploy_scraper NAME [--profile P] [--schedule CRON] [--tz ZONE] [--file F | --dir D [--run SCRIPT]]
    %%submit_job NAME [--profile P] [--file PATH | --dir PATH [--run SCRIPT]]
    %jobs   %job_status NAME   %job_logs NAME [--follow] [--tail N]
    %stop_job NAME   %restart_job NAME   %delete_job NAME   %profiles   %quota

The cell's code is shipped as the job's ``main.py`` and run with ``python main.py`` in the
same environment as this notebook. Every magic takes ``--help``. Problems are reported in
one line, never as a traceback. Thin wrappers over :mod:`jhub_ext.client`.
"""

from __future__ import annotations

import functools
import html
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from jhub_ext.client import (
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

STATUS_COLOURS = {
    "pending": "#6c757d",
    "running": "#0d6efd",
    "succeeded": "#198754",
    "failed": "#dc3545",
    "stopped": "#6c757d",
}


class JobTable:
    """A list of jobs that shows as an HTML table in a notebook and as text in a terminal."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __repr__(self) -> str:
        from jhub_ext.cli import jobs_table

        return jobs_table(self.jobs)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        if not self.jobs:
            start = "<code>%%deploy_scraper NAME</code> or <code>%%submit_job NAME</code>"
            return f"<p>No jobs yet. Start one with {start}.</p>"
        rows = []
        for job in self.jobs:
            colour = STATUS_COLOURS.get(job.status, "inherit")
            exit_code = "" if job.exit_code is None else str(job.exit_code)
            cells = [
                f"<td><code>{html.escape(job.name)}</code></td>",
                f"<td>{html.escape(job.kind)}</td>",
                f'<td style="color:{colour};font-weight:bold">{html.escape(job.status)}</td>',
                f"<td>{html.escape(job.profile or '-')}</td>",
                f"<td>{html.escape(job.age())}</td>",
                f"<td>{html.escape(exit_code)}</td>",
                f"<td>{html.escape(job.message or '')}</td>",
            ]
            rows.append("<tr>" + "".join(cells) + "</tr>")
        head = "".join(
            f"<th>{h}</th>" for h in ("Name", "Kind", "Status", "Profile", "Age", "Exit code", "Why")
        )
        body = "".join(rows)
        return f'<table class="jhub-ext-jobs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def one_line_errors(magic: Callable[..., Any]) -> Callable[..., Any]:
    """Report a refusal as one readable line on stderr, never as a traceback."""

    @functools.wraps(magic)
    def wrapper(self: JobMagics, *args: Any, **kwargs: Any) -> Any:
        line = args[0] if args else ""
        if set(str(line).split()) & {"--help", "-h"}:
            print(magic.__doc__)
            return None
        try:
            return magic(self, *args, **kwargs)
        except JobsError as e:
            print(f"{magic.__name__}: {e}", file=sys.stderr)
        except UsageError as e:
            print(f"{magic.__name__}: {e}", file=sys.stderr)
        except SystemExit:  # argparse after --help
            pass
        return None

    return wrapper


def _code(args: Any, cell: str | None) -> tuple[dict[str, str], list[str]]:
    """The files to ship and the command to run, from the cell or --file/--dir."""
    if args.file:
        files = snapshot(args.file)
        return files, ["python", next(iter(files))]
    if args.dir:
        files = snapshot(args.dir)
        if args.run not in files:
            raise JobsError(f"{args.dir} has no {args.run}; name the script to run with --run", "run")
        return files, ["python", args.run]
    if not cell or not cell.strip():
        raise JobsError(
            "the cell is empty: write the job's code in it, or ship code with --file or --dir", "files"
        )
    return {"main.py": cell}, ["python", "main.py"]


def _code_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorate in reversed(
        [
            argument("name", help="the job's name: lowercase letters, digits and '-', such as news-scraper"),
            argument("--profile", help="a profile's slug (see %%profiles); default: the catalog's default"),
            argument("--file", help="ship this script instead of the cell"),
            argument("--dir", help="ship this small directory instead of the cell"),
            argument("--run", default="main.py", help="with --dir: the script to run (default main.py)"),
            argument(
                "--no-wait",
                action="store_true",
                help="refuse it at once if your group's quota is full or no machine has room, not wait",
            ),
            argument(
                "--notify",
                metavar="EVENTS",
                help="what to be told of for this job: some of succeeded,failed,restarted,quiet, or none "
                "(default: your %%notify_settings)",
            ),
        ]
    ):
        func = decorate(func)
    return func


def _options(args: Any) -> dict[str, Any]:
    """The submission's options from the magic's arguments (see :func:`submit_options`)."""
    return submit_options(args.no_wait, args.notify, getattr(args, "quiet_after", None))


@magics_class
class JobMagics(Magics):
    """Deploy and look after jobs from a notebook."""

    def __init__(self, shell: Any = None, client: JobsClient | None = None):
        super().__init__(shell)
        self._client = client

    @property
    def client(self) -> JobsClient:
        """The jobs client, made from the server's environment on first use."""
        if self._client is None:
            self._client = JobsClient()
        return self._client

    @one_line_errors
    @magic_arguments()
    @_code_arguments
    @argument("--schedule", help='run on a cron schedule instead of continuously, such as "0 6 * * *"')
    @argument("--tz", help="time zone of the schedule, such as Europe/Berlin (default UTC)")
    @argument(
        "--quiet-after",
        type=int,
        metavar="SECONDS",
        help="tell me (event quiet) when it prints nothing for this long, such as 900",
    )
    @cell_magic
    def deploy_scraper(self, line: str, cell: str) -> None:
        """Deploy the cell's code as a long-running scraper (or a scheduled one, with --schedule)."""
        args = parse_argstring(self.deploy_scraper, line)
        files, command = _code(args, cell)
        kind = "scheduled" if args.schedule else "scraper"
        job = self.client.submit(
            args.name,
            kind,
            command,
            files=files,
            profile=args.profile,
            schedule=args.schedule,
            timezone=args.tz,
            **_options(args),
        )
        when = f" on schedule {job.schedule} ({job.timezone})" if job.schedule else ""
        print(
            f"Deployed scraper '{job.name}'{when}: {job.state()}. Watch it with %job_logs {job.name} --follow"
        )

    @one_line_errors
    @magic_arguments()
    @_code_arguments
    @cell_magic
    def submit_job(self, line: str, cell: str) -> None:
        """Run the cell's code once as a batch job (retried if it fails)."""
        args = parse_argstring(self.submit_job, line)
        files, command = _code(args, cell)
        job = self.client.submit(
            args.name, "batch", command, files=files, profile=args.profile, **_options(args)
        )
        print(f"Submitted batch job '{job.name}': {job.state()}. Watch it with %job_logs {job.name} --follow")

    @one_line_errors
    @magic_arguments()
    @line_magic
    def jobs(self, line: str) -> JobTable:
        """Your jobs, newest first: status, kind, profile and age."""
        parse_argstring(self.jobs, line)
        return JobTable(self.client.jobs())

    @one_line_errors
    @magic_arguments()
    @argument("name")
    @line_magic
    def job_status(self, line: str) -> None:
        """One job in detail."""
        from jhub_ext.cli import describe

        args = parse_argstring(self.job_status, line)
        print(describe(self.client.job(args.name)))

    @one_line_errors
    @magic_arguments()
    @argument("name")
    @argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    @argument("--tail", type=int, help="only the last N lines")
    @line_magic
    def job_logs(self, line: str) -> None:
        """A job's output."""
        args = parse_argstring(self.job_logs, line)
        if args.follow:
            for chunk in self.client.follow(args.name, tail=args.tail):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(self.client.logs(args.name, tail=args.tail))

    @one_line_errors
    @magic_arguments()
    @argument("name")
    @line_magic
    def stop_job(self, line: str) -> None:
        """Stop a job."""
        job = self.client.stop(parse_argstring(self.stop_job, line).name)
        print(f"{job.name}: {job.state()}")

    @one_line_errors
    @magic_arguments()
    @argument("name")
    @line_magic
    def restart_job(self, line: str) -> None:
        """Start a stopped or finished job again."""
        job = self.client.restart(parse_argstring(self.restart_job, line).name)
        print(f"{job.name}: {job.state()}")

    @one_line_errors
    @magic_arguments()
    @argument("name")
    @line_magic
    def delete_job(self, line: str) -> None:
        """Stop a job and delete it."""
        name = parse_argstring(self.delete_job, line).name
        self.client.delete(name)
        print(f"Deleted {name}.")

    @one_line_errors
    @magic_arguments()
    @line_magic
    def profiles(self, line: str) -> None:
        """The profiles you can run jobs with."""
        parse_argstring(self.profiles, line)
        for p in self.client.profiles():
            print(f"{p.slug:16} {p.display_name}: {p.summary}, {p.cost_per_hour:.2f} per hour")

    @one_line_errors
    @magic_arguments()
    @argument("--email", help="the address to tell ('' for none)")
    @argument("--webhook", help="a URL to post to, Slack-compatible ('' for none)")
    @argument("--events", help="some of succeeded,failed,restarted,quiet,budget, or all, or none")
    @line_magic
    def notify_settings(self, line: str) -> None:
        """Whom you are told what about your jobs; with options, change it."""
        args = parse_argstring(self.notify_settings, line)
        notify = self.client.settings()["notify"]
        if (args.email, args.webhook, args.events) != (None, None, None):
            changed = changed_settings(notify, args.email, args.webhook, args.events)
            notify = self.client.save_settings(changed)["notify"]
        print(settings_text(notify))

    @one_line_errors
    @magic_arguments()
    @argument("--since", help="from this date, such as 2026-12-01 (default: the start of this month)")
    @argument("--until", help="up to this date, included (default: now)")
    @argument("--by", default="day", help="day, user, profile or group, or several such as day,profile")
    @argument("--group", help="the totals of one of your groups")
    @argument("--profile", help="only this profile's servers and jobs")
    @argument("--csv", metavar="FILE", help="write the rows to this CSV file instead")
    @line_magic
    def usage(self, line: str) -> None:
        """What your servers and jobs cost (this month by day, unless you ask otherwise)."""
        from jhub_ext.cli import table

        args = parse_argstring(self.usage, line)
        query = {key: getattr(args, key) for key in ("since", "until", "by", "group", "profile")}
        if args.csv:
            Path(args.csv).write_text(self.client.usage_csv(**query))
            print(f"Wrote {args.csv}.")
            return
        header, rows = usage_rows(self.client.usage(**query))
        print(table(rows, header))

    @one_line_errors
    @magic_arguments()
    @line_magic
    def quota(self, line: str) -> None:
        """Your groups' usage and limits, and their budgets' spend this month."""
        parse_argstring(self.quota, line)
        groups = self.client.quota()
        lines = QuotaLine.from_json(groups)
        for said in budget_lines(groups):
            print(said[0].upper() + said[1:] + ".")
        if not lines:
            print("No quota applies to you.")
        for group in dict.fromkeys(line.group for line in lines):
            limits = ", ".join(line.text() for line in lines if line.group == group)
            print(f"{group}: {limits}")


def load_ipython_extension(ipython: Any) -> None:
    """Register the jobs magics in IPython."""
    ipython.register_magics(JobMagics)
