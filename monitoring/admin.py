from django.contrib import admin

from monitoring.models import BackendHealthSample


@admin.register(BackendHealthSample)
class BackendHealthSampleAdmin(admin.ModelAdmin):
    list_display = ["backend", "checked_at", "reachable", "queue_running", "queue_pending", "vram_free", "vram_total"]
    list_filter = ["backend", "reachable"]
    show_full_result_count = False
