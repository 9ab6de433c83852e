"""clinicbot's scheduling commands: the day's bookings, blocks, callbacks.

Usage (``make staff ARGS="..."`` runs the same)::

    scripts/clinicbot bookings [--date 2026-03-09]
    scripts/clinicbot reminders [--date 2026-03-09]
    scripts/clinicbot block --start "2026-03-09 12:00"
        --end "2026-03-09 13:00" [--provider provider-1] [--reason "Staff meeting"]
    scripts/clinicbot blocks
    scripts/clinicbot unblock 3
    scripts/clinicbot callbacks
    scripts/clinicbot callback-done 7

``staff/cli.py`` adds these to clinicbot's parser with :func:`add_commands`.

Dates and times are the clinic's local time (``scheduling.timezone`` of
``clinic.yml``). The database is ``$SCHEDULER_DB`` (default
``$STATE_DIR/scheduler.db``), the one the action server uses.

Exit codes: 0 done, 1 the configuration or the database is unusable, 2 bad input.
The output shows patient names and phone numbers: it is for clinic staff only.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timezone, tzinfo
from typing import Callable, List, Optional, Sequence

from clinic_common.clinic_config import ClinicConfigError
from scheduling.base import BackendUnavailable, Booking
from scheduling.callbacks import CallbackStore
from scheduling.config import (
    SchedulingConfig,
    default_db_path,
    scheduling_config,
)
from scheduling.sqlite_backend import Clock, SqliteScheduler, utc_now
from staff.reminders import day_view

_INPUT_FORMAT = "%Y-%m-%d %H:%M"
_TIME = "%I:%M %p"
_DAY_TIME = "%a %Y-%m-%d %I:%M %p"


class BadInputError(Exception):
    """Something the staff member typed cannot be used; the message says why."""


def main(argv: Optional[Sequence[str]] = None, clock: Optional[Clock] = None) -> int:
    """Runs one scheduling command alone (tests pass a clock); returns the exit code."""
    parser = argparse.ArgumentParser(prog="clinicbot")
    add_commands(parser.add_subparsers(metavar="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse reports bad input with exit code 2
        return int(exit_.code or 0)
    return run(args, clock)


def run(args: argparse.Namespace, clock: Optional[Clock] = None) -> int:
    """Runs the parsed scheduling command ``args.task``; returns the exit code."""
    task: Callable[[argparse.Namespace, Clock], None] = args.task
    try:
        task(args, clock or utc_now)
    except BadInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ClinicConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BackendUnavailable as error:
        print(f"error: {error} ({default_db_path()})", file=sys.stderr)
        return 1
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds one subcommand per scheduling task; each sets ``task``."""
    bookings = commands.add_parser("bookings", help="list one day's bookings")
    bookings.add_argument(
        "--date", type=_day, help="YYYY-MM-DD (default: today at the clinic)"
    )
    bookings.set_defaults(task=_bookings)

    reminders = commands.add_parser(
        "reminders", help="one day's bookings and their reminder texts' state"
    )
    reminders.add_argument(
        "--date", type=_day, help="YYYY-MM-DD (default: today at the clinic)"
    )
    reminders.set_defaults(task=_reminders)

    block = commands.add_parser("block", help="take a time off the schedule")
    block.add_argument("--start", required=True, help='"YYYY-MM-DD HH:MM"')
    block.add_argument("--end", required=True, help='"YYYY-MM-DD HH:MM"')
    block.add_argument("--provider", help="one provider's id (default: everyone)")
    block.add_argument("--reason", default="", help="shown in the list of blocks")
    block.set_defaults(task=_block)

    blocks = commands.add_parser("blocks", help="list blocks not yet over")
    blocks.set_defaults(task=_blocks)

    unblock = commands.add_parser("unblock", help="remove a block")
    unblock.add_argument("block_id", type=int, metavar="ID")
    unblock.set_defaults(task=_unblock)

    callbacks = commands.add_parser("callbacks", help="list open callback requests")
    callbacks.set_defaults(task=_callbacks)

    done = commands.add_parser("callback-done", help="mark a callback request done")
    done.add_argument("callback_id", type=int, metavar="ID")
    done.set_defaults(task=_callback_done)


def _day(text: str) -> date:
    """A ``YYYY-MM-DD`` argument."""
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a date like 2026-03-09"
        ) from error


def _local_time(text: str, config: SchedulingConfig, fold: int) -> datetime:
    """A ``YYYY-MM-DD HH:MM`` local time as an aware datetime.

    A time the clocks skip does not exist and is refused. A time that happens
    twice (clocks fall back) means its first occurrence with ``fold=0`` and its
    second with ``fold=1``: a block uses the second for its end, so it covers
    the whole repeated hour.
    """
    try:
        wall = datetime.strptime(text.strip(), _INPUT_FORMAT)
    except ValueError as error:
        raise BadInputError(
            f"'{text}' is not a local time like \"2026-03-09 13:30\"."
        ) from error
    moment = wall.replace(tzinfo=config.tz, fold=fold)
    round_trip = moment.astimezone(timezone.utc).astimezone(config.tz)
    if round_trip.replace(tzinfo=None) != wall:
        raise BadInputError(
            f"{text} does not exist in {config.timezone}: the clocks skip it "
            "(daylight saving time starts)."
        )
    return moment


def _scheduler(clock: Clock) -> SqliteScheduler:
    """The scheduler of ``$SCHEDULER_DB`` with the clinic's scheduling settings."""
    return SqliteScheduler(default_db_path(), scheduling_config(), clock=clock)


def _display_tz() -> tzinfo:
    """The clinic's time zone, or UTC if the scheduling settings are unusable.

    Callback requests matter most when something is broken, so listing them
    does not depend on the scheduling settings.
    """
    try:
        return scheduling_config().tz
    except ClinicConfigError:
        return timezone.utc


def _bookings(args: argparse.Namespace, clock: Clock) -> None:
    """Prints the bookings of one local day, active and cancelled."""
    scheduler = _scheduler(clock)
    config = scheduler.config
    day: date = args.date or clock().astimezone(config.tz).date()
    bookings = scheduler.bookings_on(day)
    title = f"{day:%A %Y-%m-%d} ({config.timezone})"
    if not bookings:
        print(f"No bookings on {title}.")
        return
    print(f"Bookings on {title}:")
    _print_table(
        ["time", "visit", "reference", "patient", "phone", "status", "provider"],
        [_booking_row(booking, config, _TIME) for booking in bookings],
    )


def _reminders(args: argparse.Namespace, clock: Clock) -> None:
    """Prints each booking of a local day with its reminder's state.

    What the front desk needs and no more: time, visit, first name and initial.
    The bookings are the configured backend's (embedded, FHIR or webhook).
    """
    title, entries = day_view(args.date, clock)
    if not entries:
        print(f"No bookings on {title}.")
        return
    print(f"Reminders for the bookings on {title}:")
    _print_table(
        ["time", "visit", "patient", "reminder"],
        [
            [f"{entry.start:{_TIME}}", entry.visit, entry.patient, entry.state]
            for entry in entries
        ],
    )


def _local(moment: datetime, tz: tzinfo, fmt: str = _DAY_TIME) -> str:
    """``moment`` as the clinic's local time, e.g. ``Mon 2026-03-09 01:30 PM``."""
    return moment.astimezone(tz).strftime(fmt)


def _booking_row(booking: Booking, config: SchedulingConfig, fmt: str) -> List[str]:
    """One booking as table cells."""
    visit = config.visit_type(booking.slot.visit_type)
    return [
        _local(booking.slot.start, config.tz, fmt),
        visit.name if visit else booking.slot.visit_type,
        booking.reference,
        booking.patient.name,
        booking.patient.phone,
        booking.status,
        booking.slot.provider,
    ]


def _block(args: argparse.Namespace, clock: Clock) -> None:
    """Blocks a time and lists the bookings in it, whose patients need a call."""
    scheduler = _scheduler(clock)
    config = scheduler.config
    start = _local_time(args.start, config, fold=0)
    end = _local_time(args.end, config, fold=1)
    if end <= start:
        raise BadInputError("the end must be after the start.")
    if args.provider is not None and args.provider not in config.providers:
        raise BadInputError(
            f"unknown provider '{args.provider}'; known: {', '.join(config.providers)}."
        )
    block = scheduler.block(start, end, provider=args.provider, reason=args.reason)
    who = f"provider {block.provider}" if block.provider else "all providers"
    print(
        f"Blocked {_local(block.start, config.tz)} to {_local(block.end, config.tz)}"
        f" for {who} (block {block.block_id})."
    )
    affected = scheduler.active_bookings_between(start, end, args.provider)
    if affected:
        print(
            f"{len(affected)} booking(s) in this time stay booked; "
            "please call these patients:"
        )
        _print_table(
            ["time", "visit", "reference", "patient", "phone", "status", "provider"],
            [_booking_row(booking, config, _DAY_TIME) for booking in affected],
        )


def _blocks(args: argparse.Namespace, clock: Clock) -> None:
    """Prints the blocks that are not over yet."""
    scheduler = _scheduler(clock)
    blocks = scheduler.list_blocks()
    if not blocks:
        print("No blocked times.")
        return
    tz = scheduler.config.tz
    _print_table(
        ["id", "start", "end", "provider", "reason"],
        [
            [
                str(block.block_id),
                _local(block.start, tz),
                _local(block.end, tz),
                block.provider or "all",
                block.reason,
            ]
            for block in blocks
        ],
    )


def _unblock(args: argparse.Namespace, clock: Clock) -> None:
    """Removes one block."""
    if not _scheduler(clock).unblock(args.block_id):
        raise BadInputError(f"no block has id {args.block_id} (see: blocks).")
    print(f"Removed block {args.block_id}.")


def _callbacks(args: argparse.Namespace, clock: Clock) -> None:
    """Prints the open callback requests, oldest first."""
    requests = CallbackStore(clock=clock).list_open()
    if not requests:
        print("No open callback requests.")
        return
    tz = _display_tz()
    _print_table(
        ["id", "received", "patient", "phone", "preferred time", "note"],
        [
            [
                str(request.callback_id),
                _local(request.created_at, tz),
                request.name,
                request.phone,
                request.preferred_time_text,
                request.note,
            ]
            for request in requests
        ],
    )


def _callback_done(args: argparse.Namespace, clock: Clock) -> None:
    """Marks one callback request done."""
    if not CallbackStore(clock=clock).mark_done(args.callback_id):
        raise BadInputError(
            f"no open callback request has id {args.callback_id} (see: callbacks)."
        )
    print(f"Callback request {args.callback_id} marked done.")


def _printable(text: str) -> str:
    """``text`` on one line, without control characters.

    Patients typed some of it: a stray escape sequence must not reach the staff
    member's terminal. The stored text is unchanged.
    """
    return " ".join(
        "".join(char if char.isprintable() else " " for char in text).split()
    )


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Prints rows in aligned columns, one line per row."""
    cells = [list(header)] + [[_printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    for row in cells:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
