from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from access.keys import ApiKeyRefused, api_key_create


class Command(BaseCommand):
    help = "Make a named API key for a user and print it (the only time it is shown)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the key is for (unique among the user's keys)")
        parser.add_argument("--days", type=int, default=None, help="lifetime in days (default API_KEY_DAYS)")

    def handle(self, *args: Any, username: str, name: str, days: int | None, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        try:
            new = api_key_create(user=user, name=name, days=days)
        except ApiKeyRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(new.key)
        self.stderr.write(f"key {new.record.name!r} of {username}, expires {new.record.expires_at:%Y-%m-%d}")
