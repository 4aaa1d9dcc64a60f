"""Telling the teacher: ready and failure mails. Never fails the flow."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from course_exports import mail
from course_exports.export_records import ExportResult
from course_exports.lake import Person
from course_exports.settings import Settings


@task(name="send-ready-mail", cache_policy=NO_CACHE, timeout_seconds=300)
def send_ready_mail(
    settings: Settings,
    recipient: Person,
    result: ExportResult,
    contents: str,
    timezone: str | None = None,
) -> mail.Delivery:
    message = mail.ready_mail(
        settings=settings,
        recipient=recipient,
        course_name=result.course_name,
        result=result,
        contents=contents,
        timezone=timezone,
    )
    return _deliver(settings, message)


@task(name="send-failure-mail", cache_policy=NO_CACHE, timeout_seconds=300)
def send_failure_mail(
    settings: Settings, recipient: Person, course_name: str, kind: str, reason: str
) -> mail.Delivery:
    message = mail.failure_mail(
        settings=settings, recipient=recipient, course_name=course_name, kind=kind, reason=reason
    )
    return _deliver(settings, message)


def _deliver(settings: Settings, message: mail.EmailMessage) -> mail.Delivery:
    delivery = mail.deliver(message, settings)
    logger = get_run_logger()
    if delivery.delivered:
        logger.info(
            "mail to %s delivered via %s: %s",
            mail.log_recipients(message),
            delivery.transport,
            delivery.where,
        )
    else:
        logger.error("mail to %s NOT delivered: %s", mail.log_recipients(message), delivery.error)
    return delivery
