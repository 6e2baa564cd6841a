"""Zendesk ticket event webhooks -> ticket events.

Zendesk event webhooks POST JSON: {"type": "zen:event-type:ticket.<event>", "id": <event uuid>,
"time": ISO, "subject": "zen:ticket:<id>", "detail": {ticket: id, status, priority, group_id,
assignee_id, requester_id, actor_id, via: {channel}}, "event": {...}}.

    ticket.created                     -> created   (priority from detail.priority, default normal)
    ticket.comment_added               -> message   author_type: author.is_staff -> agent, author id -1
                                                    (the Zendesk system user: triggers, automations) ->
                                                    system, configured bot ids -> bot, else customer;
                                                    public = comment.is_public
    ticket.agent_assignment_changed    -> assigned  agent_id = event.current (skipped when unassigned)
    ticket.status_changed to SOLVED    -> solved    solved_by = auto when the actor is -1 (an automation
                                                    or trigger), else agent
    ticket.status_changed to CLOSED    -> closed
    ticket.status_changed from SOLVED/CLOSED to NEW/OPEN/PENDING/HOLD -> reopened
    any other event / status change    -> skipped ("not_mapped")
queue = "group-<group_id>" (or a configured group name; "unassigned" without a group); channel from
detail.via.channel (email/web/api/mobile -> email, chat -> chat, messaging channels -> messaging,
twitter/facebook/instagram -> social, voice -> voice); customer = {"id": requester_id}.
"""
from __future__ import annotations

from typing import Any, Mapping

from streams.adapters import AdapterError, Emitted, Skip, ident, label, make_event_id, to_ms

SOURCE = "zendesk"
PREFIX = "zen:event-type:ticket."
SYSTEM_ACTORS = frozenset({"-1"})
VIA_CHANNELS = {
    "email": "email", "mail": "email", "web": "email", "web_form": "email", "web_service": "email",
    "api": "email", "mobile": "email", "mobile_sdk": "email", "help_center": "email", "rule": "email",
    "chat": "chat", "chat_transcript": "chat",
    "native_messaging": "messaging", "messaging": "messaging", "sms": "messaging", "text": "messaging",
    "whatsapp": "messaging", "line": "messaging", "wechat": "messaging", "telegram": "messaging",
    "apple_business_chat": "messaging", "google_rcs": "messaging", "any_channel": "messaging",
    "sunshine_conversations_api": "messaging", "facebook_messenger": "messaging",
    "twitter": "social", "twitter_dm": "social", "facebook": "social", "facebook_post": "social",
    "instagram_dm": "social", "voice": "voice", "phone": "voice",
}
PRIORITIES = frozenset({"low", "normal", "high", "urgent"})
OPEN_STATES = frozenset({"NEW", "OPEN", "PENDING", "HOLD"})
DONE_STATES = frozenset({"SOLVED", "CLOSED"})


def _sid(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Mapping):
        value = value.get("id")
    if isinstance(value, (int, float)):
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


class ZendeskAdapter:
    def __init__(self, *, group_names: Mapping[str, str] | None = None, bot_author_ids: frozenset[str] = frozenset(),
                 default_channel: str = "email"):
        self.group_names = {str(k): v for k, v in (group_names or {}).items()}
        self.bot_author_ids = frozenset(str(b) for b in bot_author_ids)
        self.default_channel = default_channel

    def convert(self, body: Any) -> list[Emitted] | Skip:
        if not isinstance(body, Mapping):
            raise AdapterError("not_an_object", "a Zendesk webhook body is a JSON object")
        etype = body.get("type")
        if not isinstance(etype, str):
            raise AdapterError("missing_field", "'type' is required")
        if not etype.startswith(PREFIX):
            return Skip("not_mapped", etype[:60])
        what = etype[len(PREFIX):]
        zid = body.get("id")
        if not isinstance(zid, str) or not zid:
            raise AdapterError("missing_field", "'id' is required")
        ts = to_ms(body.get("time"))
        if ts is None:
            raise AdapterError("bad_timestamp", "'time' must be ISO 8601 with an offset")
        detail = body.get("detail")
        if not isinstance(detail, Mapping):
            raise AdapterError("missing_field", "'detail' is required")
        ticket = _sid(detail.get("id"))
        if ticket is None and isinstance(body.get("subject"), str):
            ticket = body["subject"].rsplit(":", 1)[-1] or None
        if ticket is None:
            raise AdapterError("missing_field", "'detail.id' is required")
        event = body.get("event") if isinstance(body.get("event"), Mapping) else {}
        group = _sid(detail.get("group_id"))
        queue = label(self.group_names.get(group) if group else None) or (f"group-{label(group)}" if group
                                                                          else "unassigned")
        via = detail.get("via") if isinstance(detail.get("via"), Mapping) else {}
        channel = VIA_CHANNELS.get(str(via.get("channel", "")).lower(), self.default_channel)
        priority = str(detail.get("priority") or "normal").lower()
        if priority not in PRIORITIES:
            priority = "normal"
        base = {"ts": ts, "ticket_id": ident(ticket), "queue": queue, "channel": channel, "priority": priority}
        requester = _sid(detail.get("requester_id"))
        if requester:
            base["customer"] = {"id": requester}

        def emit(out_type: str, **extra: Any) -> list[Emitted]:
            ev = {"event_id": make_event_id(SOURCE, zid, out_type), "type": out_type, **base, **extra}
            return [Emitted("ticket", ev)]

        if what == "created":
            return emit("created")
        if what == "comment_added":
            comment = event.get("comment") if isinstance(event.get("comment"), Mapping) else None
            if comment is None:
                raise AdapterError("missing_field", "'event.comment' is required for comment_added")
            author = comment.get("author") if isinstance(comment.get("author"), Mapping) else {}
            author_id = _sid(author.get("id"))
            if author_id in SYSTEM_ACTORS:
                author_type = "system"
            elif author_id in self.bot_author_ids:
                author_type = "bot"
            elif author.get("is_staff") is True:
                author_type = "agent"
            else:
                author_type = "customer"
            extra: dict[str, Any] = {"author_type": author_type, "public": comment.get("is_public") is not False}
            if author_type == "agent" and author_id:
                extra["agent_id"] = label(author_id)
            return emit("message", **extra)
        if what == "agent_assignment_changed":
            agent = _sid(event.get("current"))
            if agent is None or agent == "0":
                return Skip("unassigned")
            return emit("assigned", agent_id=label(agent))
        if what == "status_changed":
            current = str(event.get("current") or "").upper()
            previous = str(event.get("previous") or "").upper()
            if current == "SOLVED":
                actor = _sid(detail.get("actor_id"))
                return emit("solved", solved_by="auto" if actor in SYSTEM_ACTORS else "agent")
            if current == "CLOSED":
                return emit("closed")
            if previous in DONE_STATES and current in OPEN_STATES:
                return emit("reopened")
            return Skip("not_mapped", f"status {previous or '?'} -> {current or '?'}")
        return Skip("not_mapped", etype[:60])
