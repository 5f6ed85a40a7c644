DROP TABLE dead_letters;
DROP TABLE events;
DROP TABLE warehouses;
DROP TABLE products;
DROP TABLE order_idempotency_keys;
DROP TABLE order_lines;
DROP TABLE orders;
