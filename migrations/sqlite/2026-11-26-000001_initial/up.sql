-- orderflow schema, SQLite flavour. Kept column-for-column compatible with
-- migrations/postgres so one diesel schema (crates/storage/src/schema.rs) serves
-- both backends. Timestamps are UTC text (diesel's Timestamp); ids are text (order ids are
-- hyphenated UUIDv7, which sort by creation time as text).

CREATE TABLE orders (
    order_id    TEXT NOT NULL PRIMARY KEY CHECK (length(order_id) = 36),
    user_id     TEXT NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    currency    TEXT NOT NULL CHECK (length(currency) = 3 AND currency = upper(currency)),
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    version     BIGINT NOT NULL CHECK (version >= 1)
);
-- ListOrders: one user's orders, newest first, keyset on order_id.
CREATE INDEX orders_user_newest ON orders (user_id, order_id DESC);

CREATE TABLE order_lines (
    order_id         TEXT NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    line_no          INTEGER NOT NULL CHECK (line_no BETWEEN 0 AND 99),
    product_id       TEXT NOT NULL CHECK (length(product_id) BETWEEN 1 AND 128),
    quantity         BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 4294967295),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- CreateOrder retries: one row per (user, key), pointing at the order it made.
CREATE TABLE order_idempotency_keys (
    user_id         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    order_id        TEXT NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);

CREATE TABLE products (
    product_id TEXT NOT NULL PRIMARY KEY CHECK (length(product_id) BETWEEN 1 AND 128),
    sku        TEXT NOT NULL UNIQUE CHECK (length(sku) BETWEEN 1 AND 64),
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE warehouses (
    product_id   TEXT NOT NULL REFERENCES products (product_id) ON DELETE CASCADE,
    warehouse_id TEXT NOT NULL CHECK (length(warehouse_id) BETWEEN 1 AND 128),
    position     INTEGER NOT NULL CHECK (position >= 0),
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
    is_primary   BOOLEAN NOT NULL DEFAULT 0 CHECK (is_primary IN (0, 1)),
    PRIMARY KEY (product_id, warehouse_id)
);
-- At most one primary warehouse per product, enforced by the database.
-- (Zero is allowed: old data has such products.)
CREATE UNIQUE INDEX warehouses_one_primary ON warehouses (product_id) WHERE is_primary;

-- The event store: each event's canonical JSON, byte for byte as the
-- contract fixes it (text, not jsonb: jsonb would reorder keys), in the order
-- stored.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT,
    body        TEXT NOT NULL CHECK (body <> ''),
    received_at TIMESTAMP NOT NULL
);
CREATE INDEX events_event_id ON events (event_id) WHERE event_id IS NOT NULL;

CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    body       TEXT NOT NULL,
    reason     TEXT NOT NULL CHECK (reason <> ''),
    created_at TIMESTAMP NOT NULL
);
