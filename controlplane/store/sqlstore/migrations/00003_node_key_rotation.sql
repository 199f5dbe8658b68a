-- A node key rotation asked for by an operator and not yet done by the agent:
-- Unix nanoseconds of the request, 0 when none is pending.

-- +goose Up
ALTER TABLE nodes ADD COLUMN rotate_requested_at BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE nodes DROP COLUMN rotate_requested_at;
