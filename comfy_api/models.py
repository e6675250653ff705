"""What the front door keeps beside a job: the ComfyUI view of it (the client's prompt id, client id,
queue number and extra_data) and the names the client's uploads go by.

The job's workflow is the client's prompt with LoadImage-style file names rewritten to asset
references ("asset:<id>"), so its node ids are the client's own; `input_names` keeps the names the
client wrote, so /history and /queue show the prompt as it was sent.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from assets.models import Asset
from jobs.models import Job

CLIENT_ID_MAX_CHARS = 128
PROMPT_ID_MAX_CHARS = 64
INPUT_NAME_MAX_CHARS = 255
SUBFOLDER_MAX_CHARS = 128


class FrontDoorPrompt(models.Model):
    """One prompt submitted through the front door: one job."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="front_door")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="front_door_prompts")
    # The websocket that hears this prompt's progress: ComfyUI sends it only to this clientId.
    client_id = models.CharField(max_length=CLIENT_ID_MAX_CHARS, blank=True)
    # The id the client chose, or the job's id: what every ComfyUI answer and message calls it.
    prompt_id = models.CharField(max_length=PROMPT_ID_MAX_CHARS)
    # ComfyUI's queue number: increasing with each prompt, negative for `front`, or the client's own.
    number = models.BigIntegerField(default=0)
    extra_data = models.JSONField(default=dict, blank=True)
    # The output nodes ComfyUI would execute (the fifth item of a queue entry).
    outputs_to_execute = models.JSONField(default=list, blank=True)
    # {node id: {input name: the value the client sent}} for inputs rewritten to asset references.
    input_names = models.JSONField(default=dict, blank=True)
    # POST /history delete/clear (and a prompt deleted from the queue) hides it from the front door's
    # history; the job itself stays, in REST, the admin and the statistics.
    hidden_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number", "id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "prompt_id"], name="frontdoorprompt_unique_prompt_id"),
        ]
        indexes = [
            models.Index(fields=["user", "client_id"], name="frontdoor_user_client_idx"),
            models.Index(fields=["user", "hidden_at", "-created_at"], name="frontdoor_user_history_idx"),
        ]

    def __str__(self) -> str:
        return f"prompt {self.prompt_id} (job {self.job_id})"


class FrontDoorInput(models.Model):
    """A name a client uploaded a file under (POST /upload/image), and the asset it became: a later
    prompt's LoadImage `image` with that name reads that asset."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="front_door_inputs")
    subfolder = models.CharField(max_length=SUBFOLDER_MAX_CHARS, blank=True)
    name = models.CharField(max_length=INPUT_NAME_MAX_CHARS)
    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="front_door_names")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "subfolder", "name"], name="frontdoorinput_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


# The web editor's own per-user state (comfy_api/editor_files.py): settings and saved files.
EDITOR_PATH_MAX_CHARS = 255


class EditorSettings(models.Model):
    """The ComfyUI editor's settings of one user (GET/POST /settings): ComfyUI keeps them in
    comfy.settings.json in the user's folder."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="editor_settings")
    values = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"editor settings of {self.user_id}"


class EditorFile(models.Model):
    """A file the editor saved in the user's folder (/userdata/{path}): workflows/<name>.json, mostly."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="editor_files")
    path = models.CharField(max_length=EDITOR_PATH_MAX_CHARS)
    content = models.BinaryField()
    size = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["path"]
        constraints = [models.UniqueConstraint(fields=["user", "path"], name="editorfile_unique_path")]

    def __str__(self) -> str:
        return self.path
