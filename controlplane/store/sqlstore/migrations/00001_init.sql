-- The controller's objects. One portable schema for SQLite and PostgreSQL:
-- IDs are TEXT made in Go; times are BIGINT Unix nanoseconds in UTC, 0 for unset;
-- lists are JSON text ('[]' when empty); addresses, prefixes and keys are their
-- text form, '' when unset (partial unique indexes skip the unset ones).
--
-- Nodes, enrollment keys and IPsec sites reference their parent together with
-- their own tenant_id, so a row can never point into another tenant; that also
-- guarantees the tenant exists.

-- +goose Up
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE networks (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    ipv4        TEXT NOT NULL,
    ipv6        TEXT NOT NULL,
    mtu         INTEGER NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name),
    UNIQUE (id, tenant_id)
);

CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    network_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    tags        TEXT NOT NULL,
    machine_key TEXT NOT NULL,
    node_key    TEXT NOT NULL,
    ipv4        TEXT NOT NULL,
    ipv6        TEXT NOT NULL,
    endpoints   TEXT NOT NULL,
    home_relay  TEXT NOT NULL,
    routes      TEXT NOT NULL,
    ephemeral   BOOLEAN NOT NULL,
    last_seen   BIGINT NOT NULL,
    key_expiry  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name),
    UNIQUE (id, tenant_id),
    FOREIGN KEY (network_id, tenant_id) REFERENCES networks (id, tenant_id) ON DELETE RESTRICT
);
CREATE INDEX nodes_network ON nodes (network_id);
CREATE UNIQUE INDEX nodes_network_ipv4 ON nodes (network_id, ipv4) WHERE ipv4 <> '';
CREATE UNIQUE INDEX nodes_network_ipv6 ON nodes (network_id, ipv6) WHERE ipv6 <> '';
CREATE UNIQUE INDEX nodes_machine_key ON nodes (machine_key) WHERE machine_key <> '';

CREATE TABLE enrollment_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    network_id  TEXT NOT NULL,
    description TEXT NOT NULL,
    tags        TEXT NOT NULL,
    reusable    BOOLEAN NOT NULL,
    max_uses    BIGINT NOT NULL,
    uses        BIGINT NOT NULL,
    ephemeral   BOOLEAN NOT NULL,
    expires_at  BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    FOREIGN KEY (network_id, tenant_id) REFERENCES networks (id, tenant_id) ON DELETE RESTRICT
);
CREATE INDEX enrollment_keys_network ON enrollment_keys (network_id);

-- tenant_id is NULL for operator tokens.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants (id) ON DELETE RESTRICT,
    role        TEXT NOT NULL,
    description TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE INDEX tokens_tenant ON tokens (tenant_id);

CREATE TABLE relays (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    region       TEXT NOT NULL,
    public_addr  TEXT NOT NULL,
    udp_port_min INTEGER NOT NULL,
    udp_port_max INTEGER NOT NULL,
    stun_port    INTEGER NOT NULL,
    tls_url      TEXT NOT NULL,
    ws_url       TEXT NOT NULL,
    relay_key    TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX relays_relay_key ON relays (relay_key) WHERE relay_key <> '';

CREATE TABLE ipsec_sites (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    name            TEXT NOT NULL,
    vrouter_node_id TEXT NOT NULL,
    remote_addr     TEXT NOT NULL,
    local_id        TEXT NOT NULL,
    remote_id       TEXT NOT NULL,
    auth_method     TEXT NOT NULL,
    psk             TEXT NOT NULL,
    certificate     TEXT NOT NULL,
    ike_proposals   TEXT NOT NULL,
    esp_proposals   TEXT NOT NULL,
    local_subnets   TEXT NOT NULL,
    remote_subnets  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, name),
    FOREIGN KEY (vrouter_node_id, tenant_id) REFERENCES nodes (id, tenant_id) ON DELETE RESTRICT
);
CREATE INDEX ipsec_sites_vrouter_node ON ipsec_sites (vrouter_node_id);

-- Every version of every tenant's policy; an empty document records a deletion.
CREATE TABLE policies (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    version    BIGINT NOT NULL,
    document   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- +goose Down
DROP TABLE policies;
DROP TABLE ipsec_sites;
DROP TABLE relays;
DROP TABLE tokens;
DROP TABLE enrollment_keys;
DROP TABLE nodes;
DROP TABLE networks;
DROP TABLE tenants;
