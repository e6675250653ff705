from django import template

register = template.Library()


@register.filter
def percent(value: float) -> str:
    return f"{value * 100:.0f} %"
