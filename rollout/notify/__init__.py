"""Notifications: what a rollout did, sent to chat (Slack-compatible incoming webhooks) and to JSON
webhooks, as Flagger's alerts and Argo Rollouts' notifications do.

targets.py   where to send (a hooks file's `notifications:` list; URLs from env or a mounted Secret)
notices.py   what to announce: pure functions of two versions of the state and its typed events
slack.py     a notice as a Slack Block Kit message
delivery.py  posting with retries, targets side by side, each result recorded as a `notify` event
"""

from rollout.notify.delivery import Delivery, Notifier, announce, deliver
from rollout.notify.notices import EVENTS, Notice, notices_between, took_over
from rollout.notify.slack import slack_message
from rollout.notify.targets import NotifyTarget, parse_targets

__all__ = [
    "EVENTS",
    "Delivery",
    "Notice",
    "Notifier",
    "NotifyTarget",
    "announce",
    "deliver",
    "notices_between",
    "parse_targets",
    "slack_message",
    "took_over",
]
