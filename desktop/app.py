"""The tray app: the gateway in-process, its events in the window, the person's answers
back to it.

:class:`LockgateApp` owns everything and wires it: the :class:`GatewayHost` (the gateway
on its worker thread), the :class:`EventPump` (the one crossing), the models, the main
window, the approval prompt and the tray. Rule clicks become edits of policy.json (on a
worker thread) that the gateway's watcher loads like a hand edit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import html
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from PySide6.QtCore import QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QApplication,
)

from desktop.activityview import ActivityView, Sparkline, read_sparkline, sparkline_pixmap
from desktop.approvals import AlwaysFor, Answer, ApprovalPrompt, ApprovalsPanel, PendingApprovals
from desktop.calls import CallsModel
from desktop.connectview import ConnectView
from desktop.historyview import HistoryView
from desktop.host import EventPump, GatewayHost, HostFailed, HostReady, HostStopped
from desktop.liveview import LiveView
from desktop.notify import ApprovalNotices, NotificationService, NotificationStyle
from desktop.policyview import PolicyView
from desktop.review import (
    Review,
    ReviewDialog,
    held_sentence,
    review_of_instructions,
    review_of_tool,
)
from desktop.servereditor import ServerEdit, ServerEditor
from desktop.serversview import ServerActions, ServersModel, ServersView
from desktop.settingsview import SettingsView
from desktop.toolsview import REPLAYING_TEXT, ToolsModel, ToolsView, scan_catalog
from desktop.tray import AppState, Tray
from desktop.window import TABS, MainWindow
from proxy.audit.log import AuditError, AuditReader, audit_summary
from proxy.audit.records import CallRecord
from proxy.clients import ClientFile, find_clients
from proxy.clients.route import RouteError, RouteResult, UnrouteResult, route, unroute
from proxy.config.atomic import write_atomic
from proxy.config.autostart import autostart_enabled, autostart_path, set_autostart
from proxy.config.instance import InstanceLock
from proxy.config.paths import Paths, lockgate_command
from proxy.config.runinfo import DEFAULT_PORT
from proxy.config.secrets import SecretError, SecretStore
from proxy.config.servers import server_log_path
from proxy.config.servers_edit import (
    put_server,
    read_servers_text,
    remove_server,
    set_server_disabled,
)
from proxy.config.settings import (
    Settings,
    SettingsError,
    load_settings,
    save_settings,
    settings_file,
)
from proxy.errors import LockgateError
from proxy.gateway.approvals import Remember
from proxy.gateway.control import GatewayControl, PolicyInForce, ServersInForce
from proxy.gateway.events import (
    ApprovalPending,
    CallDecided,
    OAuthStateChanged,
    PauseChanged,
    PolicyRejected,
    PolicyReloaded,
    ServersRejected,
    ServersReloaded,
    ToolPinsChanged,
)
from proxy.gateway.pins import InstructionsChange, ToolChange
from proxy.policy.edit import allow_narrowly, edit_rule, preview
from proxy.policy.model import Policy
from proxy.policy.poison import Finding
from proxy.policy.starter import policy_text, starting_policy
from proxy.policy.store import restore_last_good
from proxy.upstream.catalog import ServerTools
from proxy.upstream.oauth import AuthState

__all__ = ["LockgateApp"]

log = logging.getLogger(__name__)
T = TypeVar("T")
SPARKLINE_MS = 60_000  # the tray's last hour is read again at most this often
SPARKLINE_SIZE = (120, 24)
_SettingsRead = tuple[Settings | None, str | None, str]  # the settings, their error, audit
PolicyEdit = Callable[[Path], bytes]  # a change of policy.json, given its path: the new text
# a change is replayed over the calls of this last period before the person confirms it
REPLAY_SECONDS = 7 * 86400
REPLAY_PERIOD = "the last 7 days"
REPLAY_NOT_AVAILABLE = (
    "The replay of the last 7 days is not available: the gateway is not running. "
    "Applying still writes the rule."
)


class LockgateApp(QObject):
    """Everything the tray app is, wired together."""

    # a sign-in page to open in the browser (emitted on the gateway's thread)
    open_url_requested = Signal(str)

    def __init__(
        self,
        paths: Paths,
        *,
        port: int = DEFAULT_PORT,
        tray_poll_ms: int = 5000,
        secrets: SecretStore | None = None,
        home: Path | None = None,
        launcher: Sequence[str] | None = None,
        instance: InstanceLock | None = None,
    ) -> None:
        """``home`` (with an empty environment) and ``launcher`` (the lockgate command)
        are where the Connect view looks for clients and what it writes into them; tests
        give a home of their own. ``instance`` is the one-per-user lock :func:`run_app`
        took before anything showed."""
        super().__init__()
        self.paths = paths
        self.secrets = secrets or SecretStore()
        self.home = home  # where the Connect view looks for clients (None: the user's)
        self._environ: dict[str, str] | None = None if home is None else {}
        command = lockgate_command()
        self._launcher = list(launcher) if launcher else [command] if command else None
        self._login_command = launcher[0] if launcher else lockgate_command(gui=True)
        self.host = GatewayHost(paths, port=port, secrets=self.secrets, instance=instance)
        self.pump = EventPump(self.host, parent=self)
        self.calls = CallsModel()
        self.tools = ToolsModel(parent=self)
        self.servers = ServersModel(parent=self)
        self.pending = PendingApprovals(self.tools.risk, parent=self)
        self.pending.withdrawn.connect(self._say)
        self.live = LiveView(
            self.calls,
            self.set_rule,
            self.load_older,
            on_allow_for_client=lambda server, tool, client: self.allow_narrowly(
                server, tool, client=client
            ),
        )
        # the whole audit log, read (and exported) on the host's workers
        self.history = HistoryView(paths.audit_db, self.host.blocking, self._say)
        # calls over time, read on the workers while the tab is in sight; its reads also
        # bring the tray's sparkline of the last hour
        self.activity = ActivityView(
            paths.audit_db, self.host.blocking, on_sparkline=self._show_sparkline
        )
        self._sparkline_at = -SPARKLINE_MS / 1000.0  # time.monotonic() of the last shown
        self._sparkline_timer = QTimer(self, interval=SPARKLINE_MS)
        self._sparkline_timer.timeout.connect(self.refresh_sparkline)
        self.approvals_tab = ApprovalsPanel(self.pending, self.answer)
        self.tools_view = ToolsView(
            self.tools,
            self.set_rule,
            self.remove_rule,
            self.list_tools,
            on_review=self.review_tool,
            on_review_instructions=self.review_instructions,
            on_preview=self.preview_rule,
        )
        # the review dialogs open now, by (server, tool) (tool None: its instructions)
        self.reviews: dict[tuple[str, str | None], ReviewDialog] = {}
        self._held_seen: set[tuple[str, str | None, str]] | None = None  # for the tray
        self.server_editor = ServerEditor(self.save_server)
        self.servers_view = ServersView(
            self.servers,
            ServerActions(
                restart=self.restart_server,
                open_log=self.open_server_log,
                add=self.server_editor.start_new,
                edit=self.edit_server,
                set_disabled=self.set_server_disabled,
                remove=self.remove_server,
                sign_in=self.sign_in_server,
            ),
        )
        self.policy_view = PolicyView(
            paths.policy_file,
            self.create_policy,
            self.suggest_policy,
            self.write_policy,
            on_restore=self.restore_policy,
            on_replay_file=self.replay_file,
        )
        self.connect_view = ConnectView(
            self.scan_clients,
            self.route_client,
            self.unroute_client,
            self.set_autostart,
            on_sign_in=self.sign_in_server,
        )
        self.settings_view = SettingsView(self.save_changed_settings, self.set_autostart)
        self.tray = Tray(self, poll_ms=tray_poll_ms)
        self.window = MainWindow(self)
        self.window.tabs.currentChanged.connect(self._tab_shown)
        self.prompt = ApprovalPrompt(self.pending, self.answer)
        self.notifications = NotificationService(parent=self)
        self.notices = ApprovalNotices(
            self.notifications,
            self.pending,
            on_answer=self.answer,
            on_review=lambda: self.window.show_tab("Approvals"),
            tray_message=self.tray.notify,
            parent=self,
        )
        self.state = AppState()
        self.policy: Policy | None = None
        self._stopped = False
        self._shown: tuple[AppState, str | None] | None = None
        self.tray.open_window.connect(self.window.present)
        self.tray.open_approvals.connect(lambda: self.window.show_tab("Approvals"))
        self.pending.changed.connect(self._replay_always)
        self.pending.changed.connect(
            lambda: self.tray.waiting(
                [
                    f"{p.client} → {p.server}/{p.tool}"
                    + (" (its result holds a secret)" if p.about == "result" else "")
                    for p in self.pending.items.values()
                ]
            )
        )
        self.tray.toggle_pause.connect(self.toggle_pause)
        self.tray.sign_in.connect(self.sign_in_server)
        self.tray.quit.connect(self.quit)
        self.pump.batch.connect(self._batch)
        self.open_url_requested.connect(lambda url: QDesktopServices.openUrl(QUrl(url)))
        self._tray_was_available = self.tray.available

    def _tab_shown(self, index: int) -> None:
        """What a tab shows may have changed while it was not in view: the settings file
        (edited by hand, or `lockgate settings`), the audit log (new calls)."""
        if TABS[index] == "Settings":
            self._show_settings()
        elif TABS[index] == "History":
            self.history.refresh()
        elif TABS[index] == "Activity":
            self.activity.refresh()

    # -- life -------------------------------------------------------------------------

    def start(self) -> None:
        self.host.start()
        self.notifications.start()
        self.refresh_sparkline()
        self._sparkline_timer.start()
        self.scan_clients()
        self._show_autostart()
        self._show_settings()
        if not self.paths.servers_file.exists():
            # A first run: nothing goes through Lockgate yet, so it starts where that is
            # done, instead of silently in the tray.
            self.window.show_tab("Connect your agents")
        elif not self.tray.available:
            self.window.present()  # no tray to live in: the window is the app

    def close(self) -> None:
        """Stop the gateway cleanly: pending approvals refused, calls in flight answered
        or cancelled, the audit log complete. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._sparkline_timer.stop()
        for dialog in list(self.reviews.values()):
            dialog.close()
        self.prompt.hide()
        self.tray.hide()
        self.notifications.stop()
        self.host.stop()
        self.pump.pump()  # the last news (calls finished, stopped) into the models
        self.pump.stop()

    def quit(self) -> None:
        """:meth:`close`, then leave the Qt event loop."""
        self.close()
        app = QApplication.instance()
        if app is not None:
            app.quit()

    # -- the tray's sparkline ---------------------------------------------------------

    def refresh_sparkline(self) -> None:
        """Read the last hour for the tray (on a worker), unless the Activity tab's reads
        brought it within the minute."""
        if time.monotonic() - self._sparkline_at < SPARKLINE_MS / 1000 - 1:
            return
        reader = AuditReader(self.paths.audit_db)

        def done(future: concurrent.futures.Future[Sparkline | None]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                log.debug("the tray's sparkline: %s", error)
            elif (sparkline := future.result()) is not None:
                self._show_sparkline(sparkline)

        self.host.blocking(lambda: read_sparkline(reader, time.time()), done)

    def _show_sparkline(self, sparkline: Sparkline) -> None:
        self._sparkline_at = time.monotonic()
        pixmap = sparkline_pixmap(sparkline.calls, *SPARKLINE_SIZE, blocked=sparkline.blocked)
        self.tray.show_activity(pixmap, sparkline.text())

    # -- the gateway's news -----------------------------------------------------------

    def _batch(self, events: list[object]) -> None:
        self.calls.apply(events)
        self.pending.apply(events)
        self.servers.apply(events)
        blocked: list[str] = []
        pins_changed = False
        state = self.state
        for event in events:
            if isinstance(event, HostReady):
                state = _with(state, running=True, failure=None)
                self._ready()
            elif isinstance(event, HostFailed):
                state = _with(state, running=False, failure=event.message)
                self.window.present()
            elif isinstance(event, HostStopped):
                state = _with(state, running=False)
                self.pending.reset()
            elif isinstance(event, PauseChanged):
                state = _with(state, paused=event.paused)
            elif isinstance(event, PolicyReloaded) and event.layer == "team":
                state = _with(state, team_policy_error=None)
                if state.running:
                    self._fetch_policy()
            elif isinstance(event, PolicyRejected) and event.layer == "team":
                state = _with(state, team_policy_error=event.message)  # not policy.json's
                if state.running:
                    self._fetch_policy()  # the Tools view's banner shows it
            elif isinstance(event, PolicyReloaded):
                state = _with(state, policy_error=None)
                if state.running:  # before that, HostReady fetches it
                    self._fetch_policy()
            elif isinstance(event, ServersReloaded):
                state = _with(state, servers_error=None)
                self.servers_view.status.setText(f"servers.json in force: {event.summary()}")
                self._fetch_servers()
                self.list_tools()
            elif isinstance(event, ServersRejected):
                state = _with(state, servers_error=event.message)
                self.servers_view.status.setText(
                    "servers.json has errors; the servers in force stay:\n" + event.message
                )
            elif isinstance(event, PolicyRejected):
                state = _with(state, policy_error=event.message)
                self.policy_view.show_state(None, event.message, exists=True)
                if state.running:
                    self._fetch_policy()  # deleted, or broken: the tab shows which
            elif isinstance(event, CallDecided) and event.decision in ("denied", "refused"):
                index = self.calls.index_of(event.call_id)
                if index is not None:
                    row = self.calls.row(index)
                    blocked.append(f"{row.server}/{row.tool}: {event.reason[:80]}")
            elif isinstance(event, OAuthStateChanged):
                self._fetch_sign_in()
                if event.state == "needs_sign_in":
                    self.tray.notify(
                        f"Lockgate: sign in to {event.server}",
                        (event.why or "its sign-in ended")
                        + ". Sign in from the Servers tab; its calls are refused until then.",
                    )
            elif isinstance(event, ApprovalPending) and event.approval_id in self.pending.items:
                self.notices.announce(event)
            elif isinstance(event, ToolPinsChanged):
                pins_changed = True
        if pins_changed and state.running:
            self._fetch_pins()  # once for the batch, however many changes it holds
        if blocked:
            self.tray.blocked(blocked[-8:], self._show_blocked)
        state = _with(state, pending=len(self.pending), servers_down=self.servers.down_count())
        self._show(state)
        self.live.refresh()
        if self.tray.available and not self._tray_was_available:
            self._tray_was_available = True  # a tray appeared: the app can live there

    def _say(self, message: str) -> None:
        self.window.statusBar().showMessage(message, 15000)

    def _show(self, state: AppState) -> None:
        self.state = state
        shown = (state, self.host.info.url if self.host.info else None)
        if shown == self._shown:
            return  # every batch ends here: restyling the banner each time is not free
        self._shown = shown
        self.tray.update(state)
        self.window.show_state(*shown)

    def _ready(self) -> None:
        def got_paused(future: concurrent.futures.Future[bool]) -> None:
            if _ok(future):
                self._show(_with(self.state, paused=future.result()))

        self._fetch_servers()
        self._fetch_policy()
        self._fetch_pins()
        self.list_tools()
        self.host.call(lambda control: control.paused, got_paused)

    def _fetch_servers(self) -> None:
        def got(future: concurrent.futures.Future[ServersInForce]) -> None:
            if _ok(future):
                in_force = future.result()
                self.servers.set_servers(in_force.servers, in_force.disabled)
                self._fetch_sign_in()
                self._show(_with(self.state, servers_error=in_force.error))

        self.host.call(lambda control: control.servers(), got)

    def _fetch_policy(self) -> None:
        def got(future: concurrent.futures.Future[PolicyInForce]) -> None:
            if not _ok(future):
                return
            in_force = future.result()
            policy, error = in_force.policy, in_force.error
            self.policy = policy
            self.tools.set_policy(policy, in_force.team, in_force.team_error)
            where = policy.source or "the built-in policy"
            summary = f"{len(policy.rules)} rules, default {policy.default.value} (from {where})"
            self.policy_view.show_state(
                summary,
                error,
                exists=not in_force.deleted and self.paths.policy_file.exists(),
                deleted=in_force.deleted,
            )
            self._show(_with(self.state, policy_error=error))

        self.host.call(lambda control: control.policy(), got)

    # -- what the person does ---------------------------------------------------------

    def toggle_pause(self) -> None:
        def flip(control: GatewayControl) -> None:
            if control.paused:
                control.resume()
            else:
                control.pause()

        self.host.call(flip)

    def answer(self, answer: Answer) -> None:
        pending = self.pending.items.get(answer.approval_id)
        # A result (the call ran; its result holds a secret) is answered once, whatever
        # was clicked: the next result is another secret, and no rule comes of it.
        about_result = pending is None or pending.about == "result"

        # "always" is a rule, written below; the call itself is answered once
        remember = Remember.ONCE if answer.remember is Remember.ALWAYS else answer.remember
        if about_result:
            remember = Remember.ONCE

        def send(control: GatewayControl) -> None:
            control.answer(
                answer.approval_id,
                answer.approve,
                reason=answer.reason,
                remember=remember,
                digest=answer.digest,
            )

        def done(future: concurrent.futures.Future[None]) -> None:
            if not _ok(future):
                self.window.statusBar().showMessage(
                    "That call was no longer waiting (answered, timed out or cancelled).", 8000
                )

        self.host.call(send, done)
        if about_result or pending is None:
            return
        if not (answer.approve and answer.remember is Remember.ALWAYS):
            return
        self._write_rule(pending.server, pending.tool, _always_edit(pending, answer.always))

    def set_rule(self, server: str, tool: str, changes: dict[str, Any]) -> None:
        """Write the rule for server/tool into policy.json (on a worker thread)."""
        self._write_rule(server, tool, _rule_edit(server, tool, changes))

    def preview_rule(
        self, server: str, tool: str, changes: dict[str, Any], answer: Callable[[str], None]
    ) -> None:
        """What :meth:`set_rule` with ``changes`` would have done to the last 7 days'
        calls: ``answer`` gets the line, on the GUI thread."""
        self.replay_change(_rule_edit(server, tool, changes), answer)

    def replay_file(self, candidate: Path, answer: Callable[[str], None]) -> None:
        """What the policy file ``candidate`` (a changed copy of policy.json, not yet in
        place) would have done to the last 7 days' calls: ``answer`` gets the line."""
        self.replay_change(lambda _copy: candidate.read_bytes(), answer)

    def replay_change(self, edit: PolicyEdit, answer: Callable[[str], None]) -> None:
        """Make ``edit`` on a private copy of policy.json and replay it over the calls of
        the last 7 days (on a worker thread: it reads the audit log); ``answer`` gets a
        line for the person, on the GUI thread. Nothing is written."""
        control = self.host.control
        if control is None:
            answer(REPLAY_NOT_AVAILABLE)
            return
        path, end = self.paths.policy_file, time.time()

        def replay() -> str:
            candidate = preview(path, edit)
            report = control.replay_candidate(candidate, end - REPLAY_SECONDS, end)
            return report.summary(REPLAY_PERIOD)

        def done(future: concurrent.futures.Future[str]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                answer(future.result())
            elif isinstance(error, LockgateError):
                answer(f"Not replayed: {error.told()}")
            else:  # a replay only informs: its failure must not stop the change
                log.warning("replaying a change failed", exc_info=error)
                answer(f"Not replayed: {error}")

        self.host.blocking(replay, done)

    def _replay_always(self) -> None:
        """Replay each "always" answer of the calls that began waiting, for their cards;
        the calls never wait for it ("Allow once" is as quick as ever)."""
        for approval_id, pending in list(self.pending.items.items()):
            if pending.about == "result" or approval_id in self.pending.replays:
                continue  # a result's answer makes no rule; or replayed already
            always: AlwaysFor
            for always in ("tool", "client", "arguments"):
                self.pending.set_replay(approval_id, always, REPLAYING_TEXT)
                self.replay_change(
                    _always_edit(pending, always), self._replay_said(approval_id, always)
                )

    def _replay_said(self, approval_id: str, always: AlwaysFor) -> Callable[[str], None]:
        return lambda said: self.pending.set_replay(approval_id, always, said)

    def allow_narrowly(
        self,
        server: str,
        tool: str,
        *,
        client: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Allow server/tool for ``client`` only, or with exactly ``arguments``: a case on
        its rule, other calls decided as before (on a worker thread)."""
        self._write_rule(server, tool, _narrow_edit(server, tool, client, arguments))

    def _write_rule(self, server: str, tool: str, edit: PolicyEdit) -> None:
        pattern, path = f"{server}/{tool}", self.paths.policy_file

        def say(message: str) -> None:
            self.window.statusBar().showMessage(message.splitlines()[0], 10000)
            self.tools_view.editor.status.setText(message)

        def done(future: concurrent.futures.Future[bytes]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                self._put_in_force(future.result(), f"Saved the rule for {pattern}", say)
            elif isinstance(error, LockgateError):
                say(error.told(f"the rule for {pattern}"))
            else:
                raise error

        self.host.blocking(lambda: edit(path), done)

    def remove_rule(self, server: str, tool: str) -> None:
        path, pattern = self.paths.policy_file, f"{server}/{tool}"

        def done(future: concurrent.futures.Future[bytes]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                saved = f"Removed the rule for {pattern}"
                self._put_in_force(future.result(), saved, self.tools_view.editor.status.setText)
            elif isinstance(error, LockgateError):
                self.tools_view.editor.status.setText(error.told(f"the rule for {pattern}"))
            else:
                raise error

        self.host.blocking(lambda: edit_rule(path, pattern, None), done)

    def _put_in_force(self, written: bytes, saved: str, say: Callable[[str], None]) -> None:
        """Have the gateway load policy.json now, and say "in force" only once it is: the
        file watcher would load it too, but a moment later, and a call in that moment
        would meet the old rule."""
        digest = hashlib.sha256(written).hexdigest()

        async def reload(control: GatewayControl) -> tuple[str | None, str | None]:
            in_force = await control.reload_policy()
            return in_force.digest, in_force.error

        def done(future: concurrent.futures.Future[tuple[str | None, str | None]]) -> None:
            if future.cancelled():
                return
            if future.exception() is not None:
                say(f"{saved}; the gateway is not running, so it applies once it starts.")
                return
            in_force, error = future.result()
            if in_force == digest:
                say(f"{saved}; it is in force for the next call.")
            elif error is not None:
                say(
                    f"{saved}, but policy.json was changed again and has errors now; the last "
                    "good policy stays in force (see the Policy tab)."
                )
            else:
                say(f"{saved}; policy.json was changed again since, and that is in force.")

        self.host.run(reload, done)

    def create_policy(self) -> None:
        path = self.paths.policy_file

        def create() -> None:
            if not path.exists():
                text = (
                    resources.files("lockgate_resources")
                    .joinpath("default-policy.json")
                    .read_bytes()
                )
                write_atomic(path, text.replace(b'"$schema": "./policy.schema.json",\n  ', b""))

        self.host.blocking(create, lambda _f: self._reload_policy())

    def restore_policy(self) -> None:
        """Put back a deleted policy.json: the last policy in force, kept by Lockgate."""

        def restore() -> None:
            restore_last_good(self.paths.policy_file, self.paths.last_good_policy)

        def done(future: concurrent.futures.Future[None]) -> None:
            error = None if future.cancelled() else future.exception()
            if error is not None:
                self.policy_view.in_force.setText(f"Not restored: {error}")
            self._reload_policy()

        self.host.blocking(restore, done)

    def _reload_policy(self) -> None:
        """Have the gateway load policy.json now (after the app wrote it), then show it."""
        self.host.run(lambda control: control.reload_policy(), lambda _f: self._fetch_policy())

    def suggest_policy(self) -> None:
        """A starting policy from the servers' own tools, shown in the Policy view."""
        self.policy_view.suggest_button.setEnabled(False)

        def done(future: concurrent.futures.Future[dict[str, ServerTools]]) -> None:
            self.policy_view.suggest_button.setEnabled(True)
            if _ok(future):
                self.policy_view.show_suggestion(policy_text(starting_policy(future.result())))

        self.host.run(lambda control: control.list_tools(), done)

    def write_policy(self, text: str) -> None:
        """Write the suggestion as policy.json, unless one appeared meanwhile."""
        path = self.paths.policy_file

        def write() -> None:
            policy_text(json.loads(text))  # still valid, or nothing is written
            if path.exists():
                raise FileExistsError(f"{path} exists now: nothing was written")
            write_atomic(path, text.encode())

        def done(future: concurrent.futures.Future[None]) -> None:
            if _ok(future):
                self.policy_view.show_suggestion(None)
            elif not future.cancelled():
                message = html.escape(str(future.exception()))
                self.policy_view.suggestion_title.setText(f"<b>Not written:</b> {message}")
            self._reload_policy()

        self.host.blocking(write, done)

    def list_tools(self) -> None:
        self.tools_view.refresh.setEnabled(False)
        self.tools_view.refresh.setText("Listing tools…")

        def done(future: concurrent.futures.Future[dict[str, ServerTools]]) -> None:
            self.tools_view.refresh.setEnabled(True)
            self.tools_view.refresh.setText("List tools again")
            if not _ok(future):
                return
            catalog = future.result()
            self.tools.set_catalog(catalog)
            for name, listing in catalog.items():
                count = None if listing.error else len(listing.tools)
                self.servers.set_tools(name, count, listing.error)
            self.host.blocking(lambda: scan_catalog(catalog), found)

        def found(
            future: concurrent.futures.Future[dict[tuple[str, str], tuple[Finding, ...]]],
        ) -> None:
            if _ok(future):
                self.tools.set_findings(future.result())

        self.host.run(lambda control: control.list_tools(), done)

    # -- tool pinning -------------------------------------------------------------------

    def _fetch_pins(self) -> None:
        """What the pins hold now, into the Tools view and the open reviews; the tray
        says so when a tool becomes held."""

        def ask(control: GatewayControl) -> tuple[list[ToolChange], list[InstructionsChange]]:
            return control.tool_changes(), control.instruction_changes()

        def got(
            future: concurrent.futures.Future[tuple[list[ToolChange], list[InstructionsChange]]],
        ) -> None:
            if not _ok(future):
                return
            tools, instructions = future.result()
            self.tools.set_changes(tools, instructions)
            self._announce_held(tools, instructions)
            for key, dialog in list(self.reviews.items()):
                self._refresh_review(key, dialog)

        self.host.call(ask, got)

    def _announce_held(
        self, tools: Sequence[ToolChange], instructions: Sequence[InstructionsChange]
    ) -> None:
        """A tray notification for what became held since the last look; a click on it
        opens the Tools view on it."""
        now: set[tuple[str, str | None, str]] = {(c.server, c.tool, c.kind) for c in tools}
        now |= {(c.server, None, c.kind) for c in instructions}
        seen, self._held_seen = self._held_seen or set(), now
        fresh_tools = [c for c in tools if (c.server, c.tool, c.kind) not in seen]
        fresh_instructions = [c for c in instructions if (c.server, None, c.kind) not in seen]
        if not fresh_tools and not fresh_instructions:
            return
        if len(fresh_tools) == 1 and not fresh_instructions:
            change = fresh_tools[0]
            title = f"Lockgate held {change.server}/{change.tool}"
            message = (
                f"{_sentence(held_sentence(change.kind, change.renamed_from))}. Review it in Tools."
            )
        elif fresh_instructions and not fresh_tools and len(fresh_instructions) == 1:
            held = fresh_instructions[0]
            title = f"Lockgate held {held.server}'s instructions"
            message = f"{_sentence(held_sentence(held.kind, what='their'))}. Review them in Tools."
        else:
            names = [f"{c.server}/{c.tool}" for c in fresh_tools]
            names += [f"{c.server}'s instructions" for c in fresh_instructions]
            title = f"Lockgate held {len(names)} tool definitions"
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            message = f"{shown}: they changed or are new. Review them in Tools."
        first = (fresh_tools[0].server, fresh_tools[0].tool) if fresh_tools else None
        self.tray.notify(title, message, on_click=lambda: self.show_held(first))

    def show_held(self, key: tuple[str, str] | None) -> None:
        """The window on the Tools view, ``key``'s tool selected (None: the held ones)."""
        self.window.show_tab("Tools & rules")
        view = self.tools_view
        if key is None:
            view.held_only.setChecked(True)
            return
        if not view.select(*key):
            view.filter_box.clear()
            view.held_only.setChecked(False)
            view.select(*key)

    def review_tool(self, server: str, tool: str) -> None:
        """Open the review of a held tool (or bring its open one to the front)."""
        change = self.tools.change(server, tool)
        if change is None:
            self._say(f"{server}/{tool} is not held (any more).")
            return
        self._open_review((server, tool), lambda: review_of_tool(change))

    def review_instructions(self, server: str) -> None:
        change = self.tools.instructions_change(server)
        if change is None:
            self._say(f"{server}'s instructions are not held (any more).")
            return
        self._open_review((server, None), lambda: review_of_instructions(change))

    def _open_review(self, key: tuple[str, str | None], make: Callable[[], Review]) -> None:
        """The review is drawn and compared on a worker thread (a definition may be a
        megabyte), then shown; never exec()'d: the GUI and the gateway go on."""
        open_now = self.reviews.get(key)
        if open_now is not None:
            open_now.show()
            open_now.raise_()
            open_now.activateWindow()
            return

        def made(future: concurrent.futures.Future[Review]) -> None:
            if not _ok(future) or self._stopped:
                return
            dialog = self.reviews.get(key)
            if dialog is None:
                dialog = ReviewDialog(future.result(), self._accept_review)
                self.reviews[key] = dialog
                dialog.destroyed.connect(lambda _=None, k=key: self.reviews.pop(k, None))
                dialog.finished.connect(lambda _=0, k=key: self.reviews.pop(k, None))
                screen = dialog.screen().availableGeometry()
                dialog.resize(min(1180, screen.width() - 40), min(700, screen.height() - 60))
            dialog.show()
            dialog.raise_()
            dialog.activateWindow()

        self.host.blocking(make, made)

    def _refresh_review(self, key: tuple[str, str | None], dialog: ReviewDialog) -> None:
        """The pins changed while a review was open: show what is held now."""
        server, tool = key
        held: ToolChange | InstructionsChange | None
        held = (
            self.tools.instructions_change(server)
            if tool is None
            else self.tools.change(server, tool)
        )
        if held is None:
            dialog.gone()
            return
        if held == dialog.review.held:
            return
        now = held

        def made(future: concurrent.futures.Future[Review]) -> None:
            if _ok(future) and self.reviews.get(key) is dialog:
                dialog.show_review(
                    future.result(),
                    note="It changed again while you looked: this is what the server says now.",
                )

        self.host.blocking(
            lambda: (
                review_of_tool(now) if isinstance(now, ToolChange) else review_of_instructions(now)
            ),
            made,
        )

    def _accept_review(self, review: Review) -> None:
        """Accept what the person reviewed, and only that: if the server changed it again
        since the dialog showed it, nothing is accepted (checked and accepted in one step
        on the gateway's loop, so nothing can change in between)."""
        server, tool = review.server, review.tool
        key = (server, tool)

        async def accept(control: GatewayControl) -> bool:
            # what is held now, compared with what was shown (the changes are frozen
            # records: comparing them is cheap, and nothing awaits between it and accept)
            if tool is None:
                held = control.instruction_changes()
                if next((c for c in held if c.server == server), None) != review.held:
                    return False
                await control.accept_instructions(server)
                return True
            now = next(
                (c for c in control.tool_changes() if (c.server, c.tool) == (server, tool)), None
            )
            if now is None or now != review.held:
                return False
            await control.accept_tool(server, tool)
            return True

        def done(future: concurrent.futures.Future[bool]) -> None:
            dialog = self.reviews.get(key)
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                said = error.told() if isinstance(error, LockgateError) else str(error)
                if dialog is not None:
                    dialog.accept_failed(f"Not accepted: {said}")
                return
            if not future.result():
                if dialog is not None:
                    dialog.accept_failed(
                        "Not accepted: it changed again since this was shown, or is no longer "
                        "held. Look at it again."
                    )
                self._fetch_pins()
                return
            self._say(
                f"Accepted {review.subject}: agents see it as it is now."
                if tool is not None
                else f"Accepted {review.subject}: agents are given them from their next connection."
            )
            if dialog is not None:
                dialog.accept_succeeded()
            self._fetch_pins()

        self.host.run(accept, done)

    def _show_settings(self, said: str | None = None) -> None:
        """Read settings.json and the audit log's size (on a worker) into the view."""
        paths = self.paths

        def read() -> _SettingsRead:
            try:
                settings, error = load_settings(paths), None
            except SettingsError as exc:
                settings, error = None, exc.told()
            try:
                summary = audit_summary(paths.audit_db)
            except AuditError as exc:
                return settings, error, f"unknown ({exc.told()})"
            since = (
                time.strftime(" since %Y-%m-%d", time.localtime(summary.oldest))
                if summary.oldest is not None
                else ""
            )
            audit = (
                f"{summary.size_bytes / (1024 * 1024):.1f} MB, {summary.calls:,} calls{since} "
                f"({paths.audit_db})"
            )
            return settings, error, audit

        def done(
            future: concurrent.futures.Future[tuple[Settings | None, str | None, str]],
        ) -> None:
            if not _ok(future):
                return
            settings, error, audit = future.result()
            if settings is not None:
                self.notices.style = cast(NotificationStyle, settings.notifications)
            self.settings_view.show_settings(settings, str(settings_file(paths)), error)
            self.settings_view.show_audit_size(audit)
            if said is not None and error is None:
                self.settings_view.say(said)

        self.host.blocking(read, done)

    def save_changed_settings(self, changes: dict[str, int | str]) -> None:
        """Write the changed settings (checked as ``lockgate settings`` checks them); those
        the running gateway can take at once are put in force."""
        paths = self.paths

        def write() -> None:
            save_settings(paths, changes)  # all or none

        def apply(control: GatewayControl) -> None:
            if "approval_timeout_seconds" in changes:
                control.set_approval_timeout(float(changes["approval_timeout_seconds"]))
            if "audit_retention_days" in changes:
                control.set_audit_retention(int(changes["audit_retention_days"]))
            if "audit_max_megabytes" in changes:
                control.set_audit_max_megabytes(int(changes["audit_max_megabytes"]))

        def done(future: concurrent.futures.Future[None]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if isinstance(error, LockgateError):
                self.settings_view.say(error.told(), failed=True)
                return
            if error is not None:
                raise error
            self.host.call(apply, _logged)
            later = [name for name in changes if name in _AT_NEXT_START]
            said = f"Saved {', '.join(changes)}"
            if len(later) == len(changes):
                said += (
                    "; the gateway uses it from its next start (quit Lockgate and start it again)."
                )
            elif later:
                said += (
                    f"; {', '.join(later)} from the gateway's next start (quit Lockgate and "
                    "start it again), the rest is in force now."
                )
            else:
                said += "; in force now."
            self._show_settings(said)

        self.host.blocking(write, done)

    def open_server_log(self, server: str) -> None:
        """Show the server's log in the desktop's viewer for text files."""
        path = server_log_path(self.paths.log_dir, server)
        if not path.exists():
            self.servers_view.status.setText(f"{server} has written nothing yet ({path})")
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        self.servers_view.status.setText(f"Opened {path}")

    # -- servers.json from the window ------------------------------------------------------

    def edit_server(self, server: str) -> None:
        """Open the editor on ``server``'s entry as servers.json has it now."""
        path = self.paths.servers_file

        def done(future: concurrent.futures.Future[dict[str, Any]]) -> None:
            error = None if future.cancelled() else future.exception()
            if isinstance(error, LockgateError):
                self.servers_view.status.setText(error.told())
            elif error is not None:
                raise error
            elif not future.cancelled():
                self.server_editor.start_edit(server, future.result())

        self.host.blocking(lambda: dict(read_servers_text(path).entries[server]), done)

    def save_server(self, edit: ServerEdit) -> None:
        """Store the edit's secrets in the keyring, then write its entry into servers.json
        (all or nothing: secrets new to the keyring go again if the write fails)."""
        path, store = self.paths.servers_file, self.secrets

        def write() -> None:
            added: list[str] = []
            try:
                for name, value in edit.secrets.items():
                    try:
                        store.get(name)
                    except SecretError:
                        added.append(name)
                    store.set(name, value)
                put_server(path, edit.name, edit.entry, replace=edit.replace)
            except BaseException:
                for name in added:
                    with contextlib.suppress(SecretError):
                        store.delete(name)
                raise

        def done(future: concurrent.futures.Future[None]) -> None:
            error = self._servers_written(future, f"Saved {edit.name}")
            self.server_editor.saved(error)

        self.host.blocking(write, done)

    def set_server_disabled(self, server: str, disabled: bool) -> None:
        path = self.paths.servers_file
        said = f"Turned {server} {'off' if disabled else 'on'}"

        def done(future: concurrent.futures.Future[bytes]) -> None:
            self._servers_written(future, said)

        self.host.blocking(lambda: set_server_disabled(path, server, disabled), done)

    def remove_server(self, server: str) -> None:
        """Remove ``server`` from servers.json; a remote server's sign-in is forgotten
        first (its tokens leave the keyring, revoked where the server allows)."""
        path = self.paths.servers_file
        if self.servers.signs_in(server):
            self.host.run(lambda control: control.sign_out(server), _logged)

        def done(future: concurrent.futures.Future[bytes]) -> None:
            self._servers_written(future, f"Removed {server}")

        self.host.blocking(lambda: remove_server(path, server), done)

    def _fetch_sign_in(self) -> None:
        def got(future: concurrent.futures.Future[dict[str, AuthState]]) -> None:
            if _ok(future):
                states = future.result()
                self.servers.set_sign_in({name: (s.state, s.why) for name, s in states.items()})
                self.servers_view.refresh_buttons()
                waiting = tuple(sorted(n for n, s in states.items() if s.state == "needs_sign_in"))
                self.connect_view.show_signed_in(
                    {n for n, s in states.items() if s.state in ("signed_in", "refreshing")}
                )
                self._show(_with(self.state, needs_sign_in=waiting))

        self.host.call(lambda control: control.auth_status(), got)

    def sign_in_server(self, server: str) -> None:
        """Sign in to a remote server in the person's browser; the gateway waits for the
        page's answer (at most 5 minutes) and keeps the sign-in in the keyring."""

        def done(future: concurrent.futures.Future[None]) -> None:
            error = None if future.cancelled() else future.exception()
            if future.cancelled():
                said = f"Signing in to {server} was cancelled."
            elif isinstance(error, LockgateError):
                said = error.told()
            elif error is not None:
                raise error
            else:
                said = f"Signed in to {server}; its calls go through from now on."
                self.list_tools()  # its tools, which it would not list before
            self.servers_view.status.setText(said)
            self._say(said)  # begun from the Connect tab or the tray menu: seen there too
            if not self.window.isVisible():
                self.tray.notify("Lockgate", said)
            self._fetch_sign_in()

        self.host.run(lambda control: control.sign_in(server, self.open_url_requested.emit), done)

    def _servers_written(self, future: concurrent.futures.Future[Any], said: str) -> str | None:
        """Say how a write of servers.json went, and have the gateway read it now; returns
        the error a person reads, if it failed."""
        if future.cancelled():
            return "cancelled: Lockgate is stopping"
        error = future.exception()
        if isinstance(error, LockgateError):
            self.servers_view.status.setText(error.told())
            return error.told()
        if error is not None:
            raise error
        self.servers_view.status.setText(f"{said} in servers.json; the gateway reads it now.")
        self._reload_servers()
        return None

    def restart_server(self, server: str) -> None:
        def done(future: concurrent.futures.Future[int]) -> None:
            self.servers.forget_crashes(server)
            stopped = future.result() if _ok(future) else 0
            self.servers_view.status.setText(
                f"Stopped {stopped} connection(s) to {server}; each starts again on its next "
                "request."
            )
            self._show(_with(self.state, servers_down=self.servers.down_count()))

        self.host.run(lambda control: control.restart_server(server), done)

    def scan_clients(self, project: Path | None = None) -> None:
        """Look for the MCP clients' files (on a worker thread) and show them."""
        self.connect_view.set_busy(True)
        home, environ = self.home, self._environ

        def done(future: concurrent.futures.Future[list[ClientFile]]) -> None:
            self.connect_view.set_busy(False)
            if _ok(future):
                self.connect_view.show_files(future.result())

        self.host.blocking(lambda: find_clients(home, environ=environ, project=project), done)

    def route_client(self, found: ClientFile, via: str) -> None:
        """Route one client file's servers through Lockgate (files and keyring on a
        worker thread); the gateway then reads servers.json again."""
        port = self.host.info.port if self.host.info else self.host.port
        launcher = self._launcher
        mode: Literal["stdio", "http"] = "http" if via == "http" else "stdio"

        def work() -> RouteResult:
            if launcher is None:
                raise RouteError("the lockgate command is not installed; install Lockgate first")
            return route(
                found, self.paths, store=self.secrets, via=mode, launcher=launcher, port=port
            )

        def done(future: concurrent.futures.Future[RouteResult]) -> None:
            result = self._route_done(future)
            if result is None:
                return
            lines = [
                f"{found.client.label}: {len(result.routed)} server(s) now go through "
                "Lockgate. Restart it so it reads its file again."
            ]
            lines += [f"left {entry}: {why}" for entry, why in result.skipped]
            if result.secrets:
                lines.append(f"Moved into the keyring: {', '.join(result.secrets)}")
            lines += [f"Note: {note}" for note in result.notes]
            if result.sign_in:
                lines.append(
                    f"Remote: {', '.join(result.sign_in)}. If a server asks for a sign-in, its "
                    "calls wait until you sign in once (below, or in the Servers tab)."
                )
            self.connect_view.show_result("\n".join(lines))
            self.connect_view.offer_sign_in(result.sign_in)
            if result.imported:
                self._reload_servers()

        self.connect_view.set_busy(True)
        self.host.blocking(work, done)

    def unroute_client(self, found: ClientFile) -> None:
        def done(future: concurrent.futures.Future[UnrouteResult]) -> None:
            result = self._route_done(future)
            if result is None:
                return
            lines = [
                f"{found.client.label}: put back {len(result.restored)} server(s)"
                + (", byte for byte as before." if result.byte_exact else ".")
            ]
            lines += [f"left {entry}: {why}" for entry, why in result.kept]
            if result.removed_servers:
                lines.append(
                    "No client uses these any more; removed from servers.json: "
                    + ", ".join(result.removed_servers)
                )
            lines += result.notes
            self.connect_view.show_result("\n".join(lines))
            if result.removed_servers:
                self._reload_servers()
            if result.revoked_token:  # its HTTP sessions must not live on until idle
                revoked = result.revoked_token
                self.host.run(lambda control: control.end_sessions(revoked), _logged)

        self.connect_view.set_busy(True)
        self.host.blocking(lambda: unroute(found, self.paths, store=self.secrets), done)

    def _route_done(self, future: concurrent.futures.Future[T]) -> T | None:
        self.connect_view.set_busy(False)
        if future.cancelled():
            return None
        error = future.exception()
        self.scan_clients(self.connect_view.project)
        if isinstance(error, LockgateError):
            self.connect_view.show_result(error.told(), error=True)
            return None
        if error is not None:
            raise error
        return future.result()

    def _reload_servers(self) -> None:
        """Have the gateway read servers.json now (its watcher would, a moment later); the
        ServersReloaded event then refreshes the views."""

        def done(future: concurrent.futures.Future[list[str]]) -> None:
            _ok(future)  # a broken file is shown by its ServersRejected event

        self.host.call(lambda control: control.reload_servers(), done)

    def set_autostart(self, on: bool) -> None:
        command = self._login_command
        home, environ = self.home, self._environ

        def change() -> None:
            if command is None:
                raise RouteError("the lockgate command is not installed")
            set_autostart(on, command, home=home, environ=environ)

        def done(future: concurrent.futures.Future[None]) -> None:
            if not future.cancelled() and future.exception() is not None:
                self.connect_view.show_result(
                    f"Could not change start at login: {future.exception()}", error=True
                )
            self._show_autostart()

        self.host.blocking(change, done)

    def _show_autostart(self) -> None:
        home, environ = self.home, self._environ

        def read() -> tuple[bool, str]:
            where = autostart_path(home=home, environ=environ)
            on = autostart_enabled(home=home, environ=environ)
            return on, str(where) if where else "the Run key of the registry"

        def done(future: concurrent.futures.Future[tuple[bool, str]]) -> None:
            if _ok(future):
                on, where = future.result()
                self.connect_view.show_autostart(on, where)
                self.settings_view.show_autostart(on)

        self.host.blocking(read, done)

    def load_older(self) -> None:
        oldest = self.calls.oldest_id()

        def read() -> list[CallRecord]:
            control = self.host.control
            return [] if control is None else control.history(limit=500, before_id=oldest)

        def done(future: concurrent.futures.Future[list[CallRecord]]) -> None:
            if _ok(future):
                added = self.calls.prepend_history(future.result())
                self.window.statusBar().showMessage(
                    f"Read {added} earlier calls from the audit log."
                    if added
                    else "No earlier calls fit (the table keeps the most recent ones).",
                    6000,
                )

        self.host.blocking(read, done)

    def _show_blocked(self, entry: str) -> None:
        self.window.show_tab("Live calls")
        self.live.decision_filter.setCurrentIndex(1)


# the gateway's socket and doors, the team layer's watcher and the export take them as it starts
_AT_NEXT_START = ("port", "max_message_bytes", "team_policy", "otlp_endpoint")


def _rule_edit(server: str, tool: str, changes: dict[str, Any]) -> PolicyEdit:
    """The rule for server/tool changed as the Tools view's editor says."""
    return lambda path: edit_rule(path, f"{server}/{tool}", changes)


def _narrow_edit(
    server: str, tool: str, client: str | None, arguments: Mapping[str, Any] | None
) -> PolicyEdit:
    """server/tool allowed for ``client`` only, or with exactly ``arguments``."""
    frozen = None if arguments is None else json.loads(json.dumps(arguments))
    return lambda path: allow_narrowly(path, server, tool, client=client, arguments=frozen)


def _always_edit(pending: ApprovalPending, always: AlwaysFor) -> PolicyEdit:
    """The rule an approval's "always" answer writes."""
    if always == "client":
        return _narrow_edit(pending.server, pending.tool, pending.client, None)
    if always == "arguments":
        return _narrow_edit(pending.server, pending.tool, None, pending.arguments)
    return _rule_edit(pending.server, pending.tool, {"action": "allow", "hide": None})


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _with(state: AppState, **changes: Any) -> AppState:
    return replace(state, **changes)


def _logged(future: concurrent.futures.Future[Any]) -> None:
    """A request whose answer nobody shows: its failure goes to the log."""
    _ok(future)


def _ok(future: concurrent.futures.Future[Any]) -> bool:
    if future.cancelled():  # the app is closing
        return False
    error = future.exception()
    if error is not None:
        log.warning("a request to the gateway failed: %s", error)
        return False
    return True
