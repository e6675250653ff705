from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from fleet.backends import backend_set_draining
from fleet.models import Backend


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    list_display = ["name", "draining", "draining_since"]
    readonly_fields = ["draining_since"]
    actions = ["drain", "undrain"]

    @admin.action(description="Drain: finish what runs, take nothing new", permissions=["change"])
    def drain(self, request: HttpRequest, queryset: QuerySet[Backend]) -> None:
        for backend in queryset:
            backend_set_draining(backend.name, True)
        self.message_user(request, f"{queryset.count()} backend(s) draining", messages.SUCCESS)

    @admin.action(description="Put back in service", permissions=["change"])
    def undrain(self, request: HttpRequest, queryset: QuerySet[Backend]) -> None:
        for backend in queryset:
            backend_set_draining(backend.name, False)
        self.message_user(request, f"{queryset.count()} backend(s) back in service", messages.SUCCESS)
