"""The send stage's transports: how a validated message leaves the line."""

from factory_dagster.delivery.eml import FileTransport, OutgoingMessage, Transport, build_email

__all__ = ["FileTransport", "OutgoingMessage", "Transport", "build_email"]
