"""``clinicbot``: the staff command (``scripts/clinicbot``, or ``python -m staff``).

    clinicbot faq list
    clinicbot faq show TOPIC
    clinicbot faq add-example TOPIC "text" ["text" ...]
    clinicbot faq new TOPIC --title "Button title" --answer "..." --example "..." x5
    clinicbot faq set-answer TOPIC "..."
    clinicbot faq remove-example TOPIC "text"
    clinicbot faq restore-answer TOPIC [N]   (N: as numbered by 'faq show')
    clinicbot missed [--since DAYS] [--limit N]
    clinicbot missed add ID TOPIC
    clinicbot missed dismiss ID
    clinicbot retrain [--publish] [--tolerance 0.10] [--no-wait]
    clinicbot rollback [--no-wait]
    clinicbot sms-failures [--since DAYS]
    clinicbot retention [--days N] [--dry-run]   (what is older than kept: removed)
    clinicbot forget --phone NUMBER [--dry-run]  (one patient, opt-out kept)
    clinicbot live-model        (for scripts/run.sh: the model to serve, if any)

Exit codes: 0 done, 1 refused or a check failed (the reason is printed; nothing was
written or published), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from channels import store as channel_store
from scheduling.base import BackendUnavailable
from staff import faq_data, missed, retention, retrain, scheduling_cli
from staff.faq_data import EditResult, Refused
from staff.project import Settings

EXAMPLES_SHOWN = 200
_FAILED = {
    "retrain": "Nothing was published.",
    "rollback": "Nothing was rolled back.",
}


def _print_result(result: EditResult, what: str) -> None:
    print(what)
    for path in result.written:
        print(f"  wrote {path}")
    for note in result.notes:
        print(f"Note: {note}")
    print("The assistant learns it at the next 'clinicbot retrain --publish'.")


def _faq_list(settings: Settings, args: argparse.Namespace) -> int:
    topics = faq_data.list_topics(settings.project)
    for topic in topics:
        answer = topic.answers[0].text if topic.answers else "(no answer)"
        variants = (
            f" (+{len(topic.answers) - 1} more)" if len(topic.answers) > 1 else ""
        )
        print(
            f"{topic.name:24} {len(topic.examples):3d} examples   "
            f"{topic.title or '(no button title)'}"
        )
        print(f"    {textwrap.shorten(answer, 84, placeholder='...')}{variants}")
    print(f"{len(topics)} topics.")
    return 0


def _faq_show(settings: Settings, args: argparse.Namespace) -> int:
    topic = faq_data.get_topic(settings.project, args.topic)
    print(f"Topic:  {topic.name}")
    print(f"Button: {topic.title or '(none)'}")
    for answer in topic.answers:
        when = f" (when {answer.condition})" if answer.condition else ""
        print(f"Answer{when}, {len(answer.text)} characters:")
        print(textwrap.indent(textwrap.fill(answer.text, 84), "    "))
    print(f"Examples ({len(topic.examples)}):")
    for example in topic.examples[:EXAMPLES_SHOWN]:
        print(f"  - {example}")
    earlier = faq_data.earlier_answers(settings.project, topic.name)
    if earlier:
        print(
            f"Earlier answers ({len(earlier)}; bring one back with "
            f"'clinicbot faq restore-answer {topic.name} N'):"
        )
    for number, entry in enumerate(earlier, 1):
        print(f"  {number}. replaced {entry['at']}:")
        print(textwrap.indent(textwrap.fill(entry["text"], 80), "       "))
    return 0


def _faq_add_example(settings: Settings, args: argparse.Namespace) -> int:
    result = faq_data.add_examples(settings.project, args.topic, args.texts)
    _print_result(result, f"Added {len(result.added)} example(s) to faq/{args.topic}.")
    return 0


def _faq_new(settings: Settings, args: argparse.Namespace) -> int:
    result = faq_data.new_topic(
        settings.project, args.topic, args.title, args.answer, args.example or []
    )
    _print_result(
        result,
        f"Created faq/{args.topic} with {len(result.added)} examples, its answer and "
        "its button title.",
    )
    return 0


def _faq_set_answer(settings: Settings, args: argparse.Namespace) -> int:
    result = faq_data.set_answer(settings.project, args.topic, args.answer)
    _print_result(result, f"Changed the answer of faq/{args.topic}.")
    return 0


def _faq_remove_example(settings: Settings, args: argparse.Namespace) -> int:
    result = faq_data.remove_example(settings.project, args.topic, args.text)
    _print_result(result, f"Removed {args.text!r} from faq/{args.topic}.")
    return 0


def _faq_restore_answer(settings: Settings, args: argparse.Namespace) -> int:
    earlier = faq_data.earlier_answers(settings.project, args.topic)
    if not earlier:
        raise Refused([f"faq/{args.topic} has no earlier answer to restore."])
    if not 1 <= args.number <= len(earlier):
        raise Refused(
            [
                f"faq/{args.topic} has {len(earlier)} earlier answer(s): give a "
                f"number from 1 to {len(earlier)} (see 'clinicbot faq show "
                f"{args.topic}')."
            ]
        )
    result = faq_data.restore_answer(
        settings.project, args.topic, earlier[args.number - 1]["text"]
    )
    _print_result(result, f"Restored an earlier answer of faq/{args.topic}.")
    return 0


def _missed_list(settings: Settings, args: argparse.Namespace) -> int:
    groups = missed.missed_messages(settings, args.since)
    if not groups:
        print(f"No missed messages in the last {args.since:g} days.")
        return 0
    for item in groups[: args.limit]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.last_seen))
        guess = f"{item.guess[0]} {item.guess[1]:.2f}" if item.guess else "-"
        print(
            f"{item.id}  {item.count:3d}x in {item.conversations} conversation(s), "
            f"last {when}  [{', '.join(item.reasons)}]  guess: {guess}"
        )
        print(f"          {item.text}")
    more = len(groups) - args.limit
    print(
        f"{len(groups)} missed message(s) in the last {args.since:g} days"
        + (f" ({more} more not shown; use --limit)" if more > 0 else "")
        + ". Teach one: clinicbot missed add ID TOPIC; hide one: "
        "clinicbot missed dismiss ID"
    )
    return 0


def _missed_add(settings: Settings, args: argparse.Namespace) -> int:
    result = missed.add_missed(settings, args.id, args.topic)
    _print_result(result, f"Added {result.added[0]!r} to faq/{args.topic}.")
    return 0


def _missed_dismiss(settings: Settings, args: argparse.Namespace) -> int:
    item = missed.dismiss_missed(settings, args.id)
    print(f"Dismissed {item.id}: {item.text!r} will not be listed again.")
    return 0


def _retrain(settings: Settings, args: argparse.Namespace) -> int:
    options = retrain.Options(
        publish=args.publish,
        tolerance=args.tolerance,
        min_accuracy=args.min_accuracy,
        wait=not args.no_wait,
    )
    retrain.retrain(settings, options, say=_say)
    return 0


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    retrain.rollback(settings, wait=not args.no_wait, say=_say)
    return 0


def _live_model(settings: Settings, args: argparse.Namespace) -> int:
    model = retrain.restart_model(settings)
    if model is None:
        return 1
    print(model)
    return 0


# What the Messages API's usual refusals mean, for staff (twilio.com/docs/errors).
_TWILIO_ERRORS = {
    20003: "Twilio refused the account's credentials (TWILIO_AUTH_TOKEN)",
    20429: "too many requests to Twilio",
    21211: "not a valid phone number",
    21408: "sending to this region is not enabled in the Twilio account",
    21610: "the number has unsubscribed (STOP) at Twilio",
    21612: "Twilio cannot send from the clinic's number to this number",
    21614: "not a mobile number",
}


def _sms_failures(settings: Settings, args: argparse.Namespace) -> int:
    location = channel_store.default_location()
    if isinstance(location, Path) and not location.exists():
        print(f"No texts were sent yet ({location} does not exist).")
        return 0
    since = time.time() - args.since * channel_store.DAY
    failures = channel_store.ChannelStore(location).failed_sms(since)
    if not failures:
        print(f"No failed texts in the last {args.since:g} days.")
        return 0
    for item in failures:
        print(
            f"{_when(item.created_at)}  text {item.id}  number {item.phone_key}  "
            f"conversation {item.conversation}"
        )
        last = _when(item.last_attempt_at) if item.last_attempt_at else "never"
        status = "-" if item.http_status is None else item.http_status
        code = "-" if item.error_code is None else item.error_code
        meaning = _TWILIO_ERRORS.get(item.error_code or 0)
        print(
            f"    {item.reason}: {item.attempts} attempt(s), last {last}, "
            f"Twilio status {status}, error code {code}"
            + (f" ({meaning})" if meaning else "")
        )
    print(
        f"{len(failures)} text(s) not delivered in the last {args.since:g} days, "
        "newest first. Their text and number are not kept; the number and "
        "conversation keys are those of the logs."
    )
    return 0


def _retention(settings: Settings, args: argparse.Namespace) -> int:
    stores = retention.Stores.from_env()
    days = stores.retention_days if args.days is None else args.days
    print(
        f"Conversations older than {days:g} days, bookings whose visit was more "
        f"than {stores.booking_retention_days:g} days ago."
    )
    return _print_report(lambda: retention.retention(stores, args.dry_run, days))


def _forget(settings: Settings, args: argparse.Namespace) -> int:
    stores = retention.Stores.from_env()
    print(f"The patient of {args.phone}:")
    return _print_report(lambda: retention.forget(stores, args.phone, args.dry_run))


def _print_report(run: Callable[[], retention.Report]) -> int:
    try:
        report = run()
    except BackendUnavailable as error:
        print(f"error: {error} Run it again later.", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("give a positive number of days")
    return value


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _say(line: str) -> None:
    print(line, flush=True)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("give a fraction between 0 and 1, e.g. 0.10")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of clinicbot."""
    parser = argparse.ArgumentParser(
        prog="clinicbot",
        description="Staff tools of the clinic assistant: FAQ, missed messages, "
        "retraining, failed texts, bookings, blocked times, call-backs and how long "
        "patients' data is kept.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    faq = commands.add_parser("faq", help="read and edit the FAQ").add_subparsers(
        dest="faq_command", required=True
    )
    faq.add_parser("list", help="topics, example counts, answers").set_defaults(
        run=_faq_list
    )
    show = faq.add_parser("show", help="one topic: title, answer, examples")
    show.add_argument("topic")
    show.set_defaults(run=_faq_show)
    add = faq.add_parser("add-example", help="add ways patients ask a topic")
    add.add_argument("topic")
    add.add_argument("texts", nargs="+", metavar="text")
    add.set_defaults(run=_faq_add_example)
    new = faq.add_parser(
        "new", help="create a topic (button title, answer, 5+ examples)"
    )
    new.add_argument("topic", help="lowercase_with_underscores, e.g. parking_info")
    new.add_argument("--title", required=True, help="the 'Did you mean' button")
    new.add_argument("--answer", required=True, help="at most 600 characters")
    new.add_argument(
        "--example", action="append", help="a way to ask it; give at least 5"
    )
    new.set_defaults(run=_faq_new)
    answer = faq.add_parser("set-answer", help="replace a topic's answer")
    answer.add_argument("topic")
    answer.add_argument("answer")
    answer.set_defaults(run=_faq_set_answer)
    remove = faq.add_parser("remove-example", help="remove one example of a topic")
    remove.add_argument("topic")
    remove.add_argument("text")
    remove.set_defaults(run=_faq_remove_example)
    restore = faq.add_parser(
        "restore-answer", help="bring back an earlier answer (see 'faq show')"
    )
    restore.add_argument("topic")
    restore.add_argument(
        "number",
        nargs="?",
        type=int,
        default=1,
        help="which earlier answer, as 'faq show' numbers them (default 1, the newest)",
    )
    restore.set_defaults(run=_faq_restore_answer)

    missed_parser = commands.add_parser(
        "missed", help="messages the assistant did not understand"
    )
    missed_parser.add_argument("--since", type=float, default=30.0, metavar="DAYS")
    missed_parser.add_argument("--limit", type=int, default=30, metavar="N")
    missed_parser.set_defaults(run=_missed_list)
    missed_commands = missed_parser.add_subparsers(dest="missed_command")
    missed_add = missed_commands.add_parser("add", help="add one as an example")
    missed_add.add_argument("id")
    missed_add.add_argument("topic")
    missed_add.set_defaults(run=_missed_add)
    dismiss = missed_commands.add_parser("dismiss", help="hide one for good")
    dismiss.add_argument("id")
    dismiss.set_defaults(run=_missed_dismiss)

    train = commands.add_parser(
        "retrain", help="train a new model, check it, and with --publish make it live"
    )
    train.add_argument("--publish", action="store_true")
    train.add_argument(
        "--tolerance",
        type=_fraction,
        default=retrain.DEFAULT_TOLERANCE,
        help="largest held-out accuracy drop allowed for any label (default 0.10)",
    )
    train.add_argument(
        "--min-accuracy",
        type=_fraction,
        default=None,
        help="overall held-out minimum (default: MIN_HELDOUT_ACCURACY)",
    )
    train.add_argument(
        "--no-wait",
        action="store_true",
        help="refuse at once if another retrain is running",
    )
    train.set_defaults(run=_retrain)

    back = commands.add_parser("rollback", help="make the previous model live again")
    back.add_argument("--no-wait", action="store_true")
    back.set_defaults(run=_rollback)

    sms = commands.add_parser(
        "sms-failures", help="replies by SMS that could not be delivered"
    )
    sms.add_argument("--since", type=float, default=7.0, metavar="DAYS")
    sms.set_defaults(run=_sms_failures)

    keep = commands.add_parser(
        "retention",
        help="remove conversations, patient details and records older than kept",
    )
    keep.add_argument(
        "--days",
        type=_positive,
        default=None,
        help="conversations older than this go (default: RETENTION_DAYS, 90)",
    )
    keep.add_argument("--dry-run", action="store_true", help="count, change nothing")
    keep.set_defaults(run=_retention)

    forget = commands.add_parser(
        "forget", help="remove one patient (a phone number); the opt-out is kept"
    )
    forget.add_argument("--phone", required=True, help="any US format, or +country")
    forget.add_argument("--dry-run", action="store_true", help="count, change nothing")
    forget.set_defaults(run=_forget)

    commands.add_parser(
        "live-model", help="print the model a restart should serve (for run.sh)"
    ).set_defaults(run=_live_model)

    scheduling_cli.add_commands(commands)  # bookings, block, callbacks, ...
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    if "task" in args:  # a scheduling command: it reads its own settings
        return scheduling_cli.run(args)
    settings = Settings.from_env()
    try:
        code: int = args.run(settings, args)
    except Refused as refused:
        _print_refusal("Nothing was changed:", refused.reasons)
        return 1
    except retrain.CheckFailed as failure:
        print(f"{_FAILED.get(args.command, 'Failed.')} {failure}", file=sys.stderr)
        return 1
    except missed.TrackerStoreUnreadable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return code


def _print_refusal(headline: str, reasons: List[str]) -> None:
    print(headline, file=sys.stderr)
    for reason in reasons:
        print(f"  - {reason}", file=sys.stderr)
