"""Celery task of the alerts: thin."""

from celery import shared_task

from alerts.evaluation import alerts_evaluate


@shared_task(ignore_result=True)
def alerts_evaluate_task() -> None:
    """Beat, every minute, default queue: fire and resolve alerts (their sends go on the webhooks queue)."""
    alerts_evaluate()
