-- 008: the Telegram adapter (host/api/telegram.go, guests/kernels/
-- telegram_worker.js). The webhook appends each message a bot receives as a
-- telegram_message span, status received; the worker answers the oldest
-- first and appends its next version (answered or error), which takes it
-- out of this index. Finding work costs what is open, never the history.
CREATE INDEX IF NOT EXISTS heads_open_telegram_messages ON ledger.heads (tenant_id, ord)
  WHERE entity_type = 'telegram_message' AND status = 'received';
