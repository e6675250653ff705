"""What people call their work: a job's (or a group's) name, the project and shot it is for, free tags.

Labels are given once, when the work is submitted, and never change afterwards, so the tag rows the
filters read (`JobTag`) are written with the job and never have to follow an edit.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Column widths (jobs.models): what a label may hold.
NAME_MAX_CHARS = 200
PROJECT_MAX_CHARS = 100
SHOT_MAX_CHARS = 100
TAG_MAX_CHARS = 64


@dataclass(frozen=True)
class JobLabels:
    name: str = ""
    project: str = ""
    shot: str = ""
    tags: tuple[str, ...] = ()

    def under(self, group: JobLabels) -> JobLabels:
        """One job's labels inside a group: its own name, project and shot where it has them, the
        group's otherwise; the group's tags and its own (each once, the group's first)."""
        return JobLabels(
            name=self.name or group.name,
            project=self.project or group.project,
            shot=self.shot or group.shot,
            tags=unique_tags(group.tags + self.tags),
        )


NO_LABELS = JobLabels()


def unique_tags(tags: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tags))


def label_problem(value: str) -> str | None:
    """Why a label may not be stored: control characters (a NUL, which PostgreSQL refuses in text
    columns, a newline that would break one-line displays)."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        return "may not contain control characters"
    return None
