"""The staff page: the FAQ, missed messages, retraining and reminders, in a browser.

    python -m staff.web [--port 8090]      (scripts/run.sh starts it)

A small aiohttp app on 127.0.0.1, server-rendered HTML and one vanilla script. It
calls the same functions as ``clinicbot`` (``staff.faq_data``, ``staff.missed``,
``staff.retrain``, ``scheduling.reminders``), so an edit is refused for the same
reasons, in the same words.

Security:

- Login with ``STAFF_USERNAME`` / ``STAFF_PASSWORD``; without a password the page
  does not start. Every other route answers 401 without a session.
- The session cookie is random, signed with a per-process secret (a restart logs
  everyone out), HttpOnly and SameSite=Strict, and ends after ``SESSION_HOURS``.
- Every POST must come from this page: its Origin (or, failing that, its Referer)
  must be this server's own; the Host must be loopback (no DNS rebinding).
- Patient text is untrusted: everything shown is ``html.escape``d, the script fills
  the page with ``textContent`` only, and the Content-Security-Policy allows no
  inline script.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import html
import io
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from aiohttp import web
from aiohttp.typedefs import Handler

from clinic_common.clinic_config import ClinicConfigError
from clinic_common.settings import load as load_settings
from scheduling.base import BackendUnavailable
from staff import faq_data, missed, reminders, retrain
from staff.faq_data import EditResult, Refused
from staff.gate import CheckFailed, Evaluation
from staff.locking import Say
from staff.project import Settings

COOKIE = "staff_session"
SESSION_HOURS = 8
MIN_PASSWORD = 12
FAILED_LOGIN_DELAY = 0.5  # seconds: slows down guessing
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
REPORT_FILE = "heldout.json"
# The login page needs its script too (the page's only one, no data in it).
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/app.js")}
# What the page tells staff to do after a rollback: the page's own buttons.
UNDO_ON_THE_PAGE = (
    "undo them on each topic's page ('Remove' next to an example, 'Restore this "
    "answer' under Earlier answers) before the next 'Retrain and publish'"
)
# File paths in messages: "(data/nlu/faq.yml)" is dropped, "/x/y/model.tar.gz" is
# shortened to "model.tar.gz". Staff need the what, not where it is stored.
_PATH_IN_PARENS = re.compile(r"\s*\((?:[\w.+-]+/)+[\w.+-]+\)")
_PATH = re.compile(r"(?:/?[\w.+-]+/)+([\w+-]+(?:\.[\w+-]+)+)")

RetrainRunner = Callable[[Settings, retrain.Options, Say], object]
RollbackRunner = Callable[[Settings, Say], object]
logger = logging.getLogger(__name__)


def _rollback(settings: Settings, say: Say) -> object:
    return retrain.rollback(settings, wait=False, say=say, undo=UNDO_ON_THE_PAGE)


def without_paths(text: str) -> str:
    """A message for staff without the file paths in it."""
    return _PATH.sub(r"\1", _PATH_IN_PARENS.sub("", text))


# --- background jobs: one retrain or rollback at a time -----------------------------


@dataclass
class Job:
    """A retrain or rollback running (or run) in the background."""

    kind: str
    started: float = field(default_factory=time.monotonic)
    lines: List[str] = field(default_factory=list)
    finished: Optional[float] = None
    ok: Optional[bool] = None
    message: str = ""
    report: Optional[Path] = None  # the held-out results the retrain wrote

    def as_json(self) -> Dict[str, Any]:
        """What the page polls."""
        end = self.finished or time.monotonic()
        return {
            "kind": self.kind,
            "running": self.finished is None,
            "seconds": round(end - self.started, 1),
            "lines": [without_paths(line) for line in self.lines],
            "ok": self.ok,
            "message": without_paths(self.message),
        }


class AlreadyRunning(Exception):
    """A retrain or rollback started from this page is still running."""


class Jobs:
    """Runs one job at a time in a thread; the retrain lock guards other processes."""

    def __init__(self, results_dir: Path) -> None:
        """No job yet."""
        self.results_dir = results_dir
        self.current: Optional[Job] = None
        self._guard = threading.Lock()

    def start(self, kind: str, work: Callable[[Say], object]) -> Job:
        """Starts ``work`` in a thread; ``AlreadyRunning`` if a job still runs."""
        with self._guard:
            if self.current is not None and self.current.finished is None:
                raise AlreadyRunning(self.current.kind)
            job = Job(kind)
            self.current = job
        threading.Thread(target=self._run, args=(job, work), daemon=True).start()
        return job

    def _results(self) -> Set[Path]:
        if not self.results_dir.is_dir():
            return set()
        return set(self.results_dir.iterdir())

    def _run(self, job: Job, work: Callable[[Say], object]) -> None:
        before = self._results()
        try:
            result = work(job.lines.append)
            job.ok, job.message = True, _done_message(result)
        except CheckFailed as failure:  # Busy too: another process holds the lock
            job.ok, job.message = False, str(failure)
        except Exception as error:  # shown on the page, not lost in a thread
            logger.exception("%s failed", job.kind)
            job.ok, job.message = (
                False,
                (
                    f"It stopped with an unexpected error ({type(error).__name__}); "
                    "the staff page's log has the details."
                ),
            )
        new = sorted(self._results() - before, key=lambda path: path.name)
        reports = [path / REPORT_FILE for path in new if (path / REPORT_FILE).is_file()]
        job.report = reports[-1] if reports else None
        job.finished = time.monotonic()


def _done_message(result: object) -> str:
    if isinstance(result, retrain.Outcome):
        return result.message
    if isinstance(result, Path):
        return f"The earlier model {result.name} is live again."
    return "Done."


# --- the report -------------------------------------------------------------------


def confusion(
    evaluation: Evaluation, counts: Dict[str, int]
) -> Tuple[List[str], List[str], List[List[int]]]:
    """Rows (expected), columns (predicted) and counts of the held-out predictions.

    evaluate_nlu.py keeps the wrong predictions; the right ones are each label's
    held-out questions minus its errors.
    """
    rows = sorted(set(evaluation.per_label) | set(counts))
    predicted = {str(error.get("predicted")) for error in evaluation.errors}
    columns = rows + sorted(predicted - set(rows))
    matrix = [[0] * len(columns) for _ in rows]
    for error in evaluation.errors:
        expected = str(error.get("expected"))
        if expected in rows:
            matrix[rows.index(expected)][columns.index(str(error["predicted"]))] += 1
    for number, label in enumerate(rows):
        matrix[number][number] = max(0, counts.get(label, 0) - sum(matrix[number]))
    return rows, columns, matrix


def confusion_png(evaluation: Evaluation, counts: Dict[str, int]) -> bytes:
    """The confusion plot as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows, columns, matrix = confusion(evaluation, counts)
    size = max(6.0, 0.28 * len(columns) + 3)
    figure = Figure(figsize=(size, size * len(rows) / len(columns) + 1))
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues", aspect="auto")
    axes.set_xticks(range(len(columns)))
    axes.set_xticklabels(columns, rotation=90, fontsize=7)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels(rows, fontsize=7)
    axes.set_xlabel("answered as")
    axes.set_ylabel("held-out question about")
    for row, values in enumerate(matrix):
        for column, value in enumerate(values):
            if value and row != column:
                axes.text(
                    column, row, str(value), ha="center", va="center", color="red"
                )
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=90)
    return out.getvalue()


def heldout_questions(settings: Settings) -> Dict[str, int]:
    """How many held-out questions each label has, in this project's held-out set."""
    from scripts.evaluate_nlu import load_examples

    counts: Dict[str, int] = {}
    for _, label in load_examples(settings.project.heldout):
        counts[label] = counts.get(label, 0) + 1
    return counts


# --- HTML -------------------------------------------------------------------------

e = html.escape

CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:1rem}
nav a{margin-right:1rem} table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left;vertical-align:top}
.ok{background:#e6f4ea;padding:.5rem} .refused{background:#fde7e9;padding:.5rem}
pre{background:#f4f4f4;padding:.5rem;white-space:pre-wrap} textarea{width:100%}
form.inline{display:inline}
"""

SCRIPT = """
'use strict';
const box = document.getElementById('job');
const jobButtons = document.querySelectorAll('button[data-job]');
function lock(running) {
  for (const button of jobButtons) { button.disabled = running; }
}
function show(job) {
  lock(job.running);
  document.getElementById('job-lines').textContent = job.lines.join('\\n');
  const state = job.running ? `Running: ${job.kind}, ${job.seconds} s so far...`
    : `${job.ok ? 'Done' : 'Stopped'}: ${job.kind}, took ${job.seconds} s.`;
  document.getElementById('job-state').textContent = state;
  document.getElementById('job-result').textContent = job.message;
}
async function poll() {
  const answer = await fetch('/api/job', {credentials: 'same-origin'});
  if (!answer.ok) { lock(false); return; }
  const job = await answer.json();
  if (!job.kind) { lock(false); return; }
  show(job);
  if (job.running) { setTimeout(poll, 1000); }
  else if (box.dataset.running === 'yes') { location.reload(); }
}
for (const button of jobButtons) {
  button.addEventListener('click', async () => {
    lock(true);
    const answer = await fetch(button.dataset.job, {method: 'POST',
      credentials: 'same-origin'});
    const body = await answer.json();
    document.getElementById('job-result').textContent = body.message || '';
    box.dataset.running = 'yes';
    poll();
  });
}
if (box) { poll(); }
"""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def _page(title: str, body: str, notice: str = "", logged_in: bool = True) -> str:
    nav = (
        '<nav><a href="/">FAQ topics</a><a href="/inbox">Missed messages</a>'
        '<a href="/model">Retrain</a><a href="/reminders">Reminders</a>'
        '<form class="inline" method="post" '
        'action="/logout"><button>Log out</button></form></nav>'
        if logged_in
        else ""
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)} - clinic assistant staff</title><style>{CSS}</style>"
        f"</head><body>{nav}<h1>{e(title)}</h1>{notice}{body}"
        '<script src="/app.js"></script></body></html>'
    )


def _day_form(value: str) -> str:
    """The reminders page's day picker (a GET form: nothing changes)."""
    return (
        '<form method="get" action="/reminders"><label>Day <input type="date" '
        f'name="date" value="{e(value)}"></label> <button>Show</button></form>'
    )


def _done(what: str, result: EditResult) -> str:
    notes = "".join(f"<li>{e(without_paths(note))}</li>" for note in result.notes)
    return (
        f'<div class="ok" role="status"><p>{e(what)} The assistant learns it at the '
        f"next retrain.</p>{f'<ul>{notes}</ul>' if notes else ''}</div>"
    )


def _refused(reasons: List[str]) -> str:
    items = "".join(f"<li>{e(without_paths(reason))}</li>" for reason in reasons)
    return (
        '<div class="refused" role="alert"><p>Nothing was changed:</p>'
        f"<ul>{items}</ul></div>"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


def _hostname(host: str) -> str:
    """The Host header without its port (not request.url: yarl rejects the port)."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


# --- the app ----------------------------------------------------------------------


class StaffWeb:
    """The staff page's routes and state (sessions, the background job)."""

    def __init__(
        self,
        settings: Settings,
        username: str,
        password: str,
        retrain_runner: RetrainRunner = retrain.retrain,
        rollback_runner: RollbackRunner = _rollback,
    ) -> None:
        """Sets up a fresh secret: sessions end when the process does."""
        self.settings = settings
        self.username = username
        self.password = password
        self.retrain_runner = retrain_runner
        self.rollback_runner = rollback_runner
        self.secret = secrets.token_bytes(32)
        self.sessions: Dict[str, float] = {}  # session id -> expiry (Unix time)
        self.jobs = Jobs(settings.project.results_dir)

    # --- sessions and checks ---

    def _sign(self, session: str) -> str:
        digest = hmac.new(self.secret, session.encode(), "sha256").hexdigest()
        return f"{session}.{digest}"

    def _session(self, request: web.Request) -> Optional[str]:
        session, _, signature = request.cookies.get(COOKIE, "").partition(".")
        if not session or not hmac.compare_digest(
            self._sign(session), f"{session}.{signature}"
        ):
            return None
        expiry = self.sessions.get(session)
        if expiry is None or expiry < time.time():
            self.sessions.pop(session, None)
            return None
        return session

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        own = f"{request.scheme}://{request.host}"
        origin = request.headers.get("Origin")
        if origin is not None:
            return origin == own
        referer = request.headers.get("Referer", "")
        return referer == own or referer.startswith(own + "/")

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Loopback host, login, same-origin POSTs; security headers on everything."""
        if _hostname(request.host) not in LOOPBACK:
            response: web.StreamResponse = web.Response(
                status=403, text="Open this page as 127.0.0.1 or localhost."
            )
        elif request.method == "POST" and not self._same_origin(request):
            response = web.Response(
                status=403,
                text="Refused: this form was not sent from the staff page itself.",
            )
        elif (request.method, request.path) in PUBLIC or self._session(request):
            response = await handler(request)
        elif request.path.startswith("/api/") or request.method != "GET":
            response = web.json_response({"message": "Log in first."}, status=401)
        else:
            response = _html(self._login_form(), status=401)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def _login_form(self, notice: str = "") -> str:
        body = (
            '<form method="post" action="/login"><p><label>User name '
            '<input name="username" autocomplete="username" required></label></p>'
            '<p><label>Password <input name="password" type="password" '
            'autocomplete="current-password" required></label></p>'
            "<p><button>Log in</button></p></form>"
        )
        return _page("Staff login", body, notice, logged_in=False)

    async def login(self, request: web.Request) -> web.Response:
        """Checks the credentials; a session cookie and the topics if right."""
        if request.method == "GET":
            return _html(self._login_form())
        form = await request.post()
        user_ok = hmac.compare_digest(
            _field(form, "username").encode(), self.username.encode()
        )
        password_ok = hmac.compare_digest(
            _field(form, "password").encode(), self.password.encode()
        )
        if not (user_ok and password_ok):
            await asyncio.sleep(FAILED_LOGIN_DELAY)
            notice = _refused(["Wrong user name or password."])
            return _html(self._login_form(notice), status=401)
        now = time.time()
        self.sessions = {k: v for k, v in self.sessions.items() if v > now}
        session = secrets.token_urlsafe(24)
        self.sessions[session] = now + SESSION_HOURS * 3600
        response = _see_other("/")
        response.set_cookie(
            COOKIE,
            self._sign(session),
            max_age=SESSION_HOURS * 3600,
            httponly=True,
            samesite="Strict",
            path="/",
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """Ends the session."""
        session = self._session(request)
        if session:
            self.sessions.pop(session, None)
        response = _see_other("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    async def script(self, request: web.Request) -> web.Response:
        """The page's only script (no inline script: see the CSP)."""
        return web.Response(text=SCRIPT, content_type="application/javascript")

    # --- FAQ ---

    async def topics(self, request: web.Request) -> web.Response:
        """Every topic with its example count and answer."""
        rows = []
        for topic in faq_data.list_topics(self.settings.project):
            answer = topic.answers[0].text if topic.answers else "(no answer)"
            rows.append(
                f'<tr><td><a href="/topic/{e(topic.name)}">{e(topic.name)}</a></td>'
                f"<td>{e(topic.title or '(no button title)')}</td>"
                f"<td>{len(topic.examples)}</td><td>{e(answer)}</td></tr>"
            )
        body = (
            "<table><tr><th>Topic</th><th>Button</th><th>Examples</th><th>Answer</th>"
            f"</tr>{''.join(rows)}</table>"
        )
        return _html(_page("FAQ topics", body))

    def _topic_page(
        self, name: str, notice: str = "", status: int = 200, typed: str = ""
    ) -> web.Response:
        """The topic's page; ``typed``: refused examples, kept in their box."""
        try:
            topic = faq_data.get_topic(self.settings.project, name)
        except Refused as refused:
            return _html(_page("Unknown topic", _refused(refused.reasons)), 404)
        answers = "".join(
            f"<p>{e(answer.text)}"
            + (f" <em>(when {e(answer.condition)})</em>" if answer.condition else "")
            + "</p>"
            for answer in topic.answers
        )
        editable = len(topic.answers) == 1 and not topic.answers[0].condition
        answer_form = (
            f'<form method="post" action="/topic/{e(topic.name)}/answer">'
            f'<textarea name="answer" rows="4">{e(topic.answers[0].text)}</textarea>'
            "<p><button>Save the answer</button></p></form>"
            if editable
            else "<p>This answer depends on clinic.yml: change it there.</p>"
        )
        earlier = faq_data.earlier_answers(self.settings.project, name)
        restore = "".join(
            f"<li><p>{e(entry['text'])} <em>(replaced {e(entry['at'])})</em></p>"
            f'<form method="post" action="/topic/{e(topic.name)}/restore">'
            f'<input type="hidden" name="answer" value="{e(entry["text"])}">'
            "<button>Restore this answer</button></form></li>"
            for entry in earlier
        )
        examples = "".join(
            f"<li>{e(text)} "
            f'<form class="inline" method="post" action="/topic/{e(topic.name)}/'
            f'remove"><input type="hidden" name="example" value="{e(text)}">'
            f'<button aria-label="Remove {e(text)}">Remove</button></form></li>'
            for text in topic.examples
        )
        body = (
            f"<p>Button: {e(topic.title or '(none)')}</p><h2>Answer</h2>{answers}"
            f"{answer_form}"
            + (f"<h2>Earlier answers</h2><ul>{restore}</ul>" if restore else "")
            + "<h2>Add examples</h2>"
            f'<form method="post" action="/topic/{e(topic.name)}/examples">'
            '<label>Ways patients ask it, one per line<textarea name="examples" '
            f'rows="4">{e(typed)}</textarea></label><p><button>Add the examples'
            f"</button></p></form><h2>Examples ({len(topic.examples)})</h2>"
            f"<ul>{examples}</ul>"
        )
        return _html(_page(f"faq/{topic.name}", body, notice), status)

    async def topic(self, request: web.Request) -> web.Response:
        """One topic: its answer, examples and the forms to change them."""
        return self._topic_page(request.match_info["name"])

    async def add_examples(self, request: web.Request) -> web.Response:
        """Adds examples (one per line), or shows why not."""
        name = request.match_info["name"]
        form = await request.post()
        typed = _field(form, "examples")
        texts = [line for line in typed.splitlines() if line.strip()]
        try:
            result = faq_data.add_examples(self.settings.project, name, texts)
        except Refused as refused:
            return self._topic_page(name, _refused(refused.reasons), 422, typed)
        notice = _done(f"Added {len(result.added)} example(s) to faq/{name}.", result)
        return self._topic_page(name, notice)

    def _edit(
        self, name: str, edit: Callable[[], EditResult], done: str
    ) -> web.Response:
        """The topic's page after ``edit``: ``done`` and its notes, or why not."""
        try:
            result = edit()
        except Refused as refused:
            return self._topic_page(name, _refused(refused.reasons), 422)
        return self._topic_page(name, _done(done, result))

    async def set_answer(self, request: web.Request) -> web.Response:
        """Replaces the answer, or shows why not."""
        name = request.match_info["name"]
        answer = _field(await request.post(), "answer").strip()
        return self._edit(
            name,
            lambda: faq_data.set_answer(self.settings.project, name, answer),
            f"Changed the answer of faq/{name}.",
        )

    async def remove_example(self, request: web.Request) -> web.Response:
        """Removes one example, e.g. to undo an edit after a rollback."""
        name = request.match_info["name"]
        text = _field(await request.post(), "example")
        return self._edit(
            name,
            lambda: faq_data.remove_example(self.settings.project, name, text),
            f"Removed {text!r} from faq/{name}.",
        )

    async def restore_answer(self, request: web.Request) -> web.Response:
        """Makes an earlier answer the answer again (the same checks as a new one)."""
        name = request.match_info["name"]
        answer = _field(await request.post(), "answer")
        return self._edit(
            name,
            lambda: faq_data.restore_answer(self.settings.project, name, answer),
            f"Restored an earlier answer of faq/{name}.",
        )

    # --- missed messages ---

    def _inbox_page(self, notice: str = "", status: int = 200) -> web.Response:
        try:
            groups = missed.missed_messages(self.settings, since_days=30)
        except missed.TrackerStoreUnreadable as error:  # never an empty inbox
            alert = (
                f'<p class="refused" role="alert">{e(without_paths(str(error)))}</p>'
            )
            return _html(_page("Missed messages", alert, notice), 503)
        topics = faq_data.list_topics(self.settings.project)
        titles = {topic.name: topic.title or topic.name for topic in topics}
        rows = []
        for item in groups:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.last_seen))
            guess = f"{item.guess[0]} ({item.guess[1]:.2f})" if item.guess else "-"
            if item.topic_guess in titles:
                guess = f"{titles[item.topic_guess]} ({guess})"
            options = "".join(
                f'<option value="{e(name)}"'
                f"{' selected' if name == item.topic_guess else ''}>{e(title)}</option>"
                for name, title in sorted(titles.items(), key=lambda pair: pair[1])
            )
            action = f"/inbox/{e(item.id)}"
            rows.append(
                f"<tr><td>{e(item.text)}</td><td>{item.count}x in "
                f"{item.conversations} conversation(s)</td><td>{e(when)}</td>"
                f"<td>{e(', '.join(item.reasons))}</td><td>{e(guess)}</td><td>"
                f'<form class="inline" method="post" action="{action}/add">'
                f'<select name="topic" aria-label="topic">{options}</select>'
                "<button>Add to topic</button></form> "
                f'<form class="inline" method="post" action="{action}/dismiss">'
                "<button>Dismiss</button></form></td></tr>"
            )
        body = (
            "<p>What patients asked in the last 30 days that the assistant did not "
            'understand or answered with "Sorry, I can\'t help with that" (out of '
            "scope: ideas for new topics), newest first. Names, phone numbers and "
            "e-mail addresses are taken out.</p><table><tr><th>Message</th>"
            "<th>How often</th><th>Last</th>"
            f"<th>Why</th><th>Model's guess</th><th></th></tr>{''.join(rows)}</table>"
            if groups
            else "<p>No missed messages in the last 30 days.</p>"
        )
        return _html(_page("Missed messages", body, notice), status)

    async def inbox(self, request: web.Request) -> web.Response:
        """The missed messages, grouped and counted, newest first."""
        return self._inbox_page()

    async def inbox_add(self, request: web.Request) -> web.Response:
        """Adds a missed message to a topic's examples."""
        form = await request.post()
        topic = _field(form, "topic")
        try:
            result = missed.add_missed(self.settings, request.match_info["id"], topic)
        except Refused as refused:
            return self._inbox_page(_refused(refused.reasons), 422)
        return self._inbox_page(_done(f"Added it to faq/{topic}.", result))

    async def inbox_dismiss(self, request: web.Request) -> web.Response:
        """Hides a missed message for good."""
        try:
            item = missed.dismiss_missed(self.settings, request.match_info["id"])
        except Refused as refused:
            return self._inbox_page(_refused(refused.reasons), 422)
        notice = f'<div class="ok" role="status">Dismissed {e(repr(item.text))}.</div>'
        return self._inbox_page(notice)

    # --- reminders ---

    async def reminders(self, request: web.Request) -> web.Response:
        """A day's bookings and their reminders' state (?date=YYYY-MM-DD; today).

        Time, visit, first name and initial, state: what the front desk needs.
        """
        text = request.query.get("date", "")
        try:
            day = date.fromisoformat(text) if text else None
        except ValueError:
            alert = f'<p class="refused" role="alert">{e(text)} is not a date.</p>'
            return _html(_page("Reminders", alert + _day_form(text)), 400)
        try:
            title, entries = reminders.day_view(day)
        except (ClinicConfigError, BackendUnavailable) as error:
            alert = (
                f'<p class="refused" role="alert">{e(without_paths(str(error)))}</p>'
            )
            return _html(_page("Reminders", alert), 503)
        rows = "".join(
            f"<tr><td>{e(entry.start.strftime('%I:%M %p'))}</td><td>{e(entry.visit)}"
            f"</td><td>{e(entry.patient)}</td><td>{e(entry.state)}</td></tr>"
            for entry in entries
        )
        table = (
            "<table><thead><tr><th>Time</th><th>Visit</th><th>Patient</th>"
            f"<th>Reminder</th></tr></thead><tbody>{rows}</tbody></table>"
            if entries
            else "<p>No bookings on this day.</p>"
        )
        body = f"{_day_form(text)}<h2>{e(title)}</h2>{table}"
        return _html(_page("Reminders", body))

    # --- retrain, publish, rollback ---

    def _report(self) -> str:
        job = self.jobs.current
        if job is None or job.report is None:
            return ""
        evaluation = Evaluation.from_json(json.loads(job.report.read_text("utf-8")))
        counts = heldout_questions(self.settings)
        misses: Dict[str, int] = {}
        for error in evaluation.errors:
            label = str(error.get("expected"))
            misses[label] = misses.get(label, 0) + 1
        rows = "".join(
            f"<tr><td>{e(label)}</td><td>{counts.get(label, 0)}</td>"
            f"<td>{misses.get(label, 0)}</td><td>{score:.0%}</td></tr>"
            for label, score in sorted(evaluation.per_label.items())
        )
        return (
            f"<h2>Report of the last retrain</h2><p>Held-out accuracy of the new "
            f"model: {evaluation.accuracy:.1%}.</p><table><tr><th>Label</th>"
            "<th>Held-out questions</th><th>Answered wrong</th><th>Right</th></tr>"
            f'{rows}</table><h2>Confusion plot</h2><img src="/report/confusion.png"'
            ' alt="held-out questions (rows) against how the new model answered them'
            ' (columns)">'
        )

    async def model(self, request: web.Request) -> web.Response:
        """The retrain, publish and rollback buttons, progress and the last report."""
        body = (
            "<p>Retrain checks a new model on the held-out questions and the "
            "conversation tests (about 1.5 minutes). Publish does the same and, if "
            "every check passes, makes it live. Roll back makes the model before "
            "the last publish live again.</p><p>"
            '<button data-job="/api/retrain">Retrain (check only)</button> '
            '<button data-job="/api/publish">Retrain and publish</button> '
            '<button data-job="/api/rollback">Roll back</button></p>'
            '<div id="job" data-running="no"><p id="job-state"></p>'
            '<p id="job-result" role="status"></p><pre id="job-lines"></pre></div>'
            + self._report()
        )
        return _html(_page("Retrain the assistant", body))

    def _start(self, kind: str, work: Callable[[Say], object]) -> web.Response:
        try:
            self.jobs.start(kind, work)
        except AlreadyRunning as running:
            return web.json_response(
                {
                    "message": f"A {running} is already running; wait for it to "
                    "finish (its progress is shown below)."
                },
                status=409,
            )
        return web.json_response({"message": f"Started: {kind}."}, status=202)

    def _retrain(self, publish: bool) -> Callable[[Say], object]:
        # wait=False: a retrain started elsewhere (clinicbot) is reported at once.
        options = retrain.Options(publish=publish, wait=False)
        return lambda say: self.retrain_runner(self.settings, options, say)

    async def start_retrain(self, request: web.Request) -> web.Response:
        """Starts a retrain that publishes nothing."""
        return self._start("retrain", self._retrain(publish=False))

    async def start_publish(self, request: web.Request) -> web.Response:
        """Starts a retrain that publishes the new model if every check passes."""
        return self._start("retrain and publish", self._retrain(publish=True))

    async def start_rollback(self, request: web.Request) -> web.Response:
        """Starts a rollback to the previously published model."""
        return self._start(
            "rollback", lambda say: self.rollback_runner(self.settings, say)
        )

    async def job(self, request: web.Request) -> web.Response:
        """The current (or last) job's progress."""
        job = self.jobs.current
        return web.json_response(job.as_json() if job else {"kind": None})

    async def confusion_plot(self, request: web.Request) -> web.Response:
        """The last retrain's confusion plot."""
        job = self.jobs.current
        if job is None or job.report is None:
            raise web.HTTPNotFound(text="No retrain report yet.")
        evaluation = Evaluation.from_json(json.loads(job.report.read_text("utf-8")))
        png = await asyncio.get_running_loop().run_in_executor(
            None, confusion_png, evaluation, heldout_questions(self.settings)
        )
        return web.Response(body=png, content_type="image/png")


def create_app(
    settings: Settings,
    username: str,
    password: str,
    retrain_runner: RetrainRunner = retrain.retrain,
    rollback_runner: RollbackRunner = _rollback,
) -> web.Application:
    """The staff page; the runners are replaceable for tests."""
    staff = StaffWeb(settings, username, password, retrain_runner, rollback_runner)
    app = web.Application(middlewares=[staff.guard], client_max_size=256 * 1024)
    app.add_routes(
        [
            web.get("/login", staff.login),
            web.post("/login", staff.login),
            web.post("/logout", staff.logout),
            web.get("/app.js", staff.script),
            web.get("/", staff.topics),
            web.get("/topic/{name}", staff.topic),
            web.post("/topic/{name}/examples", staff.add_examples),
            web.post("/topic/{name}/answer", staff.set_answer),
            web.post("/topic/{name}/remove", staff.remove_example),
            web.post("/topic/{name}/restore", staff.restore_answer),
            web.get("/inbox", staff.inbox),
            web.post("/inbox/{id}/add", staff.inbox_add),
            web.post("/inbox/{id}/dismiss", staff.inbox_dismiss),
            web.get("/model", staff.model),
            web.get("/reminders", staff.reminders),
            web.post("/api/retrain", staff.start_retrain),
            web.post("/api/publish", staff.start_publish),
            web.post("/api/rollback", staff.start_rollback),
            web.get("/api/job", staff.job),
            web.get("/report/confusion.png", staff.confusion_plot),
        ]
    )
    return app


def credentials(environ: Dict[str, str]) -> Tuple[str, str]:
    """STAFF_USERNAME and STAFF_PASSWORD; ``ValueError`` says what is wrong."""
    config = load_settings(environ)
    password = config.staff_password
    if not password:
        raise ValueError(
            "STAFF_PASSWORD is not set: the staff page does not start without a "
            "password. Set STAFF_PASSWORD (and STAFF_USERNAME, default 'staff')."
        )
    if len(password) < MIN_PASSWORD:
        raise ValueError(
            f"STAFF_PASSWORD has {len(password)} characters; use at least "
            f"{MIN_PASSWORD}."
        )
    return config.staff_username, password


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the staff page until Ctrl-C; 2 if it cannot start."""
    parser = argparse.ArgumentParser(prog="python -m staff.web", description=__doc__)
    parser.add_argument("--port", type=int, default=load_settings().staff_port)
    args = parser.parse_args(argv)
    try:
        username, password = credentials(dict(os.environ))
    except ValueError as problem:
        print(f"The staff page did not start: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO)
    app = create_app(Settings.from_env(), username, password)
    print(f"Staff page: http://127.0.0.1:{args.port}/ (user {username})", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
