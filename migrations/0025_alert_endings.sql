-- How an alert ends: the acknowledgement's note is kept; the evaluator notes when the
-- condition was first seen cleared (cleared_at, reset when it holds again) and resolves the
-- alert only once it has stayed cleared for the rule's window, saying how it ended.
ALTER TABLE alerts
    ADD COLUMN note        text CHECK (length(note) <= 1000),
    ADD COLUMN cleared_at  timestamptz,
    ADD COLUMN resolution  text;
