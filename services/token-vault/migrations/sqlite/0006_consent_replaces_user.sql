-- Whether a pending consent may connect another Asana user than the account's current one
-- (1) or not (0): an integer, as sqlx's Any driver reads booleans of only one of the two
-- backends.

ALTER TABLE oauth_states ADD COLUMN replace_user INTEGER NOT NULL DEFAULT 0;
