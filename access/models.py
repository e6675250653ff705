from django.conf import settings
from django.db import models


class ApiKey(models.Model):
    """A named API key of one user. Only its SHA-256 digest is stored; the key is shown once.

    Keys are 256-bit random strings, so a fast digest is enough (no password-style stretching):
    whoever reads the table cannot use what is in it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The key's public start (it says which key without giving it away), unique, for the lookup.
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"], condition=models.Q(revoked_at__isnull=True), name="apikey_user_name_live"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
