"""The feedback receiver (`factory serve-feedback`): what comes back from the mail world, stored durably.

One-click unsubscribes, ESP event webhooks (SendGrid, Mailgun, Postmark) and inbound replies
arrive over HTTP. The receiver checks who sent each request, writes every verified payload as
one file in the data folder's inbox (fsynced before it answers 2xx) and does nothing else: the
observe stage imports those files (`factory_dagster/feedback/esp_import.py`,
`factory_dagster/feedback/reply_import.py`), so the warehouse keeps one writer and a crash of
either side loses nothing.

Set-up (secrets from the environment only, see `config.py`; run it on 127.0.0.1 behind a
TLS-terminating reverse proxy, and give the proxy's https address to the ESPs):

- One-click unsubscribe: the same `FACTORY_UNSUBSCRIBE_SECRET` as the sender, whose
  `List-Unsubscribe` links point at `https://<host>/unsubscribe/<token>`.
- SendGrid: Settings > Mail Settings > Event Webhook, URL `https://<host>/webhooks/sendgrid`,
  "Signed Event Webhook" on; its verification key goes in `FACTORY_SENDGRID_WEBHOOK_PUBLIC_KEY`.
  Events find their send by the custom argument `factory_send_id` (over SMTP: the header
  `X-SMTPAPI: {"unique_args": {"factory_send_id": "..."}}`) or by the Message-ID in `smtp-id`.
- Mailgun: Sending > Webhooks, URL `https://<host>/webhooks/mailgun` for each event; the HTTP
  webhook signing key goes in `FACTORY_MAILGUN_SIGNING_KEY`. Send id: the variable
  `factory_send_id` (over SMTP: `X-Mailgun-Variables: {"factory_send_id": "..."}`) or the Message-ID.
- Postmark: Server > Message Stream > Webhooks, URL `https://USER:PASSWORD@<host>/webhooks/postmark`
  with the user and password in `FACTORY_POSTMARK_WEBHOOK_USER` / `_PASSWORD`. Postmark reports
  its own MessageID, so the send id must travel as metadata (over SMTP:
  `X-PM-Metadata-factory_send_id: ...`).
- Inbound replies: an inbound-parse route in SendGrid's shape (multipart/form-data; tick "POST
  the raw, full MIME message"), URL `https://USER:PASSWORD@<host>/inbound` with the credentials
  in `FACTORY_INBOUND_USER` / `_PASSWORD` (sent as HTTP basic auth). SendGrid's newer signed
  Inbound Parse (a security policy with an ECDSA key) is not checked here.
"""
